"""Bad input gets one clear line, the documented exit code, and leaves the root untouched."""

import base64
import os
import subprocess

import pytest
import yaml

from conftest import dump_payload, utc


def assert_rejected(site, result, code, *needles):
    got, out, err = result
    assert got == code, (got, out, err)
    assert "Traceback" not in err + out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("contextd: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert site.snapshot() == {}, "something was written under the root"
    # Nothing applied or remembered: the state dir holds only the lock every run takes.
    assert sorted(p.name for p in site.state_dir.iterdir()) == ["lock"]
    return lines[0]


def test_tampered_bundle(site):
    bundle = site.bundle()
    text = bundle.read_text()
    payload = (site.tmp / "payload.yaml").read_bytes().replace(b"atlas-cm", b"evil0-cm")
    b64 = base64.encodebytes(payload).decode()
    begin = "-----BEGIN CONTEXTD PAYLOAD-----\n"
    start = text.index(begin) + len(begin)
    end = text.index("-----END CONTEXTD PAYLOAD-----")
    bundle.write_text(text[:start] + b64 + text[end:])
    assert_rejected(site, site.run("file:%s" % bundle), 1, "does not match the payload")
    assert site.report()["outcome"] == "rejected"
    assert site.report()["stage"] == "verify"


def test_unknown_key(site):
    bundle = site.bundle(key="stranger")
    assert_rejected(site, site.run("file:%s" % bundle), 1, "not a trusted signer")


def test_key_of_another_vo(site, payload_doc):
    bundle = site.bundle(payload_doc, key="cms")     # says atlas, signed by cms's key
    assert_rejected(site, site.run("file:%s" % bundle), 1, "signed only by signers of 'cms'")


def test_expired_payload(site, payload_doc):
    payload_doc["not_before"] = utc(-20)
    payload_doc["expires"] = utc(-2)
    assert_rejected(site, site.run("file:%s" % site.bundle(payload_doc)), 1, "expired at")


def test_not_yet_valid_and_too_long_listed_together(site, payload_doc):
    payload_doc["not_before"] = utc(2)
    payload_doc["expires"] = utc(60)
    line = assert_rejected(site, site.run("file:%s" % site.bundle(payload_doc)), 1,
                           "not valid before", "longer than the site maximum")
    assert "2 violations" in line


def test_repository_outside_allow_list_lists_every_violation(site, payload_doc):
    payload_doc["cvmfs"]["repositories"] = ["atlas.cern.ch", "cms.cern.ch", "lhcb.cern.ch"]
    payload_doc["htcondor"]["role"] = "submit"
    line = assert_rejected(site, site.run("file:%s" % site.bundle(payload_doc)), 1,
                           "cvmfs.repositories[1] 'cms.cern.ch'",
                           "cvmfs.repositories[2] 'lhcb.cern.ch'", "htcondor.role")
    denied = site.report()["denied"]
    assert len(denied) == 3 and "3 violations" in line


def test_section_the_site_does_not_allow(site, payload_doc):
    del site.policy["trust"]["atlas"]["allow"]["puppet"]
    site.write_policy()
    assert_rejected(site, site.run("file:%s" % site.bundle(payload_doc)), 1,
                    "does not allow VO 'atlas' to configure puppet")


def test_wrong_site_target(site, payload_doc):
    payload_doc["targets"] = [{"site": "OTHER-*"}, {"site": "TEST-SITE", "cloud": "ec2"}]
    assert_rejected(site, site.run("file:%s" % site.bundle(payload_doc)), 1,
                    "do not match this machine")


def test_serial_below_backstop_and_revoked(site, payload_doc):
    payload_doc["serial"] = 2026100100
    site.policy["trust"]["atlas"]["revoked"] = {"serials": [2026100100]}
    site.write_policy()
    assert_rejected(site, site.run("file:%s" % site.bundle(payload_doc)), 1,
                    "older than site backstop", "revoked")


@pytest.mark.parametrize(("text", "needle"), [
    (b"version: [1\n", "not valid YAML"),
    (b"version: 1\nversion: 1\nsite: X\n", "duplicate key 'version'"),
    (b"version: 1\nsite: X\nbogus: 1\n", "unknown key 'bogus'"),
    (b"version: 2\nsite: X\n", "version"),
    (b"version: 1\nsite: &s X\nsources: [*s]\n", "anchor"),
])
def test_broken_policy_exits_2(site, text, needle):
    site.policy_path.write_bytes(text)
    assert_rejected(site, site.run("file:/nonexistent"), 2, needle)
    # Only the report that ends `status --wait`: nothing was trusted, fetched or applied.
    assert sorted(p.name for p in site.run_dir.iterdir()) == ["report.json"]
    rep = site.report()
    assert (rep["outcome"], rep["stage"], rep["exit_code"]) == ("failed", "policy", 2)
    assert needle in rep["message"]


def test_group_writable_policy_exits_2(site):
    os.chmod(site.policy_path, 0o664)
    assert_rejected(site, site.run("file:%s" % site.bundle()), 2, "writable by group",
                    "chmod go-w")


def test_missing_policy_exits_2(site):
    site.policy_path.unlink()
    assert_rejected(site, site.run("file:/x"), 2, "does not exist")


def test_truncated_iso(site):
    iso = site.tmp / "context.iso"
    assert site.cli("pack", "iso", str(site.bundle()), "-o", str(iso))[0] == 0
    data = iso.read_bytes()
    for size in (0, 2048, 17 * 2048, len(data) // 2):
        iso.write_bytes(data[:size])
        assert_rejected(site, site.run("iso:%s" % iso), 1, str(iso))


def test_bundle_with_two_payload_blocks(site):
    bundle = site.bundle()
    text = bundle.read_text()
    end = "-----END CONTEXTD PAYLOAD-----\n"
    block = text[text.index("-----BEGIN CONTEXTD PAYLOAD-----"):text.index(end) + len(end)]
    bundle.write_text(text.replace(block, block + block))
    assert_rejected(site, site.run("file:%s" % bundle), 1, "2 payload blocks")


def test_bundle_with_unknown_block_and_no_signature(site):
    bundle = site.bundle()
    text = bundle.read_text()
    bundle.write_text(text + "-----BEGIN PGP SIGNATURE-----\nAAAA\n-----END PGP SIGNATURE-----\n")
    assert_rejected(site, site.run("file:%s" % bundle), 1, "unknown block 'PGP SIGNATURE'")
    bundle.write_text(text[:text.index("-----BEGIN SSH SIGNATURE-----")])
    assert_rejected(site, site.run("file:%s" % bundle), 1, "no signature block")


def signed_raw(site, raw: bytes):
    """A payload with exact bytes, signed by the real ssh-keygen (contextd sign refuses it)."""
    payload = site.payload_file(raw=raw)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "contextd-payload", "-f",
                    str(site.keys["atlas"][0]), str(payload)], check=True)
    bundle = site.tmp / "hand.bundle"
    bundle.write_text("#contextd-signed-v1\n-----BEGIN CONTEXTD PAYLOAD-----\n"
                      + base64.encodebytes(raw).decode()
                      + "-----END CONTEXTD PAYLOAD-----\n"
                      + (site.tmp / "payload.yaml.sig").read_text())
    return bundle


