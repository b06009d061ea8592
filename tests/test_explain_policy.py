"""`contextd explain` and `contextd policy check`."""

import json

from conftest import REPO


def test_explain_accepted_shows_every_change_and_no_secret(site, payload_doc):
    payload_doc["cvmfs"]["http_proxy"] = "http://vo-squid.cern.ch:3128"
    b = site.bundle(payload_doc)
    code, out, err = site.cli("explain", str(b), "--policy", str(site.policy_path))
    assert code == 0, err
    assert "signature: OK" in out and "verdict:   ACCEPTED" in out
    assert "OVERRIDDEN cvmfs.http_proxy" in out
    assert "ALLOWED    cvmfs.repositories" in out
    assert "/etc/condor/tokens.d/contextd.token (mode 0600, secret)" in out
    assert "systemctl enable --now --no-block condor" in out
    assert payload_doc["htcondor"]["token"] not in out
    assert site.snapshot() == {}


def test_explain_rejected_lists_denials_and_reasons(site, payload_doc):
    payload_doc["cvmfs"]["repositories"] = ["atlas.cern.ch", "cms.cern.ch"]
    payload_doc["htcondor"]["central_manager"] = "evil-cm.example.com"
    b = site.bundle(payload_doc)
    code, out, _ = site.cli("explain", str(b), "--policy", str(site.policy_path), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["verdict"] == "rejected"
    denied = {row["field"] for row in doc["changes"] if row["verdict"] == "denied"}
    assert denied == {"cvmfs.repositories[1]", "htcondor.central_manager"}
    assert len(doc["violations"]) == 2


def test_explain_with_fact_for_another_site(site, payload_doc):
    b = site.bundle(payload_doc)
    code, out, err = site.cli("explain", str(b), "--policy", str(site.policy_path),
                              "--fact", "site=OTHER")
    assert code == 1 and "do not match this machine" in out
    code, out, err = site.cli("explain", str(b), "--policy", str(site.policy_path),
                              "--fact", "bogus=1")
    assert code == 2 and "bogus" in err


def test_explain_bad_signature(site):
    b = site.bundle(key="stranger")
    code, out, _ = site.cli("explain", str(b), "--policy", str(site.policy_path))
    assert code == 1 and "signature: REJECTED" in out and "not a trusted signer" in out


def test_explain_reads_isos(site):
    iso = site.tmp / "c.iso"
    site.cli("pack", "iso", str(site.bundle()), "-o", str(iso))
    code, out, err = site.cli("explain", str(iso), "--policy", str(site.policy_path))
    assert code == 0, err
    assert "verdict:   ACCEPTED" in out


def test_policy_check_valid_prints_normalised(site):
    code, out, err = site.cli("policy", "check", str(site.policy_path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["clock_skew"] == "5m" and doc["trust"]["atlas"]["threshold"] == 1
    assert doc["trust"]["atlas"]["signers"][0]["fingerprint"].startswith("SHA256:")
    assert doc["trust"]["atlas"]["allowed_sections"] == ["cvmfs", "htcondor", "puppet",
                                                         "report"]


def test_example_policy_is_valid():
    code = __import__("conftest").run_cli(["policy", "check", str(REPO / "examples/policy.yaml")])
    assert code[0] == 0, code[2]


def test_policy_check_errors(site):
    cases = [
        ({"trust": {"atlas": {"signers": [{"id": "x", "ssh_key": "ssh-ed25519 nope"}]}}},
         "not an OpenSSH public key"),
        ({"trust": {"atlas": {"signers": [{"id": "x"}]}}}, "exactly one of ssh_key"),
        ({"trust": {"atlas": {"threshold": 3, "signers": [
            {"id": "x", "ssh_key": site.keys["atlas"][1]}]}}}, "only 1 signers"),
        ({"clock_skew": "5 minutes"}, "not a duration"),
        ({"sources": ["cdrom"]}, "not a known source"),
        ({"trust": {"atlas": {"signers": [{"id": "x", "ssh_key": site.keys["atlas"][1]}],
                              "allow": {"cvmfs": {"repositories": "atlas.cern.ch"}}}}},
         "must be a list"),
        ({"trust": {"atlas": {"signers": [{"id": "x", "ssh_key": site.keys["atlas"][1]}],
                              "allow": {"nosuch": {}}}}}, "no contextd plugin"),
        ({"site_settings": {"cvmfs": {"http_proxy": "http://a'b"}}}, "http_proxy"),
    ]
    import yaml
    for change, needle in cases:
        doc = {"version": 1, "site": "S"}
        doc.update(change)
        site.policy_path.write_text(yaml.safe_dump(doc))
        code, out, err = site.cli("policy", "check", str(site.policy_path))
        assert code == 2, (change, out, err)
        assert needle in err, (needle, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
