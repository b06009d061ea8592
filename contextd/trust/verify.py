"""Signature verification: the only way to obtain a `Verified` payload.

It takes bytes, the policy and the clock and does no I/O of its own; the one exception is
the site's X.509 CA directory, read through an injectable loader, and only when an X.509
signature names a signer the policy lists. It never parses YAML: the payload is still opaque
here, and only the type tag on its first line is checked after a trusted signature holds.
Namespace and algorithms are fixed in code, never taken from the input.

Each signature is mapped to policy signers of every VO: an SSH key by key equality (a
certificate signature also counts for an `ssh_key` signer pinning the certified key); an
SSH certificate by its CA key, then principals, validity and critical options; an X.509
signature by (issuer DN, subject DN), then chain to the pinned anchor and CRLs. Revoked ones
are dropped. A signature that does not count leaves a note saying why.

A threshold counts keys, not names: each match remembers the key that signed (an SSH
certificate counts as the key it certifies, an X.509 signer as its certificate's key), and a
VO's count is the largest set of signatures in which every key and every signer counts once.
It must never let one key count twice, however many ids or CAs vouch for it.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from contextd.trust import sshsig
from contextd.bundle import X509Signature
from contextd.errors import SignatureError
from contextd.policy import Policy, Signer
from contextd.record import field, record

TYPE_TAG = b"contextd: payload/v1"
_TOKEN = object()


@record(frozen=True)
class SignerMatch:
    vo: str
    signer: Signer
    fingerprint: str               # SSH: the signing key's; X.509: the signer certificate's
    key_id: Optional[str] = None   # SSH certificate: its key id
    serial: Optional[int] = None   # SSH certificate or X.509 signer certificate serial
    ca_fingerprint: Optional[str] = None   # SSH certificate: the CA key's
    subject: Optional[str] = None  # X.509: the signer's subject DN (slash form)
    issuer: Optional[str] = None   # X.509: its issuer DN
    crl: Optional[str] = None      # X.509: "checked", "absent" (no CRL for a CA) or "off"
    key: bytes = field(default=b"", repr=False)   # the signing key (what a threshold counts)

    @property
    def label(self) -> str:
        """How reports name the signer: the policy id, plus the key id for SSH certificates."""
        if self.key_id is not None:
            return "%s:%s" % (self.signer.id, self.key_id)
        return self.signer.id

    def details(self) -> Dict[str, Any]:
        """The report's structured view of this signer (no secrets: public identifiers)."""
        out: Dict[str, Any] = {"id": self.signer.id, "kind": self.signer.kind,
                               "label": self.label, "fingerprint": self.fingerprint}
        if self.key_id is not None:
            out.update(key_id=self.key_id, serial=self.serial,
                       ca_fingerprint=self.ca_fingerprint)
        if self.subject is not None:
            out.update(subject=self.subject, issuer=self.issuer,
                       serial="%X" % self.serial if self.serial is not None else None,
                       crl=self.crl)
        return out


@record(frozen=True)
class Verified:
    """Payload bytes with at least one trusted signature; made only by `verify`."""

    data: bytes = field(repr=False)
    sha256: str
    signers: Mapping[str, Tuple[SignerMatch, ...]]   # VO -> distinct trusted signers
    notes: Tuple[str, ...]                           # signatures that did not count, and why
    # True only for legacy user-data let through by accept_unsigned_legacy (signers empty).
    unsigned: bool = False
    # VO -> how many distinct keys signed for distinct signers: what a threshold counts
    key_counts: Mapping[str, int] = field(default_factory=dict)
    _token: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise TypeError("Verified values are made by contextd.trust.verify.verify only")

    def counted(self, vo: str) -> int:
        """What counts toward `vo`'s threshold: distinct keys, each for a distinct signer."""
        return self.key_counts.get(vo, 0)


