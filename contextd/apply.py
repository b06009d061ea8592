"""The one executor: performs a plan's actions as a transaction.

Files first, commands after, services last. Before the first file changes, every file that
will change is backed up in the state dir and one journal listing them all is written (one
journal write, not one per file: each costs two fsyncs of a boot). If anything fails, every
file is put back byte for byte with its mode and owner, files the run created are removed,
and services it started are stopped again. A journal left by a killed run is rolled back by
`recover` before anything else happens: it undoes every listed file, which for a file the
run had not reached yet restores what is already there.

The journal is input, not authority: whoever wrote the state dir (a disk copied from
elsewhere, an image that ships one, any writer but this code) must get no more from it than
a plugin gets. So it names target paths, which recover resolves under the root and accepts
only where a plugin declares it writes; backups only by the plain names apply makes, read
from the transaction dir without following symlinks; and a service's undo only as the unit a
plugin starts, stopped by a fixed argv. Restores never set setuid bits, write access for group
or others, or a new owner. A journal recover cannot trust, or cannot finish, is moved aside
whole and the run ends with one line saying where (JournalError): the next run starts afresh.
It never runs a shell, never runs commands (undo included) against an alternate root unless
told to, and never writes a file no plugin declares.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from contextd import filesystem
from contextd.actions import (Action, RunCommand, RunScript, WriteFile, disable_unit,
                              unit_disabled_by)
from contextd.errors import ApplyError, ApplyFailed, JournalError, ScriptFailed
from contextd.plugin import Footprint, show
from contextd.record import field, record

log = logging.getLogger("contextd.apply")
TXN = "transaction"
JOURNAL = "journal.json"
# The journal, as apply writes it: target paths, plain backup names, units.
#   {"entries": [{"path": "/etc/cvmfs/default.local", "backup": "0.bak" or null (created),
#                 "mode": 420, "uid": 0, "gid": 0, "created_dirs": ["/etc/cvmfs"]}],
#    "undo": [{"disable_unit": "condor"}]}
ENTRY_KEYS = frozenset({"path", "backup", "mode", "uid", "gid", "created_dirs"})
BACKUP_RE = re.compile(r"[0-9]{1,9}\.bak\Z")
MAX_JOURNAL = 1024 * 1024
MAX_BACKUP = 64 * 1024 * 1024           # what state_of reads when it backs a file up
# Recover never restores setuid/setgid/sticky bits or write access for group or others: a
# journal may say what a file held, not make a root-sourced file another user's to edit.
SAFE_MODE = 0o755


@record
class _Journal:
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


def recover(state_dir: str, root: str, run_commands: bool, allowed: Footprint) -> List[str]:
    """Roll back a transaction a killed run left behind; returns the paths restored.

    `allowed` is what the plugins may touch. Raises JournalError, after moving the transaction
    dir aside, when the journal cannot be trusted or undone."""
    directory = os.path.join(state_dir, TXN)
    if not os.path.lexists(directory):
        return []
    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            raise JournalError("it is not a directory")        # a symlink leads elsewhere
        if not os.path.lexists(os.path.join(directory, JOURNAL)):
            _discard(directory)           # killed before its first journal entry
            return []
        entries, units = _read_journal(directory, root, allowed)
        _undo_units(units, root, run_commands)
        restored = _undo_files(directory, root, entries)
        _discard(directory)
        return restored
    except (JournalError, OSError) as exc:
        raise _set_aside(directory, exc)


def _undo_units(units: Sequence[str], root: str, run_commands: bool) -> None:
    if units and not (run_commands or root in ("", "/")):
        log.warning("alternate root %s: not stopping %s (commands need --run-commands)",
                    root, ", ".join(units))
        return
    for unit in reversed(units):
        try:
            _run(RunCommand(plugin="recover", argv=disable_unit(unit)))
        except (ApplyError, OSError) as exc:
            log.warning("could not undo a service the interrupted run started: %s",
                        exc.message if isinstance(exc, ApplyError) else exc)


def _read_journal(directory: str, root: str,
                  allowed: Footprint) -> Tuple[List[Dict[str, Any]], List[str]]:
    """The journal's entries and units, each checked; JournalError at the first doubt."""
    try:
        doc = json.loads(_read_plain(directory, JOURNAL, MAX_JOURNAL))
    except (ValueError, RecursionError) as exc:
        raise JournalError("%s is not JSON (%s)" % (JOURNAL, type(exc).__name__))
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
    if not isinstance(path, str) or path not in allowed.paths:
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
        mode, uid, gid = (entry.get(k) for k in ("mode", "uid", "gid"))
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


