"""What a blob of user-data is, for contextd: a bundle, legacy amiconfig INI, or not ours.

User-data comes from a file, a metadata service (EC2, OpenStack, GCE, a URL), a NoCloud or
config drive, or a variable of a context CD's `context.sh`; every carrier hands it to
`context`, so all accept the same formats. It may be the bundle, gzip-compressed or not, or
MIME multipart with exactly one part that is a bundle, recognised as cloud-init recognises it
(`MIME-Version:` in the first 4096 bytes, after an mbox `From ` line or not) and split by
contextd.sources.mime in linear time; other parts are someone else's (cloud-config,
shell scripts for cloud-init, amiconfig for CernVM) and are only listed. INI text that starts with a
`[section]` line is amiconfig user-data, which only the explicit legacy opt-in may use; so is a
`#!` script followed by such INI, amiconfig's convention (the script stays bytes, never run).

What this module must never do: run or interpret a part (scripts stay bytes), follow an
`#include`, decompress without a bound, or decide trust: it only says what the bytes are.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from contextd import bundle
from contextd.errors import SourceError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.record import field, record
from contextd.sources import Context

MAX_USER_DATA = LIMITS.user_data_bytes  # contextd/limits.py says why
MAX_LISTED_PARTS = LIMITS.user_data_listed_parts  # contextd/limits.py says why
BUNDLE, AMICONFIG, OTHER = "bundle", "amiconfig", "other"
_MAGIC = bundle.MAGIC.encode()
_INI_SECTION = Pattern(rb"\[[A-Za-z0-9_.-]{1,64}\][ \t]*\Z")
Facts = Mapping[str, Optional[str]]
_MIME_MARK = b"mime-version:"     # cloud-init's test: in the first 4096 bytes, any case


@record(frozen=True)
class UserData:
    kind: str                       # bundle | amiconfig | other
    data: bytes = field(repr=False)  # the bundle text or the INI; b"" for other
    why: str = ""                   # for `other`: what it is instead, for the report
    ignored_parts: Tuple[Dict[str, Any], ...] = ()


def context(raw: bytes, kind: str, location: str, what: str,
            facts: Union[Facts, Callable[[], Facts], None] = None,
            details: Optional[Mapping[str, Any]] = None,
            **carrier: Any) -> Tuple[Optional[Context], str]:
    """(the context in user-data `raw`, "") or (None, why it holds none), for any carrier.

    `what` names the user-data in messages; `facts` may be a function, called only for
    user-data that is ours (a metadata service is asked no more than it must); `carrier` is
    what else the carrier gives a bundle's context (open_file, hash_file, scripts).
    Amiconfig INI becomes a legacy context that only the policy's opt-in may use; it never
    gets the carrier's files.
    """
    found = classify(raw, what=what)
    if found.kind == OTHER:
        return None, found.why
    known = dict((facts() if callable(facts) else facts) or {})
    info: Dict[str, Any] = dict(details or {})
    if found.ignored_parts:
        info["ignored_parts"] = list(found.ignored_parts)
    if found.kind == AMICONFIG:
        return Context(kind=kind, location=location, payload=found.data, signatures=(),
                       facts=known, details=info, legacy="amiconfig",
                       scripts=carrier.get("scripts") or {}), ""
    parsed = bundle.decode(found.data, what=what)
    return Context(kind=kind, location=location, payload=parsed.payload,
                   signatures=parsed.ssh_signatures, facts=known, details=info,
                   **carrier), ""


def first_line(data: bytes) -> bytes:
    return data.split(b"\n", 1)[0].rstrip(b"\r").strip()


def classify(raw: bytes, what: str = "user-data") -> UserData:
    """Say what `raw` is. Malformed gzip or MIME, or two bundles, is a SourceError."""
    if len(raw) > MAX_USER_DATA:
        raise SourceError("%s is %d bytes, over the limit of %d" % (what, len(raw), MAX_USER_DATA))
    data = _maybe_gunzip(raw, what)
    if first_line(data) == _MAGIC:
        return UserData(BUNDLE, data)
    if _MIME_MARK in data[:4096].lower():
        return _mime(data, what)
    if data.startswith(b"#!"):
        # amiconfig's convention: a script, ended by an `exit` line, then the INI sections.
        if not split_script(data)[1]:
            return UserData(OTHER, b"", "%s is a script (%s), which contextd never runs"
                            % (what, _describe_start(data)))
        return UserData(AMICONFIG, data)
    meaningful = _first_meaningful_line(data)
    if meaningful is not None and _INI_SECTION.match(meaningful):
        return UserData(AMICONFIG, data)
    return UserData(OTHER, b"", "%s is not a contextd bundle (it starts with %s)"
                    % (what, _describe_start(data)))


def split_script(data: bytes) -> Tuple[bytes, bytes]:
    """(leading `#!` script, the amiconfig INI after it): amiconfig's own cut.

    amiconfig took the script from the `#!` line to the first line starting with `exit`, and
    the INI from the first `[section]` line on; so the script here is everything before the
    first `[section]` line after that `exit` (after the `#!` line, without one). The INI is
    b"" when no section follows; the script is b"" for data that does not start with `#!`.
    """
    if not data.startswith(b"#!"):
        return b"", data
    lines = data.split(b"\n")
    start = next((i for i, line in enumerate(lines) if line.startswith(b"exit")), 0) + 1
    for i in range(start, len(lines)):
        if _INI_SECTION.match(lines[i].strip()):
            return b"\n".join(lines[:i]) + b"\n", b"\n".join(lines[i:])
    return data, b""


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
    from contextd.sources import mime   # boot-time import cost: only for MIME user-data

    if data.lower().count(b"multipart/") > mime.MAX_MULTIPARTS:   # cheap, before parsing
        raise SourceError("%s: more than %d MIME multipart containers"
                          % (what, mime.MAX_MULTIPARTS), "cloud-init style user-data needs one")
    found: List[bytes] = []
    ignored: List[Dict[str, Any]] = []
    for part in mime.leaves(data, what):
        body = _maybe_gunzip(part.body, "%s MIME part %d" % (what, part.number))
        if first_line(body) == _MAGIC:
            found.append(body)
        else:
            ignored.append(_part_info(part, body))
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


def _clean(value: Any, limit: int = 64) -> str:
    text = "" if value is None else str(value)
    text = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in text)
    return text[:limit]


def _part_info(part: Any, body: bytes) -> Dict[str, Any]:
    info: Dict[str, Any] = {"part": part.number, "type": _clean(part.content_type),
                            "bytes": len(body)}
    if part.filename:
        info["filename"] = _clean(part.filename)
    return info
