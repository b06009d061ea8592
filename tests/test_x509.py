"""X.509 robot-certificate signatures against a test PKI made by the real `openssl`.

One PKI per module: a root CA, a grid intermediate, robot leaves (RSA, ECDSA, Ed25519), an
expired leaf, a revoked leaf with its CRL, a stale CRL, a serverAuth-only leaf; CA
directories in the IGTF layout (`<hash>.0`, `<hash>.r0` from `openssl x509/crl -hash`).
Signatures come from `openssl dgst -sha256 -sign` and `openssl pkeyutl -sign -rawin`.

Chain validation needs cryptography >= 45: each test asserts the behaviour there and the
clear version message below it, chosen by the installed version. openssl is required:
without it these tests fail, they do not skip.
"""

import datetime
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

from contextd import bundle, policy
from contextd.trust import cadir, x509sig
from contextd.bundle import X509Signature
from contextd.errors import BundleError, SignatureError
from contextd.trust.verify import verify
from contextd.vo import armor

from conftest import base_policy

X509 = x509sig.support_problem() is None
VERSION_MESSAGE = "X.509 signatures need python cryptography >= 45"
PAYLOAD = b"contextd: payload/v1\nvo: atlas\nserial: 2026112401\n"
ROOT_DN = "/DC=org/DC=example/CN=Test Root CA"
GRID_DN = "/DC=ch/DC=cern/CN=Test Grid Certification Authority"
ROBOT_DN = "/DC=ch/DC=cern/OU=Organic Units/OU=Users/CN=atlctx/CN=123456/CN=Robot: ATLAS %s"

CNF = """
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
default_crl_days = 7
[ policy_any ]
domainComponent = optional
organizationalUnitName = optional
commonName = supplied
[ v3_ca ]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ v3_robot ]
basicConstraints = CA:false
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth,emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
certificatePolicies = 1.2.840.113612.5.2.3.3.1
[ v3_server ]
basicConstraints = CA:false
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
"""


def openssl(*args: str, stdin: Optional[bytes] = None) -> bytes:
    tool = shutil.which("openssl")
    assert tool, "openssl is required for the X.509 tests"
    return subprocess.run([tool, *args], input=stdin, capture_output=True, check=True).stdout


