"""The report spool: one file per report and destination, written before the first send.

The spool (`/var/spool/contextd/reports/`, 0700): one JSON file per report and destination
(0600, written atomically), holding the URL, the static headers, the exact body, the CA bundle
and the per-report key. Every entry is written *before* its first send (a crash mid-send
leaves it spooled) and removed right after a 2xx, before anything else is sent. The one
crash window left is between the 2xx and that removal: the next flush sends it again, which
the receiver recognises by its report id. A refused entry is moved to `failed/` (written
there first, then removed: a crash leaves a copy, never none). One flock on the spool
directory keeps a flush and a run from sending the same entry at the same time.

What it must never do: hold a report token (only the per-report key derived from it), write
a file anything but 0600 in a 0700 directory, or wait for the lock unboundedly.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import time
from typing import Any, Dict, Iterator, Optional

from contextd import filesystem
from contextd.delivery.protocol import body_of, report_key, static_headers
from contextd.errors import DeliveryError
from contextd.record import field, record

FORMAT = "contextd.spool/v1"
FAILED = "failed"


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
    def from_bytes(cls, data: bytes, path: str) -> Entry:
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


def write(entry: Entry, directory: str) -> None:
    filesystem.private_dir(directory)
    path = entry.path or os.path.join(directory, _file_name(entry))
    filesystem.atomic_write(path, entry.to_bytes(), 0o600)
    entry.path = path


def move_aside(spool_dir: str, name: str, data: bytes) -> str:
    """Into failed/ (written there first, then removed here: a crash leaves a copy, never none)."""
    target = os.path.join(spool_dir, FAILED, name)
    filesystem.private_dir(os.path.dirname(target))
    filesystem.atomic_write(target, data, 0o600)
    filesystem.remove(os.path.join(spool_dir, name))
    return target


@contextlib.contextmanager
def locked(spool_dir: str, wait: float) -> Iterator[None]:
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
                                        % spool_dir, "try again later") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
