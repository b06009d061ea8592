"""Report delivery: POST every report to its destinations; spool what could not be sent.

What it must never do: store or log a report token, lose a report, send one again after a
destination acknowledged it (2xx), or take anything from the environment but the proxy
settings (no ~/.netrc credentials, no $REQUESTS_CA_BUNDLE). It never follows a redirect
(that would hand the report and its signature to a host the policy did not allow) and never
waits unboundedly.

The protocol (README "Reports"):
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

The spool (`/var/spool/contextd/reports/`, 0700): one JSON file per report and destination
(0600, written atomically), holding the URL, the static headers, the exact body, the CA bundle
and the per-report key. Every entry is written *before* its first send (a crash mid-send
leaves it spooled) and removed right after a 2xx, before anything else is sent. The one
crash window left is between the 2xx and that removal: the next flush sends it again, which
the receiver recognises by its report id. 2xx: removed. 3xx and 4xx other than 408/429:
moved to `failed/` and never retried. Anything else (connection errors, TLS errors, 408, 429,
5xx, no answer in time): stays spooled for `contextd report flush`. One flock on the spool
directory keeps a flush and a run from sending the same entry at the same time.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from contextd import __version__, filesystem, logs
from contextd.errors import ContextdError
from contextd.record import field, record

if TYPE_CHECKING:                     # `report flush` must not pay for the policy's imports
    from contextd.policy import Policy

log = logging.getLogger("contextd.delivery")

FORMAT = "contextd.spool/v1"
FAILED = "failed"
KEY_LABEL = b"contextd-report-key/v1:"
# Bounds. One send: at most 3 tries (urllib3 Retry) for 408/429/5xx answers and dropped
# connections, sleeping 0 s then 0.5 s between them; a connection that cannot be made is tried
# twice, back to back (the network or the receiver is down: half a second will not change
# that, the timer will); TLS errors are not retried. Each try has a 3 s connect and 5 s read
# timeout, and everything runs inside a hard wall-clock BUDGET (DNS included): at boot all
# destinations are tried at once within one BUDGET; a flush gives each entry one BUDGET and
# skips a destination's other entries once it failed. The systemd timer retries later.
TRIES = 3
CONNECT_TRIES = 2
BACKOFF = 0.25
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
BUDGET = 10.0
LOCK_WAIT = 15.0
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
MAX_ENTRY_BYTES = 8 * 1024 * 1024
MAX_KEY_BYTES = 4096

DELIVERED, KEPT, REFUSED = "delivered", "spooled", "refused"
PENDING = "pending"           # internal: a send still running when the budget ran out


class DeliveryError(ContextdError):
    """The spool cannot be used (busy, unreadable)."""

    stage = "report"


@record(frozen=True)
class Destination:
    url: str
    token: Optional[str] = field(default=None, repr=False)   # the VO's report.token: secret
    key_file: Optional[str] = None          # the site's own key (report.hmac_key_file)
    ca_bundle: Optional[str] = None         # verify HTTPS against this bundle, not the system's


@record
class Entry:
    """One report for one destination: what the spool holds."""

    url: str
    report_id: str
    body: bytes = field(repr=False)
    created_at: str
    ca_bundle: Optional[str] = None
    mac_key: Optional[bytes] = field(default=None, repr=False)   # the per-report key
    mac_key_file: Optional[str] = None
    attempts: int = 0
    last_error: Optional[str] = None
    path: Optional[str] = None              # its spool file, once written

    def to_bytes(self) -> bytes:
        return (json.dumps({
            "format": FORMAT, "url": self.url, "report_id": self.report_id,
            "created_at": self.created_at, "attempts": self.attempts,
            "last_error": self.last_error, "ca_bundle": self.ca_bundle,
            "headers": static_headers(self.report_id),
            "mac": ({"key": self.mac_key.hex()} if self.mac_key is not None else
                    {"key_file": self.mac_key_file} if self.mac_key_file else None),
            "body": self.body.decode("ascii"),
        }, indent=1, sort_keys=True) + "\n").encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, path: str) -> "Entry":
        doc = json.loads(data.decode("ascii"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a %s file" % FORMAT)
        mac = doc.get("mac") or {}
        return cls(url=str(doc["url"]), report_id=str(doc["report_id"]),
                   body=str(doc["body"]).encode("ascii"), created_at=str(doc["created_at"]),
                   ca_bundle=doc.get("ca_bundle"),
                   mac_key=bytes.fromhex(mac["key"]) if "key" in mac else None,
                   mac_key_file=mac.get("key_file"), attempts=int(doc.get("attempts", 0)),
                   last_error=doc.get("last_error"), path=path)

    @property
    def name(self) -> str:
        return os.path.basename(self.path) if self.path else self.report_id


@record(frozen=True)
class Outcome:
    url: str
    verdict: str                 # delivered | spooled | refused
    message: str
    spool_file: Optional[str] = None


# -- the protocol ---------------------------------------------------------------------------

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


# -- destinations and entries ---------------------------------------------------------------

def destinations(policy: "Policy", root: str, vo_url: Optional[str] = None,
                 vo_token: Optional[str] = None) -> List[Destination]:
    """The payload's allowed URL (signed with its token) and the site's URLs (signed with the
    site's key when the policy names one); paths in the policy are on the target system."""
    ca = _on_target(root, policy.report_ca_bundle)
    key_file = _on_target(root, policy.report_hmac_key_file)
    out: List[Destination] = []
    if vo_url:
        out.append(Destination(vo_url, token=vo_token, ca_bundle=ca))
    for url in policy.report_urls:
        dest = Destination(url, key_file=key_file, ca_bundle=ca)
        if dest not in out:
            out.append(dest)
    return out


def _on_target(root: str, path: Optional[str]) -> Optional[str]:
    """A policy path resolved inside the root. A symlink loop there must not cost the report:
    the path stays as written, and reading it later fails as a delivery error that says so."""
    if not path:
        return None
    try:
        return filesystem.under_root(root, path)
    except OSError as exc:
        log.warning("cannot resolve %s under %s: %s", path, root, exc.strerror or exc)
        return os.path.join(os.path.abspath(root or "/"), path.lstrip("/"))


def entry_for(report: Dict[str, Any], dest: Destination) -> Entry:
    report_id = str(report["report_id"])
    return Entry(url=dest.url, report_id=report_id, body=body_of(report),
                 created_at=_now_iso(), ca_bundle=dest.ca_bundle,
                 mac_key=report_key(dest.token.encode("utf-8"), report_id)
                 if dest.token else None,
                 mac_key_file=dest.key_file)


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _file_name(entry: Entry) -> str:
    stamp = entry.created_at.replace("-", "").replace(":", "")
    who = hashlib.sha256(("%s\0%s\0%s" % (entry.url, (entry.mac_key or b"").hex(),
                                           entry.mac_key_file or "")).encode("utf-8")
                         ).hexdigest()[:12]             # one file per report and destination
    return "%s-%s-%s.json" % (stamp, entry.report_id, who)


def _write(entry: Entry, directory: str) -> None:
    filesystem.private_dir(directory)
    path = entry.path or os.path.join(directory, _file_name(entry))
    filesystem.atomic_write(path, entry.to_bytes(), 0o600)
    entry.path = path


def _move_aside(spool_dir: str, name: str, data: bytes) -> str:
    """Into failed/ (written there first, then removed here: a crash leaves a copy, never none)."""
    target = os.path.join(spool_dir, FAILED, name)
    filesystem.private_dir(os.path.dirname(target))
    filesystem.atomic_write(target, data, 0o600)
    filesystem.remove(os.path.join(spool_dir, name))
    return target


@contextlib.contextmanager
def _locked(spool_dir: str, wait: float) -> Iterator[None]:
    fd = os.open(spool_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DeliveryError("spool %s is busy: another contextd is sending reports"
                                        % spool_dir, "try again later")
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


# -- sending --------------------------------------------------------------------------------

def _mac_key(entry: Entry) -> Optional[bytes]:
    if entry.mac_key is not None:
        return entry.mac_key
    if not entry.mac_key_file:
        return None
    try:
        secret = filesystem.read_limited(entry.mac_key_file, MAX_KEY_BYTES)
    except OSError as exc:
        raise OSError("cannot read report.hmac_key_file %s: %s"
                      % (entry.mac_key_file, exc.strerror or exc))
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


def _session() -> Any:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=TRIES - 1, connect=CONNECT_TRIES - 1, read=TRIES - 1, status=TRIES - 1,
                  other=0, redirect=0, backoff_factor=BACKOFF,
                  status_forcelist=RETRY_STATUS, allowed_methods=frozenset(["POST"]),
                  raise_on_status=False, respect_retry_after_header=False)
    session = requests.Session()
    # Nothing from the environment but the proxy (_post): with trust_env, root's ~/.netrc
    # credentials would go to whatever URL a payload names, and $REQUESTS_CA_BUNDLE would
    # replace the CA the policy chose.
    session.trust_env = False
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _proxies(url: str) -> Dict[str, str]:
    """The environment's proxies for `url` (honouring no_proxy): all trust_env still takes."""
    import requests

    try:
        return requests.utils.get_environ_proxies(url)
    except ValueError:                # an unparsable URL: requests says so itself when sending
        return {}


def _post(entry: Entry) -> Tuple[str, str]:
    """One send with urllib3's retries: (verdict, what happened)."""
    import requests

    try:
        headers = headers_for(entry)
    except OSError as exc:
        return KEPT, str(exc)
    session = _session()
    try:
        response = session.post(entry.url, data=entry.body, headers=headers, stream=True,
                                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), allow_redirects=False,
                                verify=entry.ca_bundle or True,
                                proxies=_proxies(entry.url))
        status, reason = response.status_code, response.reason or ""
        response.close()
    except requests.exceptions.RequestException as exc:
        return KEPT, _describe(exc)
    except OSError as exc:      # requests: an unreadable CA bundle
        return KEPT, "cannot use CA bundle %s: %s" % (entry.ca_bundle, exc)
    finally:
        session.close()
    said = " ".join(("HTTP %d %s" % (status, reason)).split())[:200]
    if 200 <= status < 300:
        return DELIVERED, said
    if status in RETRY_STATUS or status >= 500:
        return KEPT, said
    return REFUSED, said + (" (redirects are not followed)" if 300 <= status < 400 else "")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: List[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 32:
        e = todo.pop(0)
        if any(e is s for s in seen):
            continue
        seen.append(e)
        yield e
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        for attr in ("reason", "__cause__", "__context__"):
            nxt = getattr(e, attr, None)
            if isinstance(nxt, BaseException):
                todo.append(nxt)


# OpenSSL's X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT(_LOCALLY), self-signed, unverifiable leaf
_UNKNOWN_ISSUER = (2, 18, 19, 20, 21)


def _describe(exc: BaseException) -> str:
    """requests' nested exception text, boiled down to the one reason a human needs."""
    import ssl                          # loaded by requests already; not at contextd's start

    chain = list(_causes(exc))
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            text = "TLS certificate verification failed: %s" % (
                e.verify_message or e.reason or "certificate rejected")
            if e.verify_code in _UNKNOWN_ISSUER:
                text += " (report.ca_bundle in the policy must hold the CA that signed it)"
            return text
    for e in chain:
        if isinstance(e, ssl.SSLError):
            return "TLS error: %s" % (e.reason or e.strerror or e)
    for e in chain:
        if "Timeout" in type(e).__name__ or isinstance(e, TimeoutError):
            return "timed out (%gs to connect, %gs to answer)" % (CONNECT_TIMEOUT, READ_TIMEOUT)
    for e in chain:
        if isinstance(e, OSError) and e.strerror:
            return "connection failed: %s" % e.strerror
    text = " ".join(str(exc).split())
    match = re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", text)
    return "connection failed: %s" % (match.group(1).strip() if match else
                                      type(exc).__name__)


def _send_all(entries: Sequence[Entry], budget: float) -> List[Tuple[str, str]]:
    """Send each entry in its own thread; give up waiting after `budget` seconds.

    A worker removes its spool file itself, right after the 2xx. One still running when the
    budget is spent is reported PENDING and its file is left alone (it may yet succeed and
    remove it); the process exits soon after and the next flush sends it again.
    """
    results: List[Optional[Tuple[str, str]]] = [None] * len(entries)
    errors: List[BaseException] = []

    def work(i: int, entry: Entry) -> None:
        try:
            verdict, said = _post(entry)
            if verdict == DELIVERED and entry.path:
                try:
                    filesystem.remove(entry.path)
                except OSError as exc:
                    said += "; could not remove %s (it may be sent again): %s" % (
                        entry.path, exc.strerror or exc)
            results[i] = (verdict, said)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, e), daemon=True,
                                name="contextd-report-%d" % i) for i, e in enumerate(entries)]
    deadline = time.monotonic() + budget
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    return [r if r is not None else (PENDING, "no answer within %gs" % budget) for r in results]


