"""VO SSH certificate authorities: certificates made by the real `ssh-keygen -s`, signatures by
`ssh-keygen -Y sign -f KEY-cert.pub`, checked by contextd.

Certificates need cryptography >= 41.0.2. Each test asserts the behaviour on such a version
and the clear version message on older ones (EL9 ships 36), chosen by the installed version.
ssh-keygen is required: without it these tests fail, they do not skip.
"""

import datetime
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from contextd import bundle, policy
from contextd.trust import sshsig
from contextd.errors import SignatureError
from contextd.trust.verify import verify
from contextd.vo import armor

from conftest import base_policy

NS = sshsig.NAMESPACE
CERTS = sshsig.certificate_support_problem() is None
VERSION_MESSAGE = "SSH certificate signatures need python cryptography >= 41.0.2"
PRINCIPAL = "atlas-contextd"
KEY_ID = "atlas-ctx-2026-11"
PAYLOAD = b"contextd: payload/v1\nvo: atlas\nserial: 2026112401\n"


def keygen(*args: str, stdin: Optional[bytes] = None) -> subprocess.CompletedProcess:
    tool = shutil.which("ssh-keygen")
    assert tool, "ssh-keygen (OpenSSH >= 8.1) is required for the SSH CA tests"
    return subprocess.run([tool, *args], input=stdin, capture_output=True, check=True)


class Pki:
    """VO CA keys, a user key and the certificates issued for it (one module-wide set)."""

    def __init__(self, d: Path):
        self.dir = d
        for name, kind in (("ca", "ed25519"), ("ca2", "ecdsa"), ("user", "ed25519"),
                           ("user-rsa", "rsa"), ("other", "ed25519")):
            keygen("-q", "-N", "", "-t", kind, "-C", name, "-f", str(d / name))
        self.certs: Dict[str, Path] = {}

    def pub(self, name: str) -> str:
        return (self.dir / (name + ".pub")).read_text().strip()

    def issue(self, name: str, *options: str, key: str = "user", ca: str = "ca",
              key_id: str = KEY_ID, principals: Optional[str] = PRINCIPAL,
              validity: str = "-1h:+1d", serial: int = 42) -> Path:
        """`ssh-keygen -s CA ...` for a copy of `key`; returns the private key path whose
        KEY-cert.pub sits next to it."""
        target = self.dir / name
        shutil.copy(self.dir / key, target)
        target.chmod(0o600)
        shutil.copy(self.dir / (key + ".pub"), str(target) + ".pub")
        args = ["-q", "-s", str(self.dir / ca), "-I", key_id, "-V", validity, "-z", str(serial)]
        if principals is not None:
            args += ["-n", principals]
        keygen(*args, *options, str(target) + ".pub")
        self.certs[name] = target
        return target

    def sign(self, name: str, payload: bytes = PAYLOAD) -> bytes:
        """The raw SSHSIG blob of `ssh-keygen -Y sign -f NAME-cert.pub` over `payload`."""
        out = keygen("-Y", "sign", "-n", NS, "-f", str(self.certs[name]) + "-cert.pub",
                     stdin=payload).stdout
        return bundle.decode_signatures(out)[0]  # type: ignore[return-value]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    p = Pki(tmp_path_factory.mktemp("sshca"))
    p.issue("valid")
    p.issue("rsa", key="user-rsa", key_id="atlas-rsa-1", serial=7)
    p.issue("expired", validity="20200101:20200201")
    p.issue("future", validity="+2d:+3d")
    p.issue("wrong-principal", principals="cms-contextd")
    p.issue("no-principal", principals=None)
    p.issue("unknown-critical", "-O", "critical:foo@example.com=bar")
    p.issue("known-critical", "-O", "force-command=/bin/true", "-O", "source-address=10.0.0.0/8")
    p.issue("host", "-h", principals="host.example.org")
    p.issue("other-ca", ca="ca2")
    p.issue("revoked-id", key_id="atlas-ctx-2025-07")
    p.issue("second", key="other", key_id="atlas-ctx-other", serial=43)
    return p


def policy_doc(pki: Pki, signers: Optional[List[Dict[str, Any]]] = None,
               revoked: Optional[Dict[str, Any]] = None, threshold: int = 1) -> Dict[str, Any]:
    vo: Dict[str, Any] = {
        "threshold": threshold,
        "signers": signers or [{"id": "atlas-vo-ca", "ssh_ca": pki.pub("ca"),
                                "principals": [PRINCIPAL, "atlas-other"]}],
        "allow": {}}
    if revoked:
        vo["revoked"] = revoked
    return {"version": 1, "site": "TEST-SITE", "clock_skew": "5m", "trust": {"atlas": vo}}


def check(pki: Pki, cert: str, doc: Optional[Dict[str, Any]] = None,
          now: Optional[datetime.datetime] = None):
    """verify() one ssh-keygen signature made with `cert`."""
    pol = policy.parse(doc or policy_doc(pki))
    return verify(PAYLOAD, [pki.sign(cert)], pol,
                  now=now or datetime.datetime.now(datetime.timezone.utc))


