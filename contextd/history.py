"""What this machine has applied: the state dir's `applied.json`.

It holds the last payload applied and the instance it was applied on (a reboot of that
instance with the same payload is `unchanged`), and the highest serial applied per VO (a
lower serial, or the same serial with another digest, is a rollback: DESIGN section 8).
The floors outlive a change of instance id: the id comes from the carrier or the metadata
service, which whoever replays an old payload may control too, so a new id must not be a
way around them. A new instance only re-applies (it is never `unchanged`).

The file is input like any other (DESIGN section 4): it is checked whole before use, and
one that is not what contextd writes is refused in one line naming it; never guessed at,
never a crash. It must never make a run do more than it would without the file: it can
only make it `unchanged`, refuse a serial, or hold services. It never names a path or a
command: the services to hold are the ones the plugins it names declare themselves.

The format grew compatibly: `instance`, `payload_sha256` and `serial` are what contextd
wrote before serial floors (still read, and still enough for an older contextd to read a
newer file); `vo`, `applied_at`, `sections` and `serials` came with them.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import stat
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from contextd import filesystem
from contextd.errors import ContextdError, StateError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.record import field, record

APPLIED = "applied.json"
LIMIT = LIMITS.state_bytes  # contextd/limits.py says why
_SHA256 = Pattern(r"[0-9a-f]{64}")
_NAME = Pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")     # a VO or a plugin (section) name
_WHEN = "%Y-%m-%dT%H:%M:%SZ"
log = logging.getLogger("contextd.run")


@record(frozen=True)
class History:
    """The record as it concerns this instance: empty for a state dir without one; for a
    record of another instance, only the serial floors."""

    instance: Optional[str] = None
    payload_sha256: Optional[str] = None        # the payload this instance applied last
    vo: Optional[str] = None                    # its VO; None in a record of the older format
    applied_at: Optional[datetime.datetime] = None
    sections: Tuple[str, ...] = ()              # the plugins it configured
    serials: Mapping[str, Tuple[int, str]] = field(default_factory=dict)  # VO -> (serial, sha)

    def unchanged(self, digest: str) -> bool:
        """Is `digest` the payload this instance applied last?"""
        return self.payload_sha256 == digest

    def rollback(self, vo: str, serial: int, digest: str) -> Optional[str]:
        """Why applying (vo, serial, digest) would roll this instance back, or None."""
        if vo not in self.serials:
            return None
        highest, applied = self.serials[vo]
        if serial < highest:
            return ("serial %d is lower than serial %d already applied on this machine for "
                    "VO %s (a replayed older payload?)" % (serial, highest, vo))
        if serial == highest and digest != applied:
            return ("serial %d was already applied on this machine for VO %s with another "
                    "payload (sha256 %s); a changed payload needs a higher serial"
                    % (serial, vo, applied))
        return None


def load(state_dir: str, instance: str) -> History:
    """What `state_dir` says about `instance`; StateError when the file is malformed."""
    path = os.path.join(state_dir, APPLIED)
    try:
        data = _read(path)
        if data is None:
            return History()
        doc = json.loads(data.decode("utf-8"))
        past = _parse(doc)
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StateError("state file %s is not what contextd writes (%s)"
                         % (path, " ".join(reason.split())[:200]),
                         "remove it: the next run then applies its payload as on a new "
                         "machine, with no serial floors") from None
    return past if past.instance == instance else History(serials=past.serials)


def _read(path: str) -> Optional[bytes]:
    """The file's bytes, None when there is none. Opened without blocking and read only
    when it is a regular file: a FIFO planted there must not hang the boot."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        data = f.read(LIMIT + 1)
    if len(data) > LIMIT:
        raise OSError("larger than %d bytes" % LIMIT)
    return data


def _parse(doc: Any) -> History:
    """Check every field's type and grammar; raise ValueError naming the first bad one."""
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    instance = _get(doc, "instance", str, required=True)
    digest = _get(doc, "payload_sha256", str, required=True, pattern=_SHA256)
    _serial(_get(doc, "serial", int, required=True), "serial")
    vo = _get(doc, "vo", str, pattern=_NAME)
    when = _get(doc, "applied_at", str)
    sections = _get(doc, "sections", list) or []
    serials = _get(doc, "serials", dict) or {}
    for name in sections:
        if not (isinstance(name, str) and _NAME.fullmatch(name)):
            raise ValueError("sections: %.40r is not a section name" % (name,))
    floors: Dict[str, Tuple[int, str]] = {}
    for name, entry in serials.items():
        where = "serials.%.40s" % name
        if not _NAME.fullmatch(name) or not isinstance(entry, dict):
            raise ValueError("%s is not a VO's serial record" % where)
        floors[name] = (_serial(_get(entry, "serial", int, True), where + ".serial"),
                        _get(entry, "payload_sha256", str, True, _SHA256))
    try:
        applied_at = None if when is None else datetime.datetime.strptime(
            when, _WHEN).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise ValueError("applied_at %.40r is not a UTC time like 2026-11-24T00:00:00Z"
                         % when) from None
    return History(instance=instance, payload_sha256=digest, vo=vo, applied_at=applied_at,
                   sections=tuple(sections), serials=floors)


def _get(doc: Dict[str, Any], key: str, kind: type, required: bool = False,
         pattern: Optional[Any] = None) -> Any:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) or (
            pattern is not None and not pattern.fullmatch(value)):
        raise ValueError("%s is %s" % (key, "missing" if value is None
                                       else "not a valid %s" % kind.__name__))
    return value


def _serial(value: int, where: str) -> int:
    if value < 0:
        raise ValueError("%s is negative" % where)
    return value


def remember(state_dir: str, past: History, instance: str, digest: str, vo: str, serial: int,
             sections: Sequence[str], when: datetime.datetime, signed: bool = True) -> None:
    """Record an applied payload: the instance's last payload and, when it was signed, its
    VO's new floor (unsigned legacy user-data has no serial anyone vouches for)."""
    floors = dict(past.serials)
    if signed:
        floors[vo] = (serial, digest)
    filesystem.private_dir(state_dir)
    filesystem.atomic_write(os.path.join(state_dir, APPLIED), json.dumps({
        "instance": instance, "payload_sha256": digest, "serial": serial, "vo": vo,
        "applied_at": when.strftime(_WHEN), "sections": sorted(sections),
        "serials": {name: {"serial": s, "payload_sha256": d}
                    for name, (s, d) in sorted(floors.items())},
    }).encode(), 0o600)


def hold_commands(sections: Sequence[str]) -> List[Any]:
    """The commands keeping the services of these sections' plugins from starting; a
    section whose plugin is gone is skipped (nothing of it can start through contextd)."""
    from contextd import plugin

    out: List[Any] = []
    for name in sections:
        try:
            out.extend(plugin.load(name).hold())
        except ContextdError as exc:
            log.warning("cannot hold the services of section %s: %s", name, exc.message)
    return out
