"""NoCloud seeds made by the real cloud-localds (Debian cloud-image-utils), read by `iso:`,
`dir:` and by detection (label cidata); meta-data is read for its instance-id only, never
as YAML; bad seeds end in one line, exit 1, nothing written."""

import json

import pytest

from contextd.sources import clouddisc

from fakes_clouds import by_label, cloud_localds

META = b"instance-id: iid-atlas-0001\nlocal-hostname: atlas-wn-0001\n"


def detect_run(site):
    return site.cli("run", "--policy", str(site.policy_path), "--root", str(site.root),
                    "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir),
                    "--spool-dir", str(site.spool_dir))


def test_cloud_localds_seed_by_iso_and_by_label(site):
    seed = cloud_localds(site.tmp, site.bundle().read_bytes(), META)
    code, _, err = site.run("iso:%s" % seed)
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "applied" and rep["source"]["disc"] == "nocloud"
    assert rep["host"]["instance_id"] == "iid-atlas-0001"
    by_label(site.root, "cidata", seed)
    site.policy["sources"] = ["nocloud"]
    site.write_policy()
    code, _, err = detect_run(site)
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "unchanged" and rep["source"]["kind"] == "nocloud"


def test_dir_with_json_meta_data(site):
    seed_dir = site.tmp / "seed"
    seed_dir.mkdir()
    (seed_dir / "meta-data").write_bytes(json.dumps({"instance-id": "iid-json"}).encode())
    (seed_dir / "user-data").write_bytes(site.bundle().read_bytes())
    code, _, err = site.run("dir:%s" % seed_dir)
    assert code == 0, err
    assert site.report()["host"]["instance_id"] == "iid-json"


@pytest.mark.parametrize(("meta", "want"), [
    (b"instance-id: iid-1\n", "iid-1"),
    (b"# a comment\ninstance-id: 'iid-2'  # trailing\n", "iid-2"),
    (b"local-hostname: h\ninstance-id:  \"iid-3\"\n", "iid-3"),
    (b'{"instance-id": "iid-4"}', "iid-4"),
])
def test_instance_id_lines(meta, want):
    assert clouddisc.nocloud_facts(meta, "m")["instance_id"] == want


@pytest.mark.parametrize(("meta", "needle"), [
    (b"local-hostname: h\n", "has no instance-id"),
    (b"instance-id: a b c\n", "instance-id is not a plain identifier"),
    (b"  instance-id: nested\n", "has no instance-id"),
    (b"{bad json", "is not JSON"),
    (b"instance-id: &anchor x\n", "not a plain identifier"),
])
def test_bad_meta_data_is_one_line_exit_1(site, meta, needle):
    seed = cloud_localds(site.tmp, site.bundle().read_bytes(), meta)
    before = site.snapshot()
    code, _, err = site.run("iso:%s" % seed)
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert site.snapshot() == before


def test_vfat_seed_from_cloud_localds_is_read(site):
    seed = cloud_localds(site.tmp, site.bundle().read_bytes(), META, fs="vfat")
    code, _, err = site.run("iso:%s" % seed)
    assert code == 0, err
    assert site.report()["host"]["instance_id"] == "iid-atlas-0001"


def test_cloud_config_seed_is_not_ours(site):
    seed = cloud_localds(site.tmp, b"#cloud-config\npackages: [htop]\n", META)
    by_label(site.root, "CIDATA", seed)
    site.policy["sources"] = ["nocloud"]
    site.write_policy()
    code, _, err = detect_run(site)
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "skipped"
    assert any("not a contextd bundle" in note for note in rep["detection"])
