"""The signed bundle's armour (DESIGN section 5): text in, payload bytes and signature blobs out.

It only splits and decodes (writing is `contextd.vo.armor`); it never looks inside the payload
(no YAML here) and never decides whether a signature is good. Size limits apply before and
after gunzip.

Signature blocks are `SSH SIGNATURE` (an SSHSIG blob, kept as bytes) and `CONTEXTD X509
SIGNATURE` (a raw signature over the payload bytes) followed by the `CERTIFICATE` blocks that
belong to it, signer first, then intermediates (kept together as an X509Signature).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import zlib
from typing import List, Tuple, Union

from contextd.errors import BundleError
from contextd.limits import LIMITS
from contextd.record import field, record

MAGIC = "#contextd-signed-v1"
PAYLOAD = "CONTEXTD PAYLOAD"
SSH_SIGNATURE = "SSH SIGNATURE"
X509_SIGNATURE = "CONTEXTD X509 SIGNATURE"
CERTIFICATE = "CERTIFICATE"
MAX_BUNDLE = LIMITS.bundle_bytes  # contextd/limits.py says why
MAX_CERTIFICATES = LIMITS.bundle_certificates  # contextd/limits.py says why
_KNOWN = (PAYLOAD, SSH_SIGNATURE, X509_SIGNATURE, CERTIFICATE)
_LAYOUT_HINT = ("a bundle holds one CONTEXTD PAYLOAD block, then SSH SIGNATURE blocks and/or "
                "CONTEXTD X509 SIGNATURE blocks each followed by its CERTIFICATE blocks")


@record(frozen=True)
class X509Signature:
    """A raw signature over the payload and the DER certificates shipped with it."""

    signature: bytes = field(repr=False)
    certificates: Tuple[bytes, ...] = field(repr=False)   # signer first, then intermediates


# One signature as carried: an SSHSIG blob (bytes) or an X509Signature.
Signature = Union[bytes, X509Signature]


@record(frozen=True)
class Bundle:
    payload: bytes = field(repr=False)
    signatures: Tuple[Signature, ...] = field(repr=False)   # in order

    @property
    def ssh_signatures(self) -> Tuple[Signature, ...]:
        """Every signature, X.509 ones included (the name predates them; callers pass
        the tuple on to `verify`)."""
        return self.signatures


def is_gzip(data: bytes) -> bool:
    return data[:2] == b"\x1f\x8b"


def gunzip(data: bytes, limit: int = MAX_BUNDLE, what: str = "bundle") -> bytes:
    """Decompress, stopping as soon as the output would pass `limit` (no gzip bombs)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise BundleError("%s is not valid gzip: %s" % (what, exc),
                          "send it uncompressed or as produced by gzip") from None
    if len(out) > limit:
        raise BundleError("%s decompresses to more than %d bytes" % (what, limit))
    return out


def decode(data: bytes, what: str = "bundle") -> Bundle:
    """Parse a bundle (gzip or not)."""
    if is_gzip(data):
        data = gunzip(data, what=what)
    if len(data) > MAX_BUNDLE:
        raise BundleError("%s is larger than %d bytes" % (what, MAX_BUNDLE))
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BundleError(
            "%s is not ASCII text (byte %d)" % (what, exc.start),
            "a bundle is ASCII armour, optionally gzip-compressed as a whole") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[0] != MAGIC:
        raise BundleError("%s does not start with %r" % (what, MAGIC),
                          "make it with contextd sign, or see README for the layout")
    blocks = _blocks(lines[1:], what)
    payloads = [body for label, body, _ in blocks if label == PAYLOAD]
    if len(payloads) != 1:
        raise BundleError("%s has %d payload blocks; exactly one is allowed"
                          % (what, len(payloads)))
    sigs = _signatures([b for b in blocks if b[0] != PAYLOAD], what)
    if not sigs:
        raise BundleError("%s has no signature block" % what,
                          "sign it with contextd sign or ssh-keygen -Y sign -n contextd-payload")
    return Bundle(payload=payloads[0], signatures=sigs)


