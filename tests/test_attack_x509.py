"""Attacks on X.509 signers (issue 12, section 3), with a rogue PKI made by the real `openssl`.

- A look-alike: a CA the site trusts for something else (any CA in `ca_dir`) issues an
  intermediate whose subject is the pinned issuer DN, and under it a leaf with the pinned
  subject. The certificate that issued the signer must be the anchor of that name in
  `ca_dir` (or, where the policy names one, the chain must end at the named `anchor`).
- IGTF `<hash>.signing_policy` and `<hash>.namespaces` next to the anchor confine what it
  may sign.
- Certificates that cannot be decoded (bad UTF-8 in a DN, and whatever a DER mutation fuzz
  finds): one clear line, exit 1, never exit 70; a valid SSH signature beside a junk X.509
  block still counts.
"""

import datetime
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

from contextd import bundle, policy, policyview
from contextd.trust import x509sig
from contextd.bundle import X509Signature
from contextd.errors import ContextdError, SignatureError
from contextd.trust.verify import verify
from contextd.vo import armor

from test_x509 import GRID_DN, PAYLOAD, ROBOT_DN, ROOT_DN, Pki, openssl

X509 = x509sig.support_problem() is None
needs_x509 = pytest.mark.skipif(not X509, reason="X.509 chain validation needs cryptography >= 45")
ROGUE_DN = "/DC=org/DC=rogue/CN=Some Other Trusted CA"
EXAMPLES = int(os.environ.get("CONTEXTD_FUZZ_EXAMPLES", "300"))


class RoguePki(Pki):
    """The test PKI plus a rogue root (trusted by the site for its own users) that minted a
    look-alike of the grid CA and, under it, a look-alike of robot 'rsa'."""

    def __init__(self, d: Path):
        super().__init__(d)
        self.rogue = self._ca("rogue", "rsa", ROGUE_DN, None)
        self.fake_grid = self._ca("fakegrid", "ec", GRID_DN, self.rogue)
        self._key(d / "fake.key", "ec")
        self._issue(self.fake_grid, d / "fake.key", ROBOT_DN % "rsa", d / "fake.pem", "v3_robot")
        # a genuine robot outside the namespace the grid CA's policy files allow
        self.leaf("outsider", "ec")

    def cert(self, name: str) -> Path:
        extra = {"rogue": self.dir / "rogue" / "ca.pem",
                 "fakegrid": self.dir / "fakegrid" / "ca.pem"}
        return extra.get(name) or super().cert(name)

    def hash_of(self, name: str) -> str:
        return openssl("x509", "-hash", "-noout", "-in", str(self.cert(name))).decode().strip()

    def trusted_dir(self, where: Path, crls: Sequence[str] = ("grid", "root")) -> Path:
        """root, grid and the rogue CA, as an IGTF directory holds many CAs."""
        d = self.ca_dir(where, crls=crls, junk=False)
        shutil.copy(self.cert("rogue"), d / (self.hash_of("rogue") + ".0"))
        return d


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> RoguePki:
    return RoguePki(tmp_path_factory.mktemp("rogue-pki"))


def pinned(name: str = "rsa", anchor: Optional[str] = None) -> Dict[str, Any]:
    x = {"subject": ROBOT_DN % name, "issuer": GRID_DN}
    if anchor:
        x["anchor"] = anchor
    return {"id": "atlas-robot", "x509": x}


def policy_for(ca_dir: Path, signers: List[Dict[str, Any]], crl: str = "if-present"):
    return policy.parse({"version": 1, "site": "TEST-SITE",
                         "x509": {"ca_dir": str(ca_dir), "crl": crl},
                         "trust": {"atlas": {"signers": signers, "allow": {}}}})


def check(sigs, pol):
    return verify(PAYLOAD, list(sigs), pol, now=datetime.datetime.now(datetime.timezone.utc))


def refused(sigs, pol, *needles: str) -> str:
    with pytest.raises(SignatureError) as info:
        check(sigs, pol)
    text = info.value.one_line()
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def look_alike(pki: RoguePki) -> X509Signature:
    """The rogue chain as an attacker ships it: leaf, then the fake grid intermediate."""
    sig = pki.sign("fake")
    return X509Signature(sig, (pki.der("fake"), pki.der("fakegrid")))


# --- the look-alike chain -------------------------------------------------------------------


@needs_x509
@pytest.mark.parametrize(("crl", "crls"), [("off", ("grid", "root")), ("if-present", ("root",))])
def test_look_alike_intermediate_from_another_trusted_ca_is_refused(pki, tmp_path, crl, crls):
    ca_dir = pki.trusted_dir(tmp_path / "certs", crls=crls)
    pol = policy_for(ca_dir, [pinned()], crl=crl)
    refused([look_alike(pki)], pol, "atlas-robot")
    # the genuine robot, issued by the anchor of that name, still passes
    (match,) = check([pki.signature("rsa")], pol).signers["atlas"]
    assert match.details()["crl"] == ("off" if crl == "off" else "absent")