def distinct_keys(pairs: Sequence[Tuple[bytes, str]]) -> int:
    """The size of a largest matching of signing keys to signer ids (each used once).

    One key vouched for by two ids (a pinned key and the CA that certified it) counts once;
    two keys certified by one CA id count once too. Augmenting paths; the sets are tiny.
    """
    ids_of: Dict[bytes, List[str]] = {}
    for key, sid in pairs:
        ids_of.setdefault(key, [])
        if sid not in ids_of[key]:
            ids_of[key].append(sid)
    owner: Dict[str, bytes] = {}         # signer id -> the key it counts for

    def assign(key: bytes, visited: set) -> bool:
        for sid in ids_of[key]:
            if sid not in visited:
                visited.add(sid)
                if sid not in owner or assign(owner[sid], visited):
                    owner[sid] = key
                    return True
        return False

    return sum(1 for key in ids_of if assign(key, set()))


def accept_unsigned_legacy(data: bytes, policy: Policy, kind: str = "amiconfig") -> Verified:
    """UNSIGNED: let legacy amiconfig user-data through, only where the site opted in.

    The one way unsigned bytes become a `Verified` value: the policy must say
    `require_signature: false` *and* `legacy.amiconfig: {as_vo: VO}`. The value has no
    signers and `unsigned=True`; `payload.parse` refuses it, only `contextd.legacy` reads it.
    """
    if kind != "amiconfig":
        raise SignatureError("unsigned %s context refused: contextd accepts only amiconfig "
                             "user-data unsigned, and only where the site allows it" % kind)
    if policy.require_signature:
        raise SignatureError("unsigned amiconfig user-data refused: the site policy requires "
                             "signatures (require_signature: true)",
                             "ask the VO for a signed contextd bundle")
    if policy.legacy.amiconfig is None:
        raise SignatureError("unsigned amiconfig user-data refused: the site policy has "
                             "legacy.amiconfig: deny",
                             "ask the VO for a signed contextd bundle")
    return Verified(data=data, sha256=hashlib.sha256(data).hexdigest(), signers={},
                    notes=("unsigned amiconfig user-data, accepted by legacy.amiconfig as VO %s"
                           % policy.legacy.amiconfig.as_vo,),
                    unsigned=True, _token=_TOKEN)


@record(frozen=True)
class Anchors:
    """The X.509 trust anchors and CRLs (a cadir.TrustDir) loaded for verify, or the
    SignatureError loading them raised: each X.509 signature that needs them meets it."""

    trust: Any = None
    error: Optional[SignatureError] = None

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.trust


def needs_anchors(policy: Policy, signatures: Sequence[Any]) -> bool:
    """Whether checking these signatures can need the CA directory: the policy pins an X.509
    signer and an X.509 signature is present."""
    return (any(s.kind == "x509" for t in policy.trust.values() for s in t.signers)
            and any(isinstance(sig, X509Signature) for sig in signatures))


def load_anchors(policy: Policy) -> Anchors:
    """The policy's x509.ca_dir, read once (the run does this I/O, not verify)."""
    if not policy.x509.ca_dir:
        return Anchors()            # verify_signer refuses X.509 before it asks for anchors
    from contextd.trust import cadir

    try:
        return Anchors(trust=cadir.load_ca_dir(policy.x509.ca_dir))
    except SignatureError as exc:
        return Anchors(error=exc)


def _lazy_anchors(policy: Policy, ca_loader: Optional[Callable[[str], Any]]
                  ) -> Callable[[], Any]:
    """Without anchors from the run: load the CA directory when a signature first needs it."""
    trust_dir: List[Any] = []

    def load_trust() -> Any:
        if not trust_dir:
            from contextd.trust import cadir

            loader = ca_loader or cadir.load_ca_dir
            trust_dir.append(loader(str(policy.x509.ca_dir)))
        return trust_dir[0]
    return load_trust


class _Skip(Exception):
    """Internal: this signature does not count; the message (a whole note) says why, `fix`
    what the signer should do about it."""

    def __init__(self, note: str, fix: Optional[str] = None):
        super().__init__(note)
        self.fix = fix


# What a signer does about each cause (issue 15: the fix of one cause is no help for another).
_UNLISTED = ("sign with a key listed under trust.<vo>.signers in the site policy, or ask the "
             "site to list key %s")
_TAMPERED = ("the payload changed after it was signed, or another key made this signature: "
             "sign the exact payload bytes again")
_REVOKED = "the site revoked it: sign with a key (or certificate) the site has not revoked"
_GENERIC = "sign with a key listed under trust.<vo>.signers in the site policy"


