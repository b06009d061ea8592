"""The report protocol's bytes: the body, the per-report key, the HMAC headers (README "Reports").

- POST, `Content-Type: application/json`, the body is the report as compact JSON (sorted keys).
- `X-Contextd-Report-Id` is the report's `report_id`: receivers deduplicate on it.
- When the destination has a key (the payload's `report.token` for the payload's URL, the
  file named by the policy's `report.hmac_key_file` for the site's URLs, nothing otherwise):
  `X-Contextd-Timestamp: <unix seconds at send time>` and
  `X-Contextd-Signature: sha256=<hex HMAC-SHA256(report_key, timestamp + "." + body)>`, where
  `report_key = HMAC-SHA256(key, "contextd-report-key/v1:" + report_id)`. The per-report key
  is what the spool keeps, so a spooled report is signed afresh (a fresh timestamp) whenever it
  is sent, and the token itself is never written anywhere. A VO's token never signs the site's
  copy: it is the VO's secret.

What it must never do: put a token or key in a header, a message or a log (only the MAC of
one report goes out), or read a key file without a size limit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Dict, Optional

from contextd import __version__, filesystem
from contextd.limits import LIMITS

if TYPE_CHECKING:
    from contextd.delivery.spool import Entry

KEY_LABEL = b"contextd-report-key/v1:"


def body_of(report: Dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, sorted keys, ASCII."""
    return json.dumps(report, sort_keys=True, separators=(",", ":")).encode("ascii")


def report_key(secret: bytes, report_id: str) -> bytes:
    return hmac.new(secret, KEY_LABEL + report_id.encode("ascii"), hashlib.sha256).digest()


def signature(key: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def static_headers(report_id: str) -> Dict[str, str]:
    return {"Content-Type": "application/json", "User-Agent": "contextd/%s" % __version__,
            "X-Contextd-Report-Id": report_id}


def _mac_key(entry: Entry) -> Optional[bytes]:
    if entry.mac_key is not None:
        return entry.mac_key
    if not entry.mac_key_file:
        return None
    try:
        secret = filesystem.read_limited(entry.mac_key_file, LIMITS.report_key_bytes)
    except OSError as exc:
        raise OSError("cannot read report.hmac_key_file %s: %s"
                      % (entry.mac_key_file, exc.strerror or exc)) from None
    secret = (secret or b"").strip()
    if len(secret) < 16:
        raise OSError("report.hmac_key_file %s is missing or shorter than 16 bytes"
                      % entry.mac_key_file)
    return report_key(secret, entry.report_id)


def headers_for(entry: Entry, now: Optional[float] = None) -> Dict[str, str]:
    headers = static_headers(entry.report_id)
    key = _mac_key(entry)
    if key is not None:
        stamp = str(int(time.time() if now is None else now))
        headers["X-Contextd-Timestamp"] = stamp
        headers["X-Contextd-Signature"] = signature(key, stamp, entry.body)
    return headers


def shown(url: str) -> str:
    """A URL for messages: no user:password, no query string."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        netloc = ("[%s]" % host if ":" in host else host) + (
            ":%d" % parts.port if parts.port else "")
    except ValueError:
        return "(unparsable URL)"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + (
        "?..." if parts.query else "")
