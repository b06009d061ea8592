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
- abort on one unreadable file in the CA directory: anchors and CRLs load one by one, and
  what cannot load is skipped with a warning naming the file;
- let anything but SignatureError (SigningError for the signing side's
  certificates) out on hostile input: every
  certificate is decoded completely (cryptography parses some fields lazily) before use;
- accept a chain that ends anywhere but at an anchor the policy names, or that the anchor's
  signing_policy/namespaces files do not allow (an unreadable one allows nothing).

It is longer than the house's 400 lines: parsing, the CA directory with its IGTF policy
files, and chain plus revocation checks are one trust decision; the CA directory loader
(`load_ca_dir` and the IGTF parsers, ~170 lines) is the natural next module to split off.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import os
import re
import shlex
import stat
import warnings
from typing import (TYPE_CHECKING, Any, Callable, Dict, List, Mapping, NoReturn, Optional,
                    Sequence, Tuple)

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
from contextd.trust.sshsig import BAD_SIGNATURE, cryptography_version, version_tuple

if TYPE_CHECKING:
    from contextd.settings import X509Settings

log = logging.getLogger("contextd")

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
# OpenSSL's short names, as `openssl x509 -noout -subject -nameopt compat` prints them.
_SHORT_NAMES = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
    "2.5.4.11": "OU", "2.5.4.5": "serialNumber", "2.5.4.4": "SN", "2.5.4.42": "GN",
    "2.5.4.12": "title", "2.5.4.43": "initials", "2.5.4.44": "generationQualifier",
    "2.5.4.46": "dnQualifier", "2.5.4.65": "pseudonym", "2.5.4.9": "street",
    "2.5.4.17": "postalCode", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID", "1.2.840.113549.1.9.1": "emailAddress",
}
_RDN_INSIDE = re.compile(r"/[A-Za-z0-9.]+=")
_CERT_FILE = re.compile(r"^[^.].*\.(pem|[0-9]+)$")     # <hash>.0, <hash>.1, <Alias>.pem
_CRL_FILE = re.compile(r"^[^.].*\.r[0-9]+$")           # <hash>.r0 (fetch-crl)
_HASH_FILE = re.compile(r"^([0-9a-f]{8})\.[0-9]+$")    # <hash>.0; policy files: <hash>.<kind>
CONFINING = ("signing_policy", "namespaces")


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


@record(frozen=True)
class Rule:
    """One line of an anchor's policy file: CA `issuer` may (not) sign subjects `pattern`."""

    issuer: str                  # slash DN
    pattern: Any                 # compiled regular expression, matched in full
    permit: bool


@record(frozen=True)
class Confinement:
    """What one IGTF policy file (`<hash>.signing_policy` or `.namespaces`) lets CAs sign."""

    file: str
    rules: Tuple[Rule, ...] = ()
    problem: Optional[str] = None        # unreadable or malformed: it allows nothing

    def refusal(self, issuer: str, subject: str) -> Optional[str]:
        """Why this file does not let CA `issuer` sign `subject`, or None when it does."""
        if self.problem:
            return "%s cannot be used (%s)" % (self.file, self.problem)
        mine = [r for r in self.rules if r.issuer == issuer]
        if not mine:
            return "%s has no rule for CA %r" % (self.file, issuer)
        if any(not r.permit and r.pattern.fullmatch(subject) for r in mine):
            return "%s denies CA %r to sign %r" % (self.file, issuer, subject)
        if not any(r.permit and r.pattern.fullmatch(subject) for r in mine):
            return "%s does not allow CA %r to sign %r" % (self.file, issuer, subject)
        return None


@record(frozen=True)
class TrustDir:
    """The site's CA directory as loaded: anchors and CRLs, and what was skipped."""

    path: str
    anchors: Tuple[Any, ...] = field(repr=False)                  # x509.Certificate
    crls: Tuple[Tuple[str, Any], ...] = field(repr=False)         # (file name, CRL)
    warnings: Tuple[str, ...] = ()
    subjects: Tuple[str, ...] = ()                    # slash DN of each anchor, in order
    # anchor DER -> its policy files (none: unconfined, as grid middleware treats it)
    confinements: Mapping[bytes, Tuple[Confinement, ...]] = field(
        default_factory=dict, repr=False, compare=False)

    def named(self, dn: str) -> List[Any]:
        """The anchors whose subject is `dn` (a CA re-keyed under one name has several)."""
        return [a for a, name in zip(self.anchors, self.subjects) if name == dn]