def _fix_for(exc: SignatureError) -> Optional[str]:
    if exc.hint:
        return exc.hint
    return _TAMPERED if exc.message == sshsig.BAD_SIGNATURE else None


def _cert_fix(problem: str) -> Optional[str]:
    if "principal" in problem:
        return ("have the VO CA issue the certificate for a principal the site lists under "
                "trust.<vo>.signers[].principals")
    if "expired" in problem or "not valid yet" in problem:
        return "use a certificate valid now (renew it, or check the clock)"
    return None


def _hint(fixes: Sequence[Optional[str]]) -> str:
    """Each distinct fix once, in the order of the signatures; the catch-all without any."""
    seen = [f for i, f in enumerate(fixes) if f and f not in fixes[:i]]
    return "; ".join(seen) or _GENERIC


def verify(payload: bytes, signatures: Sequence[Any], policy: Policy,
           now: Optional[datetime.datetime] = None,
           ca_loader: Optional[Callable[[str], Any]] = None,
           anchors: Optional[Anchors] = None) -> Verified:
    """Check every signature; return the payload with the trusted signers of each VO.

    `signatures` are SSHSIG blobs (bytes) and bundle.X509Signature values as the carriers
    decode them. `now` (aware UTC; default: the current time) is the clock for certificate
    validity and CRL freshness. `anchors`: the X.509 CA directory as the run loaded it
    (load_anchors); without it, `ca_loader(path)` (default cadir.load_ca_dir) loads it
    when a signature first needs it, at most once. Raises SignatureError when no
    signature is trusted.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    trusted: Dict[str, Dict[str, SignerMatch]] = {}
    pairs: Dict[str, List[Tuple[bytes, str]]] = {}     # VO -> (signing key, signer id)
    notes: List[str] = []
    fixes: List[Optional[str]] = []
    load_trust = anchors.get if anchors is not None else _lazy_anchors(policy, ca_loader)

    for index, sig in enumerate(signatures, start=1):
        where = "signature %d" % index
        try:
            if isinstance(sig, X509Signature):
                found = _x509(sig, payload, policy, now, load_trust, notes, where, fixes)
            else:
                found = _ssh(bytes(sig), payload, policy, now, notes, where, fixes)
        except _Skip as exc:
            notes.append(str(exc))
            fixes.append(exc.fix)
            continue
        except SignatureError as exc:
            notes.append("%s: %s" % (where, exc.message))
            fixes.append(_fix_for(exc))
            continue
        for match in found:
            trusted.setdefault(match.vo, {}).setdefault(match.signer.id, match)
            pairs.setdefault(match.vo, []).append((match.key, match.signer.id))
    if not trusted:
        raise SignatureError("no trusted signature on payload: %s"
                             % "; ".join(notes or ["no signatures"]), _hint(fixes))
    first_line = payload.split(b"\n", 1)[0].rstrip(b"\r").rstrip()
    if first_line != TYPE_TAG:
        raise SignatureError("signed data is not a contextd payload (first line must be %r)"
                             % TYPE_TAG.decode())
    counts = {vo: distinct_keys(p) for vo, p in pairs.items()}
    for vo, n in counts.items():
        if n < len(trusted[vo]):
            notes.append("VO %s: signers %s count as %d toward its threshold (a threshold "
                         "counts distinct keys)" % (vo, ", ".join(sorted(trusted[vo])), n))
    return Verified(
        data=payload,
        sha256=hashlib.sha256(payload).hexdigest(),
        signers={vo: tuple(m.values()) for vo, m in trusted.items()},
        notes=tuple(notes),
        key_counts=counts,
        _token=_TOKEN,
    )


def _ssh(blob: bytes, payload: bytes, policy: Policy, now: datetime.datetime,
         notes: List[str], where: str, fixes: List[Optional[str]]) -> List[SignerMatch]:
    sig = sshsig.parse(blob)
    cert = sig.certificate
    key_fp = sshsig.fingerprint(sig.signing_key)
    matches = [(vo, s) for vo, t in policy.trust.items() for s in t.signers
               if s.kind == "ssh_key" and s.key_blob == sig.signing_key]
    if cert is not None:
        matches += [(vo, s) for vo, t in policy.trust.items() for s in t.signers
                    if s.kind == "ssh_ca" and s.key_blob == cert.ca_blob]
    if not matches:
        if cert is None:
            raise _Skip("%s: key %s is not a trusted signer for any VO" % (where, key_fp),
                        _UNLISTED % key_fp)
        raise _Skip("%s: SSH certificate %r (key %s) is signed by CA %s, which is not a "
                    "trusted signer for any VO" % (where, cert.key_id, key_fp,
                                                    cert.ca_fingerprint),
                    _UNLISTED % cert.ca_fingerprint)

    kept = []
    for vo, signer in matches:
        revoked = policy.trust[vo].revoked
        if key_fp in revoked.ssh_fingerprints:
            notes.append("%s: key %s (%s) is revoked" % (where, key_fp, signer.id))
        elif signer.kind == "ssh_ca" and cert is not None and (
                cert.ca_fingerprint in revoked.ssh_fingerprints):
            notes.append("%s: CA key %s (%s) is revoked" % (where, cert.ca_fingerprint,
                                                            signer.id))
        elif signer.kind == "ssh_ca" and cert is not None and (
                cert.key_id in revoked.ssh_cert_key_ids):
            notes.append("%s: SSH certificate %r (%s) is revoked" % (where, cert.key_id,
                                                                     signer.id))
        else:
            kept.append((vo, signer))
            continue
        fixes.append(_REVOKED)
    if not kept:
        return []

    try:
        sshsig.verify(sig, payload)
    except SignatureError as exc:
        raise _Skip("%s by %s: %s" % (where, kept[0][1].id, exc.message),
                    _fix_for(exc)) from None

    out = []
    for vo, signer in kept:
        if signer.kind == "ssh_key":
            out.append(SignerMatch(vo, signer, key_fp, key=sig.signing_key))
            continue
        assert cert is not None
        problem = sshsig.certificate_problem(cert, signer.principals, now, policy.clock_skew)
        if problem:
            notes.append("%s: signer %r: %s" % (where, signer.id, problem))
            fixes.append(_cert_fix(problem))
            continue
        out.append(SignerMatch(vo, signer, key_fp, key_id=cert.key_id, serial=cert.serial,
                               ca_fingerprint=cert.ca_fingerprint, key=sig.signing_key))
    return out


def _x509(sig: X509Signature, payload: bytes, policy: Policy, now: datetime.datetime,
          load_trust: Callable[[], Any], notes: List[str], where: str,
          fixes: List[Optional[str]]) -> List[SignerMatch]:
    from contextd.trust import x509sig

    signer_cert = x509sig.parse(sig)
    matches = [(vo, s) for vo, t in policy.trust.items() for s in t.signers
               if s.kind == "x509" and s.x509_subject == signer_cert.subject
               and s.x509_issuer == signer_cert.issuer]
    if not matches:
        raise _Skip("%s: X.509 signer %r (issuer %r) is not a trusted signer for any VO"
                    % (where, signer_cert.subject, signer_cert.issuer),
                    "sign with a certificate listed under trust.<vo>.signers[].x509")
    out = []
    checked: Dict[Optional[str], Optional[str]] = {}   # anchor -> CRL status, None: failed
    for vo, s in matches:
        if s.x509_anchor not in checked:
            try:
                checked[s.x509_anchor] = x509sig.verify_signer(
                    signer_cert, payload, policy.x509, now, load_trust, s.x509_anchor)
            except SignatureError as exc:
                # The remedy ("run fetch-crl", "install that CA") belongs with the reason.
                reason = "%s (%s)" % (exc.message, exc.hint) if exc.hint else exc.message
                notes.append("%s by %s: %s" % (where, s.id, reason))
                fixes.append(_fix_for(exc))
                checked[s.x509_anchor] = None
        if checked[s.x509_anchor] is not None:
            out.append(SignerMatch(vo, s, signer_cert.fingerprint, serial=signer_cert.serial,
                                   subject=signer_cert.subject, issuer=signer_cert.issuer,
                                   crl=checked[s.x509_anchor], key=signer_cert.key))
    return out
