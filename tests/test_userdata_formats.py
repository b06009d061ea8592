"""User-data is the same everywhere: a bundle, gzip of it, or MIME multipart with one bundle
part, recognised the way cloud-init recognises MIME (an mbox `From ` line before the headers
included), through every carrier: `file:`, EC2, a context.sh variable. MIME made by the real
`write-mime-multipart` of cloud-image-utils and by cloud-init's own `make-mime`."""

import gzip
import subprocess
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from contextd.sources import userdata

from fakes_sources import run_over_ec2


def mime_with_from_line(bundle: bytes) -> bytes:
    """What `email` writes with unixfrom (mailbox tools, Message.as_string(unixfrom=True))."""
    msg = MIMEMultipart()
    msg.set_unixfrom("From nobody Tue Dec  1 16:00:00 2026")
    msg.attach(MIMEText("#cloud-config\nruncmd: [reboot]\n", "cloud-config"))
    msg.attach(MIMEText(bundle.decode(), "x-contextd"))
    return msg.as_bytes(unixfrom=True)


def write_mime_multipart(tmp: Path, bundle: Path) -> bytes:
    """cloud-utils' own tool, as a VO operator would run it."""
    cloud = tmp / "cloud.txt"
    cloud.write_text("#cloud-config\npackages: [htop]\n")
    out = subprocess.run(["write-mime-multipart", "%s:text/x-contextd" % bundle,
                          "%s:text/cloud-config" % cloud],
                         capture_output=True, check=True, timeout=30).stdout
    assert out.lower().count(b"mime-version") >= 1
    return out


def test_mime_after_an_mbox_from_line_is_mime(site):
    raw = mime_with_from_line(site.bundle().read_bytes())
    assert raw.startswith(b"From nobody ")
    got = userdata.classify(raw)
    assert got.kind == "bundle", got.why
    assert [p["type"] for p in got.ignored_parts] == ["text/cloud-config"]
    assert userdata.classify(gzip.compress(raw)).kind == "bundle"


def test_a_from_line_is_skipped_only_before_the_headers():
    text = b"hello\nFrom nobody x\nMIME-Version: 1.0\n\n#contextd-signed-v1\n"
    assert userdata.classify(text).kind == "other"


def test_ec2_mime_from_line_is_applied_not_skipped(site):
    """The attack on the unchanged code: this user-data ended `skipped`, exit 0, with the
    VM uncontextualised."""
    code, _, err = run_over_ec2(site, mime_with_from_line(site.bundle().read_bytes()))
    assert code == 0, err
    report = site.report()
    assert report["outcome"] == "applied", report
    assert report["source"]["ignored_parts"][0]["type"] == "text/cloud-config"


@pytest.mark.parametrize("gz", [False, True])
def test_file_source_takes_mime_and_gzip(site, gz):
    raw = write_mime_multipart(site.tmp, site.bundle())
    user_data = site.tmp / "user-data"
    user_data.write_bytes(gzip.compress(raw) if gz else raw)
    code, _, err = site.run("file:%s" % user_data)
    assert code == 0, err
    assert site.report()["outcome"] == "applied"
    assert (site.root / "etc/cvmfs/default.local").exists()


def test_file_source_without_a_bundle_is_one_line_exit_1(site):
    user_data = site.tmp / "user-data"
    user_data.write_bytes(b"#cloud-config\npackages: [htop]\n")
    before = site.snapshot()
    code, _, err = site.run("file:%s" % user_data)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "not a contextd bundle" in err
    assert site.snapshot() == before


def cloud_init_make_mime(tmp: Path, bundle: Path) -> bytes:
    """cloud-init's own `make-mime` (Debian `cloud-init`): parts base64-encoded; an unknown
    type such as x-contextd needs --force."""
    cloud = tmp / "cloud.txt"
    cloud.write_text("#cloud-config\npackages: [htop]\n")
    out = subprocess.run(["cloud-init", "devel", "make-mime", "--force",
                          "-a", "%s:x-contextd" % bundle, "-a", "%s:cloud-config" % cloud],
                         capture_output=True, check=True, timeout=60).stdout
    assert b"Content-Transfer-Encoding: base64" in out
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_cloud_init_make_mime_user_data_is_applied(site, gz):
    raw = cloud_init_make_mime(site.tmp, site.bundle())
    code, _, err = run_over_ec2(site, gzip.compress(raw) if gz else raw)
    assert code == 0, err
    report = site.report()
    assert report["outcome"] == "applied", report
    assert report["source"]["ignored_parts"][0]["type"] == "text/cloud-config"
