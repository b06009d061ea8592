"""Signature verification: the only way to obtain a `Verified` payload.

It takes bytes and the policy and does no I/O. It never parses YAML: the payload is
still opaque here, and only the type tag on its first line is checked after a trusted
signature holds. Namespace and algorithms are fixed in code, never taken from the input.
"""

import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence, Tuple

from contextd import sshsig
from contextd.errors import SignatureError
from contextd.policy import Policy, Signer

TYPE_TAG = b"contextd: payload/v1"
_TOKEN = object()


@dataclass(frozen=True)
class SignerMatch:
    vo: str
    signer: Signer
    fingerprint: str

    @property
    def label(self) -> str:
        return self.signer.id


@dataclass(frozen=True)
class Verified:
    """Payload bytes with at least one trusted signature; made only by `verify`."""

    data: bytes = field(repr=False)
    sha256: str
    signers: Mapping[str, Tuple[SignerMatch, ...]]   # VO -> distinct trusted signers
    notes: Tuple[str, ...]                           # signatures that did not count, and why
    _token: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise TypeError("Verified values are made by contextd.verify.verify only")


def verify(payload: bytes, signatures: Sequence[bytes], policy: Policy) -> Verified:
    trusted: Dict[str, Dict[str, SignerMatch]] = {}
    notes: List[str] = []
    for index, blob in enumerate(signatures, start=1):
        where = "signature %d" % index
        try:
            sig = sshsig.parse(blob)
        except SignatureError as exc:
            notes.append("%s: %s" % (where, exc.message))
            continue
        fp = sshsig.fingerprint(sig.public_key)
        matches = [(vo, s) for vo, t in policy.trust.items() for s in t.signers
                   if s.kind == "ssh_key" and s.key_blob == sig.public_key]
        if not matches:
            notes.append("%s: key %s is not a trusted signer for any VO" % (where, fp))
            continue
        revoked = [vo for vo, _ in matches if fp in policy.trust[vo].revoked.ssh_fingerprints]
        if revoked:
            notes.append("%s: key %s (%s) is revoked" % (where, fp, matches[0][1].id))
            matches = [(vo, s) for vo, s in matches if vo not in revoked]
            if not matches:
                continue
        try:
            sshsig.verify(sig, payload)
        except SignatureError as exc:
            notes.append("%s by %s: %s" % (where, matches[0][1].id, exc.message))
            continue
        for vo, signer in matches:
            trusted.setdefault(vo, {})[signer.id] = SignerMatch(vo, signer, fp)
    if not trusted:
        raise SignatureError("no trusted signature on payload: %s"
                             % "; ".join(notes or ["no signatures"]),
                             "sign with a key listed under trust.<vo>.signers in the site policy")
    first_line = payload.split(b"\n", 1)[0].rstrip(b"\r").rstrip()
    if first_line != TYPE_TAG:
        raise SignatureError("signed data is not a contextd payload (first line must be %r)"
                             % TYPE_TAG.decode())
    return Verified(
        data=payload,
        sha256=hashlib.sha256(payload).hexdigest(),
        signers={vo: tuple(m.values()) for vo, m in trusted.items()},
        notes=tuple(notes),
        _token=_TOKEN,
    )
