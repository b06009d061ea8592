"""The OpenStack config drive: an ISO built with Nova's own genisoimage options and a
meta_data.json in Nova's shape, read by `iso:`, `dir:` and by detection (label config-2);
facts for targets; bad discs end in one line, the documented exit code, nothing written."""

import gzip
import json
import shutil
import time
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from contextd import iso
from contextd.errors import SourceError
from contextd.sources import clouddisc

from fakes_clouds import UUID, by_label, nova_config_drive, nova_meta, nova_tree, vfat_image


def test_nova_iso_is_read_without_mounting(site):
    drive = nova_config_drive(site.tmp, site.bundle().read_bytes())
    with iso.IsoImage(str(drive)) as image:
        assert image.label == "config-2"
        assert clouddisc.layout(image, image.label) == "config-drive"
    code, _, err = site.run("iso:%s" % drive)
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "applied"
    assert rep["source"]["disc"] == "config-drive"
    assert rep["host"]["instance_id"] == UUID
    assert (site.root / "etc/cvmfs/default.local").exists()


def test_targets_see_cloud_openstack_and_the_zone(site, payload_doc):
    payload_doc["targets"] = [{"cloud": "openstack", "region": "cern-geneva-*"}]
    drive = nova_config_drive(site.tmp, site.bundle(payload_doc).read_bytes())
    code, _, err = site.run("iso:%s" % drive)
    assert code == 0, err
    assert site.report()["outcome"] == "applied"
    payload_doc["targets"] = [{"cloud": "openstack", "region": "cern-meyrin-*"}]
    payload_doc["serial"] += 1
    shutil.rmtree(site.tmp / "config-drive-tree")
    drive = nova_config_drive(site.tmp, site.bundle(payload_doc).read_bytes(),
                              meta=nova_meta(uuid="0b9d7c1e-aaaa-4f3e-9c4a-1234567890ab"))
    code, _, err = site.run("iso:%s" % drive)
    assert code == 1 and "target" in err


def test_detection_by_label_and_mime_gzip_user_data(site):
    msg = MIMEMultipart()
    msg.attach(MIMEText("#cloud-config\n{}\n", "cloud-config"))
    msg.attach(MIMEText(site.bundle().read_text(), "x-contextd"))
    drive = nova_config_drive(site.tmp, gzip.compress(msg.as_bytes()))
    by_label(site.root, "config-2", drive)
    site.policy["sources"] = ["config-drive"]
    site.write_policy()
    code, _, err = site.cli("run", "--policy", str(site.policy_path), "--root", str(site.root),
                            "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir),
                            "--spool-dir", str(site.spool_dir))
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "applied" and rep["source"]["kind"] == "config-drive"
    assert rep["source"]["ignored_parts"][0]["type"] == "text/cloud-config"


def test_absent_drive_is_a_note_and_costs_nothing(site):
    site.policy["sources"] = ["config-drive", "nocloud"]
    site.write_policy()
    started = time.monotonic()
    code, _, err = site.cli("run", "--policy", str(site.policy_path), "--root", str(site.root),
                            "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir),
                            "--spool-dir", str(site.spool_dir))
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "skipped"
    assert any("no block device labelled config-2" in n for n in rep["detection"])
    assert any("labelled cidata" in n for n in rep["detection"])
    assert time.monotonic() - started < 10


def test_dir_source_recognises_a_copied_drive(site):
    tree = nova_tree(site.tmp, site.bundle().read_bytes())
    code, _, err = site.run("dir:%s" % tree)
    assert code == 0, err
    assert site.report()["host"]["instance_id"] == UUID