# -- the two entry points -------------------------------------------------------------------

def deliver(report: Dict[str, Any], dests: Sequence[Destination], spool_dir: str,
            budget: float = BUDGET) -> List[Outcome]:
    """After a run: spool, send, and keep what was not acknowledged. Never raises for I/O."""
    if not dests:
        return []
    entries = [entry_for(report, d) for d in dests]
    spool_error = None
    try:
        for entry in entries:
            _write(entry, spool_dir)
    except OSError as exc:
        spool_error = "cannot spool to %s: %s" % (spool_dir, exc.strerror or exc)
    try:
        with contextlib.ExitStack() as stack:
            if any(e.path for e in entries):
                stack.enter_context(_locked(spool_dir, LOCK_WAIT))
                # a flush may have delivered some of them while we waited for the lock
                entries = [e for e in entries if e.path is None or os.path.exists(e.path)]
            results = _send_all(entries, budget)
            return [_settle(entry, verdict, said, spool_dir, spool_error)
                    for entry, (verdict, said) in zip(entries, results)]
    except (DeliveryError, OSError) as exc:       # busy, or the spool went away under us
        said = exc.message if isinstance(exc, DeliveryError) else "spool %s: %s" % (
            spool_dir, exc.strerror or exc)
        logs.event(log, logging.WARNING, "reports left in the spool: %s" % said,
                   terminal=False, stage="report", delivery=KEPT,
                   report_id=report.get("report_id"))
        return [Outcome(e.url, KEPT, said, e.path) for e in entries]


