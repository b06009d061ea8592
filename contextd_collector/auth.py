"""Who sent a report, and which image it booted: the HMAC of README "Authentication" and the
site's image signature (DESIGN section 11), checked with contextd's own code.

The HMAC is computed by contextd.delivery.protocol's `report_key` and `signature`, the
functions that sign it on the VM, so the two ends cannot drift apart. The key is chosen by
what the report claims (its payload's VO, its host's site): a token of VO A never vouches for
a report that says it is VO B's.

What it must never do: accept a report whose MAC was not checked in constant time against a
configured secret, or trust the VM's own `host.image.verified`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from contextd.delivery import protocol
from contextd.limits import LIMITS
from contextd.record import record
from contextd_collector.config import Config, Site

OUTCOMES = ("applied", "unchanged", "skipped", "rejected", "failed")
SCHEMA = "contextd.report/v1"
_REPORT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class Refused(Exception):
    """A POST the collector does not store: the HTTP status and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@record(frozen=True)
class Image:
    sha256: str
    site: Optional[str]
    name: Optional[str]
    version: Optional[str]
    signer: Optional[str]
    verified: bool
    problem: Optional[str]
    manifest: str


def _claims(report: Mapping[str, Any]) -> Tuple[Optional[str], Optional[str]]:
    payload = report.get("payload") if isinstance(report.get("payload"), dict) else {}
    host = report.get("host") if isinstance(report.get("host"), dict) else {}
    vo, site = (payload or {}).get("vo"), (host or {}).get("site")
    return (vo if isinstance(vo, str) else None), (site if isinstance(site, str) else None)


def _candidates(config: Config, report: Mapping[str, Any]) -> Iterator[Tuple[str, bytes]]:
    vo, site = _claims(report)
    for token in config.vo_tokens.get(vo or "", ()):
        yield "vo:%s" % vo, token
    known = config.sites.get(site or "")
    if known is not None and known.key is not None:
        yield "site:%s" % site, known.key


def _parse(body: bytes) -> Dict[str, Any]:
    try:
        report = json.loads(body)
    except ValueError:
        raise Refused(400, "the body is not JSON") from None
    if not isinstance(report, dict):
        raise Refused(400, "the body is not a JSON object")
    return report


def authenticate(config: Config, headers: Mapping[str, str], body: bytes,
                 now: Optional[float] = None) -> Tuple[Dict[str, Any], str]:
    """The report and who vouched for it ("vo:NAME" or "site:NAME"), or Refused."""
    report_id = headers.get("x-contextd-report-id", "")
    stamp = headers.get("x-contextd-timestamp", "")
    mac = headers.get("x-contextd-signature", "")
    if not _REPORT_ID.fullmatch(report_id):
        raise Refused(400, "X-Contextd-Report-Id is missing or malformed")
    if not stamp or not mac:
        raise Refused(401, "X-Contextd-Timestamp or X-Contextd-Signature is missing")
    report = _parse(body)
    if not stamp.isdigit() or len(stamp) > 12:
        raise Refused(401, "X-Contextd-Timestamp is not unix seconds")
    skew = abs((time.time() if now is None else now) - int(stamp))
    if skew > LIMITS.collector_clock_skew_seconds:
        raise Refused(401, "X-Contextd-Timestamp is %d s away from the collector's clock" % skew)
    who = None
    for name, secret in _candidates(config, report):
        expected = protocol.signature(protocol.report_key(secret, report_id), stamp, body)
        if hmac.compare_digest(expected.encode("ascii"), mac.encode("ascii", "replace")):
            who = name
            break
    if who is None:
        raise Refused(401, "the HMAC does not match any key of the report's VO or site")
    _check_shape(report, report_id)
    return report, who


