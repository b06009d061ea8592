"""What user-data is: a bundle (gzip or not), MIME multipart with a bundle part, amiconfig
INI, or someone else's; bounded and one-line errors on hostile input."""

import gzip
import time
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from contextd.errors import ContextdError, SourceError
from contextd.sources import userdata

BUNDLE = (b"#contextd-signed-v1\n-----BEGIN CONTEXTD PAYLOAD-----\nY29udGV4dGQ=\n"
          b"-----END CONTEXTD PAYLOAD-----\n")


def mime(*parts) -> bytes:
    msg = MIMEMultipart()
    for part in parts:
        msg.attach(part)
    return msg.as_bytes()


def test_plain_and_gzip_bundle():
    assert userdata.classify(BUNDLE) == userdata.UserData("bundle", BUNDLE)
    assert userdata.classify(gzip.compress(BUNDLE)).data == BUNDLE


def test_mime_with_one_bundle_part_lists_the_others():
    cloud = MIMEText("#cloud-config\nruncmd: [reboot]\n", "cloud-config")
    script = MIMEText("#!/bin/sh\necho hi\n", "x-shellscript")
    script.add_header("Content-Disposition", "attachment", filename="boot.sh")
    ours = MIMEApplication(gzip.compress(BUNDLE), "x-contextd")    # base64 + gzip part
    got = userdata.classify(mime(cloud, ours, script))
    assert got.kind == "bundle" and got.data == BUNDLE
    assert [p["type"] for p in got.ignored_parts] == ["text/cloud-config", "text/x-shellscript"]
    assert got.ignored_parts[1]["filename"] == "boot.sh"
    assert got.ignored_parts[0]["part"] == 1 and got.ignored_parts[1]["part"] == 3


def test_mime_gzip_as_a_whole_and_nested():
    inner = MIMEMultipart()
    inner.attach(MIMEText(BUNDLE.decode(), "plain"))
    outer = MIMEMultipart()
    outer.attach(MIMEText("[amiconfig]\nplugins=cernvm\n", "amiconfig"))
    outer.attach(inner)
    got = userdata.classify(gzip.compress(outer.as_bytes()))
    assert got.kind == "bundle" and got.data.startswith(b"#contextd-signed-v1")
    assert [p["type"] for p in got.ignored_parts] == ["text/amiconfig"]


def test_mime_without_bundle_is_not_ours_and_two_bundles_are_an_error():
    got = userdata.classify(mime(MIMEText("#cloud-config\n{}\n", "cloud-config")))
    assert got.kind == "other" and "without a contextd bundle part" in got.why
    assert got.ignored_parts[0]["type"] == "text/cloud-config"
    with pytest.raises(SourceError, match="2 MIME parts are contextd bundles"):
        userdata.classify(mime(MIMEText(BUNDLE.decode()), MIMEText(BUNDLE.decode())))


def nest(depth: int) -> bytes:
    body = BUNDLE.decode()
    for level in range(depth):
        body = ('Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n%s\n--b%d--\n'
                % (level, level, body, level))
    return ("MIME-Version: 1.0\n" + body).encode()


def test_mime_nesting_is_bounded_and_cheap():
    assert userdata.classify(nest(5)).kind == "bundle"
    with pytest.raises(SourceError, match="nested more than 8 deep"):
        userdata.classify(nest(10))
    deep = nest(1000)
    started = time.monotonic()
    with pytest.raises(SourceError, match="more than 32 MIME multipart containers"):
        userdata.classify(deep)                # would be seconds in the email parser
    assert time.monotonic() - started < 0.5


def test_amiconfig_script_and_other():
    assert userdata.classify(b"# amiconfig\n\n[cernvm]\nrepositories=atlas.cern.ch\n").kind == \
        "amiconfig"
    got = userdata.classify(b"#!/bin/sh\nrm -rf /\n")
    assert got.kind == "other" and "script" in got.why and "never runs" in got.why
    got = userdata.classify(b"#cloud-config\npackages: [x]\n")
    assert got.kind == "other" and "'#cloud-config'" in got.why
    assert userdata.classify(b"").kind == "other"
    assert "\x1b" not in userdata.classify(b"\x1b[31mred\n").why


def test_bounds():
    with pytest.raises(SourceError, match="over the limit"):
        userdata.classify(b"x" * (userdata.MAX_USER_DATA + 1))
    bomb = gzip.compress(b"#contextd-signed-v1\n" + b"\0" * (userdata.MAX_USER_DATA + 10))
    with pytest.raises(ContextdError, match="decompresses to more than"):
        userdata.classify(bomb)
    with pytest.raises(ContextdError, match="not valid gzip"):
        userdata.classify(b"\x1f\x8bnot gzip at all")
