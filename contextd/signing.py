"""The VO side: sign a payload into a bundle, or add a signature to an existing bundle.

It refuses to sign what a site would refuse to read (not a payload/v1 document, invalid
YAML, duplicate keys), so a VO finds out at signing time, not at boot.
"""

from typing import Optional

from contextd import bundle, sshsig, strictyaml
from contextd.errors import BundleError, PayloadError, SignatureError, SigningError
from contextd.verify import TYPE_TAG


def sign(key_data: bytes, source: bytes, existing: Optional[bytes] = None,
         key_name: str = "key") -> bytes:
    """A bundle for `source` (a payload or a bundle) with one more signature by the key."""
    signatures = ()
    if source.startswith(bundle.MAGIC.encode()) or bundle.is_gzip(source):
        parsed = bundle.decode(source, what="input bundle")
        payload, signatures = parsed.payload, parsed.ssh_signatures
    else:
        payload = source
    if existing is not None:
        try:
            current = bundle.decode(existing, what="existing output bundle")
        except BundleError as exc:
            raise SigningError(exc.message, "choose another -o file or remove it")
        if current.payload != payload:
            raise SigningError("the existing output bundle holds a different payload",
                               "write to a new file, or sign the same payload.yaml")
        signatures = current.ssh_signatures + tuple(
            s for s in signatures if s not in current.ssh_signatures)
    check_payload(payload)
    blob = sshsig.sign(key_data, payload, key_name=key_name)
    new_key = sshsig.parse(blob).public_key
    for old in signatures:
        try:
            old_key = sshsig.parse(old).public_key
        except SignatureError:
            continue
        if old_key == new_key:
            raise SigningError("the bundle is already signed by this key (%s)"
                               % sshsig.fingerprint(new_key))
    return bundle.encode(payload, bundle.armor_signatures(tuple(signatures) + (blob,)))


def check_payload(payload: bytes) -> None:
    first = payload.split(b"\n", 1)[0].rstrip(b"\r").rstrip()
    if first != TYPE_TAG:
        raise SigningError("payload does not start with %r" % TYPE_TAG.decode(),
                           "make that the first line of the payload file")
    try:
        strictyaml.load(payload, "payload", PayloadError)
    except PayloadError as exc:
        raise SigningError(exc.message, exc.hint)
