"""The VO side: sign a payload into a bundle, or add a signature to an existing bundle.

It refuses to sign what a site would refuse to read (not a payload/v1 document, invalid
YAML, duplicate keys, anything the agent's payload parser refuses), and warns of what sites
will refuse by their clock or their default policy, so a VO finds out at signing time, not
at boot. Signatures are SSH
(a plain key, or a key with its SSH user certificate embedded) or X.509 (a robot
certificate's key, with the certificate and its intermediates).

It must never be imported on the boot path (see `contextd.vo`), and never write a bundle that
holds a payload it has not checked as a site would.
"""

from __future__ import annotations

import datetime
from typing import List, Optional, Sequence, Tuple

from contextd import bundle, strictyaml
from contextd.trust import sshsig
from contextd.vo import armor, sshsign
from contextd.errors import BundleError, PayloadError, SignatureError, SigningError
from contextd.trust.verify import TYPE_TAG


def _collect(source: bytes, existing: Optional[bytes]
             ) -> Tuple[bytes, Tuple[bundle.Signature, ...]]:
    """(payload, signatures already there) from the input and an existing output bundle."""
    signatures: Tuple[bundle.Signature, ...] = ()
    if source.startswith(bundle.MAGIC.encode()) or bundle.is_gzip(source):
        parsed = bundle.decode(source, what="input bundle")
        payload, signatures = parsed.payload, parsed.signatures
    else:
        payload = source
    if existing is not None:
        try:
            current = bundle.decode(existing, what="existing output bundle")
        except BundleError as exc:
            raise SigningError(exc.message, "choose another -o file or remove it") from None
        if current.payload != payload:
            raise SigningError("the existing output bundle holds a different payload",
                               "write to a new file, or sign the same payload.yaml")
        signatures = current.signatures + tuple(
            s for s in signatures if s not in current.signatures)
    check_payload(payload)
    return payload, signatures


def sign(key_data: bytes, source: bytes, existing: Optional[bytes] = None,
         key_name: str = "key", certificate: Optional[bytes] = None,
         certificate_name: str = "certificate",
         now: Optional[datetime.datetime] = None) -> bytes:
    """A bundle for `source` (a payload or a bundle) with one more SSH signature by the key.

    With `certificate` (a KEY-cert.pub file's content) the signature embeds that SSH user
    certificate, exactly as `ssh-keygen -Y sign -f KEY-cert.pub` does.
    """
    payload, signatures = _collect(source, existing)
    cert = None
    if certificate is not None:
        cert = sshsig.load_certificate(certificate, certificate_name)
        now = now or datetime.datetime.now(datetime.timezone.utc)
        if cert.cert_type != "user":
            raise SigningError("%s is a %s certificate; sign with a user certificate"
                               % (certificate_name, cert.cert_type))
        if cert.valid_before < 2 ** 64 - 1 and now.timestamp() >= cert.valid_before:
            raise SigningError("%s (key id %r) expired at %s" % (
                certificate_name, cert.key_id, datetime.datetime.fromtimestamp(
                    cert.valid_before, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")),
                "ask the VO CA for a new certificate")
        if not cert.principals:
            raise SigningError("%s (key id %r) lists no principals; sites accept a certificate "
                               "only for the principals they name" % (certificate_name,
                                                                     cert.key_id),
                               "re-issue it with 'ssh-keygen -s CA -n PRINCIPAL'")
    blob = sshsign.sign(key_data, payload, key_name=key_name, certificate=cert)
    new_key = sshsig.parse(blob).signing_key
    for old in signatures:
        if isinstance(old, bundle.X509Signature):
            continue
        try:
            old_key = sshsig.parse(old).signing_key
        except SignatureError:
            continue
        if old_key == new_key:
            raise SigningError("the bundle is already signed by this key (%s)"
                               % sshsig.fingerprint(new_key))
    return armor.encode(payload, armor.armor_signatures((*signatures, blob)))


def sign_x509(key_pem: bytes, certificates: Sequence[Tuple[str, bytes]], source: bytes,
              existing: Optional[bytes] = None, key_name: str = "key",
              now: Optional[datetime.datetime] = None) -> bytes:
    """A bundle for `source` with one more X.509 signature (robot key + certificate chain).

    `certificates` are (file name, PEM data): the signer certificate first, then any
    intermediates, which are all shipped after the signature block.
    """
    from contextd.trust import x509sig
    from contextd.vo import x509sign

    payload, signatures = _collect(source, existing)
    new = x509sign.sign(key_pem, certificates, payload, key_name=key_name, now=now)
    for old in signatures:
        if isinstance(old, bundle.X509Signature) and old.certificates[:1] == new.certificates[:1]:
            raise SigningError("the bundle is already signed with this certificate (%s)"
                               % x509sig.parse(new).subject)
    return armor.encode(payload, armor.armor_signatures((*signatures, new)))


def check_payload(payload: bytes) -> None:
    first = payload.split(b"\n", 1)[0].rstrip(b"\r").rstrip()
    if first != TYPE_TAG:
        raise SigningError("payload does not start with %r" % TYPE_TAG.decode(),
                           "make that the first line of the payload file")
    try:
        strictyaml.load(payload, "payload", PayloadError)
    except PayloadError as exc:
        raise SigningError(exc.message, exc.hint) from None


# A site's max_validity when its policy says none (policy.py); longer is refused there.
DEFAULT_MAX_VALIDITY = 31 * 86400


def review(bundle_data: bytes, now: Optional[datetime.datetime] = None
           ) -> Tuple[Optional[SigningError], List[str]]:
    """What the sites will say of the bundle's payload, by the agent's own parser: the error
    every VM would reject it with (refused unless `contextd sign --force`), and warnings of
    what its clock or a default policy will refuse (a VO may sign ahead, or for a site that
    allows longer)."""
    from contextd import payload as payloads
    from contextd.settings import shown

    now = now or datetime.datetime.now(datetime.timezone.utc)
    try:
        not_before, expires = payloads.lint(bundle.decode(bundle_data).payload)
    except PayloadError as exc:
        return SigningError("payload not signed: %s%s" % (
            exc.message, " (%s)" % exc.hint if exc.hint else ""),
            "every VM would reject it: fix the payload, or --force to sign it all the "
            "same"), []
    out = []
    if expires <= now:
        out.append("the payload expired at %s: every VM will reject it" % _utc(expires))
    elif expires <= not_before:
        out.append("the payload expires before it is valid: every VM will reject it")
    span = int((expires - not_before).total_seconds())
    if span > DEFAULT_MAX_VALIDITY:
        out.append("the payload is valid for %s, longer than the %s sites allow by default "
                   "(max_validity): such sites will reject it"
                   % (shown(span), shown(DEFAULT_MAX_VALIDITY)))
    return None, out


def _utc(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