def _set_aside(directory: str, exc: Exception) -> JournalError:
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


def _undo_files(directory: str, root: str, entries: Sequence[Dict[str, Any]]) -> List[str]:
    """Put every listed file back as it was; returns the paths that had changed. A file the
    run never reached (the journal lists them all up front) is left untouched, unlisted."""
    restored = []
    for entry in reversed(entries):
        try:
            if _undo_file(directory, root, entry):
                restored.append(filesystem.under_root(root, entry["path"], follow=False))
        except OSError as exc:      # named by the file, not by the temp file or dir fd at fault
            raise OSError("cannot restore %s: %s" % (entry["path"], exc.strerror or exc))
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
        try:
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


def execute(actions: Sequence[Action], root: str, state_dir: str, run_commands: bool,
            allowed: Footprint, scripts: Sequence[RunScript] = ()) -> List[Dict[str, Any]]:
    """Perform `actions`; returns one result per action or raises ApplyFailed.
    `allowed`: what the plugins declare; any other file or undo is refused before any change.
    `scripts`: pinned HEPiX scripts, `pre` before the files (a failure raises ScriptFailed:
    nothing was applied), `post` after the services (a failure is only in its result); their
    results come last, kind "script"."""
    _check_declared(actions, allowed)
    files = [a for a in actions if isinstance(a, WriteFile)]
    commands = [a for a in actions if isinstance(a, RunCommand) and not a.service]
    services = [a for a in actions if isinstance(a, RunCommand) and a.service]
    may_run = run_commands or root in ("", "/")

    filesystem.private_dir(state_dir)
    ran = run_phase(scripts, "pre", may_run, root, state_dir)
    journal = _Journal(os.path.join(state_dir, TXN), root)
    filesystem.private_dir(journal.directory)
    results: List[Dict[str, Any]] = []
    done_services: List[RunCommand] = []
    irreversible: List[str] = []
    cursor: List[Dict[str, Any]] = []         # the result of the action under way, if any
    try:
        _write_files(files, root, journal, results, cursor)
        _run_commands(commands + services, may_run, root, journal, results, cursor,
                      done_services, irreversible)
    except (OSError, ApplyError) as exc:
        message = exc.message if isinstance(exc, ApplyError) else "%s" % exc
        current = cursor[0] if cursor else None
        if current is not None:
            current["status"] = "failed"
            current["error"] = message
        results[:] = [r for r in results if r["status"] != "pending"]   # never reached
        rolled_back, not_undone = _rollback(journal, done_services, irreversible, results)
        raise ApplyFailed("apply failed at %s %s: %s; rolled back %d change%s" % (
            current["kind"] if current else "step", current["target"] if current else "",
            message, len(rolled_back), "" if len(rolled_back) == 1 else "s"),
            results + ran, rolled_back, not_undone)
    ran += run_phase(scripts, "post", may_run, root, state_dir)    # still in the transaction
    _discard(journal.directory)
    return results + ran


def _write_files(files: Sequence[WriteFile], root: str, journal: _Journal,
                 results: List[Dict[str, Any]], cursor: List[Dict[str, Any]]) -> None:
    """Back up and journal every file first, then write them; `cursor` holds the result of
    the file under way (the one a failure names)."""
    planned = []
    for action in files:
        current = _result(action)
        cursor[:] = [current]
        results.append(current)
        start = time.monotonic()
        owner = _owner(action, root)
        entry = _prepare(action, root, owner, journal)
        if entry is None:
            current["status"] = "unchanged"
            current["ms"] = _ms(start)
        else:
            planned.append((action, entry, owner, current, start))
    cursor[:] = []
    if planned:
        journal.save()
    for action, entry, owner, current, start in planned:
        cursor[:] = [current]
        journal.touched += 1
        _write(action, entry, owner, root)
        current["status"] = "written" if entry["backup"] is not None else "created"
        current["ms"] = _ms(start)
    cursor[:] = []


