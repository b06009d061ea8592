"""Attacks on the once-per-instance state: replay, rollback, and an applied payload the site
has since revoked or disallowed (DESIGN section 8, issue 12 point 5).

Real peers: payloads signed with ssh-keygen (through `contextd sign`), SSH certificates from
`ssh-keygen -s`, `contextd run` as a subprocess, and stand-ins for systemctl & co. first on
PATH that log their argv (conftest.fake_commands).
"""

import json
import subprocess
import sys
import time

import pytest

from conftest import fake_commands
from contextd.trust import sshsig

SERIAL = 2026112401            # base_payload's serial, above the fixture policy's min_serial
MASK = "systemctl mask --runtime --now --no-block condor.service"
START = "systemctl enable --now --no-block condor"


class Machine:
    """The scratch site as one instance (a fixed machine-id), runs with fake commands."""

    def __init__(self, site, tmp_path):
        self.site = site
        (site.root / "etc").mkdir(exist_ok=True)
        (site.root / "etc/machine-id").write_text("0123456789abcdef\n")
        self.log = tmp_path / "calls.log"
        self.env = fake_commands(tmp_path / "bin", self.log)

    def run(self, bundle, *extra):
        """`contextd run` of a bundle file, or of a source spec (a str)."""
        s = self.site
        if self.log.exists():
            self.log.unlink()
        source = bundle if isinstance(bundle, str) else "file:%s" % bundle
        proc = subprocess.run(
            [sys.executable, "-m", "contextd", "run", "--source", source,
             "--policy", str(s.policy_path), "--root", str(s.root), "--run-dir", str(s.run_dir),
             "--state-dir", str(s.state_dir), "--spool-dir", str(s.spool_dir), *extra],
            capture_output=True, text=True, env=self.env, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr

    def calls(self):
        return self.log.read_text().splitlines() if self.log.exists() else []

    def bundle(self, doc, name, key="atlas"):
        return self.site.sign(self.site.payload_file(doc, name=name), key)


@pytest.fixture
def machine(site, tmp_path):
    return Machine(site, tmp_path)


def assert_one_line(err):
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def applied_state(site):
    return json.loads((site.state_dir / "applied.json").read_text())


# --- no rollback: a lower serial, or the same serial with another digest --------------------


def test_lower_serial_is_rejected_after_a_higher_one(machine, site, payload_doc):
    old = machine.bundle(dict(payload_doc, serial=SERIAL), "old.yaml")
    new_doc = dict(payload_doc, serial=SERIAL + 100,
                   cvmfs=dict(payload_doc["cvmfs"], quota_limit_mb=30000))
    new = machine.bundle(new_doc, "new.yaml")
    assert machine.run(old, "--run-commands")[0] == 0
    assert machine.run(new, "--run-commands")[0] == 0
    assert site.report()["outcome"] == "applied"
    before = site.snapshot()

    code, _, err = machine.run(old, "--run-commands")      # still signed, still valid
    assert code == 1, err
    assert_one_line(err)
    rep = site.report()
    assert rep["outcome"] == "rejected" and rep["stage"] == "authorize"
    assert ("serial %d is lower than serial %d already applied on this machine for VO atlas"
            % (SERIAL, SERIAL + 100)) in rep["message"]
    assert rep["message"] in err
    assert site.snapshot() == before                       # nothing rolled back
    assert machine.calls() == []                           # the applied payload is still good
    assert "held" not in rep
    assert applied_state(site)["serials"]["atlas"]["serial"] == SERIAL + 100


def test_same_serial_with_another_digest_is_rejected(machine, site, payload_doc):
    first = machine.bundle(payload_doc, "first.yaml")
    other = dict(payload_doc, cvmfs=dict(payload_doc["cvmfs"], quota_limit_mb=30000))
    second = machine.bundle(other, "second.yaml")
    assert machine.run(first)[0] == 0
    before = site.snapshot()
    code, _, err = machine.run(second)
    assert code == 1, err
    assert_one_line(err)
    rep = site.report()
    assert rep["outcome"] == "rejected" and rep["stage"] == "authorize"
    assert "serial %d" % SERIAL in rep["message"] and "another payload" in rep["message"]
    assert site.snapshot() == before


def test_each_vo_has_its_own_floor_and_a_new_instance_id_keeps_it(machine, site, payload_doc):
    """The instance id comes from the carrier (context.sh VMID) or the metadata service,
    which whoever replays an old payload may control as well: a new id re-applies, but the
    floors stay."""
    high = machine.bundle(dict(payload_doc, serial=SERIAL + 100), "high.yaml")
    low = machine.bundle(payload_doc, "low.yaml")
    cms = {"contextd": "payload/v1", "vo": "cms", "serial": 5,
           "not_before": payload_doc["not_before"], "expires": payload_doc["expires"],
           "cvmfs": {"repositories": ["cms.cern.ch"]}}
    assert machine.run(high)[0] == 0
    code, _, err = machine.run(machine.bundle(cms, "cms.yaml", key="cms"))
    assert code == 0, err                                 # serial 5 of cms: another VO's floor
    assert machine.run(low)[0] == 1                       # atlas's floor is still there
    (site.root / "etc/machine-id").write_text("fedcba9876543210\n")   # a new instance id
    code, _, err = machine.run(low)
    assert code == 1 and "is lower than serial %d" % (SERIAL + 100) in err, err
    code, _, err = machine.run(high)
    assert code == 0 and site.report()["outcome"] == "applied", err   # not unchanged


# --- unchanged is held against today's policy, not the clock -------------------------------


def test_unchanged_with_unchanged_policy_stays_unchanged(machine, site):
    bundle = machine.bundle(None, "p.yaml")
    assert machine.run(bundle, "--run-commands")[0] == 0
    assert START in machine.calls()
    before = site.snapshot()
    code, _, err = machine.run(bundle, "--run-commands")
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "unchanged" and "held" not in rep
    assert machine.calls() == [] and site.snapshot() == before


def _fingerprint(private_key):
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", "%s.pub" % private_key],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def _revoke_key(site):
    fingerprint = _fingerprint(site.keys["atlas"][0])
    site.policy["trust"]["atlas"]["revoked"] = {"ssh_fingerprints": [fingerprint]}


def _raise_min_serial(site):
    site.policy["trust"]["atlas"]["min_serial"] = SERIAL + 1


def _revoke_serial(site):
    site.policy["trust"]["atlas"]["revoked"] = {"serials": [SERIAL]}


def _remove_allow_rule(site):
    site.policy["trust"]["atlas"]["allow"]["htcondor"]["central_managers"] = ["other-cm.cern.ch"]


def _untrust_section(site):
    del site.policy["trust"]["atlas"]["allow"]["htcondor"]


@pytest.mark.parametrize(("change", "stage", "needle"), [
    (_revoke_key, "verify", "revoked"),
    (_raise_min_serial, "authorize", "older than site backstop"),
    (_revoke_serial, "authorize", "was revoked by the site"),
    (_remove_allow_rule, "authorize", "central_manager"),
    (_untrust_section, "authorize", "does not allow VO 'atlas' to configure htcondor"),
], ids=["revoked-key", "min-serial", "revoked-serial", "allow-rule", "section"])
def test_unchanged_payload_the_site_now_refuses_is_rejected_and_condor_held(
        machine, site, change, stage, needle):
    bundle = machine.bundle(None, "p.yaml")
    assert machine.run(bundle, "--run-commands")[0] == 0
    before = site.snapshot()
    change(site)
    site.write_policy()
    code, _, err = machine.run(bundle, "--run-commands")
    assert code == 1, err
    assert_one_line(err)
    rep = site.report()
    assert rep["outcome"] == "rejected" and rep["stage"] == stage, rep
    assert needle in rep["message"]
    assert machine.calls() == [MASK]                       # condor does not start this boot
    assert rep["held"] == ["condor.service"]
    assert {"plugin": "htcondor", "kind": "command", "target": MASK,
            "status": "ran"}.items() <= rep["actions"][-1].items()
    assert site.snapshot() == before                       # nothing written or removed
    # Every boot holds it again (a runtime mask vanishes at reboot) until the policy or
    # the payload changes.
    code, _, err = machine.run(bundle, "--run-commands")
    assert code == 1 and machine.calls() == [MASK]


def test_hold_under_an_alternate_root_needs_run_commands(machine, site):
    bundle = machine.bundle(None, "p.yaml")
    assert machine.run(bundle)[0] == 0
    _raise_min_serial(site)
    site.write_policy()
    code, _, err = machine.run(bundle)                     # --root, no --run-commands
    assert code == 1, err
    rep = site.report()
    assert machine.calls() == [] and rep["held"] == []
    assert rep["actions"][-1]["target"] == MASK and rep["actions"][-1]["status"] == "skipped"


def test_payload_without_services_holds_nothing(machine, site, payload_doc):
    del payload_doc["htcondor"]
    bundle = machine.bundle(payload_doc, "p.yaml")
    assert machine.run(bundle, "--run-commands")[0] == 0
    _raise_min_serial(site)
    site.write_policy()
    code, _, err = machine.run(bundle, "--run-commands")
    assert code == 1, err
    assert machine.calls() == [] and site.report()["held"] == []


def test_unchanged_after_the_ssh_certificate_expired_stays_unchanged(machine, site, tmp_path):
    """DESIGN section 8: no re-verification against a clock that moved past a validity."""
    problem = sshsig.certificate_support_problem()
    if problem is not None:
        pytest.skip(problem[0])
    keys = tmp_path / "certs"
    keys.mkdir()
    for name in ("ca", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                        str(keys / name)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-s", str(keys / "ca"), "-I", "atlas-short",
                    "-n", "atlas-contextd", "-V", "-1h:+4s", str(keys / "user.pub")], check=True)
    valid_until = time.time() + 4
    site.policy["clock_skew"] = "0s"
    site.policy["trust"]["atlas"]["signers"] = [
        {"id": "atlas-ca", "ssh_ca": (keys / "ca.pub").read_text().strip(),
         "principals": ["atlas-contextd"]}]
    site.write_policy()
    payload = site.payload_file(None, name="cert.yaml")
    bundle = tmp_path / "cert.bundle"
    code, _, err = site.cli("sign", "--key", str(keys / "user"), "--cert",
                            str(keys / "user-cert.pub"), str(payload), "-o", str(bundle))
    assert code == 0, err
    code, _, err = machine.run(bundle, "--run-commands")
    assert code == 0, err
    time.sleep(max(0.0, valid_until - time.time()) + 1.5)
    code, _, err = machine.run(bundle, "--run-commands")
    assert code == 0, err
    assert site.report()["outcome"] == "unchanged" and machine.calls() == []
    # ... while revoking its key id still takes effect.
    site.policy["trust"]["atlas"]["revoked"] = {"ssh_cert_key_ids": ["atlas-short"]}
    site.write_policy()
    code, _, err = machine.run(bundle, "--run-commands")
    assert code == 1 and "revoked" in err and machine.calls() == [MASK]


