"""MIME multipart user-data split into its leaf parts, in linear time, within hard bounds.

Why not the email package: its parameter parser is quadratic in the length of a header
(`Content-Type: text/plain; a="` plus `;` x N: 990 KB, 1 KB gzipped, held a boot for 13
minutes before any signature was checked), and it bounds neither headers, parameters nor
parts. contextd needs little of MIME: each part's type, its boundary when it is multipart,
its transfer encoding and file name, and the leaf bodies. This reads just that, the way the
email package (and so cloud-init) reads well-formed user-data.

What it must never do: spend more than linear time or memory on its input (one pass per
nesting level, at most MAX_DEPTH of them), keep a header, parameter list or part count past
its bound, interpret a body beyond its transfer encoding, or raise anything but SourceError.
"""

from __future__ import annotations

import binascii
from typing import Dict, Iterator, List, Optional, Tuple

from contextd.errors import SourceError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.record import field, record

MAX_HEADER = LIMITS.mime_header_bytes  # contextd/limits.py says why
MAX_HEADERS = LIMITS.mime_headers  # contextd/limits.py says why
MAX_PARAMS = LIMITS.mime_params  # contextd/limits.py says why
MAX_PARTS = LIMITS.mime_parts  # contextd/limits.py says why
MAX_MULTIPARTS = LIMITS.mime_multiparts  # contextd/limits.py says why
MAX_DEPTH = LIMITS.mime_depth  # contextd/limits.py says why
MAX_BOUNDARY = LIMITS.mime_boundary  # contextd/limits.py says why

_EOL = Pattern(rb"\r\n|\r|\n")               # line ends, as the email package splits them
_FIELD = Pattern(rb"[!-9;-~]+:")             # a header line starts with NAME:
# A parameter list in pieces: a quoted string (to its closing quote, or to the end when it
# has none), a run of anything else, a ';'. Each position starts exactly one alternative:
# one pass, no backtracking.
_PIECE = Pattern(rb'"(?:[^"\\]|\\[\s\S])*(?:"|\\?\Z)|[^";]+|;')
_ESCAPE = Pattern(rb"\\([\s\S])")
_WANTED = (b"content-type", b"content-transfer-encoding", b"content-disposition")
_HINT = "cloud-init style user-data has a few short headers per part"


@record(frozen=True)
class Part:
    number: int                         # leaves in order, from 1
    content_type: str                   # lower case, e.g. text/x-shellscript
    filename: Optional[str]
    body: bytes = field(repr=False)     # transfer encoding undone


def leaves(data: bytes, what: str) -> List[Part]:
    """The non-multipart parts of the MIME document `data`, in order. An mbox `From ` line
    first is the envelope, not a header (the email package's unixfrom, so cloud-init's)."""
    walk = _Walk(data, what)
    walk.entity(_after_unixfrom(data), len(data), 0)
    return walk.parts


def _after_unixfrom(data: bytes) -> int:
    if not data.startswith(b"From "):
        return 0
    eol = _EOL.search(data)
    return eol.end() if eol else len(data)