def decode_signatures(data: bytes, what: str = "signature file") -> Tuple[Signature, ...]:
    """The `payload.yaml.sig` of a directory carrier: signature blocks only."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BundleError("%s is not ASCII text (byte %d)" % (what, exc.start)) from None
    blocks = _blocks(text.replace("\r\n", "\n").split("\n"), what, first=1)
    if any(label == PAYLOAD for label, _, _ in blocks):
        raise BundleError("%s holds a payload block; it must hold only signatures" % what)
    sigs = _signatures(blocks, what)
    if not sigs:
        raise BundleError("%s has no signature block" % what)
    return sigs


def _signatures(blocks: List[Tuple[str, bytes, int]], what: str) -> Tuple[Signature, ...]:
    """Group blocks into signatures: CERTIFICATE blocks join the X.509 signature before them."""
    out: List[Signature] = []
    x509_sig = None          # (raw signature, line) of the X.509 signature being collected
    certs: List[bytes] = []

    def close() -> None:
        if x509_sig is None:
            return
        if not certs:
            raise BundleError("%s: the %s block at line %d is not followed by its signer's "
                              "CERTIFICATE block" % (what, X509_SIGNATURE, x509_sig[1]),
                              "append the signer certificate (PEM) right after it")
        out.append(X509Signature(signature=x509_sig[0], certificates=tuple(certs)))

    for label, body, line in blocks:
        if label == CERTIFICATE:
            if x509_sig is None:
                raise BundleError("%s line %d: a CERTIFICATE block must follow a %s block"
                                  % (what, line, X509_SIGNATURE), _LAYOUT_HINT)
            if len(certs) == MAX_CERTIFICATES:
                raise BundleError("%s line %d: more than %d certificates for one X.509 "
                                  "signature" % (what, line, MAX_CERTIFICATES))
            certs.append(body)
            continue
        close()
        x509_sig, certs = None, []
        if label == X509_SIGNATURE:
            x509_sig = (body, line)
        else:
            out.append(body)
    close()
    return tuple(out)


def _blocks(lines: List[str], what: str, first: int = 2) -> List[Tuple[str, bytes, int]]:
    """(label, decoded body, line of the BEGIN) for every block, in order.

    The armour is canonical, so no byte of it can change unnoticed: no stray whitespace
    (CRLF line ends are fine), base64 exactly as an encoder writes it.
    """
    blocks: List[Tuple[str, bytes, int]] = []
    label = None
    body: List[str] = []
    start = 0
    for number, raw in enumerate(lines, start=first):
        line = raw.strip()
        if line != raw:
            raise BundleError("%s line %d: stray whitespace" % (what, number),
                              "remove spaces and tabs around the armour lines")
        if label is None:
            if not line:
                continue
            if line.startswith("-----BEGIN ") and line.endswith("-----"):
                label = line[len("-----BEGIN "):-5]
                if label not in _KNOWN:
                    raise BundleError("%s line %d: unknown block %r" % (what, number, label),
                                      _LAYOUT_HINT)
                body, start = [], number
                continue
            raise BundleError("%s line %d: text outside any block" % (what, number))
        if line == "-----END %s-----" % label:
            text = "".join(body)
            try:
                decoded = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise BundleError("%s: %s block at line %d is not valid base64"
                                  % (what, label, start)) from None
            if base64.b64encode(decoded).decode("ascii") != text:
                raise BundleError("%s: %s block at line %d is not canonical base64 (stray "
                                  "bits in its last group)" % (what, label, start))
            blocks.append((label, decoded, start))
            label = None
            continue
        if line.startswith("-----"):
            raise BundleError("%s line %d: %r inside the %s block started at line %d"
                              % (what, number, line[:40], label, start))
        body.append(line)
    if label is not None:
        raise BundleError("%s: %s block at line %d has no END line (truncated?)"
                          % (what, label, start))
    return blocks
