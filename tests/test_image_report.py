"""The image in every report, and image targets (issue 16, DESIGN sections 7 and 11).

A scratch root is signed with `contextd image sign` (or by hand with `ssh-keygen -Y sign`),
then `contextd run --root` reports `host.image` and matches `image`/`image_version` targets.
"""

import hashlib
import json


from conftest import run_cli
from image_fixtures import (MANIFEST, SIGNATURE, hand_sign, image_payload,
                            make_root, trusting)
from test_boot_imports import FORBIDDEN, imported_by


def test_report_carries_the_verified_manifest(signed):
    site = signed
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    image = site.report()["host"]["image"]
    data = (site.root / MANIFEST).read_bytes()
    assert image["verified"] is True and image["signer"] == "cern-image-factory"
    assert "reason" not in image
    assert image["manifest"] == json.loads(data)
    assert image["manifest_sha256"] == hashlib.sha256(data).hexdigest()
    assert image["signature"] == (site.root / SIGNATURE).read_text()
    assert (image["os_id"], image["os_version_id"], image["os_image_id"],
            image["os_image_version"], image["os_build_id"]) == (
        "rocky", "9.4", "atlas-worker", "2026.12.1", "b42")
    assert "image_id" in image                  # the platform's, as before


def test_image_targets_match_a_verified_manifest(signed):
    site = signed
    doc = image_payload(image="atlas-*", image_version="2026.12.*")
    code, _, err = site.run("file:%s" % site.bundle(doc))
    assert code == 0, err
    assert site.report()["outcome"] == "applied"


def test_image_target_that_names_another_image_is_rejected(signed):
    site = signed
    code, _, err = site.run("file:%s" % site.bundle(image_payload(image="cms-*")))
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "'image': 'atlas-worker'" in err
    assert site.report()["outcome"] == "rejected"


def test_a_manifest_signed_by_hand_with_ssh_keygen_is_accepted(site, ikeys):
    """A site without contextd on its image factory: JSON written by hand, not canonical,
    signed with ssh-keygen -Y sign -n contextd-image."""
    make_root(site.root)
    manifest = site.root / MANIFEST
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({
        "schema": "contextd.image/v1", "site": "TEST-SITE", "name": "hand-made",
        "version": "7", "build_id": None, "built_at": "2026-12-01T00:00:00Z",
        "os_release": {"ID": "rocky", "VERSION_ID": "9.4", "IMAGE_ID": "atlas-worker",
                       "IMAGE_VERSION": "2026.12.1"},
        "packages": {"db": None, "count": 0, "sha256": None}, "contextd_version": None},
        indent=4) + "\n")
    hand_sign(manifest, ikeys["factory"][0])
    site.write_policy(trusting(site.policy, ikeys["factory"][1]))
    code, _, err = site.run("file:%s" % site.bundle(image_payload(image="hand-made",
                                                                  image_version="7")))
    assert code == 0, err
    image = site.report()["host"]["image"]
    assert image["verified"] is True and image["manifest"]["name"] == "hand-made"


def test_an_unsigned_image_is_reported_and_plain_payloads_still_apply(site):
    make_root(site.root)
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    image = site.report()["host"]["image"]
    assert image["verified"] is False and image["manifest"] is None
    assert image["reason"].startswith("no /etc/contextd/image.json")
    assert image["os_image_id"] == "atlas-worker"


def test_image_show_says_what_a_boot_would_report(signed, tmp_path):
    site = signed
    code, out, err = run_cli(["image", "show", "--root", str(site.root), "--policy",
                              str(site.policy_path), "--json"])
    assert code == 0, err
    shown = json.loads(out)
    assert shown["verified"] is True and shown["signer"] == "cern-image-factory"
    assert shown["manifest"]["name"] == "atlas-worker"
    code, out, err = run_cli(["image", "show", "--root", str(site.root), "--policy",
                              str(site.policy_path)])
    assert code == 0 and "verified:  yes, signed by cern-image-factory" in out
    # without a policy (the root has none) nothing can verify: exit 1, and why
    code, out, _ = run_cli(["image", "show", "--root", str(site.root)])
    assert code == 1 and "lists no image signers" in out
    code, _, err = run_cli(["image", "show", "--root", str(site.root), "--policy",
                            str(tmp_path / "missing.yaml")])
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_policy_image_section_is_checked_and_printed(site, ikeys):
    site.write_policy(trusting(site.policy, ikeys["factory"][1]))
    code, out, err = run_cli(["policy", "check", str(site.policy_path), "--json"])
    assert code == 0, err
    (signer,) = json.loads(out)["image"]["signers"]
    assert signer["id"] == "cern-image-factory" and signer["fingerprint"].startswith("SHA256:")
    for bad, words in (({"signers": [{"id": "x", "ssh_key": "not a key"}]}, "ssh_key"),
                       ({"signers": []}, "non-empty"),
                       ({"signers": [{"id": "x", "ssh_key": ikeys["factory"][1],
                                      "principals": ["p"]}]}, "unknown key"),
                       ({"signers": [{"id": "x", "ssh_key": ikeys["factory"][1]},
                                     {"id": "y", "ssh_key": ikeys["factory"][1]}]}, "twice"),
                       ({"keys": []}, "unknown key")):
        site.write_policy(dict(site.policy, image=bad))
        code, _, err = run_cli(["policy", "check", str(site.policy_path)])
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (bad, err)


def test_explain_takes_image_facts(site):
    bundle = site.bundle(image_payload(image="atlas-*"))
    code, out, err = run_cli(["explain", str(bundle), "--policy", str(site.policy_path),
                              "--fact", "image=atlas-worker", "--fact", "image_version=1"])
    assert code == 0, out + err
    code, out, _ = run_cli(["explain", str(bundle), "--policy", str(site.policy_path)])
    assert code == 1 and "do not match" in out


def test_boot_verifies_the_image_without_the_factory_side(signed):
    """The boot reads and verifies the manifest; it imports neither the signer nor the
    package lister (contextd.image.build, .packages) nor contextd.vo."""
    site = signed
    code, err, modules = imported_by(site, [
        "run", "--source", "file:%s" % site.bundle(), "--policy", str(site.policy_path),
        "--root", str(site.root), "--run-dir", str(site.run_dir), "--state-dir",
        str(site.state_dir), "--spool-dir", str(site.spool_dir)], None)
    assert code == 0, err
    assert site.report()["host"]["image"]["verified"] is True
    assert "contextd.image.identity" in modules
    assert [m for m in modules if FORBIDDEN.match(m) or m in (
        "contextd.image.build", "contextd.image.packages", "contextd.image.tool")] == []


def test_explain_verifies_the_image_under_its_root(signed):
    site = signed
    bundle = site.bundle(image_payload(image="atlas-*", image_version="2026.12.*"))
    code, out, err = run_cli(["explain", str(bundle), "--policy", str(site.policy_path),
                              "--root", str(site.root)])
    assert code == 0, out + err
    assert "image=atlas-worker" in out and "image_version=2026.12.1" in out