class _Walk:
    def __init__(self, data: bytes, what: str):
        self.data = data
        self.what = what
        self.parts: List[Part] = []
        self.multiparts = 0

    def fail(self, problem: str, hint: str = _HINT) -> SourceError:
        return SourceError("%s: %s" % (self.what, problem), hint)

    def entity(self, start: int, end: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise self.fail("MIME parts are nested more than %d deep" % MAX_DEPTH,
                            "cloud-init style user-data needs one multipart container")
        headers, body = self.headers(start, end)
        ctype, params = self.content_type(headers.get(b"content-type"))
        boundary = params.get(b"boundary", b"").rstrip()
        if ctype.startswith("multipart/") and boundary:
            self.multiparts += 1
            if self.multiparts > MAX_MULTIPARTS:
                raise self.fail("more than %d MIME multipart containers" % MAX_MULTIPARTS,
                                "cloud-init style user-data needs one")
            for part_start, part_end in self.children(body, end, boundary):
                self.entity(part_start, part_end, depth + 1)
            return
        if ctype == "message/rfc822":           # a message inside: its parts, as walk() does
            self.entity(body, end, depth + 1)
            return
        if len(self.parts) >= MAX_PARTS:
            raise self.fail("more than %d MIME parts" % MAX_PARTS,
                            "cloud-init style user-data has a few parts")
        self.parts.append(Part(len(self.parts) + 1, ctype, self.filename(headers, params),
                               self.decode(headers, body, end)))

    def headers(self, start: int, end: int) -> Tuple[Dict[bytes, bytes], int]:
        """The fields contextd reads (first of each name wins, as in the email package),
        and where the body starts: after the empty line, or at the first line that is not
        a header (the email package's reading of a missing separator)."""
        fields: Dict[bytes, bytes] = {}
        name, size, count = b"", 0, 0
        value: List[bytes] = []
        for line_start, content_end, line_end in _lines(self.data, start, end):
            if line_start == content_end:       # the empty line: the body starts after it
                return self.keep(fields, name, value), line_end
            if self.data[line_start] in b" \t":
                if count:                           # a continuation of the field before
                    size += content_end - line_start
                    self.check_size(name, size)
                    value.append(self.data[line_start:content_end])
                continue
            if not _FIELD.match(self.data, line_start, min(content_end, line_start + 80)):
                return self.keep(fields, name, value), line_start
            self.keep(fields, name, value)
            count += 1
            if count > MAX_HEADERS:
                raise self.fail("a MIME part has more than %d header fields" % MAX_HEADERS)
            colon = self.data.index(b":", line_start, content_end)
            name = self.data[line_start:colon]
            size = content_end - line_start
            self.check_size(name, size)
            value = [self.data[colon + 1:content_end]]
        return self.keep(fields, name, value), end

    def check_size(self, name: bytes, size: int) -> None:
        if size > MAX_HEADER:
            raise self.fail("MIME header %s is longer than %d bytes" % (_show(name), MAX_HEADER))

    @staticmethod
    def keep(fields: Dict[bytes, bytes], name: bytes, value: List[bytes]) -> Dict[bytes, bytes]:
        name = name.lower()
        if name in _WANTED and name not in fields:
            fields[name] = b"".join(value).strip()
        return fields

    def content_type(self, value: Optional[bytes]) -> Tuple[str, Dict[bytes, bytes]]:
        """`type/subtype` in lower case (text/plain when absent or malformed, as the email
        package says) and the parameters."""
        if value is None:
            return "text/plain", {}
        head, params = self.params(value, "Content-Type")
        ctype = head.decode("ascii", "replace").strip().lower()
        return (ctype if ctype.count("/") == 1 else "text/plain"), params

    def params(self, value: bytes, header: str) -> Tuple[bytes, Dict[bytes, bytes]]:
        """The value before the first ';', and NAME=VALUE parameters (names in lower
        case, quotes removed; the first of a name wins)."""
        segments: List[bytes] = []
        current: List[bytes] = []
        for piece in _PIECE.finditer(value):
            if piece.group() == b";":
                segments.append(b"".join(current))
                current = []
                if len(segments) > MAX_PARAMS:
                    raise self.fail("MIME header %s has more than %d parameters"
                                    % (header, MAX_PARAMS))
            else:
                current.append(piece.group())
        segments.append(b"".join(current))
        params: Dict[bytes, bytes] = {}
        for segment in segments[1:]:
            key, sep, val = segment.partition(b"=")
            key, val = key.strip().lower(), val.strip()
            if sep and key and key not in params:
                if len(val) >= 2 and val[:1] == val[-1:] == b'"':
                    val = _ESCAPE.sub(rb"\1", val[1:-1])
                params[key] = val
        return segments[0], params

    def children(self, start: int, end: int, boundary: bytes) -> Iterator[Tuple[int, int]]:
        """(start, end) of each part between `--boundary` lines; the line break before a
        boundary line belongs to the boundary. The preamble and epilogue are skipped.
        Found with bytes.find, not line by line: C speed, and linear for a needle of at
        most 72 bytes."""
        if len(boundary) > MAX_BOUNDARY:
            raise self.fail("MIME boundary is longer than %d characters" % MAX_BOUNDARY,
                            "RFC 2046 allows 70")
        delimiter = b"--" + boundary
        part_start: Optional[int] = None
        pos = start
        while True:
            at = self.data.find(delimiter, pos, end)
            if at < 0:
                break
            pos = at + len(delimiter)
            if at > start and self.data[at - 1] not in b"\r\n":
                continue                                # not at the start of a line
            eol = _EOL.search(self.data, pos, end)
            content_end, line_end = (eol.start(), eol.end()) if eol else (end, end)
            rest = self.data[pos:content_end]
            closing = rest.startswith(b"--")
            if rest[2 if closing else 0:].strip(b" \t"):
                continue                                # --boundaryX: not a boundary line
            if part_start is not None:
                yield part_start, max(part_start, _before_break(self.data, at, start))
            if closing:
                return
            part_start = pos = line_end
        if part_start is not None:                      # no closing boundary: up to the end
            yield part_start, end

    def filename(self, headers: Dict[bytes, bytes], params: Dict[bytes, bytes]) -> Optional[str]:
        """Content-Disposition's filename, else Content-Type's name (as the email package)."""
        disposition = headers.get(b"content-disposition")
        if disposition is not None:
            name = _param_text(self.params(disposition, "Content-Disposition")[1], b"filename")
            if name is not None:
                return name
        return _param_text(params, b"name")

    def decode(self, headers: Dict[bytes, bytes], start: int, end: int) -> bytes:
        """The body with its transfer encoding undone; as leniently as the email package
        (padding added where missing; undecodable stays as it is: then it is not ours)."""
        body = self.data[start:end]
        encoding = headers.get(b"content-transfer-encoding", b"").lower()
        if encoding == b"quoted-printable":
            return binascii.a2b_qp(body)
        if encoding == b"base64":
            for padding in (b"", b"=="):
                try:
                    return binascii.a2b_base64(body + padding)
                except binascii.Error:
                    pass
        return body


def _lines(data: bytes, start: int, end: int) -> Iterator[Tuple[int, int, int]]:
    """(start, end of content, end with the line break) of each line of data[start:end]."""
    pos = start
    while pos < end:
        match = _EOL.search(data, pos, end)
        if match is None:
            yield pos, end, end
            return
        yield pos, match.start(), match.end()
        pos = match.end()


def _param_text(params: Dict[bytes, bytes], key: bytes) -> Optional[str]:
    """A parameter as text: plain, or RFC 2231 `key*=charset'lang'%XX` (what the email
    package writes for a non-ASCII file name; continuations `key*0*=` are not read)."""
    if key in params:
        return params[key].decode("utf-8", "replace") or None
    value = params.get(key + b"*")
    if value is None or value.count(b"'") < 2:
        return None
    charset, _, encoded = value.split(b"'", 2)
    from urllib.parse import unquote_to_bytes
    try:
        return unquote_to_bytes(encoded).decode(charset.decode("ascii") or "ascii", "replace")
    except (LookupError, ValueError):       # an unknown or a non-text codec
        return None


def _before_break(data: bytes, at: int, start: int) -> int:
    """Where the line break that ends just before `at` begins (CRLF, CR or LF)."""
    if at - 2 >= start and data[at - 2:at] == b"\r\n":
        return at - 2
    return at - 1 if at > start else at


def _show(name: bytes) -> str:
    text = name[:40].decode("ascii", "replace")
    return "".join(c if c.isalnum() or c in "-_" else "?" for c in text) or "?"