# --- the state file is input --------------------------------------------------------------


def test_state_written_by_the_previous_format_is_read(machine, site, payload_doc):
    """applied.json as contextd wrote it before serial floors: still `unchanged`, then
    upgraded, and from then on a lower serial is refused."""
    bundle = machine.bundle(payload_doc, "p.yaml")
    assert machine.run(bundle)[0] == 0
    digest = site.report()["payload"]["sha256"]
    site.state_dir.joinpath("applied.json").write_text(json.dumps(
        {"instance": "machine:0123456789abcdef", "payload_sha256": digest, "serial": SERIAL}))
    code, _, err = machine.run(bundle)
    assert code == 0, err
    assert site.report()["outcome"] == "unchanged"
    assert applied_state(site)["serials"] == {"atlas": {"serial": SERIAL,
                                                        "payload_sha256": digest}}
    code, _, err = machine.run(machine.bundle(dict(payload_doc, serial=SERIAL - 1), "low.yaml"))
    assert code == 1 and "is lower than serial %d" % SERIAL in err


def _record(**changes):
    doc = {"instance": "machine:0123456789abcdef", "payload_sha256": "ab" * 32,
           "serial": SERIAL, "vo": "atlas", "applied_at": "2026-11-24T00:00:00Z",
           "sections": ["cvmfs"], "serials": {"atlas": {"serial": SERIAL,
                                                      "payload_sha256": "ab" * 32}}}
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("content", [
    b"{not json", b"", b"[]", b"null", b"\xff\xfe", b"[" * 100000, b"[" * 50000,
    _record(instance=5), _record(payload_sha256=[]), _record(payload_sha256="x"),
    _record(serial=None), _record(serial=True), _record(serial=-1), _record(vo="a b"),
    _record(serials=[]), _record(serials={"atlas": {"serial": "999"}}),
    _record(serials={"atlas": {"serial": 1e400}}), _record(serials={"atlas": 3}),
    _record(serials={"atlas": {"serial": 1}}), _record(sections="htcondor"),
    _record(sections=["../x"]), _record(applied_at="yesterday"),
], ids=["not-json", "empty", "list", "null", "not-utf8", "too-big", "too-deep",
        "instance-type", "digest-type", "digest-grammar", "serial-missing", "serial-bool",
        "serial-negative", "vo-grammar", "serials-type", "serial-string", "serial-float",
        "serial-record-type", "serial-record-digest", "sections-type", "section-name",
        "applied-at"])