def test_payload_with_duplicate_keys(site, payload_doc):
    raw = dump_payload(payload_doc) + b"vo: cms\n"
    assert_rejected(site, site.run("file:%s" % signed_raw(site, raw)), 1, "duplicate key 'vo'")


def test_payload_with_aliases(site, payload_doc):
    raw = dump_payload(payload_doc).replace(b"  repositories:\n", b"  repositories: &r\n") \
        + b"extra: *r\n"
    assert_rejected(site, site.run("file:%s" % signed_raw(site, raw)), 1, "not allowed")


def test_payload_without_type_tag(site, payload_doc):
    del payload_doc["contextd"]
    raw = dump_payload(payload_doc)
    assert_rejected(site, site.run("file:%s" % signed_raw(site, raw)), 1,
                    "not a contextd payload")


@pytest.mark.parametrize(("section", "key", "value"), [
    ("cvmfs", "repositories", ["atlas.cern.ch\nCVMFS_SERVER_URL=x"]),
    ("cvmfs", "repositories", ["atlas.cern.ch'; rm -rf /; '"]),
    ("cvmfs", "repositories", ["$(reboot).cern.ch"]),
    ("htcondor", "central_manager", "atlas-cm.cern.ch`id`"),
    ("htcondor", "attributes", {"VMType": "a\"; START = True"}),
    ("puppet", "environment", "production\n[main]"),
])
def test_hostile_values_rejected_before_anything_is_written(site, payload_doc, section, key,
                                                            value):
    payload_doc[section][key] = value
    raw = dump_payload(payload_doc)
    assert_rejected(site, site.run("file:%s" % signed_raw(site, raw)), 1, section)


def test_unknown_section(site, payload_doc):
    payload_doc["ssh"] = {"authorized_keys": ["ssh-ed25519 AAAA"]}
    raw = dump_payload(payload_doc)
    assert_rejected(site, site.run("file:%s" % signed_raw(site, raw)), 1,
                    "no contextd plugin handles section 'ssh'")


def test_naive_timestamp(site, payload_doc):
    payload_doc["expires"] = "2026-12-24 00:00:00"
    raw = dump_payload(payload_doc)
    assert_rejected(site, site.run("file:%s" % signed_raw(site, raw)), 1, "'Z' required")


def test_bad_usage_exits_2(site):
    code, _, err = site.cli("run", "--bogus")
    assert code == 2 and "unrecognized arguments" in err and "Traceback" not in err
    code, _, err = site.cli("run", "--source", "ftp:x", "--policy", str(site.policy_path),
                              "--root", str(site.root))
    assert code == 2 and "ftp" in err


def test_policy_yaml_is_still_a_mapping(site):
    site.policy_path.write_text(yaml.safe_dump(["a", "b"]))
    assert_rejected(site, site.run("file:/x"), 2, "must be a mapping")
