"""Report delivery: POST every report to its destinations; spool what could not be sent.

The report side after a run, in three parts: `protocol` (the body and its HMAC headers),
`spool` (files, the lock, failed/), `send` (HTTP with bounded retries, threads, one budget).
This module holds the two entry points: `deliver` after a run (spool, send, settle) and
`flush` for `contextd report flush` (send what is spooled, oldest first).

What it must never do: store or log a report token, lose a report, send one again after a
destination acknowledged it (2xx), or wait unboundedly. At boot all destinations are tried at
once within one BUDGET; a flush gives each entry one BUDGET and skips a destination's other
entries once it failed. The systemd timer retries later.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from contextd import filesystem, logs
from contextd.delivery.protocol import shown
from contextd.delivery import send, spool
from contextd.delivery.send import DELIVERED, KEPT, PENDING, REFUSED
from contextd.delivery.spool import FAILED, DeliveryError, Destination, Entry
from contextd.limits import LIMITS
from contextd.record import field, record

if TYPE_CHECKING:                     # `report flush` must not pay for the policy's imports
    from contextd.policy import Policy

__all__ = ["DELIVERED", "FAILED", "KEPT", "REFUSED", "DeliveryError", "Destination",
           "FlushResult", "Outcome", "deliver", "destinations", "flush", "shown"]

log = logging.getLogger("contextd.delivery")

BUDGET = 10.0
LOCK_WAIT = 15.0


@record(frozen=True)
class Outcome:
    url: str
    verdict: str                 # delivered | spooled | refused
    message: str
    spool_file: Optional[str] = None


def destinations(policy: Policy, root: str, vo_url: Optional[str] = None,
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


def deliver(report: Dict[str, Any], dests: Sequence[Destination], spool_dir: str,
            budget: float = BUDGET) -> List[Outcome]:
    """After a run: spool, send, and keep what was not acknowledged. Never raises for I/O."""
    if not dests:
        return []
    entries = [spool.entry_for(report, d) for d in dests]
    spool_error = None
    try:
        for entry in entries:
            spool.write(entry, spool_dir)
    except OSError as exc:
        spool_error = "cannot spool to %s: %s" % (spool_dir, exc.strerror or exc)
    try:
        with contextlib.ExitStack() as stack:
            if any(e.path for e in entries):
                stack.enter_context(spool.locked(spool_dir, LOCK_WAIT))
                # a flush may have delivered some of them while we waited for the lock
                entries = [e for e in entries if e.path is None or os.path.exists(e.path)]
            results = send.send_all(entries, budget)
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
    fields: Dict[str, Any] = dict(stage="report", report_id=entry.report_id,
                                  destination=shown(entry.url),
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
            moved = spool.move_aside(spool_dir, entry.name, entry.to_bytes())
            logs.event(log, logging.ERROR, "report %s refused by %s: %s; not retried, kept as %s"
                       % (entry.report_id, shown(entry.url), said, moved),
                       spool_file=moved, terminal=False, **fields)
            return Outcome(entry.url, verdict, said, moved)
        if verdict != PENDING:          # a worker still running owns its file
            spool.write(entry, spool_dir)
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
    with spool.locked(spool_dir, LOCK_WAIT):
        down: Dict[str, str] = {}            # destinations that failed in this flush
        for name in sorted(os.listdir(spool_dir)):
            path = os.path.join(spool_dir, name)
            if name.startswith(".") or not name.endswith(".json") or not os.path.isfile(path):
                continue
            try:
                data = filesystem.read_limited(path, LIMITS.spool_entry_bytes) or b""
            except OSError as exc:            # too large, unreadable: left for a human
                result.remaining.append(Outcome("(unknown)", KEPT, "cannot read: %s" % exc,
                                                path))
                continue
            try:
                entry = Entry.from_bytes(data, path)
            except (ValueError, KeyError, TypeError) as exc:
                moved = spool.move_aside(spool_dir, name, data)
                logs.event(log, logging.ERROR, "spool file %s is unreadable (%s); moved to %s"
                           % (name, exc, moved), stage="report", spool_file=moved)
                result.refused.append(Outcome("(unknown)", REFUSED,
                                              "unreadable spool file: %s" % exc, moved))
                continue
            if entry.url in down:
                result.remaining.append(Outcome(entry.url, KEPT, down[entry.url], path))
                continue
            (verdict, said), = send.send_all([entry], budget)
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
