"""Make X.509 signatures for `contextd sign --x509-key` (VO side): a robot key's raw signature.

The signature is what `openssl dgst -sha256 -sign robotkey.pem` (RSA, ECDSA) or `openssl
pkeyutl -sign -rawin` (Ed25519) make, shipped with the signer certificate and intermediates.
Parsing, verifying and chain validation stay in `contextd.trust.x509sig` (boot side).

What it must never do:
- be imported on the boot path: a VM verifies, it never holds a signing key;
- sign with a passphrase-protected key, a key that is not the signer certificate's, a key the
  verifier would refuse, or under an expired certificate;
- choose the hash or padding from the input (SHA-256, PKCS#1 v1.5 for RSA, pure Ed25519).
"""

from __future__ import annotations

import base64
import datetime
import re
from typing import Any, List, NoReturn, Optional, Sequence, Tuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from contextd.bundle import X509Signature
from contextd.errors import SigningError
from contextd.trust.cadir import clip, slash_dn, when
from contextd.trust.x509sig import _check_key, _load_der, _not_after, _spki

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s+([A-Za-z0-9+/=\s]+?)"
                       rb"-----END CERTIFICATE-----")


def _pem_certificates(data: bytes, name: str) -> List[Any]:
    found = _PEM_CERT.findall(bytes(data))
    if not found:
        raise SigningError("%s holds no PEM certificate (BEGIN CERTIFICATE)" % name)
    out = []
    for body in found:
        try:
            der = base64.b64decode(b"".join(body.split()))
        except ValueError as exc:
            raise SigningError("%s holds an invalid certificate (%s)"
                               % (name, clip(exc))) from None
        out.append(_load_der(der, "a certificate in %s" % name, SigningError))
    return out


def sign(key_pem: bytes, certificates: Sequence[Tuple[str, bytes]], payload: bytes,
         key_name: str = "key", now: Optional[datetime.datetime] = None) -> X509Signature:
    """An X.509 signature over `payload`, as `openssl dgst -sha256 -sign` / `pkeyutl` make it.

    `certificates` are (name, PEM data) of files: the first certificate found is the signer,
    every further one an intermediate, in order. Raises SigningError.
    """
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(bytes(key_pem), password=None)
    except TypeError:
        raise SigningError("private key '%s' is passphrase-protected, which contextd cannot use"
                           % key_name, "sign with an unencrypted copy kept safe, or with "
                           "'openssl dgst -sha256 -sign KEY' and cat (see README)") from None
    except Exception as exc:  # noqa: BLE001 - any failure means "not a usable key file"
        raise SigningError("private key '%s' is not a PEM private key (%s)"
                           % (key_name, clip(exc)),
                           "give the robot certificate's key, e.g. robotkey.pem") from None
    certs: List[Any] = []
    for name, data in certificates:
        certs.extend(_pem_certificates(data, name))
    if not certs:
        raise SigningError("no signer certificate given", "pass --x509-cert CERT.pem")
    leaf = certs[0]
    subject = slash_dn(leaf.subject)

    def fail(problem: str) -> NoReturn:
        raise SigningError("private key '%s': %s" % (key_name, problem))

    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise SigningError("private key '%s' does not belong to certificate %r"
                           % (key_name, subject), "give the key of the signer certificate")
    _check_key(leaf.public_key(), fail)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if now > _not_after(leaf):
        raise SigningError("certificate %r expired at %s" % (subject, when(_not_after(leaf))),
                           "renew the robot certificate first")
    data = bytes(payload)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.sign(data)
    elif isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(data, ec.ECDSA(hashes.SHA256()))
    else:  # _check_key let through only the three types above
        fail("key type %s is not supported" % type(key).__name__)
    return X509Signature(signature=raw,
                         certificates=tuple(c.public_bytes(Encoding.DER) for c in certs))
