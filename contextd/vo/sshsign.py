"""Make OpenSSH signatures (SSHSIG) for `contextd sign`, with `cryptography` only (VO side).

It loads an unencrypted OpenSSH private key, signs a payload as `ssh-keygen -Y sign -n
contextd-payload` would (optionally embedding the key's SSH user certificate) and armours the
blob as ssh-keygen writes it. Parsing and verifying stay in `contextd.trust.sshsig` (boot side).

What it must never do:
- be imported on the boot path: a VM verifies, it never holds a signing key;
- sign with a key it cannot fully check (passphrase-protected, of another type than its
  header says, RSA below the minimum size, or not the key a given certificate certifies);
- run a subprocess or talk to ssh-agent.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any, Callable, NoReturn, Optional, Tuple

from cryptography.hazmat.primitives.asymmetric import ed25519

from contextd.errors import SigningError
from contextd.trust.sshsig import (
    _ECDSA,
    _MESSAGE_HASHES,
    BEGIN,
    ED25519,
    END,
    MAGIC,
    NAMESPACE,
    RSA,
    VERSION,
    SshCertificate,
    _check_rsa_size,
    _hash,
    _key_type_problem,
    _Malformed,
    _mpint,
    _show,
    _signed_data,
    _string,
    _WireReader,
    _wire_key_type,
    fingerprint,
)

_OPENSSH_KEY_MAGIC = b"openssh-key-v1\x00"
_PRIVATE_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_PRIVATE_END = b"-----END OPENSSH PRIVATE KEY-----"


def _private_key_header(data: bytes) -> Tuple[str, str]:
    """(cipher name, key type) from an OpenSSH private key file; raises _Malformed."""
    start = data.find(_PRIVATE_BEGIN)
    stop = data.find(_PRIVATE_END, max(start, 0))
    if start < 0 or stop < start:
        raise _Malformed("no OpenSSH private key block")
    body = b"".join(data[start + len(_PRIVATE_BEGIN):stop].split())
    try:
        raw = base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        raise _Malformed("the key data is not valid base64") from None
    reader = _WireReader(raw, "OpenSSH private key")
    if reader.raw(len(_OPENSSH_KEY_MAGIC), "magic") != _OPENSSH_KEY_MAGIC:
        raise _Malformed("not an openssh-key-v1 key")
    cipher = reader.text("cipher name")
    reader.string("kdf name")
    reader.string("kdf options")
    if reader.uint32("key count") != 1:
        raise _Malformed("the file must hold exactly one key")
    key_type = _wire_key_type(reader.string("public key"))
    return cipher, key_type


def _sign_raw(key: object, key_type: str, data: bytes) -> bytes:
    """The inner signature blob (string sig-type + string sig) over `data`."""
    if key_type == ED25519:
        return _string(ED25519.encode()) + _string(key.sign(data))  # type: ignore[attr-defined]
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    if key_type == RSA:
        sig = key.sign(data, padding.PKCS1v15(), _hash("SHA512"))  # type: ignore[attr-defined]
        return _string(b"rsa-sha2-512") + _string(sig)
    der = key.sign(data, ec.ECDSA(_hash(_ECDSA[key_type][2])))  # type: ignore[attr-defined]
    r, s = decode_dss_signature(der)
    return _string(key_type.encode()) + _string(_mpint(r) + _mpint(s))


def _private_key_type(key: object) -> Optional[str]:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, ed25519.Ed25519PrivateKey):
        return ED25519
    if isinstance(key, rsa.RSAPrivateKey):
        return RSA
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for key_type, (_, curve, _) in _ECDSA.items():
            if isinstance(key.curve, getattr(ec, curve)):
                return key_type
    return None


def sign(private_key_data: bytes, message: bytes, namespace: str = NAMESPACE,
         hash_alg: str = "sha512", key_name: str = "key",
         certificate: Optional[SshCertificate] = None) -> bytes:
    """Sign `message` as `ssh-keygen -Y sign -n NAMESPACE` would; returns the raw SSHSIG blob.

    `private_key_data` is the content of an unencrypted OpenSSH private key file; `key_name`
    (usually its path) only appears in error messages. With `certificate` (see
    `load_certificate`) the signature embeds it, as `ssh-keygen -Y sign -f KEY-cert.pub`
    does; it must certify this very key. Raises SigningError.
    """
    fail = _signing_failure(key_name)
    if hash_alg not in _MESSAGE_HASHES:
        raise SigningError("hash algorithm %s is not supported" % _show(hash_alg),
                           "use sha512 (the default) or sha256")
    if not isinstance(namespace, str) or not namespace:
        raise SigningError("the signature namespace must be a non-empty string")
    key, key_type = _load_private_key(bytes(private_key_data), fail)
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    public_blob = base64.b64decode(public.split(b" ")[1])
    if certificate is not None:
        if certificate.key_blob != public_blob:
            fail("is not the key the certificate %s certifies (it certifies %s, this key is %s)"
                 % (_show(certificate.key_id), certificate.fingerprint,
                    fingerprint(public_blob)),
                 "give the private key whose KEY-cert.pub this is")
        public_blob = certificate.blob
    signed = _signed_data(namespace, hash_alg, bytes(message))
    signature = _sign_raw(key, key_type, signed)
    return (MAGIC + struct.pack(">I", VERSION) + _string(public_blob)
            + _string(namespace.encode("utf-8")) + _string(b"")
            + _string(hash_alg.encode("ascii")) + _string(signature))


def _load_private_key(data: bytes, fail: Callable[..., NoReturn]) -> Tuple[Any, str]:
    """The private key of an unencrypted OpenSSH key file and its SSH key type; `fail`
    (from _signing_failure) says why a file cannot be used."""
    try:
        cipher, key_type = _private_key_header(data)
    except _Malformed as exc:
        fail("is not an OpenSSH private key (%s)" % exc,
             "give the private key file written by ssh-keygen (BEGIN OPENSSH PRIVATE KEY); "
             "convert an old PEM key with 'ssh-keygen -p -f KEY'")
    if cipher != "none":
        fail("is passphrase-protected, which contextd cannot use",
             "sign with an unencrypted copy (ssh-keygen -p -N '' -f COPY) kept safe, or "
             "sign with 'ssh-keygen -Y sign'; ssh-agent is not supported")
    problem = _key_type_problem(key_type)
    if problem:
        fail("cannot sign here: " + problem[0], problem[1])
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    try:
        key = load_ssh_private_key(data, password=None)
    # Exception types vary by cryptography version; whatever it is, the key file is bad.
    except Exception as exc:  # noqa: BLE001 - any failure here means "unusable key file"
        fail("cannot be loaded (%s)" % exc, "check that the file is intact")
    if _private_key_type(key) != key_type:
        fail("does not match its own key type %s" % _show(key_type))
    if key_type == RSA:
        try:
            _check_rsa_size(key.key_size)  # type: ignore[union-attr]
        except _Malformed as exc:
            fail(str(exc), "use an Ed25519 key (ssh-keygen -t ed25519)")
    return key, key_type


def _signing_failure(key_name: str) -> Callable[..., NoReturn]:
    def fail(problem: str, hint: Optional[str] = None) -> NoReturn:
        raise SigningError("private key '%s' %s" % (key_name, problem), hint)

    return fail


def armor(blob: bytes) -> str:
    """The armoured text `ssh-keygen -Y sign` writes: base64 in 70-column lines."""
    b64 = base64.b64encode(blob).decode("ascii")
    lines = [b64[i:i + 70] for i in range(0, len(b64), 70)]
    return "\n".join([BEGIN, *lines, END]) + "\n"