@pytest.mark.parametrize(("meta", "needle"), [
    (b"{not json", "is not JSON"),
    (b"[1, 2]", "is not a JSON object"),
    (json.dumps({"availability_zone": "nova"}).encode(), "has no uuid"),
    (json.dumps({"uuid": "x; rm -rf /"}).encode(), "uuid is not a plain identifier"),
    (json.dumps({"uuid": UUID, "availability_zone": ["a"]}).encode(),
     "availability_zone is not a plain identifier"),
])
def test_bad_meta_data_is_one_line_exit_1(site, meta, needle):
    drive = nova_config_drive(site.tmp, site.bundle().read_bytes(), raw_meta=meta)
    before = site.snapshot()
    code, _, err = site.run("iso:%s" % drive)
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert site.snapshot() == before


def test_no_user_data_is_one_line_on_iso_and_a_note_in_detection(site):
    drive = nova_config_drive(site.tmp, None)
    code, _, err = site.run("iso:%s" % drive)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "has no openstack/latest/user_data" in err
    by_label(site.root, "config-2", drive)
    site.policy["sources"] = ["config-drive"]
    site.write_policy()
    code, _, err = site.cli("run", "--policy", str(site.policy_path), "--root", str(site.root),
                            "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir),
                            "--spool-dir", str(site.spool_dir))
    assert code == 0, err
    assert site.report()["outcome"] == "skipped"


def test_user_data_that_is_not_ours_is_refused_on_iso(site):
    drive = nova_config_drive(site.tmp, b"#cloud-config\npackages: [htop]\n")
    code, _, err = site.run("iso:%s" % drive)
    assert code == 1 and "not a contextd bundle" in err


def test_vfat_drive_as_nova_writes_it_is_read(site):
    drive = vfat_image(site.tmp, "config-2", {
        "openstack/latest/meta_data.json": json.dumps(nova_meta()).encode(),
        "openstack/latest/user_data": site.bundle().read_bytes()}, size_mib=64)
    code, _, err = site.run("iso:%s" % drive)
    assert code == 0, err
    assert site.report()["host"]["instance_id"] == UUID
    by_label(site.root, "config-2", drive)
    site.policy["sources"] = ["config-drive"]
    site.write_policy()
    code, _, err = site.cli("run", "--policy", str(site.policy_path), "--root", str(site.root),
                            "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir),
                            "--spool-dir", str(site.spool_dir))
    assert code == 0, err
    assert site.report()["outcome"] == "unchanged"


def kernel_disk(root, name, image):
    """A block device the kernel lists before udev has named it: /sys/class/block/NAME
    and its node (here the image file itself)."""
    (root / "sys/class/block" / name).mkdir(parents=True)
    (root / "dev").mkdir(exist_ok=True)
    shutil.copy(image, root / "dev" / name)


def test_detection_reads_labels_when_udev_has_not_named_the_disc(site):
    drive = nova_config_drive(site.tmp, site.bundle().read_bytes())
    (site.root / "sys/class/block/sda").mkdir(parents=True)     # no node: skipped
    kernel_disk(site.root, "sr0", site.tmp / "payload.yaml")    # not a disc: skipped
    kernel_disk(site.root, "vdb", drive)
    assert clouddisc.find(str(site.root), ("config-2", "CONFIG-2")) == \
        str(site.root / "dev/vdb")
    site.policy["sources"] = ["config-drive"]
    site.write_policy()
    code, _, err = site.cli("run", "--policy", str(site.policy_path), "--root", str(site.root),
                            "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir),
                            "--spool-dir", str(site.spool_dir))
    assert code == 0, err
    assert site.report()["source"] == {"kind": "config-drive",
                                       "location": str(site.root / "dev/vdb"),
                                       "disc": "config-drive"}


def test_a_vfat_label_is_found_by_the_kernel_scan(site):
    drive = vfat_image(site.tmp, "config-2", {"openstack/latest/user_data": b"x"})
    kernel_disk(site.root, "vdc", drive)
    assert clouddisc.find(str(site.root), ("config-2", "CONFIG-2")) == \
        str(site.root / "dev/vdc")
    with pytest.raises(SourceError, match=r"has no openstack/latest/meta_data\.json"):
        clouddisc.look(str(site.root), "config-drive")
