"""What a blob of user-data is, for contextd: a bundle, legacy amiconfig INI, or not ours.

User-data comes from EC2 metadata or from a variable of a context CD's `context.sh`. It may
be the bundle, gzip-compressed or not, or MIME multipart (cloud-init style) with exactly one
part that is a bundle; other parts are someone else's (cloud-config, shell scripts for
cloud-init, amiconfig for CernVM) and are only listed. INI text that starts with a
`[section]` line is amiconfig user-data, which only the explicit legacy opt-in may use.

What this module must never do: run or interpret a part (scripts stay bytes), follow an
`#include`, decompress without a bound, or decide trust: it only says what the bytes are.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

from contextd import bundle
from contextd.errors import SourceError
from contextd.record import field, record

MAX_USER_DATA = bundle.MAX_BUNDLE          # raw and after decompression
MAX_MIME_DEPTH = 8
MAX_MULTIPARTS = 32     # containers; the email parser's cost grows with their nesting
MAX_LISTED_PARTS = 20
BUNDLE, AMICONFIG, OTHER = "bundle", "amiconfig", "other"
_MAGIC = bundle.MAGIC.encode()
_INI_SECTION = re.compile(rb"\[[A-Za-z0-9_.-]{1,64}\][ \t]*\Z")
_MIME_START = (b"content-type:", b"mime-version:")


@record(frozen=True)
class UserData:
    kind: str                       # bundle | amiconfig | other
    data: bytes = field(repr=False)  # the bundle text or the INI; b"" for other
    why: str = ""                   # for `other`: what it is instead, for the report
    ignored_parts: Tuple[Dict[str, Any], ...] = ()


def first_line(data: bytes) -> bytes:
    return data.split(b"\n", 1)[0].rstrip(b"\r").strip()


def classify(raw: bytes, what: str = "user-data") -> UserData:
    """Say what `raw` is. Malformed gzip or MIME, or two bundles, is a SourceError."""
    if len(raw) > MAX_USER_DATA:
        raise SourceError("%s is %d bytes, over the limit of %d" % (what, len(raw), MAX_USER_DATA))
    data = _maybe_gunzip(raw, what)
    if first_line(data) == _MAGIC:
        return UserData(BUNDLE, data)
    if data.startswith(b"#!"):
        return UserData(OTHER, b"", "%s is a script (%s), which contextd never runs"
                        % (what, _describe_start(data)))
    head = data.lstrip()[:20].lower()
    if head.startswith(_MIME_START):
        return _mime(data, what)
    meaningful = _first_meaningful_line(data)
    if meaningful is not None and _INI_SECTION.match(meaningful):
        return UserData(AMICONFIG, data)
    return UserData(OTHER, b"", "%s is not a contextd bundle (it starts with %s)"
                    % (what, _describe_start(data)))


def _maybe_gunzip(data: bytes, what: str) -> bytes:
    if bundle.is_gzip(data):
        return bundle.gunzip(data, limit=MAX_USER_DATA, what=what)
    return data


def _first_meaningful_line(data: bytes):
    for line in data.split(b"\n", 200)[:200]:
        line = line.strip()
        if line and not line.startswith((b"#", b";")):
            return line
    return None


def _describe_start(data: bytes) -> str:
    line = first_line(data)
    if not line:
        return "an empty line" if data.strip() else "nothing"
    text = line[:40].decode("ascii", "replace")
    text = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in text)
    return repr(text + ("..." if len(line) > 40 else ""))


def _mime(data: bytes, what: str) -> UserData:
    import email.parser  # pylint: disable=import-outside-toplevel  (boot-time import cost)
    import email.policy  # pylint: disable=import-outside-toplevel

    if data.lower().count(b"multipart/") > MAX_MULTIPARTS:
        raise SourceError("%s: more than %d MIME multipart containers" % (what, MAX_MULTIPARTS),
                          "cloud-init style user-data needs one")
    try:
        message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
        leaves = _leaves(message, what)
    except RecursionError:
        raise SourceError("%s: MIME parts are nested too deeply" % what)
    found: List[bytes] = []
    ignored: List[Dict[str, Any]] = []
    for index, part in leaves:
        try:
            body = part.get_payload(decode=True) or b""
        except Exception as exc:  # noqa: BLE001 - the email package on hostile input
            raise SourceError("%s: MIME part %d cannot be decoded: %s"
                              % (what, index, type(exc).__name__))
        if not isinstance(body, bytes):
            body = b""
        body = _maybe_gunzip(body, "%s MIME part %d" % (what, index))
        if first_line(body) == _MAGIC:
            found.append(body)
        else:
            ignored.append(_part_info(index, part, body))
    if len(found) > 1:
        raise SourceError("%s: %d MIME parts are contextd bundles; exactly one is allowed"
                          % (what, len(found)), "send one bundle, signed by all who must sign")
    shown = tuple(ignored[:MAX_LISTED_PARTS])
    if len(ignored) > MAX_LISTED_PARTS:
        shown += ({"part": "...", "type": "%d more" % (len(ignored) - MAX_LISTED_PARTS)},)
    if not found:
        return UserData(OTHER, b"", "%s is MIME multipart without a contextd bundle part" % what,
                        shown)
    return UserData(BUNDLE, found[0], "", shown)


def _leaves(message, what: str) -> List[Tuple[int, Any]]:
    """The non-multipart parts, in order, numbered from 1; bounded depth."""
    out: List[Tuple[int, Any]] = []
    stack = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > MAX_MIME_DEPTH:
            raise SourceError("%s: MIME parts are nested more than %d deep"
                              % (what, MAX_MIME_DEPTH))
        if part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend((child, depth + 1) for child in reversed(children))
            continue
        out.append((len(out) + 1, part))
    return out


def _clean(value: Any, limit: int = 64) -> str:
    text = "" if value is None else str(value)
    text = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in text)
    return text[:limit]


def _part_info(index: int, part, body: bytes) -> Dict[str, Any]:
    info: Dict[str, Any] = {"part": index, "type": _clean(part.get_content_type()),
                            "bytes": len(body)}
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001 - a malformed header is not worth failing over
        name = None
    if name:
        info["filename"] = _clean(name)
    return info