def _run_commands(actions: Sequence[RunCommand], may_run: bool, root: str, journal: _Journal,
                  results: List[Dict[str, Any]], cursor: List[Dict[str, Any]],
                  done_services: List[RunCommand], irreversible: List[str]) -> None:
    """Commands, then service starts (each journalled as started, for rollback)."""
    for action in actions:
        current = _result(action)
        cursor[:] = [current]
        results.append(current)
        if not may_run:
            current["status"] = "skipped"
            current["reason"] = "alternate root %s: commands need --run-commands" % root
            continue
        start = time.monotonic()
        _run(action)
        current["status"] = "ran"
        current["ms"] = _ms(start)
        if action.service:
            done_services.append(action)
            unit = unit_disabled_by(action.undo)
            if unit:
                journal.started(unit)
        if not action.reversible:
            irreversible.append(action.target)
    cursor[:] = []


def run_phase(scripts: Sequence[RunScript], phase: str, may_run: bool, root: str,
              state_dir: str) -> List[Dict[str, Any]]:
    """Run the scripts of one phase, in order. A failing `pre` script raises ScriptFailed
    (nothing is applied after it); a `post` one is reported in its result only."""
    if not scripts:
        return []
    from contextd import hepix           # only a HEPiX carrier has scripts

    ran: List[Dict[str, Any]] = []
    for script in (s for s in scripts if s.phase == phase):
        result = hepix.run(script, may_run, root, state_dir)
        ran.append(result)
        if phase == "pre" and result["status"] not in ("ok", "skipped"):
            raise ScriptFailed("HEPiX %s %s; nothing was applied" % (script.name,
                                                                    result["reason"]),
                               "the site's pinned %s must succeed; its output is in the log"
                               % script.name, ran)
    return ran


def _check_declared(actions: Sequence[Action], allowed: Footprint) -> None:
    """Every file a declared one, every undo disable_unit of a declared unit: so whatever
    journal this run leaves, recover accepts it."""
    for action in actions:
        if isinstance(action, WriteFile) and action.path not in allowed.paths:
            raise ApplyError("plugin %s may not write %s: it does not declare that file"
                             % (action.plugin, action.path),
                             "a plugin lists every file it writes in writes(); nothing changed")
        if isinstance(action, RunCommand) and action.undo is not None and \
                unit_disabled_by(action.undo) not in allowed.units:
            raise ApplyError("plugin %s: undo %s is not disable_unit() of a unit it declares"
                             % (action.plugin, show(action.undo)), "nothing changed")


def _prepare(action: WriteFile, root: str, owner: Optional[Tuple[int, int]],
             journal: _Journal) -> Optional[Dict[str, Any]]:
    """The journal entry for `action` (its backup written), or None if nothing would change."""
    # Resolved inside the root (a symlink in the image never leads to the host); the file
    # itself is not followed: rename replaces a link. A secret refuses any link on the way.
    target = filesystem.under_root(root, action.path, follow=False, secret=action.secret)
    before = filesystem.state_of(target, root=root)
    if before is not None and before.content == action.content and \
            before.mode == action.mode and owner in (None, (before.uid, before.gid)):
        return None
    entry: Dict[str, Any] = {"path": action.path, "backup": None,
                             "created_dirs": _on_target(root, action.path,
                                                        filesystem.missing_dirs(
                                                            os.path.dirname(target)))}
    if before is not None:
        name = "%d.bak" % len(journal.entries)
        filesystem.atomic_write(os.path.join(journal.directory, name), before.content, 0o600)
        entry.update(backup=name, mode=before.mode, uid=before.uid, gid=before.gid)
    journal.entries.append(entry)
    return entry


def _on_target(root: str, path: str, directories: Sequence[str]) -> List[str]:
    """Host directories under `root` as the target system names them (the journal's terms),
    only those that are parents of `path` as named: recover accepts no other. (Directories
    a symlink in the image moved elsewhere are left behind, empty, by a rollback.)"""
    base = "" if root in ("", "/") else os.path.abspath(root)
    named = [d[len(base):] for d in directories if d.startswith(base + "/")]
    return [d for d in named if path.startswith(d + "/")]