def rejected(pki: Pki, cert: str, *needles: str, **kw: Any) -> str:
    with pytest.raises(SignatureError) as info:
        check(pki, cert, **kw)
    text = info.value.one_line()
    for needle in (needles if CERTS else (VERSION_MESSAGE, sshsig.cryptography_version())):
        assert needle in text, (needle, text)
    assert "AttributeError" not in text
    return text


# --- what a certificate must be --------------------------------------------------------


@pytest.mark.parametrize(("cert", "key_id", "serial"), [("valid", KEY_ID, 42),
                                                ("rsa", "atlas-rsa-1", 7),
                                                ("known-critical", KEY_ID, 42)])
def test_valid_certificate_is_trusted_with_key_id_and_serial(pki, cert, key_id, serial):
    if not CERTS:
        rejected(pki, cert)
        return
    v = check(pki, cert)
    (match,) = v.signers["atlas"]
    assert match.label == "atlas-vo-ca:%s" % key_id
    assert (match.key_id, match.serial) == (key_id, serial)
    assert match.ca_fingerprint == sshsig.fingerprint(sshsig.public_key_blob(pki.pub("ca")))
    details = match.details()
    assert details["kind"] == "ssh_ca" and details["key_id"] == key_id
    assert details["serial"] == serial


def test_expired_certificate(pki):
    rejected(pki, "expired", "signer 'atlas-vo-ca'", "SSH certificate 'atlas-ctx-2026-11'",
             "has expired", "valid 2020-01-01")


def test_not_yet_valid_certificate(pki):
    rejected(pki, "future", "is not valid yet", "is time synced?")


def test_clock_skew_is_allowed_for_certificates(pki):
    if not CERTS:
        rejected(pki, "future")
        return
    # Valid from +2d: a clock 2 days and 4 minutes ahead is within the 5 minute skew.
    now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2, minutes=-4)
    assert check(pki, "future", now=now).signers["atlas"][0].key_id == KEY_ID
    rejected(pki, "future", "is not valid yet",
             now=now - datetime.timedelta(minutes=10))


def test_wrong_principal(pki):
    rejected(pki, "wrong-principal", "is for principals 'cms-contextd'",
             "the site accepts 'atlas-contextd', 'atlas-other'")


def test_certificate_without_principals(pki):
    rejected(pki, "no-principal", "lists no principals")


def test_unknown_critical_option(pki):
    rejected(pki, "unknown-critical", "unknown critical option 'foo@example.com'")


def test_host_certificate(pki):
    rejected(pki, "host", "is a host certificate; a user certificate is needed")


def test_ca_not_in_policy(pki):
    rejected(pki, "other-ca", "SSH certificate 'atlas-ctx-2026-11'", "signed by CA SHA256:",
             "not a trusted signer for any VO")


def test_tampered_payload(pki):
    if not CERTS:
        rejected(pki, "valid")
        return
    pol = policy.parse(policy_doc(pki))
    with pytest.raises(SignatureError) as info:
        verify(PAYLOAD + b"x: 1\n", [pki.sign("valid")], pol)
    assert "does not match the payload" in info.value.message


def test_plain_key_signer_accepts_the_certified_key(pki):
    """As ssh-keygen's allowed_signers does: a pinned key counts even if the cert expired."""
    doc = policy_doc(pki, signers=[{"id": "atlas-ctx", "ssh_key": pki.pub("user")},
                                   {"id": "atlas-vo-ca", "ssh_ca": pki.pub("ca"),
                                    "principals": [PRINCIPAL]}])
    if not CERTS:
        rejected(pki, "expired", doc=doc)
        return
    v = check(pki, "expired", doc=doc)
    assert [m.label for m in v.signers["atlas"]] == ["atlas-ctx"]
    assert any("has expired" in n for n in v.notes)


# --- revocation ------------------------------------------------------------------------


def test_revoked_key_id(pki):
    rejected(pki, "revoked-id", "SSH certificate 'atlas-ctx-2025-07' (atlas-vo-ca) is revoked",
             doc=policy_doc(pki, revoked={"ssh_cert_key_ids": ["atlas-ctx-2025-07"]}))
    if CERTS:
        assert check(pki, "valid", doc=policy_doc(
            pki, revoked={"ssh_cert_key_ids": ["atlas-ctx-2025-07"]})).signers


@pytest.mark.parametrize("which", ["user", "ca"])
def test_revoked_fingerprint_of_certified_key_or_ca(pki, which):
    fp = sshsig.fingerprint(sshsig.public_key_blob(pki.pub(which)))
    rejected(pki, "valid", "is revoked", fp,
             doc=policy_doc(pki, revoked={"ssh_fingerprints": [fp]}))


# --- the whole run: report, threshold, scopes, contextd sign --cert ---------------------


