"""The site's X.509 CA directory, IGTF style: anchors, CRLs, and the policy files that
confine each anchor; and the two checks made against it, namespace confinement and revocation.

`/etc/grid-security/certificates` holds `<hash>.0` (or `<Alias>.pem`) CA certificates, `<hash>.r0`
CRLs as fetch-crl writes them, and per CA the IGTF `<hash>.signing_policy` (Globus EACL) and
`<hash>.namespaces` (EUGridPMA) files saying which subjects that CA may sign. Certificates are
named in OpenSSL's legacy slash form (`-nameopt compat`), the form grid policies use.

What it must never do:
- abort on one unreadable file in the directory: anchors and CRLs load one by one, and what
  cannot load is skipped with a warning naming the file;
- read a policy file it does not fully understand as permissive: an unreadable or malformed
  one allows nothing;
- parse a slash DN from the policy into a Name: a certificate's Name is turned into the slash
  string one fixed way (`slash_dn`) and strings are compared exactly;
- let anything but SignatureError out of the checks on hostile input.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import shlex
import stat
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from contextd.errors import SignatureError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.record import field, record

log = logging.getLogger("contextd")

# OpenSSL's short names, as `openssl x509 -noout -subject -nameopt compat` prints them.
_SHORT_NAMES = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
    "2.5.4.11": "OU", "2.5.4.5": "serialNumber", "2.5.4.4": "SN", "2.5.4.42": "GN",
    "2.5.4.12": "title", "2.5.4.43": "initials", "2.5.4.44": "generationQualifier",
    "2.5.4.46": "dnQualifier", "2.5.4.65": "pseudonym", "2.5.4.9": "street",
    "2.5.4.17": "postalCode", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID", "1.2.840.113549.1.9.1": "emailAddress",
}
_RDN_INSIDE = Pattern(r"/[A-Za-z0-9.]+=")
_CERT_FILE = Pattern(r"^[^.].*\.(pem|[0-9]+)$")     # <hash>.0, <hash>.1, <Alias>.pem
_CRL_FILE = Pattern(r"^[^.].*\.r[0-9]+$")           # <hash>.r0 (fetch-crl)
_HASH_FILE = Pattern(r"^([0-9a-f]{8})\.[0-9]+$")    # <hash>.0; policy files: <hash>.<kind>
CONFINING = ("signing_policy", "namespaces")


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


# --- names and dates ---------------------------------------------------------------------


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


def ambiguous(name: Any) -> bool:
    """True when a value holds what reads as another RDN ("CN=a/CN=b" vs /CN=a/CN=b)."""
    return any(isinstance(attr.value, str) and _RDN_INSIDE.search(attr.value)
               for attr in name)


def when(t: datetime.datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def clip(text: object, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


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
            raise ValueError("line %d is not understood: %s" % (number, clip(line, 80)))
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
            raise ValueError("statement %d is not understood: %s" % (number, clip(line, 80)))
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
        return Confinement(file=path, problem=clip(exc, 120))
    reader = _signing_policy if kind == "signing_policy" else _namespaces
    try:
        return Confinement(file=path, rules=reader(text, self_dn))
    except (ValueError, re.error) as exc:     # shlex and re raise these on malformed input
        return Confinement(file=path, problem=clip(exc, 120))


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
                notes.append("skipped %s: %s" % (full, clip(exc, 120)))
                continue
        for w in caught:
            notes.append("%s: %s" % (full, clip(w.message, 160)))
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


# --- checks against it -------------------------------------------------------------------


def check_confinement(chain: Sequence[Any], trust: TrustDir) -> None:
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
                "x509.crl_max_stale %ds)" % (ca, name, when(next_update), when(now),
                                             max_stale), "run fetch-crl")
        try:
            revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            since = revoked and (getattr(revoked, "revocation_date_utc", None)
                                 or revoked.revocation_date)
        except Exception as exc:  # noqa: BLE001 - entries are parsed lazily: unusable CRL
            raise SignatureError("the CRL for CA %r (%s) cannot be read (%s)"
                                 % (ca, name, clip(exc, 120)), "run fetch-crl") from None
        if revoked is not None:
            raise SignatureError("X.509 certificate %r (serial %X) is revoked by CA %r since %s"
                                 % (slash_dn(cert.subject), cert.serial_number, ca,
                                    when(since)))
    return status