class Pki:
    def __init__(self, d: Path):
        self.dir = d
        self.root = self._ca("root", "rsa", "/DC=org/DC=example/CN=Test Root CA", None)
        self.grid = self._ca("grid", "ec", "/DC=ch/DC=cern/CN=Test Grid Certification Authority",
                             self.root)
        for kind in ("rsa", "ec", "ed25519"):
            self.leaf(kind, kind)
        self.leaf("expired", "ec", start="20200101000000Z", end="20200201000000Z")
        self.leaf("server", "ec", ext="v3_server")
        self.leaf("revoked", "ec")
        self.crl("grid-stale", self.grid, "-crl_lastupdate", "20200101000000Z",
                 "-crl_nextupdate", "20200102000000Z")
        openssl("ca", "-batch", "-config", str(self.grid / "openssl.cnf"),
                "-cert", str(self.grid / "ca.pem"), "-keyfile", str(self.grid / "ca.key"),
                "-revoke", str(d / "revoked.pem"))
        self.crl("grid", self.grid)
        self.crl("root", self.root)

    def _ca(self, name: str, kind: str, subject: str, parent: Optional[Path]) -> Path:
        ca = self.dir / name
        (ca / "newcerts").mkdir(parents=True)
        (ca / "index.txt").write_text("")
        (ca / "serial").write_text("1000\n")
        (ca / "crlnumber").write_text("01\n")
        (ca / "openssl.cnf").write_text(CNF.format(dir=ca))
        self._key(ca / "ca.key", kind)
        if parent is None:
            openssl("req", "-x509", "-new", "-key", str(ca / "ca.key"), "-subj", subject,
                    "-days", "3650", "-config", str(ca / "openssl.cnf"), "-extensions", "v3_ca",
                    "-out", str(ca / "ca.pem"))
        else:
            self._issue(parent, ca / "ca.key", subject, ca / "ca.pem", "v3_ca")
        return ca

    @staticmethod
    def _key(path: Path, kind: str) -> None:
        args = {"rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                "ec": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                "ed25519": ["-algorithm", "ED25519"]}[kind]
        openssl("genpkey", *args, "-out", str(path))

    def _issue(self, ca: Path, key: Path, subject: str, out: Path, ext: str,
               start: Optional[str] = None, end: Optional[str] = None) -> None:
        csr = out.with_suffix(".csr")
        openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
        dates = ["-startdate", start, "-enddate", end] if start and end else ["-days", "365"]
        openssl("ca", "-batch", "-config", str(ca / "openssl.cnf"), "-cert", str(ca / "ca.pem"),
                "-keyfile", str(ca / "ca.key"), "-extensions", ext, "-in", str(csr),
                "-out", str(out), "-notext", *dates)

    def leaf(self, name: str, kind: str, ext: str = "v3_robot", start: Optional[str] = None,
             end: Optional[str] = None) -> None:
        self._key(self.dir / (name + ".key"), kind)
        self._issue(self.grid, self.dir / (name + ".key"), ROBOT_DN % name,
                    self.dir / (name + ".pem"), ext, start, end)

    def crl(self, name: str, ca: Path, *extra: str) -> None:
        openssl("ca", "-batch", "-gencrl", "-config", str(ca / "openssl.cnf"),
                "-cert", str(ca / "ca.pem"), "-keyfile", str(ca / "ca.key"), *extra,
                "-out", str(self.dir / (name + ".crl")))

    def cert(self, name: str) -> Path:
        return {"root": self.root / "ca.pem", "grid": self.grid / "ca.pem"}.get(
            name, self.dir / (name + ".pem"))

    def ca_dir(self, where: Path, anchors: Sequence[str] = ("root", "grid"),
               crls: Sequence[str] = ("grid", "root"), junk: bool = True) -> Path:
        """An IGTF-style directory: <hash>.0 anchors, an alias .pem, <hash>.r0 CRLs."""
        where.mkdir()
        for name in anchors:
            h = openssl("x509", "-hash", "-noout", "-in", str(self.cert(name))).decode().strip()
            shutil.copy(self.cert(name), where / (h + ".0"))
            shutil.copy(self.cert(name), where / ("Test-%s.pem" % name))
            (where / ("Test-%s.info" % name)).write_text("alias = Test-%s\n" % name)
            (where / ("Test-%s.signing_policy" % name)).write_text("cond_subjects globus ''\n")
        for name in crls:
            crl = self.dir / (name + ".crl")
            h = openssl("crl", "-hash", "-noout", "-in", str(crl)).decode().strip()
            shutil.copy(crl, where / (h + ".r0"))
        if junk:
            (where / "deadbeef.0").write_text("-----BEGIN CERTIFICATE-----\nnot one\n")
            shutil.copy(self.cert("rsa"), where / "leaf-by-mistake.pem")
        return where

    def sign(self, name: str, payload: bytes = PAYLOAD) -> bytes:
        """The raw signature as a VO makes it with openssl."""
        data = self.dir / "to-sign"
        data.write_bytes(payload)
        key = str(self.dir / (name + ".key"))
        if "ed25519" in name:
            return openssl("pkeyutl", "-sign", "-rawin", "-inkey", key, "-in", str(data))
        return openssl("dgst", "-sha256", "-sign", key, str(data))

    def der(self, name: str) -> bytes:
        return openssl("x509", "-in", str(self.cert(name)), "-outform", "DER")

    def signature(self, name: str, chain: Sequence[str] = (), payload: bytes = PAYLOAD
                  ) -> X509Signature:
        return X509Signature(self.sign(name, payload),
                             tuple(self.der(n) for n in (name, *tuple(chain))))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def robot(name: str, signer_id: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    return dict({"id": signer_id or "atlas-robot-%s" % name,
                 "x509": {"subject": ROBOT_DN % name, "issuer": GRID_DN}}, **extra)


def policy_for(ca_dir: Path, signers: List[Dict[str, Any]], crl: str = "if-present",
               stale: str = "2d", threshold: int = 1):
    return policy.parse({
        "version": 1, "site": "TEST-SITE",
        "x509": {"ca_dir": str(ca_dir), "crl": crl, "crl_max_stale": stale},
        "trust": {"atlas": {"threshold": threshold, "signers": signers, "allow": {}}}})


def check(sigs: Sequence[X509Signature], pol, payload: bytes = PAYLOAD):
    return verify(payload, list(sigs), pol, now=datetime.datetime.now(datetime.timezone.utc))


def rejected(sigs: Sequence[X509Signature], pol, *needles: str, payload: bytes = PAYLOAD) -> str:
    with pytest.raises(SignatureError) as info:
        check(sigs, pol, payload)
    text = info.value.one_line()
    for needle in (needles if X509 else (VERSION_MESSAGE, x509sig.cryptography_version())):
        assert needle in text, (needle, text)
    assert "AttributeError" not in text
    return text


# --- the signer: keys, names, the signature over the payload ----------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_openssl_signature_by_robot_is_trusted(pki, tmp_path, kind):
    pol = policy_for(pki.ca_dir(tmp_path / "certs"), [robot(kind)])
    if not X509:
        rejected([pki.signature(kind)], pol)
        return
    (match,) = check([pki.signature(kind)], pol).signers["atlas"]
    assert match.label == "atlas-robot-%s" % kind
    assert (match.subject, match.issuer) == (ROBOT_DN % kind, GRID_DN)
    details = match.details()
    assert details["kind"] == "x509" and details["subject"] == ROBOT_DN % kind
    serial = openssl("x509", "-noout", "-serial", "-in", str(pki.cert(kind))).decode()
    assert serial.strip() == "serial=" + details["serial"]


@pytest.mark.parametrize("name", ["rsa", "ed25519", "grid", "root"])
def test_slash_dn_matches_openssl_compat(pki, name):
    from cryptography import x509

    cert = x509.load_der_x509_certificate(pki.der(name))
    for which, attr in (("-subject", cert.subject), ("-issuer", cert.issuer)):
        line = openssl("x509", "-noout", which, "-nameopt", "compat", "-in",
                       str(pki.cert(name))).decode().strip()
        assert line.split("=", 1)[1] == cadir.slash_dn(attr)


def test_tampered_payload(pki, tmp_path):
    pol = policy_for(pki.ca_dir(tmp_path / "certs"), [robot("rsa")])
    rejected([pki.signature("rsa")], pol, "atlas-robot-rsa", "does not match the payload",
             payload=PAYLOAD + b"x: 1\n")


@pytest.mark.parametrize(("subject", "issuer"), [(ROBOT_DN % "ec", GRID_DN),
                                            (ROBOT_DN % "rsa", ROOT_DN)])
def test_signer_pinned_by_subject_and_issuer(pki, tmp_path, subject, issuer):
    pol = policy_for(pki.ca_dir(tmp_path / "certs"),
                     [{"id": "other", "x509": {"subject": subject, "issuer": issuer}}])
    with pytest.raises(SignatureError) as info:
        check([pki.signature("rsa")], pol)
    # Not trusted whatever the version: the DN pair is compared before anything else.
    assert "X.509 signer '%s' (issuer '%s') is not a trusted signer for any VO" % (
        ROBOT_DN % "rsa", GRID_DN) in info.value.message


def test_server_only_certificate_cannot_sign(pki, tmp_path):
    pol = policy_for(pki.ca_dir(tmp_path / "certs"), [robot("server")])
    rejected([pki.signature("server")], pol, "extendedKeyUsage allows none of")


def test_expired_robot(pki, tmp_path):
    pol = policy_for(pki.ca_dir(tmp_path / "certs"), [robot("expired")])
    rejected([pki.signature("expired")], pol, "atlas-robot-expired", "has expired",
             "valid 2020-01-01T00:00:00Z .. 2020-02-01T00:00:00Z")


# --- the chain ----------------------------------------------------------------------------


def test_intermediate_shipped_with_the_signature(pki, tmp_path):
    """Only where the policy names the anchor above it (issue 12: a shipped intermediate of
    the pinned issuer's name could come from any CA in ca_dir)."""
    ca_dir = pki.ca_dir(tmp_path / "certs", anchors=["root"], crls=["grid", "root"])
    anchored = robot("ec")
    anchored["x509"]["anchor"] = ROOT_DN
    pol = policy_for(ca_dir, [anchored], crl="required")
    sig = pki.signature("ec", chain=["grid"])
    if not X509:
        rejected([sig], pol)
        return
    assert check([sig], pol).signers["atlas"][0].label == "atlas-robot-ec"
    # without it the chain cannot reach the anchor, and the message says what to do
    rejected([pki.signature("ec")], pol, "does not chain to the trust anchor '%s'" % ROOT_DN,
             "append the intermediate")
    # without the anchor in the policy the issuer must itself be an anchor in ca_dir
    rejected([sig], policy_for(ca_dir, [robot("ec")], crl="required"),
             "its issuer '%s' is not a trust anchor in" % GRID_DN, "x509.anchor")


def test_junk_in_the_ca_directory_is_skipped_with_a_warning(pki, tmp_path, caplog):
    ca_dir = pki.ca_dir(tmp_path / "certs")
    trust = cadir.load_ca_dir(str(ca_dir))
    assert len(trust.anchors) == 2          # <hash>.0 and the alias .pem are one CA each
    assert len(trust.crls) == 2
    skipped = " ".join(trust.warnings)
    assert "skipped %s" % (ca_dir / "deadbeef.0") in skipped
    assert "leaf-by-mistake.pem: not a CA certificate" in skipped
    caplog.set_level(logging.WARNING, logger="contextd")
    cadir.load_ca_dir(str(ca_dir))
    assert "deadbeef.0" in caplog.text


def test_missing_ca_directory(pki, tmp_path):
    pol = policy_for(tmp_path / "nowhere", [robot("rsa")])
    rejected([pki.signature("rsa")], pol, "cannot read the X.509 CA directory")


def test_policy_without_x509_section(pki):
    pol = policy.parse({"version": 1, "site": "T", "trust": {"atlas": {
        "signers": [robot("rsa")], "allow": {}}}})
    rejected([pki.signature("rsa")], pol, "the site policy has no x509 section")


# --- revocation -----------------------------------------------------------------------------


def test_revoked_robot(pki, tmp_path):
    pol = policy_for(pki.ca_dir(tmp_path / "certs"), [robot("revoked")])
    rejected([pki.signature("revoked")], pol, "X.509 certificate '%s'" % (ROBOT_DN % "revoked"),
             "is revoked by CA '%s'" % GRID_DN)


def test_revoked_robot_passes_only_with_crl_off(pki, tmp_path):
    pol = policy_for(pki.ca_dir(tmp_path / "certs"), [robot("revoked")], crl="off")
    if X509:
        assert check([pki.signature("revoked")], pol).signers
    else:
        rejected([pki.signature("revoked")], pol)


def test_stale_crl(pki, tmp_path):
    ca_dir = pki.ca_dir(tmp_path / "certs", crls=["grid-stale", "root"])
    sig = pki.signature("rsa")
    rejected([sig], policy_for(ca_dir, [robot("rsa")]), "the CRL for CA '%s'" % GRID_DN,
             "is stale: its next update was due 2020-01-02T00:00:00Z", "run fetch-crl")
    # a site that tolerates years of staleness, or does not check, accepts it
    for pol in (policy_for(ca_dir, [robot("rsa")], stale="100000d"),
                policy_for(ca_dir, [robot("rsa")], crl="off")):
        if X509:
            assert check([sig], pol).signers
        else:
            rejected([sig], pol)


def test_crl_required_but_missing(pki, tmp_path):
    pol = policy_for(pki.ca_dir(tmp_path / "certs", crls=["root"]), [robot("rsa")],
                     crl="required")
    rejected([pki.signature("rsa")], pol, "no CRL for CA '%s'" % GRID_DN, "run fetch-crl")
    if X509:   # if-present: no CRL is fine
        assert check([pki.signature("rsa")], policy_for(
            pki.ca_dir(tmp_path / "c2", crls=["root"]), [robot("rsa")])).signers


def test_crl_signed_by_another_key_is_refused(pki, tmp_path):
    """A CRL naming the grid CA as issuer but signed with the root's key does not count."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    root_key = serialization.load_pem_private_key(
        (pki.root / "ca.key").read_bytes(), password=None)
    grid = x509.load_der_x509_certificate(pki.der("grid"))
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    forged = (x509.CertificateRevocationListBuilder().issuer_name(grid.subject)
              .last_update(now).next_update(now + datetime.timedelta(days=7))
              .sign(root_key, hashes.SHA256()))
    ca_dir = pki.ca_dir(tmp_path / "certs", crls=["root"])
    (ca_dir / "forged.r0").write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    pol = policy_for(ca_dir, [robot("rsa")])
    rejected([pki.signature("rsa")], pol, "the CRL for CA '%s' (forged.r0) does not verify"
             % GRID_DN)


# --- the whole run and contextd sign ----------------------------------------------------


def x509_site(site, pki: Pki, tmp_path: Path, threshold: int = 1,
              scopes: Optional[List[str]] = None) -> None:
    doc = base_policy(site.keys)
    doc["x509"] = {"ca_dir": str(pki.ca_dir(tmp_path / "igtf")), "crl": "required"}
    signer = robot("rsa", "atlas-robot")
    if scopes is not None:
        signer["scopes"] = scopes
    doc["trust"]["atlas"]["signers"].append(signer)
    doc["trust"]["atlas"]["threshold"] = threshold
    site.write_policy(doc)


def test_hand_made_bundle_with_openssl_base64_and_cat(site, pki, tmp_path):
    x509_site(site, pki, tmp_path)
    site.payload_file()
    script = ("{ echo '#contextd-signed-v1'; echo '-----BEGIN CONTEXTD PAYLOAD-----'; "
              "base64 -w 76 payload.yaml; echo '-----END CONTEXTD PAYLOAD-----'; "
              "echo '-----BEGIN CONTEXTD X509 SIGNATURE-----'; "
              "openssl dgst -sha256 -sign %s payload.yaml | base64 -w 64; "
              "echo '-----END CONTEXTD X509 SIGNATURE-----'; cat %s; } > hand.bundle"
              % (pki.dir / "rsa.key", pki.cert("rsa")))
    subprocess.run(["sh", "-c", script], cwd=site.tmp, check=True)
    code, _, err = site.run("file:%s" % (site.tmp / "hand.bundle"))
    if not X509:
        assert code == 1 and VERSION_MESSAGE in err
        return
    assert code == 0, err
    rep = site.report()
    assert rep["payload"]["signers"] == ["atlas-robot"]
    assert rep["payload"]["signer_details"][0]["subject"] == ROBOT_DN % "rsa"


@pytest.mark.parametrize("kind", ["ec", "ed25519"])
def test_contextd_sign_x509_interoperates_with_openssl(site, pki, tmp_path, kind):
    payload = site.payload_file()
    out = site.tmp / "x.bundle"
    code, _, err = site.cli("sign", "--x509-key", str(pki.dir / (kind + ".key")),
                            "--x509-cert", str(pki.cert(kind)), "--x509-chain",
                            str(pki.cert("grid")), str(payload), "-o", str(out))
    assert code == 0, err
    parsed = bundle.decode(out.read_bytes())
    (sig,) = parsed.signatures
    assert isinstance(sig, X509Signature) and sig.certificates == (pki.der(kind), pki.der("grid"))
    (tmp_path / "sig").write_bytes(sig.signature)
    pub = tmp_path / "pub.pem"
    pub.write_bytes(openssl("x509", "-pubkey", "-noout", "-in", str(pki.cert(kind))))
    if kind == "ed25519":
        ok = openssl("pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", str(pub),
                     "-sigfile", str(tmp_path / "sig"), "-in", str(payload))
    else:
        ok = openssl("dgst", "-sha256", "-verify", str(pub), "-signature",
                     str(tmp_path / "sig"), str(payload))
    assert b"Verified" in ok or b"Success" in ok
    # the directory carrier: payload.yaml + payload.yaml.sig with the same blocks
    ctx = tmp_path / "ctx" / "contextd"
    ctx.mkdir(parents=True)
    (ctx / "payload.yaml").write_bytes(parsed.payload)
    (ctx / "payload.yaml.sig").write_text("".join(armor.armor_signatures(parsed.signatures)))
    doc = base_policy(site.keys)
    doc["x509"] = {"ca_dir": str(pki.ca_dir(tmp_path / "igtf", anchors=["root"]))}
    signer = robot(kind, "atlas-robot")
    signer["x509"]["anchor"] = ROOT_DN        # the grid CA ships with the signature
    doc["trust"]["atlas"]["signers"].append(signer)
    site.write_policy(doc)
    code, _, err = site.run("dir:%s" % ctx.parent)
    if not X509:
        assert code == 1 and VERSION_MESSAGE in err
        return
    assert code == 0, err
    assert site.report()["payload"]["signers"] == ["atlas-robot"]


def test_contextd_sign_x509_refuses_wrong_key_and_expired_cert(site, pki):
    payload = site.payload_file()
    code, _, err = site.cli("sign", "--x509-key", str(pki.dir / "ec.key"), "--x509-cert",
                            str(pki.cert("rsa")), str(payload))
    assert code == 1 and "does not belong to certificate" in err
    code, _, err = site.cli("sign", "--x509-key", str(pki.dir / "expired.key"), "--x509-cert",
                            str(pki.cert("expired")), str(payload))
    assert code == 1 and "expired at 2020-02-01T00:00:00Z" in err
    code, _, err = site.cli("sign", "--x509-key", str(pki.dir / "ec.key"), str(payload))
    assert code == 2 and "--x509-key needs --x509-cert" in err


def test_threshold_two_with_ssh_key_and_robot(site, pki, tmp_path):
    x509_site(site, pki, tmp_path, threshold=2)
    payload = site.payload_file()
    one = site.tmp / "one.bundle"
    code, _, err = site.cli("sign", "--x509-key", str(pki.dir / "rsa.key"), "--x509-cert",
                            str(pki.cert("rsa")), str(payload), "-o", str(one))
    assert code == 0, err
    code, _, err = site.run("file:%s" % one)
    assert code == 1
    if not X509:
        assert VERSION_MESSAGE in err
        return
    assert "needs 2 distinct trusted signers, payload has 1 (atlas-robot)" in err
    site.sign(one, key="atlas", out=one)         # appends the SSH signature
    assert len(bundle.decode(one.read_bytes()).signatures) == 2
    code, _, err = site.run("file:%s" % one)
    assert code == 0, err
    assert site.report()["payload"]["signers"] == ["atlas-ctx", "atlas-robot"]


def test_scope_violation_names_the_x509_signer(site, pki, tmp_path):
    x509_site(site, pki, tmp_path, scopes=["cvmfs", "htcondor"])
    payload = site.payload_file()
    out = site.tmp / "s.bundle"
    assert site.cli("sign", "--x509-key", str(pki.dir / "rsa.key"), "--x509-cert",
                    str(pki.cert("rsa")), str(payload), "-o", str(out))[0] == 0
    code, _, err = site.run("file:%s" % out)
    assert code == 1
    assert ("signer 'atlas-robot' may not set puppet, report (its scopes: cvmfs, htcondor)"
            if X509 else VERSION_MESSAGE) in err


# --- armour -------------------------------------------------------------------------------


@pytest.mark.parametrize(("blocks", "needle"), [
    (["CERTIFICATE"], "a CERTIFICATE block must follow a CONTEXTD X509 SIGNATURE block"),
    (["CONTEXTD X509 SIGNATURE"], "is not followed by its signer's CERTIFICATE block"),
    (["CONTEXTD X509 SIGNATURE", "CERTIFICATE", "SSH SIGNATURE", "CERTIFICATE"],
     "must follow"),
    (["CONTEXTD X509 SIGNATURE"] + ["CERTIFICATE"] * 9, "more than 8 certificates"),
])
def test_x509_armour_errors(blocks, needle):
    text = "#contextd-signed-v1\n-----BEGIN CONTEXTD PAYLOAD-----\nYQ==\n" \
           "-----END CONTEXTD PAYLOAD-----\n" + "".join(
               "-----BEGIN %s-----\nYQ==\n-----END %s-----\n" % (b, b) for b in blocks)
    with pytest.raises(BundleError) as info:
        bundle.decode(text.encode())
    assert needle in info.value.message


def test_mixed_signatures_round_trip(pki):
    x = pki.signature("ec", chain=["grid"])
    sigs = (b"SSHSIG-not-really", x)
    again = bundle.decode(armor.encode(PAYLOAD, armor.armor_signatures(sigs))).signatures
    assert again == sigs
    assert bundle.decode_signatures("".join(armor.armor_signatures(sigs)).encode()) == sigs


def test_dn_with_a_slash_rdn_inside_a_value_is_refused():
    """CN="x/CN=Robot: ATLAS rsa" would print like two RDNs: never matched to a pin."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "ch"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "x/CN=Robot: ATLAS rsa")])
    start = datetime.datetime(2026, 1, 1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=1)).sign(key, None))
    with pytest.raises(SignatureError) as info:
        x509sig.parse(X509Signature(b"sig", (cert.public_bytes(Encoding.DER),)))
    assert "slash form is ambiguous" in info.value.message