@needs_x509
def test_look_alike_is_refused_when_the_policy_names_the_anchor(pki, tmp_path):
    """With `anchor`, the issuer may ship with the signature, but the chain must end at the
    named anchor in ca_dir: the rogue root is not it."""
    ca_dir = pki.trusted_dir(tmp_path / "certs", crls=())
    pol = policy_for(ca_dir, [pinned(anchor=ROOT_DN)], crl="off")
    refused([look_alike(pki)], pol, "atlas-robot")
    assert check([pki.signature("rsa", chain=["grid"])], pol).signers["atlas"]


@needs_x509
def test_shipped_intermediates_are_ignored_unless_the_policy_names_an_anchor(pki, tmp_path):
    ca_dir = pki.ca_dir(tmp_path / "certs", anchors=["root"], crls=(), junk=False)
    text = refused([pki.signature("rsa", chain=["grid"])], policy_for(ca_dir, [pinned()]),
                   "its issuer '%s' is not a trust anchor in %s" % (GRID_DN, ca_dir),
                   "x509.anchor")
    assert "\n" not in text


@needs_x509
def test_named_anchor_missing_from_ca_dir(pki, tmp_path):
    ca_dir = pki.ca_dir(tmp_path / "certs", anchors=["grid"], crls=(), junk=False)
    refused([pki.signature("rsa", chain=["grid"])],
            policy_for(ca_dir, [pinned(anchor=ROOT_DN)]),
            "trust anchor '%s' is not in %s" % (ROOT_DN, ca_dir))


@needs_x509
def test_crl_state_is_in_the_signer_details(pki, tmp_path):
    sig = pki.signature("rsa")
    for crl, crls, want in (("if-present", ("grid",), "checked"),
                            ("if-present", (), "absent"), ("off", ("grid",), "off")):
        d = pki.ca_dir(tmp_path / ("c-%s-%d" % (crl, len(crls))), crls=crls, junk=False)
        (match,) = check([sig], policy_for(d, [pinned()], crl=crl)).signers["atlas"]
        assert match.details()["crl"] == want, (crl, crls)


def test_anchor_key_in_policy_check(tmp_path):
    doc = {"version": 1, "site": "S", "x509": {"ca_dir": str(tmp_path)},
           "trust": {"atlas": {"signers": [pinned(anchor=ROOT_DN)], "allow": {}}}}
    normal = policyview.normalised(policy.parse(doc))
    assert normal["trust"]["atlas"]["signers"][0]["anchor"] == ROOT_DN
    doc["trust"]["atlas"]["signers"][0]["x509"]["anchor"] = "no slash"
    with pytest.raises(ContextdError):
        policy.parse(doc)


# --- IGTF signing_policy and namespaces ----------------------------------------------------


SIGNING_POLICY = """# EACL, as IGTF ships it
 access_id_CA      X509         '{ca}'
 pos_rights        globus        CA:sign
 cond_subjects     globus       '"{pattern}"'
"""
NAMESPACES = """##############################################################################
#NAMESPACES-VERSION: 1.0
TO Issuer "{ca}" \\
  {verdict} Subject "{pattern}"
"""


def with_policy_file(pki: RoguePki, where: Path, anchor: str, suffix: str, text: str,
                     anchors: Sequence[str] = ("root", "grid")) -> Path:
    d = pki.ca_dir(where, anchors=anchors, crls=(), junk=False)
    (d / ("%s.%s" % (pki.hash_of(anchor), suffix))).write_text(text)
    return d


@needs_x509
@pytest.mark.parametrize(("pattern", "ok"), [("/DC=ch/DC=cern/OU=Users/*", False),
                                        ("/DC=ch/DC=cern/*", True),
                                        ("/DC=ch/DC=cern/OU=Organic Units/OU=Users/CN=atlctx/"
                                         "CN=123456/CN=Robot: ATLAS ?sa", True)])
def test_signing_policy_confines_the_anchor(pki, tmp_path, pattern, ok):
    d = with_policy_file(pki, tmp_path / "certs", "grid", "signing_policy",
                         SIGNING_POLICY.format(ca=GRID_DN, pattern=pattern))
    pol = policy_for(d, [pinned()])
    if ok:
        assert check([pki.signature("rsa")], pol).signers["atlas"]
    else:
        refused([pki.signature("rsa")], pol, "signing_policy", "does not allow",
                ROBOT_DN % "rsa")