def _owner(action: WriteFile, root: str) -> Optional[Tuple[int, int]]:
    """(uid, gid) the file must have, from the target's users; None: root or as it is.
    Only root can give a file away, so an unprivileged run (tests) leaves owners alone."""
    if action.owner is None or os.geteuid() != 0:
        return None
    ids = filesystem.user_ids(root, action.owner)
    if ids is None:
        # Without that user the software that reads the file is not installed either.
        log.info("%s: no user %s in the image's /etc/passwd; the file stays root's",
                 action.path, action.owner)
    return ids


def _write(action: WriteFile, entry: Dict[str, Any], owner: Optional[Tuple[int, int]],
           root: str) -> None:
    target = filesystem.under_root(root, action.path, follow=False, secret=action.secret)
    # With dir_mode the parent gets it even if it existed (tokens.d must be 0700), and the
    # file's owner (only ever set when running as root), so its reader can enter it.
    filesystem.ensure_dir(os.path.dirname(target), action.dir_mode or 0o755, root=root,
                          exact=action.dir_mode is not None,
                          owner=owner if action.dir_mode is not None else None,
                          secret=action.secret)
    if owner is None and entry["backup"] is not None:
        owner = (entry["uid"], entry["gid"])
    filesystem.atomic_write(target, action.content, action.mode,
                            owner[0] if owner else None, owner[1] if owner else None,
                            root=root, secret=action.secret)
    log.info("wrote %s", target)          # never the content: it may be a secret


def _discard(directory: str) -> None:
    """Remove a transaction directory. It is flat and only apply writes it (backups, the
    journal, atomic_write's temp files), so no shutil.rmtree (nor its import) is needed."""
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)


def _run(action: RunCommand) -> None:
    import subprocess          # only runs that run commands pay for it

    try:
        proc = subprocess.run(list(action.argv), input=action.stdin or b"",
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=action.timeout, check=False)
    except FileNotFoundError:
        raise ApplyError("command %r not found" % action.argv[0],
                         "install it in the image or drop that section from the payload")
    except subprocess.TimeoutExpired:
        raise ApplyError("%s timed out after %ds" % (action.target, action.timeout))
    output = proc.stdout.decode("utf-8", "replace")
    for line in output.splitlines()[-50:]:
        log.info("%s: %s", action.argv[0], line)
    if proc.returncode not in action.ok_codes:
        tail = output.strip().splitlines()[-1:] or ["no output"]
        raise ApplyError("%s exited with %d (%s)" % (action.target, proc.returncode, tail[0]))


def run_outside_transaction(commands: Sequence[RunCommand], root: str,
                            run_commands: bool) -> List[Dict[str, Any]]:
    """Run `commands` one by one with no transaction and no journal, for a run that is
    ending anyway (holding the services of a payload the site now refuses). A failure is in
    its result, never raised; alternate roots as in `execute`."""
    may_run = run_commands or root in ("", "/")
    results = []
    for action in commands:
        current = _result(action)
        results.append(current)
        if not may_run:
            current["status"] = "skipped"
            current["reason"] = "alternate root %s: commands need --run-commands" % root
            continue
        start = time.monotonic()
        try:
            _run(action)
            current["status"] = "ran"
        except ApplyError as exc:
            current["status"] = "failed"
            current["error"] = exc.message
            log.warning("%s", exc.message)
        current["ms"] = _ms(start)
    return results


def _rollback(journal: _Journal, services: List[RunCommand], irreversible: List[str],
              results: List[Dict[str, Any]]) -> Any:
    not_undone = list(irreversible)
    for service in reversed(services):
        try:
            if service.undo:
                _run(RunCommand(plugin=service.plugin, argv=service.undo))
            else:
                not_undone.append(service.target)
        except ApplyError as exc:
            not_undone.append("%s (%s)" % (service.target, exc.message))
    rolled_back = _undo_files(journal.directory, journal.root,
                              journal.entries[:journal.touched])
    try:
        _discard(journal.directory)
    except OSError as exc:
        log.warning("cannot remove the transaction directory %s: %s", journal.directory, exc)
    for result in results:
        if result["kind"] == "file" and result["status"] in ("created", "written"):
            result["status"] = "rolled-back"
    return rolled_back, not_undone


def _result(action: Action) -> Dict[str, Any]:
    return {"plugin": action.plugin, "kind": action.kind, "target": action.target,
            "status": "pending", "ms": 0}


def _ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
