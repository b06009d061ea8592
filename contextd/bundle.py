"""The signed bundle's armour (DESIGN section 5): text in, payload bytes and signature blobs out.

It only splits and decodes; it never looks inside the payload (no YAML here) and never
decides whether a signature is good. Size limits apply before and after gunzip.
"""

import base64
import binascii
import gzip
import io
import zlib
from dataclasses import dataclass, field
from typing import List, Tuple

from contextd.errors import BundleError

MAGIC = "#contextd-signed-v1"
PAYLOAD = "CONTEXTD PAYLOAD"
SSH_SIGNATURE = "SSH SIGNATURE"
MAX_BUNDLE = 1024 * 1024          # after decompression
_KNOWN = (PAYLOAD, SSH_SIGNATURE)


@dataclass(frozen=True)
class Bundle:
    payload: bytes = field(repr=False)
    ssh_signatures: Tuple[bytes, ...] = field(repr=False)   # raw SSHSIG blobs, in order


def is_gzip(data: bytes) -> bool:
    return data[:2] == b"\x1f\x8b"


def gunzip(data: bytes, limit: int = MAX_BUNDLE, what: str = "bundle") -> bytes:
    """Decompress, stopping as soon as the output would pass `limit` (no gzip bombs)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise BundleError("%s is not valid gzip: %s" % (what, exc),
                          "send it uncompressed or as produced by gzip")
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
        raise BundleError("%s is not ASCII text (byte %d)" % (what, exc.start),
                          "a bundle is ASCII armour, optionally gzip-compressed as a whole")
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[0].strip() != MAGIC:
        raise BundleError("%s does not start with %r" % (what, MAGIC),
                          "make it with contextd sign, or see README for the layout")
    blocks = _blocks(lines[1:], what)
    payloads = [body for label, body in blocks if label == PAYLOAD]
    sigs = tuple(body for label, body in blocks if label == SSH_SIGNATURE)
    if len(payloads) != 1:
        raise BundleError("%s has %d payload blocks; exactly one is allowed" % (what, len(payloads)))
    if not sigs:
        raise BundleError("%s has no signature block" % what,
                          "sign it with contextd sign or ssh-keygen -Y sign -n contextd-payload")
    return Bundle(payload=payloads[0], ssh_signatures=sigs)


def decode_signatures(data: bytes, what: str = "signature file") -> Tuple[bytes, ...]:
    """The `payload.yaml.sig` of a directory carrier: signature blocks only."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BundleError("%s is not ASCII text (byte %d)" % (what, exc.start))
    blocks = _blocks(text.replace("\r\n", "\n").split("\n"), what)
    if any(label == PAYLOAD for label, _ in blocks):
        raise BundleError("%s holds a payload block; it must hold only signatures" % what)
    if not blocks:
        raise BundleError("%s has no signature block" % what)
    return tuple(body for _, body in blocks)


def _blocks(lines: List[str], what: str) -> List[Tuple[str, bytes]]:
    blocks: List[Tuple[str, bytes]] = []
    label = None
    body: List[str] = []
    start = 0
    for number, raw in enumerate(lines, start=2):
        line = raw.strip()
        if label is None:
            if not line:
                continue
            if line.startswith("-----BEGIN ") and line.endswith("-----"):
                label = line[len("-----BEGIN "):-5]
                if label not in _KNOWN:
                    raise BundleError("%s line %d: unknown block %r" % (what, number, label),
                                      "a bundle holds one CONTEXTD PAYLOAD and SSH SIGNATURE blocks")
                body, start = [], number
                continue
            raise BundleError("%s line %d: text outside any block" % (what, number))
        if line == "-----END %s-----" % label:
            try:
                blocks.append((label, base64.b64decode("".join(body), validate=True)))
            except (binascii.Error, ValueError):
                raise BundleError("%s: %s block at line %d is not valid base64"
                                  % (what, label, start))
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


def armor_signatures(blobs: Tuple[bytes, ...]) -> List[str]:
    from contextd import sshsig

    return [sshsig.armor(b) for b in blobs]
