"""The transaction's journal: what apply writes before each change, and reads back as input.

Before the first file changes, apply backs up every file that will change in the
transaction dir under the state dir and writes one journal listing them all; a service it
starts is added as an undo. This module writes that journal, reads one a killed run left,
and puts the listed files back.

The journal is input, not authority: whoever wrote the state dir (a disk copied from
elsewhere, an image that ships one, any writer but this code) must get no more from it than
a plugin gets. So it names target paths, accepted only where a plugin declares it writes;
backups only by the plain names apply makes, read from the transaction dir without following
symlinks; and a service's undo only as the unit a plugin starts. Restores never set setuid
bits, write access for group or others, or a new owner. A journal that cannot be trusted or
undone is moved aside whole (JournalError). It must never run anything: stopping a unit is
apply's (recover), never a journal entry's.
"""

from __future__ import annotations

import json
import os
import stat
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from contextd import filesystem
from contextd.errors import JournalError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.plugin import Footprint, show
from contextd.record import field, record

TXN = "transaction"
JOURNAL = "journal.json"
# The journal, as apply writes it: target paths, plain backup names, units.
#   {"entries": [{"path": "/etc/cvmfs/default.local", "backup": "0.bak" or null (created),
#                 "mode": 420, "uid": 0, "gid": 0, "created_dirs": ["/etc/cvmfs"]}],
#    "undo": [{"disable_unit": "condor"}]}
ENTRY_KEYS = frozenset({"path", "backup", "mode", "uid", "gid", "created_dirs"})
BACKUP_RE = Pattern(r"[0-9]{1,9}\.bak\Z")
MAX_JOURNAL = LIMITS.journal_bytes  # contextd/limits.py says why
MAX_BACKUP = LIMITS.backup_bytes  # contextd/limits.py says why
# Recover never restores setuid/setgid/sticky bits or write access for group or others: a
# journal may say what a file held, not make a root-sourced file another user's to edit.
SAFE_MODE = 0o755


@record
class Journal:
    """What this transaction changed, on disk before each change, so a kill can be undone."""

    directory: str
    root: str
    entries: List[Dict[str, Any]] = field(default_factory=list)     # files, in order
    units: List[str] = field(default_factory=list)                  # services started
    touched: int = 0        # entries[:touched] may have changed on disk (in this process)

    def started(self, unit: str) -> None:
        self.units.append(unit)
        self.save()

    def save(self) -> None:
        filesystem.atomic_write(os.path.join(self.directory, JOURNAL), json.dumps(
            {"entries": self.entries,
             "undo": [{"disable_unit": unit} for unit in self.units]}).encode(), 0o600)


def read(directory: str, root: str,
                  allowed: Footprint) -> Tuple[List[Dict[str, Any]], List[str]]:
    """The journal's entries and units, each checked; JournalError at the first doubt."""
    try:
        doc = json.loads(_read_plain(directory, JOURNAL, MAX_JOURNAL))
    except (ValueError, RecursionError) as exc:
        raise JournalError("%s is not JSON (%s)" % (JOURNAL, type(exc).__name__)) from None
    if not (isinstance(doc, dict) and set(doc) == {"entries", "undo"}
            and isinstance(doc["entries"], list) and isinstance(doc["undo"], list)):
        raise JournalError('%s is not {"entries": [...], "undo": [...]}' % JOURNAL)
    seen: Set[str] = set()
    entries = [_checked_entry(i, e, directory, root, allowed, seen)
               for i, e in enumerate(doc["entries"])]
    units = []
    for i, item in enumerate(doc["undo"]):
        unit = item.get("disable_unit") if isinstance(item, dict) and len(item) == 1 else None
        if not isinstance(unit, str) or unit not in allowed.units:
            raise JournalError("undo %d is %s, not a unit a plugin starts (%s)" % (
                i, show(item), ", ".join(sorted(allowed.units)) or "none"))
        units.append(unit)
    return entries, units


