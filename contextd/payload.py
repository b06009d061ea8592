"""The payload (v1): signed YAML into a frozen, typed value.

It accepts only a `Verified` value, so unverified bytes have no path to a plugin. It
checks the payload's own shape; whether the site accepts it is `authorize`'s job. It never
quotes a secret field (report.token, a plugin's `secret_fields`), even a malformed one.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from contextd import logs, plugin, strictyaml, urls
from contextd.errors import PayloadError
from contextd.patterns import Pattern
from contextd.record import field, record
from contextd.schema import Reader
from contextd.trust.verify import Verified

HEADER = ("contextd", "vo", "serial", "not_before", "expires", "targets", "files")
CORE_SECTIONS = ("report",)
# image and image_version match only a verified image manifest (contextd.image.identity).
TARGET_KEYS = ("site", "cloud", "region", "instance_id", "image_id", "image", "image_version")
_TIME = Pattern(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z$")
_SHA256 = Pattern(r"^[0-9a-f]{64}$")
TOKEN_CHARS = "A-Za-z0-9._~+/=-"          # report.token: 16 to 4096 of these


@record(frozen=True)
class Payload:
    sha256: str
    vo: str
    serial: int
    not_before: datetime.datetime
    expires: datetime.datetime
    targets: Tuple[Mapping[str, str], ...]
    files: Tuple[Tuple[str, str], ...]             # (relative path, sha256)
    sections: Mapping[str, Any]                    # plugin name -> its typed settings
    report_url: Optional[str]
    report_token: Optional[str] = field(default=None, repr=False)   # secret


def parse_time(r: Reader, key: str) -> datetime.datetime:
    value = r.raw(key)
    if value is None:
        raise r.fail(key, "is required", "UTC time such as 2026-11-24T00:00:00Z")
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise r.fail(key, "%r is not a UTC time" % (value,),
                     "write it as 2026-11-24T00:00:00Z ('Z' required)")
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        return datetime.datetime(year, month, day, hour, minute, second,
                                 tzinfo=datetime.timezone.utc)
    except ValueError as exc:
        raise r.fail(key, "%r is not a valid time: %s" % (value, exc)) from None


def _mask(data: Any, keys: Iterable[str]) -> None:
    """Register the secret fields' values with logs before anything checks them: a malformed
    token is still a secret, and every message (errors.one_line) and log line is redacted."""
    if isinstance(data, Mapping):
        for key in keys:
            if isinstance(data.get(key), str):
                logs.add_secret(data[key])


def _report_url(rr: Reader) -> Optional[str]:
    """report.url in the canonical form it is matched (authorize) and delivered in."""
    url = rr.str("url")
    if url is None:
        return None
    try:
        return urls.canonical(url)
    except ValueError as exc:
        raise rr.fail("url", str(exc),
                      "an http(s) URL without user:password@ or #fragment") from None


_RELATIVE = Pattern(r"^(?!/)(?!.*(^|/)\.\.?(/|$))[A-Za-z0-9._/-]+$")


def _files(r: Reader) -> Tuple[List[Tuple[str, str]], List[Tuple[int, Any]]]:
    """`files`: (the carrier files listed, relative path and sha256; the files to install,
    each (its index, its entry), for the files plugin). An entry whose path is absolute
    installs a file; one whose `source` is a carrier file lists that file too."""
    files: List[Tuple[str, str]] = []
    installs: List[Tuple[int, Any]] = []
    raw_files = r.raw("files")
    if raw_files is None:
        return files, installs
    if not isinstance(raw_files, list):
        raise r.fail("files", "must be a list")
    for i, item in enumerate(raw_files):
        fr = Reader(item, "files[%d]" % i, PayloadError)
        if isinstance(fr.raw("path"), str) and fr.raw("path").startswith("/"):
            installs.append((i, item))
            if fr.raw("source") is None:
                continue
            path = fr.str("source", required=True, pattern=_RELATIVE, what="relative path")
        else:
            fr.only(["path", "sha256"])
            path = fr.str("path", required=True, pattern=_RELATIVE, what="relative path")
        digest = fr.str("sha256", required=True, pattern=_SHA256, what="sha256 (64 hex)")
        files.append((path, digest))
    return files, installs


def parse(verified: Verified) -> Payload:
    if not isinstance(verified, Verified):
        raise TypeError("payload.parse takes the value made by verify.verify")
    if getattr(verified, "unsigned", False):
        raise TypeError("payload.parse takes signed payloads only; unsigned legacy user-data "
                        "is read by contextd.legacy")
    return _parse(verified.data, verified.sha256)


def lint(data: bytes) -> Tuple[datetime.datetime, datetime.datetime]:
    """The VO side (`contextd sign`): every check `parse` makes, on bytes about to be signed,
    so a VO learns of a mistake before 10,000 VMs reject it. Returns only the validity
    window (not_before, expires), never a Payload: a Payload is made from verified bytes."""
    doc = _parse(data, "")
    return doc.not_before, doc.expires


def _parse(data: bytes, sha256: str) -> Payload:
    doc = strictyaml.load(data, "payload", PayloadError)
    r = Reader(doc, "", PayloadError)
    if doc.get("contextd") != "payload/v1":
        raise PayloadError("payload: contextd must be 'payload/v1'")
    vo = r.str("vo", required=True, pattern=Pattern(r"^[a-z0-9][a-z0-9_.-]{0,63}$"),
               what="VO name")
    serial = r.int("serial", required=True, minimum=0)
    not_before = parse_time(r, "not_before")
    expires = parse_time(r, "expires")

    targets = []
    raw_targets = r.raw("targets")
    if raw_targets is not None:
        if not isinstance(raw_targets, list) or not raw_targets:
            raise r.fail("targets", "must be a non-empty list of mappings")
        for i, item in enumerate(raw_targets):
            tr = Reader(item, "targets[%d]" % i, PayloadError)
            tr.only(TARGET_KEYS)
            if not tr.data:
                raise tr.err("targets[%d] is empty" % i)
            targets.append({k: tr.str(k, required=True) for k in tr.data})

    files, installs = _files(r)

    report_url = report_token = None
    rr = r.mapping("report")
    if rr is not None:
        _mask(rr.data, ("token",))
        rr.only(["url", "token"])
        report_url = _report_url(rr)
        report_token = rr.secret("token", TOKEN_CHARS, 16, 4096)

    sections: Dict[str, Any] = {}
    if installs:
        sections["files"] = plugin.load("files").parse_settings(installs)
    for name in doc:
        if name in HEADER or name in CORE_SECTIONS:
            continue
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise PayloadError("payload: %r is not a section name" % (name,))
        section = plugin.load(name)
        _mask(doc[name], section.secret_fields)
        sections[name] = section.parse_settings(doc[name])

    assert vo is not None and serial is not None
    return Payload(sha256=sha256, vo=vo, serial=serial, not_before=not_before,
                   expires=expires, targets=tuple(targets), files=tuple(files),
                   sections=sections, report_url=report_url, report_token=report_token)