def site_policy(site, pki: Pki, threshold: int = 1, scopes: Optional[List[str]] = None):
    doc = base_policy(site.keys)
    signer: Dict[str, Any] = {"id": "atlas-vo-ca", "ssh_ca": pki.pub("ca"),
                              "principals": [PRINCIPAL]}
    if scopes is not None:
        signer["scopes"] = scopes
    doc["trust"]["atlas"]["signers"] = [signer, {"id": "atlas-ctx",
                                                 "ssh_key": site.keys["atlas"][1]}]
    doc["trust"]["atlas"]["threshold"] = threshold
    site.write_policy(doc)


def sign_cert(site, pki: Pki, cert: str, payload: Path, out: Path):
    return site.cli("sign", "--key", str(pki.certs[cert]), "--cert",
                    str(pki.certs[cert]) + "-cert.pub", str(payload), "-o", str(out))


def test_contextd_sign_cert_runs_and_reports_key_id(site, pki):
    site_policy(site, pki)
    payload = site.payload_file()
    out = site.tmp / "cert.bundle"
    code, _, err = sign_cert(site, pki, "valid", payload, out)
    if not CERTS:
        assert code == 1 and VERSION_MESSAGE in err and "Traceback" not in err
        return
    assert code == 0, err
    # ssh-keygen itself accepts it with a cert-authority line: the same bytes it would write.
    sigs = site.tmp / "sigs"
    sigs.write_text("".join(armor.armor_signatures(bundle.decode(out.read_bytes()).signatures)))
    allowed = site.tmp / "allowed"
    allowed.write_text('%s cert-authority,namespaces="%s" %s\n' % (PRINCIPAL, NS, pki.pub("ca")))
    ok = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", PRINCIPAL,
                         "-n", NS, "-s", str(sigs)], input=payload.read_bytes(),
                        capture_output=True)
    assert ok.returncode == 0, ok.stderr
    code, _, err = site.run("file:%s" % out)
    assert code == 0, err
    rep = site.report()
    assert rep["payload"]["signers"] == ["atlas-vo-ca:%s" % KEY_ID]
    (details,) = rep["payload"]["signer_details"]
    assert details["key_id"] == KEY_ID and details["serial"] == 42
    json.dumps(rep)


def test_contextd_sign_cert_refuses_expired_or_foreign_certificate(site, pki):
    payload = site.payload_file()
    code, _, err = sign_cert(site, pki, "expired", payload, site.tmp / "x.bundle")
    assert code == 1 and "Traceback" not in err
    assert ("expired at 2020-02-01" if CERTS else VERSION_MESSAGE) in err
    code, _, err = site.cli("sign", "--key", str(pki.dir / "other"), "--cert",
                            str(pki.certs["valid"]) + "-cert.pub", str(payload))
    assert code == 1
    assert ("is not the key the certificate" if CERTS else VERSION_MESSAGE) in err
    code, _, err = site.cli("sign", "--cert", str(pki.certs["valid"]) + "-cert.pub",
                            str(payload))
    assert code == 2 and "exactly one of --key" in err


def test_threshold_two_counts_distinct_signers(site, pki):
    """Two certificates of one CA are one signer; the CA plus a pinned key are two."""
    site_policy(site, pki, threshold=2)
    payload = site.payload_file()
    one = site.tmp / "one.bundle"
    sigs = pki.sign("valid", payload.read_bytes()), pki.sign("second", payload.read_bytes())
    one.write_bytes(armor.encode(payload.read_bytes(), armor.armor_signatures(sigs)))
    code, _, err = site.run("file:%s" % one)
    assert code == 1
    if not CERTS:
        assert VERSION_MESSAGE in err
        return
    assert "needs 2 distinct trusted signers, payload has 1 (atlas-vo-ca:" in err
    two = site.tmp / "two.bundle"
    assert sign_cert(site, pki, "valid", payload, two)[0] == 0
    site.sign(two, key="atlas", out=two)
    code, _, err = site.run("file:%s" % two)
    assert code == 0, err
    assert site.report()["payload"]["signers"] == ["atlas-ctx", "atlas-vo-ca:%s" % KEY_ID]


def test_scope_violation_names_the_certificate_signer(site, pki, payload_doc):
    site_policy(site, pki, scopes=["cvmfs"])
    payload = site.payload_file(payload_doc)
    out = site.tmp / "scoped.bundle"
    code, _, err = sign_cert(site, pki, "valid", payload, out)
    if not CERTS:
        assert code == 1 and VERSION_MESSAGE in err
        return
    code, _, err = site.run("file:%s" % out)
    assert code == 1
    assert "signer 'atlas-vo-ca:%s' may not set htcondor, puppet, report (its scopes: cvmfs)" \
        % KEY_ID in err


def test_payload_serial_revocation_still_applies(site, pki, payload_doc):
    site_policy(site, pki)
    site.policy["trust"]["atlas"]["revoked"] = {"serials": [payload_doc["serial"]]}
    site.write_policy()
    out = site.tmp / "s.bundle"
    code, _, err = sign_cert(site, pki, "valid", site.payload_file(payload_doc), out)
    if not CERTS:
        assert code == 1 and VERSION_MESSAGE in err
        return
    code, _, err = site.run("file:%s" % out)
    assert code == 1 and "was revoked by the site" in err