def _settle(entry: Entry, verdict: str, said: str, spool_dir: str,
            spool_error: Optional[str]) -> Outcome:
    """Log what happened to one entry and leave the spool saying the same."""
    fields = dict(stage="report", report_id=entry.report_id, destination=shown(entry.url),
                  delivery=KEPT if verdict == PENDING else verdict)
    if verdict == DELIVERED:
        logs.event(log, logging.INFO, "report %s delivered to %s (%s)"
                   % (entry.report_id, shown(entry.url), said), **fields)
        return Outcome(entry.url, verdict, said)
    if entry.path is None:
        logs.event(log, logging.ERROR, "report %s LOST for %s: %s; %s" % (
            entry.report_id, shown(entry.url), said, spool_error), terminal=False, **fields)
        return Outcome(entry.url, KEPT, "%s; %s" % (said, spool_error))
    entry.attempts += 1
    entry.last_error = said
    try:
        if verdict == REFUSED:
            moved = _move_aside(spool_dir, entry.name, entry.to_bytes())
            logs.event(log, logging.ERROR, "report %s refused by %s: %s; not retried, kept as %s"
                       % (entry.report_id, shown(entry.url), said, moved),
                       spool_file=moved, terminal=False, **fields)
            return Outcome(entry.url, verdict, said, moved)
        if verdict != PENDING:          # a worker still running owns its file
            _write(entry, spool_dir)
    except OSError as exc:
        said += "; spool %s: %s" % (spool_dir, exc.strerror or exc)
        verdict = KEPT
    logs.event(log, logging.WARNING, "report %s not delivered to %s: %s; spooled as %s "
               "(`contextd report flush` sends it)" % (entry.report_id, shown(entry.url), said,
                                                       entry.path),
               spool_file=entry.path, terminal=False, **fields)
    return Outcome(entry.url, KEPT, said, entry.path)