@needs_x509
def test_signing_policy_for_another_ca_grants_nothing(pki, tmp_path):
    d = with_policy_file(pki, tmp_path / "certs", "grid", "signing_policy",
                         SIGNING_POLICY.format(ca=ROOT_DN, pattern="/*"))
    refused([pki.signature("rsa")], policy_for(d, [pinned()]), "signing_policy")


@needs_x509
@pytest.mark.parametrize(("ca", "verdict", "pattern", "ok"), [
    (GRID_DN, "PERMIT", "/DC=ch/DC=cern/OU=Users/.*", False),
    (GRID_DN, "PERMIT", "/DC=ch/DC=cern/.*", True),
    ("SELF", "PERMIT", "/DC=ch/DC=cern/.*", True),
    (GRID_DN, "DENY", "/DC=ch/DC=cern/OU=Organic Units/.*", False),
])
def test_namespaces_confine_the_anchor(pki, tmp_path, ca, verdict, pattern, ok):
    text = NAMESPACES.format(ca=ca, verdict=verdict, pattern=pattern).replace('"SELF"', "SELF")
    if verdict == "DENY":       # a PERMIT for everything else; the DENY wins
        text += 'TO Issuer "%s" PERMIT Subject "/DC=ch/.*"\n' % GRID_DN
    d = with_policy_file(pki, tmp_path / "certs", "grid", "namespaces", text)
    pol = policy_for(d, [pinned()])
    if ok:
        assert check([pki.signature("rsa")], pol).signers["atlas"]
    else:
        refused([pki.signature("rsa")], pol, "namespaces", ROBOT_DN % "rsa")


@needs_x509
def test_anchor_namespace_covers_the_intermediate(pki, tmp_path):
    """With `anchor: root`, the root's namespaces must allow the grid CA and what it signs."""
    only_root = NAMESPACES.format(ca=ROOT_DN, verdict="PERMIT", pattern="/DC=org/.*")
    d = with_policy_file(pki, tmp_path / "a", "root", "namespaces", only_root, anchors=["root"])
    sig = pki.signature("rsa", chain=["grid"])
    refused([sig], policy_for(d, [pinned(anchor=ROOT_DN)]), "namespaces", GRID_DN)
    both = NAMESPACES.format(ca=ROOT_DN, verdict="PERMIT", pattern=GRID_DN) + \
        NAMESPACES.format(ca=GRID_DN, verdict="PERMIT", pattern="/DC=ch/DC=cern/.*")
    d = with_policy_file(pki, tmp_path / "b", "root", "namespaces", both, anchors=["root"])
    assert check([sig], policy_for(d, [pinned(anchor=ROOT_DN)])).signers["atlas"]


@needs_x509
def test_unreadable_policy_file_fails_closed(pki, tmp_path):
    d = with_policy_file(pki, tmp_path / "certs", "grid", "namespaces",
                         'TO Issuer "%s" PERMIT Subject "([" \n' % GRID_DN)
    refused([pki.signature("rsa")], policy_for(d, [pinned()]), "namespaces")


# --- certificates that cannot be decoded -------------------------------------------------


def bad_utf8(der: bytes) -> bytes:
    """The DER with one byte of the issuer's CN value replaced by 0xFF (invalid UTF-8)."""
    at = der.index(b"Test Grid Certification Authority")
    assert der[at - 2] == 0x0c           # UTF8String
    return der[:at] + b"\xff" + der[at + 1:]


def test_bad_utf8_dn_is_a_clear_rejection(pki):
    junk = X509Signature(b"sig", (bad_utf8(pki.der("rsa")),))
    with pytest.raises(SignatureError) as info:
        x509sig.parse(junk)
    assert "cannot be decoded" in info.value.message


def test_bad_utf8_certificate_alone_exits_1_in_one_line(site, pki):
    junk = armor.armor_x509(X509Signature(b"sig", (bad_utf8(pki.der("rsa")),)))
    out = site.tmp / "junk.bundle"
    out.write_bytes(armor.encode(site.payload_file().read_bytes(), [junk]))
    code, _, err = site.run("file:%s" % out)
    assert code == 1, err
    (line,) = err.strip().splitlines()
    assert "certificate 1 of the X.509 signature cannot be decoded" in line, line
    assert site.report()["outcome"] == "rejected"


def test_junk_x509_block_beside_a_valid_ssh_signature_under_ssh_only_policy(site, pki):
    """Attack: a junk certificate appended to a good bundle blocked the boot (exit 70)."""
    out = site.bundle()
    junk = armor.armor_x509(X509Signature(b"sig", (bad_utf8(pki.der("rsa")),)))
    out.write_bytes(out.read_bytes() + junk.encode())
    assert len(bundle.decode(out.read_bytes()).signatures) == 2
    code, _, err = site.run("file:%s" % out)
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "applied" and rep["payload"]["signers"] == ["atlas-ctx"]


# --- fuzz: mutated certificate DER, only typed errors ------------------------------------