def test_malformed_state_is_refused_clearly(machine, site, content):
    bundle = machine.bundle(None, "p.yaml")
    site.state_dir.mkdir(mode=0o700)
    (site.state_dir / "applied.json").write_bytes(content)
    code, _, err = machine.run(bundle, "--run-commands")
    assert code == 1, err
    assert_one_line(err)
    assert str(site.state_dir / "applied.json") in err and "remove it" in err
    rep = site.report()
    assert rep["outcome"] == "rejected" and rep["stage"] == "state"
    assert machine.calls() == [] and not (site.root / "etc/cvmfs").exists()


def test_unsigned_legacy_user_data_has_no_serial_to_floor(machine, site, payload_doc):
    """amiconfig (opted in, unsigned) carries no serial anyone vouches for: it neither sets
    nor meets a floor, so changed user-data still applies on the next boot."""
    from fakes_sources import Imds
    from test_legacy import AMICONFIG, opted_in

    site.write_policy(opted_in(site.keys))
    imds = Imds()
    try:
        imds.user_data(machine.bundle(payload_doc, "signed.yaml").read_bytes())
        code, _, err = machine.run("ec2:%s" % imds.url)
        assert code == 0 and site.report()["outcome"] == "applied", err
        for data in (AMICONFIG, AMICONFIG.replace(b"sft.cern.ch", b"atlas-condb.cern.ch")):
            imds.user_data(data)
            code, _, err = machine.run("ec2:%s" % imds.url)
            assert code == 0, err
            assert site.report()["outcome"] == "applied" and site.report()["payload"]["unsigned"]
        code, _, err = machine.run("ec2:%s" % imds.url)
        assert code == 0 and site.report()["outcome"] == "unchanged", err
    finally:
        imds.close()
    assert applied_state(site)["serials"]["atlas"]["serial"] == SERIAL


# --- fuzz: applied.json of any JSON shape is a History or a StateError ----------------------

@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_state_that_is_not_a_regular_file_is_refused_without_blocking(machine, site, kind):
    import os

    bundle = machine.bundle(None, "p.yaml")
    site.state_dir.mkdir(mode=0o700)
    target = site.state_dir / "applied.json"
    os.mkfifo(target) if kind == "fifo" else target.mkdir()
    start = time.monotonic()
    code, _, err = machine.run(bundle)
    assert time.monotonic() - start < 30
    assert code == 1, err
    assert_one_line(err)
    assert str(target) in err and site.report()["stage"] == "state"
