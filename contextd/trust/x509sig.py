"""X.509 signatures (DESIGN section 5): a grid robot certificate's raw signature over the payload.

A VO makes one with `openssl dgst -sha256 -sign robotkey.pem payload.yaml` (RSA PKCS#1 v1.5
or ECDSA, SHA-256) or `openssl pkeyutl -sign -rawin -inkey robotkey.pem -in payload.yaml`
(Ed25519), and ships it with the signer certificate and any intermediates. This module parses
that, checks the signature over the exact payload bytes, names the signer in grid slash form
(/DC=ch/DC=cern/CN=...), validates the certificate chain against the site's IGTF-style CA
directory and checks CRLs. Making such signatures (`contextd sign`) is `contextd.vo.x509sign`,
which the boot path never imports.

Chain validation: cryptography.x509.verification (cryptography >= 45, for custom extension
policies; older versions get a SignatureError naming the installed and needed versions). We
decided against a hand-written chain check that would also run on EL9's cryptography 36:
path building, name chaining, basicConstraints/pathLen, key usage, critical-extension and
algorithm rules are exactly what hand-written verifiers get subtly wrong, and a mistake there
is a root compromise on every VM of the site; the maintained verifier is the safer trade. EL9
sites keep the SSH path, which needs nothing newer than cryptography 36 for pinned keys.
Revocation is ours: the verifier does none, so CRLs (`*.r0`, as fetch-crl writes them) are
checked per the policy's `crl` setting (required | if-present | off) and `crl_max_stale`.

Trust is pinned to an anchor, not to a name: any CA in the directory could mint a certificate
whose subject is the pinned issuer DN. So the verifier is given only the anchors named by the
policy (the signer's `issuer`, or its `anchor` where the policy names one), and shipped
intermediates only when an `anchor` is named. An anchor's IGTF `<hash>.signing_policy` (EACL)
and `<hash>.namespaces` files, when present, confine every certificate below it.

What it must never do:
- take the hash, padding or scheme from the input (SHA-256 with PKCS#1 v1.5 for RSA, ECDSA
  with SHA-256 on NIST curves, pure Ed25519; nothing else);
- parse a slash DN from the policy into a Name: the certificate's Name is turned into the
  slash string one fixed way and the two strings are compared exactly;
- let anything but SignatureError (SigningError for the signing side's
  certificates) out on hostile input: every
  certificate is decoded completely (cryptography parses some fields lazily) before use;
- accept a chain that ends anywhere but at an anchor the policy names, or that the anchor's
  signing_policy/namespaces files do not allow (an unreadable one allows nothing).

The site's CA directory (anchors, CRLs, IGTF policy files) and the confinement and
revocation checks against it are `contextd.trust.cadir`.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import warnings
from typing import (TYPE_CHECKING, Any, Callable, List, NoReturn, Optional,
                    Tuple)

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID

from contextd.bundle import X509Signature
from contextd.errors import SignatureError
from contextd.limits import LIMITS
from contextd.record import field, record
from contextd.trust.cadir import (TrustDir, ambiguous, check_confinement, check_revocation, clip,
                                  slash_dn, when)
from contextd.trust.sshsig import BAD_SIGNATURE, cryptography_version, version_tuple

if TYPE_CHECKING:
    from contextd.settings import X509Settings

# ExtensionPolicy (custom end-entity rules, so an IGTF robot certificate without a SAN and
# with EKU clientAuth/emailProtection validates) arrived in cryptography 45.0.
X509_MIN_CRYPTOGRAPHY = (45,)
RSA_MIN_BITS = 2048
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
# An EKU, when the signer certificate has one, must allow one of these (signing a document
# as a person or robot). A serverAuth-only host certificate cannot sign payloads.
SIGNING_EKUS = {
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}


@record(frozen=True)
class X509Signer:
    """A parsed X.509 signature: who claims to have signed; nothing verified yet."""

    signature: bytes = field(repr=False)
    leaf: Any = field(repr=False)                   # x509.Certificate
    intermediates: Tuple[Any, ...] = field(repr=False)
    subject: str                                    # slash DN of the signer certificate
    issuer: str                                     # slash DN of its issuer
    serial: int
    fingerprint: str                                # SHA256:<hex> of the signer cert DER
    key: bytes = field(default=b"", repr=False)     # its public key (SSH wire form if it has one)

    @property
    def serial_hex(self) -> str:
        return "%X" % self.serial


# --- names and versions ------------------------------------------------------------------


def support_problem() -> Optional[Tuple[str, str]]:
    """(message, hint) when this cryptography cannot validate chains, else None."""
    installed = cryptography_version()
    ok = version_tuple(installed) >= X509_MIN_CRYPTOGRAPHY
    if ok:
        try:
            from cryptography.x509.verification import ExtensionPolicy  # noqa: F401
        except ImportError:
            ok = False
    if ok:
        return None
    return ("X.509 signatures need python cryptography >= %s for certificate path "
            "validation, but %s is installed"
            % (".".join(str(n) for n in X509_MIN_CRYPTOGRAPHY), installed),
            "install a newer python3-cryptography, or have the VO sign with an SSH key "
            "or SSH certificate")


def _not_before(cert: Any) -> datetime.datetime:
    t = getattr(cert, "not_valid_before_utc", None)
    return t if t is not None else cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def _not_after(cert: Any) -> datetime.datetime:
    t = getattr(cert, "not_valid_after_utc", None)
    return t if t is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


# --- parsing and the signature over the payload -------------------------------------------


def _load_der(der: bytes, what: str, error: Any = SignatureError) -> Any:
    """A certificate decoded completely, or SignatureError.

    cryptography parses names, extensions and the key lazily, so a certificate that loads
    may still raise (ValueError, UnicodeDecodeError, TypeError, UnsupportedAlgorithm, ...,
    varying by version) when a field is first read. Every field contextd or the verifier
    reads later is read here once; parsing is deterministic, so later reads succeed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(bytes(der))
            _ = (slash_dn(cert.subject), slash_dn(cert.issuer), list(cert.extensions),
                 cert.serial_number, _not_before(cert), _not_after(cert), cert.public_key(),
                 cert.signature_hash_algorithm, cert.tbs_certificate_bytes, cert.signature)
        return cert
    # Hostile input reaches a third-party parser whose exception types vary by version.
    except Exception as exc:  # noqa: BLE001 - any failure here means "invalid certificate"
        raise error("%s cannot be decoded as an X.509 certificate (%s: %s)"
                    % (what, type(exc).__name__, clip(exc, 120)),
                    "use the certificate as written by the CA (PEM)") from None


