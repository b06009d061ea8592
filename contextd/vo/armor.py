"""Write the signed bundle's armour (VO side): payload bytes and signature blobs in, text out.

The inverse of `contextd.bundle` (which the VM uses to read it): the bundle text, and the
armoured signature blocks that go into a bundle or a `payload.yaml.sig` on a context ISO.

What it must never do: be imported on the boot path (the VM only reads bundles), or write a
block `contextd.bundle.decode` would not read back to the same values.
"""

from __future__ import annotations

import base64
from typing import List, Sequence

from contextd.bundle import CERTIFICATE, MAGIC, PAYLOAD, X509_SIGNATURE, Signature, X509Signature
from contextd.vo import sshsign


def encode(payload: bytes, armored_signatures: List[str]) -> bytes:
    """The bundle text for `payload` and already-armoured signature blocks."""
    b64 = base64.b64encode(payload).decode("ascii")
    wrapped = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    parts = [MAGIC, "-----BEGIN %s-----" % PAYLOAD]
    if wrapped:
        parts.append(wrapped)
    parts.append("-----END %s-----" % PAYLOAD)
    text = "\n".join(parts) + "\n" + "".join(
        s if s.endswith("\n") else s + "\n" for s in armored_signatures)
    return text.encode("ascii")


def armor_signatures(signatures: Sequence[Signature]) -> List[str]:
    """Armoured text for each signature, as `encode` and a payload.yaml.sig want it."""
    return [armor_x509(s) if isinstance(s, X509Signature) else sshsign.armor(s)
            for s in signatures]


def _pem(label: str, data: bytes) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "\n".join(["-----BEGIN %s-----" % label, *lines, "-----END %s-----" % label]) + "\n"


def armor_x509(sig: X509Signature) -> str:
    """The X.509 signature block and its certificate blocks, as `openssl ... | base64 -w 64`
    and `cat cert.pem` would write them."""
    return _pem(X509_SIGNATURE, sig.signature) + "".join(
        _pem(CERTIFICATE, der) for der in sig.certificates)