def _checked_entry(i: int, entry: Any, directory: str, root: str, allowed: Footprint,
                   seen: Set[str]) -> Dict[str, Any]:
    """A journal entry that names a plugin's file, a backup apply made, a safe mode, the
    file's own or root's owner and the file's parents; its mode made safe."""
    if not isinstance(entry, dict) or not {"path", "backup"} <= set(entry) <= ENTRY_KEYS:
        raise JournalError("entry %d is %s, not a journal entry" % (i, show(entry)))
    path, backup = entry["path"], entry["backup"]
    if not isinstance(path, str) or not allowed.declares(path):
        raise JournalError("entry %d names %s, not a file a plugin may write" % (i, show(path)))
    if path in seen:
        raise JournalError("entry %d names %s twice" % (i, path))
    seen.add(path)
    checked: Dict[str, Any] = {"path": path, "backup": None, "created_dirs": []}
    if backup is not None:
        if not isinstance(backup, str) or not BACKUP_RE.match(backup):
            raise JournalError("entry %d: backup %s is not a name apply makes (N.bak)"
                             % (i, show(backup)))
        if not _is_regular(os.path.join(directory, backup)):
            raise JournalError("entry %d: backup %s is missing or not a regular file"
                             % (i, backup))
        ids: List[Any] = [entry.get(k) for k in ("mode", "uid", "gid")]   # checked just below
        mode, uid, gid = ids
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 32
                   for v in (mode, uid, gid)) or mode > 0o7777:
            raise JournalError("entry %d: mode, uid, gid %s, %s, %s are not a file's"
                             % (i, show(mode), show(uid), show(gid)))
        if uid not in (0, _uid_of(filesystem.under_root(root, path))):
            raise JournalError("entry %d: uid %d would give %s to another user" % (i, uid, path))
        checked.update(backup=backup, mode=mode & SAFE_MODE, uid=uid, gid=gid)
    created = entry.get("created_dirs", [])
    if not isinstance(created, list) or not all(_parent(d, path) for d in created):
        raise JournalError("entry %d: created_dirs %s are not parents of %s"
                         % (i, show(created), path))
    checked["created_dirs"] = created
    return checked


def _parent(directory: Any, path: str) -> bool:
    return isinstance(directory, str) and directory.startswith("/") and directory != "/" \
        and os.path.normpath(directory) == directory and path.startswith(directory + "/")


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _uid_of(path: str) -> Optional[int]:
    try:
        return os.lstat(path).st_uid
    except FileNotFoundError:
        return None


def _read_plain(directory: str, name: str, limit: int) -> bytes:
    """A regular file in the transaction dir, never through a symlink, never a FIFO's wait."""
    fd = os.open(os.path.join(directory, name),
                 os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("%s in %s is not a regular file" % (name, directory))
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError("%s in %s is larger than %d bytes" % (name, directory, limit))
    return data


def set_aside(directory: str, exc: Exception) -> JournalError:
    """Move a transaction dir that cannot be trusted or undone out of the way, so the next
    run starts afresh; the error says why and where it went."""
    why = exc.message if isinstance(exc, JournalError) else "%s" % exc
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(100):
        aside = "%s.rejected-%s%s" % (directory, stamp, "-%d" % n if n else "")
        if not os.path.lexists(aside):
            break
    try:
        os.rename(directory, aside)
    except OSError as err:
        return JournalError("cannot use the rollback journal in %s: %s; nor move that "
                          "directory aside (%s)" % (directory, why, err.strerror or err),
                          "remove it by hand, then run contextd again")
    return JournalError("cannot use the rollback journal in %s: %s; moved that directory to %s"
                      % (directory, why, aside),
                      "check the files it lists by hand; the next run starts afresh")


def undo_files(directory: str, root: str, entries: Sequence[Dict[str, Any]]) -> List[str]:
    """Put every listed file back as it was; returns the paths that had changed. A file the
    run never reached (the journal lists them all up front) is left untouched, unlisted."""
    restored = []
    for entry in reversed(entries):
        try:
            if _undo_file(directory, root, entry):
                restored.append(filesystem.under_root(root, entry["path"], follow=False))
        except OSError as exc:      # named by the file, not by the temp file or dir fd at fault
            raise OSError("cannot restore %s: %s"
                          % (entry["path"], exc.strerror or exc)) from None
    return restored


def _undo_file(directory: str, root: str, entry: Dict[str, Any]) -> bool:
    """Put one listed file back; True when it had changed."""
    target = filesystem.under_root(root, entry["path"], follow=False)
    filesystem.remove_stale_temporaries(os.path.dirname(target), root=root)
    if entry["backup"] is not None:
        content = _read_plain(directory, entry["backup"], MAX_BACKUP)
        before = filesystem.FileState(content, entry["mode"], entry["uid"], entry["gid"])
        changed = _state_or_none(target, root) != before
        if changed:
            filesystem.restore(target, before, root=root)
    else:
        changed = os.path.lexists(target)
        filesystem.remove(target, root=root)
    for created in reversed(entry["created_dirs"]):
        try:  # noqa: SIM105 - boot path: no contextlib import for this
            os.rmdir(filesystem.under_root(root, created, follow=False))
        except OSError:
            pass
    return changed


def _state_or_none(path: str, root: str) -> Optional[filesystem.FileState]:
    """The file as it is, or None when it cannot be read as one (then restore rewrites it)."""
    try:
        return filesystem.state_of(path, root=root)
    except OSError:
        return None


def discard(directory: str) -> None:
    """Remove a transaction directory. It is flat and only apply writes it (backups, the
    journal, atomic_write's temp files), so no shutil.rmtree (nor its import) is needed."""
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)