# --- names and versions ------------------------------------------------------------------


def slash_dn(name: Any) -> str:
    """A Name in OpenSSL's legacy slash form, most significant RDN first (`-nameopt compat`)."""
    parts = []
    for rdn in name.rdns:
        attrs = []
        for attr in rdn:
            oid = attr.oid.dotted_string
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            attrs.append("%s=%s" % (_SHORT_NAMES.get(oid, oid), value))
        parts.append("+".join(attrs))
    return "".join("/" + p for p in parts)


def _ambiguous(name: Any) -> bool:
    """True when a value holds what reads as another RDN ("CN=a/CN=b" vs /CN=a/CN=b)."""
    return any(isinstance(attr.value, str) and _RDN_INSIDE.search(attr.value)
               for attr in name)


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


def _when(t: datetime.datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _not_before(cert: Any) -> datetime.datetime:
    t = getattr(cert, "not_valid_before_utc", None)
    return t if t is not None else cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def _not_after(cert: Any) -> datetime.datetime:
    t = getattr(cert, "not_valid_after_utc", None)
    return t if t is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def _short(text: object, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


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
                    % (what, type(exc).__name__, _short(exc, 120)),
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
        if _ambiguous(name):
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
        fail("the certificate's public key cannot be used (%s)" % _short(exc))
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
        fail("the signature is malformed (%s)" % _short(exc))


# --- the CA directory --------------------------------------------------------------------


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError("not a regular file")
        data = f.read(LIMITS.ca_file_bytes + 1)
    if len(data) > LIMITS.ca_file_bytes:
        raise OSError("larger than %d bytes" % LIMITS.ca_file_bytes)
    return data


def _load_anchor(data: bytes) -> Any:
    if b"-----BEGIN" in data:
        cert = x509.load_pem_x509_certificate(data)
    else:
        cert = x509.load_der_x509_certificate(data)
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise ValueError("not a CA certificate (basicConstraints CA:TRUE missing)")
    slash_dn(cert.subject), cert.public_key()         # read once: lazily parsed fields
    return cert


def _load_crl(data: bytes) -> Any:
    crl = (x509.load_pem_x509_crl(data) if b"-----BEGIN" in data
           else x509.load_der_x509_crl(data))
    crl.issuer, _crl_dates(crl)                       # read once: lazily parsed fields
    return crl


# --- IGTF policy files: <hash>.signing_policy (Globus EACL) and <hash>.namespaces ----------


def _glob(pattern: str) -> Any:
    """An EACL subject pattern: `*` any characters, `?` one, everything else literal."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern), re.DOTALL)


def _signing_policy(text: str, self_dn: str) -> Tuple[Rule, ...]:
    """access_id_CA X509 '<DN>' / pos_rights globus CA:sign / cond_subjects globus '"<glob>" ...'.

    A block grants only with `pos_rights globus CA:sign`; anything else is an error (the
    file then allows nothing), as Globus treats an EACL it does not understand.
    """
    rules: List[Rule] = []
    ca = None
    signs = False
    for number, line in enumerate(text.splitlines(), start=1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        key = words[0].lower()
        if key == "access_id_ca" and len(words) == 3 and words[1].upper() == "X509":
            ca, signs = words[2], False
        elif key == "pos_rights" and ca and words[1:] == ["globus", "CA:sign"]:
            signs = True
        elif key == "cond_subjects" and ca and signs and len(words) == 3 and \
                words[1] == "globus":
            rules.extend(Rule(issuer=ca, pattern=_glob(p), permit=True)
                         for p in shlex.split(words[2]))
        else:
            raise ValueError("line %d is not understood: %s" % (number, _short(line, 80)))
    return tuple(rules)


def _namespaces(text: str, self_dn: str) -> Tuple[Rule, ...]:
    """TO Issuer "<DN>"|SELF PERMIT|DENY Subject "<regular expression>" (EUGridPMA format)."""
    rules: List[Rule] = []
    for number, line in enumerate(re.sub(r"\\\r?\n", " ", text).splitlines(), start=1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if len(words) != 6 or [w.upper() for w in (words[0], words[1], words[4])] != [
                "TO", "ISSUER", "SUBJECT"] or words[3].upper() not in ("PERMIT", "DENY"):
            raise ValueError("statement %d is not understood: %s" % (number, _short(line, 80)))
        issuer = self_dn if words[2] == "SELF" else words[2]
        rules.append(Rule(issuer=issuer, pattern=re.compile(words[5], re.DOTALL),
                          permit=words[3].upper() == "PERMIT"))
    return tuple(rules)


def _confinement(path: str, kind: str, self_dn: str) -> Optional[Confinement]:
    """The rules of one policy file; None when there is none; a problem when it is unusable."""
    try:
        text = _read(path).decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return Confinement(file=path, problem=_short(exc, 120))
    reader = _signing_policy if kind == "signing_policy" else _namespaces
    try:
        return Confinement(file=path, rules=reader(text, self_dn))
    except (ValueError, re.error) as exc:     # shlex and re raise these on malformed input
        return Confinement(file=path, problem=_short(exc, 120))


def load_ca_dir(path: str) -> TrustDir:
    """Anchors (`*.0`, `*.<n>`, `*.pem`) and CRLs (`*.r0`) of an IGTF-style CA directory.

    Each file loads on its own; one that cannot (garbage, not a CA, too large) is skipped
    with a warning naming it. Loading warnings (e.g. cryptography's deprecation warning for
    the IGTF roots with serial number 0) are passed on as warnings too, and the file is kept.
    """
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise SignatureError("cannot read the X.509 CA directory %s: %s"
                             % (path, exc.strerror or exc),
                             "install the IGTF CA bundle there or fix x509.ca_dir in the policy"
                             ) from None
    anchors: List[Any] = []
    seen: Dict[bytes, List[str]] = {}          # anchor DER -> the <hash> names it has
    crls: List[Tuple[str, Any]] = []
    notes: List[str] = []
    for name in names[:LIMITS.ca_files]:
        is_cert, is_crl = bool(_CERT_FILE.match(name)), bool(_CRL_FILE.match(name))
        if not is_cert and not is_crl:
            continue
        full = os.path.join(path, name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                data = _read(full)
                loaded = _load_anchor(data) if is_cert else _load_crl(data)
            # One bad file must not take the whole directory down; it is named, not hidden.
            except Exception as exc:  # noqa: BLE001 - skip this file with a warning
                notes.append("skipped %s: %s" % (full, _short(exc, 120)))
                continue
        for w in caught:
            notes.append("%s: %s" % (full, _short(w.message, 160)))
        if is_crl:
            crls.append((name, loaded))
            continue
        der = loaded.public_bytes(Encoding.DER)
        if der not in seen:           # <hash>.0 and <Alias>.pem are usually the same CA
            seen[der] = []
            anchors.append(loaded)
        hashed = _HASH_FILE.match(name)
        if hashed:
            seen[der].append(hashed.group(1))
    if len(names) > LIMITS.ca_files:
        notes.append("only the first %d files of %s were read" % (LIMITS.ca_files, path))
    for note in notes:
        log.warning("CA directory: %s", note)
    subjects = tuple(slash_dn(a.subject) for a in anchors)
    confinements = {}
    for anchor, subject in zip(anchors, subjects):
        der = anchor.public_bytes(Encoding.DER)
        found = [_confinement(os.path.join(path, "%s.%s" % (stem, kind)), kind, subject)
                 for stem in sorted(set(seen[der])) for kind in CONFINING]
        confinements[der] = tuple(c for c in found if c is not None)
    return TrustDir(path=path, anchors=tuple(anchors), crls=tuple(crls), warnings=tuple(notes),
                    subjects=subjects, confinements=confinements)


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
    window = "valid %s .. %s, now %s" % (_when(start), _when(end), _when(now))
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
                             "%s" % (signer.subject, trust.path, _short(text))) from None
    # Hostile input reached the verifier; whatever else it raises means "does not validate".
    except Exception as exc:  # noqa: BLE001 - e.g. a ValueError from a malformed field
        raise SignatureError("X.509 signer %r: certificate chain does not validate against %s "
                             "(%s)" % (signer.subject, trust.path, _short(exc))) from None
    top = chain[-1].public_bytes(Encoding.DER)
    if not any(a.public_bytes(Encoding.DER) == top for a in anchors):  # the verifier's promise
        raise SignatureError("X.509 signer %r: the chain does not end at anchor %r"
                             % (signer.subject, anchor))
    _check_confinement(chain, trust)
    return chain


def _check_confinement(chain: Sequence[Any], trust: TrustDir) -> None:
    """Every certificate below the anchor against the anchor's IGTF policy files."""
    files = trust.confinements.get(chain[-1].public_bytes(Encoding.DER), ())
    for cert, issuer in zip(chain, chain[1:]):
        subject, issuer_dn = slash_dn(cert.subject), slash_dn(issuer.subject)
        for confinement in files:
            refusal = confinement.refusal(issuer_dn, subject)
            if refusal:
                raise SignatureError("X.509 certificate %r is outside the namespace of its "
                                     "trust anchor: %s" % (subject, refusal),
                                     "the VO's robot certificate must come from a CA allowed "
                                     "to issue that name, or the site fixes the policy file")


def _crl_dates(crl: Any) -> Tuple[datetime.datetime, Optional[datetime.datetime]]:
    """(lastUpdate, nextUpdate): a CRL always has the first (RFC 5280 thisUpdate)."""
    last = getattr(crl, "last_update_utc", None) or crl.last_update.replace(
        tzinfo=datetime.timezone.utc)
    nxt = getattr(crl, "next_update_utc", None)
    if nxt is None and crl.next_update is not None:
        nxt = crl.next_update.replace(tzinfo=datetime.timezone.utc)
    return last, nxt


def check_revocation(chain: Sequence[Any], trust: TrustDir, now: datetime.datetime,
                     mode: str, max_stale: int) -> str:
    """Every certificate in `chain` below the anchor against its issuer's CRL; SignatureError.

    mode: `off` checks nothing; `if-present` checks where the directory has a CRL for the
    issuer; `required` also rejects when it has none. A CRL must verify with the issuer's
    key and be no more than `max_stale` seconds past its nextUpdate ("run fetch-crl").
    Returns what the report says: "off", "checked", or "absent" (some CA had no CRL).
    """
    if mode == "off":
        return "off"
    status = "checked"
    for cert, issuer in zip(chain, chain[1:]):
        ca = slash_dn(issuer.subject)
        candidates = [(n, c) for n, c in trust.crls if c.issuer == issuer.subject]
        good = []
        for name, crl in candidates:
            try:
                ok = crl.is_signature_valid(issuer.public_key())
            except Exception:  # noqa: BLE001 - an unusable CRL counts as a bad one
                ok = False
            if ok:
                good.append((name, crl))
        if not good:
            if candidates:
                raise SignatureError("the CRL for CA %r (%s) does not verify with the CA's key"
                                     % (ca, ", ".join(n for n, _ in candidates)),
                                     "run fetch-crl to replace it")
            if mode == "required":
                raise SignatureError("no CRL for CA %r in %s (x509.crl is required)"
                                     % (ca, trust.path), "run fetch-crl")
            status = "absent"
            continue
        name, crl = max(good, key=lambda item: _crl_dates(item[1])[0])
        _, next_update = _crl_dates(crl)
        if next_update is not None and (
                now - next_update).total_seconds() > max_stale:
            raise SignatureError(
                "the CRL for CA %r (%s) is stale: its next update was due %s (now %s, "
                "x509.crl_max_stale %ds)" % (ca, name, _when(next_update), _when(now),
                                             max_stale), "run fetch-crl")
        try:
            revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            since = revoked and (getattr(revoked, "revocation_date_utc", None)
                                 or revoked.revocation_date)
        except Exception as exc:  # noqa: BLE001 - entries are parsed lazily: unusable CRL
            raise SignatureError("the CRL for CA %r (%s) cannot be read (%s)"
                                 % (ca, name, _short(exc, 120)), "run fetch-crl") from None
        if revoked is not None:
            raise SignatureError("X.509 certificate %r (serial %X) is revoked by CA %r since %s"
                                 % (slash_dn(cert.subject), cert.serial_number, ca,
                                    _when(since)))
    return status


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
