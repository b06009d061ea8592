"""Attacks on the image identity (issue 16): a manifest that must not be believed.

Each attack leaves an image manifest a boot must not trust: tampered after signing, signed
by a key the site does not list, signed in another namespace (a payload signature), made
for another OS version, or without its signature. Each is reported `verified: false` with
its reason, and a payload whose targets name the image is then rejected (exit 1, one line)
with nothing applied. The carrier cannot name the image either, and hostile files where the
manifest should be (a FIFO, a symlink out of the root, deep JSON, a huge file) end in a
reason, never a hang or a traceback.
"""

import hashlib
import json
import os
from pathlib import Path

import pytest

from conftest import count
from contextd.facts import facts_for
from image_fixtures import (MANIFEST, OS_RELEASE, SIGNATURE, hand_sign, image_payload, sign_image)


def tamper(site, ikeys):
    path = site.root / MANIFEST
    path.write_bytes(path.read_bytes().replace(b'"version":"2026.12.1"',
                                               b'"version":"2026.12.9"'))


def wrong_key(site, ikeys):
    assert sign_image(site.root, ikeys["other"][0])[0] == 0


def wrong_namespace(site, ikeys):
    """The factory's own key, but a payload signature: never an image signature."""
    hand_sign(site.root / MANIFEST, ikeys["factory"][0], namespace="contextd-payload")


def other_os_version(site, ikeys):
    """The image was updated (or the manifest copied) to another release after signing."""
    (site.root / "etc/os-release").write_text(OS_RELEASE.replace('"9.4"', '"9.5"'))


def missing_signature(site, ikeys):
    (site.root / SIGNATURE).unlink()


ATTACKS = {
    "tampered": (tamper, "signature does not match the manifest"),
    "wrong key": (wrong_key, "which is not one of the policy's image signers"),
    "wrong namespace": (wrong_namespace, "namespace 'contextd-payload', expected "
                                         "'contextd-image'"),
    "other OS version": (other_os_version, "the manifest is for VERSION_ID=9.4 but "
                                           "/etc/os-release says VERSION_ID=9.5"),
    "missing signature": (missing_signature, "no /etc/contextd/image.json.sig"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacked_manifest_is_unverified_and_image_targets_do_not_match(signed, ikeys, attack):
    site = signed
    do, reason = ATTACKS[attack]
    do(site, ikeys)
    count("tamperings rejected")
    code, _, err = site.run("file:%s" % site.bundle(image_payload(image="atlas-*")))
    image = site.report()["host"]["image"]
    assert image["verified"] is False, image
    assert reason in image["reason"], image["reason"]
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "image manifest did not verify" in err
    assert site.report()["outcome"] == "rejected"
    assert not (site.root / "etc/cvmfs/default.local").exists()
    # the digest names the manifest in any case, for a catalogue of what booted
    assert image["manifest_sha256"] == hashlib.sha256((site.root / MANIFEST).read_bytes()
                                                      ).hexdigest()
    if attack != "other OS version":        # only a good signature lets the manifest in
        assert image["manifest"] is None and image["signer"] is None


def test_a_carrier_cannot_name_the_image():
    """Metadata (EC2 tags, a context.sh) is not the signed manifest: its `image` is dropped."""
    facts = facts_for("S", {"image": "atlas-worker", "image_version": "1", "cloud": "ec2"},
                      "h", None)
    assert facts["image"] is None and facts["image_version"] is None and facts["cloud"] == "ec2"


def test_a_fifo_for_a_manifest_does_not_hang_the_boot(signed):
    site = signed
    (site.root / MANIFEST).unlink()
    os.mkfifo(str(site.root / MANIFEST))
    # no writer ever comes: a blocking open() would wait for one forever
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    image = site.report()["host"]["image"]
    assert image["verified"] is False and "is not a regular file" in image["reason"]


def test_a_symlink_out_of_the_root_is_resolved_inside_it(signed, tmp_path):
    """An image's absolute symlink means the image's own path (as chroot would), never the
    factory's or the hypervisor's file of that name."""
    site = signed
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("image.json", "image.json.sig"):
        (outside / name).write_bytes((site.root / "etc/contextd" / name).read_bytes())
        (site.root / "etc/contextd" / name).unlink()
    os.symlink(str(outside / "image.json"), str(site.root / MANIFEST))
    os.symlink(str(outside / "image.json.sig"), str(site.root / SIGNATURE))
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    image = site.report()["host"]["image"]
    assert image["verified"] is False and image["reason"].startswith("no /etc/contextd/")


def test_deeply_nested_signed_json_is_a_reason_not_a_crash(signed, ikeys):
    site = signed
    (site.root / MANIFEST).write_bytes(b"[" * 30000 + b"]" * 30000)
    hand_sign(site.root / MANIFEST, ikeys["factory"][0])
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    image = site.report()["host"]["image"]
    assert image["verified"] is False and "not JSON" in image["reason"]


def test_a_huge_manifest_is_not_read(signed):
    site = signed
    (site.root / MANIFEST).write_bytes(b" " * (65 * 1024))
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    image = site.report()["host"]["image"]
    assert image["verified"] is False and "larger than 65536 bytes" in image["reason"]
    assert len(json.dumps(site.report())) < 64 * 1024


def test_a_signed_manifest_of_another_schema_is_not_believed(signed, ikeys):
    site = signed
    path: Path = site.root / MANIFEST
    doc = json.loads(path.read_bytes())
    doc["schema"] = "contextd.image/v2"
    path.write_text(json.dumps(doc))
    hand_sign(path, ikeys["factory"][0])
    code, _, err = site.run("file:%s" % site.bundle(image_payload(image="atlas-*")))
    assert code == 1, err
    assert "is not a contextd.image/v1 manifest" in site.report()["host"]["image"]["reason"]