def _spki(key: Any) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def key_blob(key: Any) -> bytes:
    """A public key as one byte string: its SSH wire form (so a key pinned as an SSH key and
    certified by X.509 is recognised as the same key), else its DER SubjectPublicKeyInfo."""
    try:
        line = key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
        return base64.b64decode(line.split(b" ")[1])
    except Exception:  # noqa: BLE001 - a key type SSH has no form for
        return b"spki:" + _spki(key)


def parse(sig: X509Signature) -> X509Signer:
    """The signer certificate and intermediates of an X.509 signature; SignatureError."""
    if not sig.certificates:
        raise SignatureError("X.509 signature has no signer certificate")
    certs = [_load_der(der, "certificate %d of the X.509 signature" % (i + 1))
             for i, der in enumerate(sig.certificates)]
    leaf = certs[0]
    for name in (leaf.subject, leaf.issuer):
        if ambiguous(name):
            raise SignatureError("X.509 signer certificate DN %r has '/KEY=' inside a value, "
                                 "so its slash form is ambiguous; it is not accepted"
                                 % slash_dn(name))
    with warnings.catch_warnings():       # e.g. a serial <= 0: a warning on every read
        warnings.simplefilter("ignore")
        serial = leaf.serial_number
    return X509Signer(signature=bytes(sig.signature), leaf=leaf,
                      intermediates=tuple(certs[1:]), subject=slash_dn(leaf.subject),
                      issuer=slash_dn(leaf.issuer), serial=serial,
                      fingerprint="SHA256:" + hashlib.sha256(sig.certificates[0]).hexdigest(),
                      key=key_blob(leaf.public_key()))