@record
class FlushResult:
    delivered: List[Outcome] = field(default_factory=list)
    refused: List[Outcome] = field(default_factory=list)
    remaining: List[Outcome] = field(default_factory=list)


def flush(spool_dir: str, budget: float = BUDGET) -> FlushResult:
    """Send every spooled entry, oldest first; remove what was acknowledged."""
    result = FlushResult()
    if not os.path.isdir(spool_dir):
        return result
    filesystem.private_dir(spool_dir)
    with _locked(spool_dir, LOCK_WAIT):
        down: Dict[str, str] = {}            # destinations that failed in this flush
        for name in sorted(os.listdir(spool_dir)):
            path = os.path.join(spool_dir, name)
            if name.startswith(".") or not name.endswith(".json") or not os.path.isfile(path):
                continue
            try:
                data = filesystem.read_limited(path, MAX_ENTRY_BYTES) or b""
            except OSError as exc:            # too large, unreadable: left for a human
                result.remaining.append(Outcome("(unknown)", KEPT, "cannot read: %s" % exc,
                                                path))
                continue
            try:
                entry = Entry.from_bytes(data, path)
            except (ValueError, KeyError, TypeError) as exc:
                moved = _move_aside(spool_dir, name, data)
                logs.event(log, logging.ERROR, "spool file %s is unreadable (%s); moved to %s"
                           % (name, exc, moved), stage="report", spool_file=moved)
                result.refused.append(Outcome("(unknown)", REFUSED,
                                              "unreadable spool file: %s" % exc, moved))
                continue
            if entry.url in down:
                result.remaining.append(Outcome(entry.url, KEPT, down[entry.url], path))
                continue
            (verdict, said), = _send_all([entry], budget)
            outcome = _settle(entry, verdict, said, spool_dir, None)
            if outcome.verdict == DELIVERED:
                result.delivered.append(outcome)
            elif outcome.verdict == REFUSED:
                result.refused.append(outcome)
            else:
                down[entry.url] = "not tried: %s failed just before (%s)" % (
                    shown(entry.url), said)
                result.remaining.append(outcome)
    return result