def _check_shape(report: Mapping[str, Any], report_id: str) -> None:
    if report.get("schema") != SCHEMA:
        raise Refused(400, "schema is not %s" % SCHEMA)
    if report.get("report_id") != report_id:
        raise Refused(400, "report_id does not match X-Contextd-Report-Id")
    if report.get("outcome") not in OUTCOMES:
        raise Refused(400, "outcome is not one of %s" % ", ".join(OUTCOMES))
    if not isinstance(report.get("host"), dict):
        raise Refused(400, "host is missing")


def _manifest_bytes(manifest: Any) -> Optional[bytes]:
    """The signed bytes: the manifest as sent (a string), or, for the parsed object contextd
    reports, its canonical JSON as `contextd image sign` writes it (sorted keys, no spaces,
    UTF-8); `manifest_sha256` then tells whether that round trip gave the signed bytes."""
    if isinstance(manifest, str):
        return manifest.encode("utf-8")
    if isinstance(manifest, dict):
        return json.dumps(manifest, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")
    return None


def _signer(site: Optional[Site], data: bytes, armoured: Any) -> Tuple[Optional[str], str]:
    """(the site image key that signed `data`, "") or (None, why not)."""
    from contextd import bundle
    from contextd.errors import ContextdError
    from contextd.trust import sshsig

    if site is None or not site.image_keys:
        return None, "no image_keys for this site"
    if not isinstance(armoured, str):
        return None, "no signature"
    try:
        blobs = [s for s in bundle.decode_signatures(armoured.encode("ascii", "replace"),
                                                     "host.image.signature")
                 if isinstance(s, bytes)]
        for blob in blobs:
            sig = sshsig.parse(blob)
            for line in site.image_keys:
                if sig.signing_key == sshsig.public_key_blob(line) and sig.certificate is None:
                    sshsig.verify(sig, data, namespace="contextd-image")
                    return " ".join(line.split()[:3]), ""
    except ContextdError as exc:
        return None, exc.message
    return None, "signed by a key that is not in the site's image_keys"


def image_of(config: Config, report: Mapping[str, Any]) -> Optional[Image]:
    """The report's signed image manifest, checked against its site's image_keys; None when
    the report carries no manifest (older contextd, no /etc/contextd/image.json)."""
    host = report.get("host") or {}
    image = host.get("image") if isinstance(host, dict) else None
    if not isinstance(image, dict):
        return None
    data = _manifest_bytes(image.get("manifest"))
    if data is None:
        return _unseen(image, report)
    digest = hashlib.sha256(data).hexdigest()
    _, site_name = _claims(report)
    signer, problem = _signer(config.sites.get(site_name or ""), data, image.get("signature"))
    claimed = image.get("manifest_sha256")
    if isinstance(claimed, str) and claimed != digest:
        signer, problem = None, "manifest_sha256 does not match the manifest"
    fields = _manifest_fields(data)
    return Image(sha256=digest, site=_text(fields.get("site")) or site_name,
                 name=_text(fields.get("name")), version=_text(fields.get("version")),
                 signer=signer, verified=signer is not None, problem=problem or None,
                 manifest=data.decode("utf-8", "replace"))


def _unseen(image: Mapping[str, Any], report: Mapping[str, Any]) -> Optional[Image]:
    """A manifest the VM could not verify and so did not send: its digest, unverified."""
    digest = image.get("manifest_sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        return None
    reason = image.get("reason")
    return Image(sha256=digest, site=_claims(report)[1], name=None, version=None, signer=None,
                 verified=False, problem="not sent by the VM, which said: %s"
                 % (reason[:200] if isinstance(reason, str) else "nothing"), manifest="")


def _manifest_fields(data: bytes) -> Dict[str, Any]:
    try:
        fields = json.loads(data)
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def _text(value: Any) -> Optional[str]:
    return value[:255] if isinstance(value, str) else None


def bearer_ok(readers: List[str], authorization: str) -> bool:
    """Whether an Authorization header carries one of the readers' tokens (constant time)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    given = token.strip().encode("utf-8", "replace")
    return any([hmac.compare_digest(given, r.encode("utf-8")) for r in readers])