def _check_key(key: Any, fail: Callable[[str], NoReturn]) -> None:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < RSA_MIN_BITS:
            fail("RSA key of %d bits is too small (minimum %d)" % (key.key_size, RSA_MIN_BITS))
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            fail("elliptic curve %s is not supported (P-256, P-384, P-521)" % key.curve.name)
        return
    fail("key type %s is not supported (RSA, ECDSA or Ed25519)" % type(key).__name__)


def verify_payload(signer: X509Signer, payload: bytes) -> None:
    """The raw signature over `payload`, by the signer certificate's key; SignatureError."""
    def fail(problem: str) -> NoReturn:
        raise SignatureError("X.509 signer %r: %s" % (signer.subject, problem))

    try:
        key = signer.leaf.public_key()
    except Exception as exc:  # noqa: BLE001 - unsupported or broken key: cannot verify
        fail("the certificate's public key cannot be used (%s)" % clip(exc))
    _check_key(key, fail)
    data = bytes(payload)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signer.signature, data)
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signer.signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signer.signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError(BAD_SIGNATURE, "sign with 'openssl dgst -sha256 -sign KEY' "
                             "(Ed25519: 'openssl pkeyutl -sign -rawin')") from None
    except Exception as exc:  # noqa: BLE001 - e.g. a malformed DER ECDSA signature
        fail("the signature is malformed (%s)" % clip(exc))


# --- chain and revocation -----------------------------------------------------------------


def _ee_policy() -> Any:
    """Extension rules for the signer certificate: a signing end entity, SAN optional."""
    from cryptography.x509.verification import Criticality, ExtensionPolicy

    def basic_constraints(_policy: Any, _cert: Any, value: Any) -> None:
        if value is not None and value.ca:
            raise ValueError("the signer certificate is a CA certificate")

    def key_usage(_policy: Any, _cert: Any, value: Any) -> None:
        if value is not None and not value.digital_signature:
            raise ValueError("the signer certificate's keyUsage lacks digitalSignature")
        if value is not None and value.key_cert_sign:
            raise ValueError("the signer certificate's keyUsage asserts keyCertSign")

    def extended_key_usage(_policy: Any, _cert: Any, value: Any) -> None:
        if value is not None and not any(oid in SIGNING_EKUS for oid in value):
            raise ValueError("the signer certificate's extendedKeyUsage allows none of %s"
                             % ", ".join(sorted(SIGNING_EKUS.values())))

    agnostic = Criticality.AGNOSTIC
    return (ExtensionPolicy.permit_all()
            .may_be_present(x509.BasicConstraints, agnostic, basic_constraints)
            .may_be_present(x509.KeyUsage, agnostic, key_usage)
            .may_be_present(x509.ExtendedKeyUsage, agnostic, extended_key_usage))


def _check_dates(signer: X509Signer, now: datetime.datetime) -> None:
    start, end = _not_before(signer.leaf), _not_after(signer.leaf)
    window = "valid %s .. %s, now %s" % (when(start), when(end), when(now))
    if now < start:
        raise SignatureError("X.509 certificate %r is not valid yet (%s; is time synced?)"
                             % (signer.subject, window))
    if now > end:
        raise SignatureError("X.509 certificate %r has expired (%s)" % (signer.subject, window),
                             "the VO must renew the robot certificate and re-sign")


def _anchors_for(signer: X509Signer, trust: TrustDir, anchor: str) -> List[Any]:
    """The CA certificates the chain may end at: those of the pinned name, from ca_dir."""
    if not trust.anchors:
        raise SignatureError("no CA certificate could be loaded from %s" % trust.path,
                             "install the IGTF CA bundle there or fix x509.ca_dir in the policy")
    found = trust.named(anchor)
    if found:
        return found
    if anchor == signer.issuer:
        raise SignatureError(
            "X.509 signer %r: its issuer %r is not a trust anchor in %s"
            % (signer.subject, signer.issuer, trust.path),
            "install that CA there; if it is an intermediate shipped with the signature, name "
            "the CA above it as x509.anchor of this signer in the policy")
    raise SignatureError("X.509 signer %r: the trust anchor %r is not in %s"
                         % (signer.subject, anchor, trust.path),
                         "install that CA there or fix x509.anchor of this signer in the policy")


def validate_chain(signer: X509Signer, trust: TrustDir, now: datetime.datetime,
                   anchor: Optional[str] = None) -> List[Any]:
    """The validated chain (signer first, trust anchor last); SignatureError otherwise.

    `anchor` is the slash DN of the CA in ca_dir the chain must end at; None (or the
    issuer's DN) means the signer's issuer itself, and shipped intermediates are not used.
    """
    problem = support_problem()
    if problem:
        raise SignatureError(*problem)
    from cryptography.x509.verification import (
        ExtensionPolicy,
        PolicyBuilder,
        Store,
        VerificationError,
    )

    _check_dates(signer, now)
    anchor = anchor or signer.issuer
    anchors = _anchors_for(signer, trust, anchor)
    # Without a named anchor, no intermediate: any CA could have minted one of that name.
    shipped = list(signer.intermediates) if anchor != signer.issuer else []
    builder = (PolicyBuilder().store(Store(anchors)).time(now)
               .max_chain_depth(LIMITS.x509_chain_depth)
               .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                   ee_policy=_ee_policy()))
    try:
        chain = list(builder.build_client_verifier().verify(signer.leaf, shipped).chain)
    except VerificationError as exc:
        text = str(exc)
        if "candidates exhausted with no interior errors" in text:
            if anchor != signer.issuer:
                raise SignatureError(
                    "X.509 signer %r: its certificate does not chain to the trust anchor %r "
                    "in %s through the certificates shipped with it"
                    % (signer.subject, anchor, trust.path),
                    "append the intermediate certificates after the signer's") from None
            raise SignatureError(
                "X.509 signer %r: no CA %r in %s issued its certificate (a look-alike of that "
                "name did)" % (signer.subject, anchor, trust.path),
                "the VO must sign with a certificate issued by that CA") from None
        text = re.sub(r"\s*\(encountered processing <Certificate\(.*$", "", text)
        raise SignatureError("X.509 signer %r: certificate chain does not validate against %s: "
                             "%s" % (signer.subject, trust.path, clip(text))) from None
    # Hostile input reached the verifier; whatever else it raises means "does not validate".
    except Exception as exc:  # noqa: BLE001 - e.g. a ValueError from a malformed field
        raise SignatureError("X.509 signer %r: certificate chain does not validate against %s "
                             "(%s)" % (signer.subject, trust.path, clip(exc))) from None
    top = chain[-1].public_bytes(Encoding.DER)
    if not any(a.public_bytes(Encoding.DER) == top for a in anchors):  # the verifier's promise
        raise SignatureError("X.509 signer %r: the chain does not end at anchor %r"
                             % (signer.subject, anchor))
    check_confinement(chain, trust)
    return chain


def verify_signer(signer: X509Signer, payload: bytes, settings: X509Settings,
                  now: datetime.datetime, trust: Callable[[], TrustDir],
                  anchor: Optional[str] = None) -> str:
    """Everything about one X.509 signature: version, payload signature, chain, CRLs.

    `settings` is the policy's `x509` section; `trust` loads the CA directory (once);
    `anchor` is the pinned signer's anchor DN (None: its issuer). Returns the CRL status
    ("checked", "absent" or "off").
    """
    problem = support_problem()
    if problem:
        raise SignatureError(*problem)
    if not settings.ca_dir:
        raise SignatureError("the site policy has no x509 section, so X.509 signatures "
                             "cannot be checked",
                             "add x509: {ca_dir: /etc/grid-security/certificates} to the policy")
    verify_payload(signer, payload)
    trusted = trust()
    with warnings.catch_warnings():       # the input's quirks are reported as errors, if at all
        warnings.simplefilter("ignore")
        chain = validate_chain(signer, trusted, now, anchor)
        return check_revocation(chain, trusted, now, settings.crl, settings.crl_max_stale)
