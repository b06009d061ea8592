"""The one executor: performs a plan's actions as a transaction.

Files first, commands after, services last. Before the first file changes, every file that
will change is backed up in the state dir and one journal listing them all is written (one
journal write, not one per file: each costs two fsyncs of a boot). If anything fails, every
file is put back byte for byte with its mode and owner, files the run created are removed,
and services it started are stopped again. A journal left by a killed run is rolled back by
`recover` before anything else happens: it undoes every listed file, which for a file the
run had not reached yet restores what is already there.
It never runs a shell, and never runs commands against an alternate root unless told to.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from contextd import filesystem
from contextd.actions import Action, RunCommand, WriteFile
from contextd.errors import ApplyError
from contextd.record import field, record

log = logging.getLogger("contextd.apply")
TXN = "transaction"
JOURNAL = "journal.json"


class ApplyFailed(ApplyError):
    def __init__(self, message: str, results: List[Dict[str, Any]],
                 rolled_back: List[str], not_undone: List[str]):
        super().__init__(message, "nothing was left half-applied; see the report's actions")
        self.results = results
        self.rolled_back = rolled_back
        self.not_undone = not_undone


@record
class _Journal:
    """What this transaction changed, on disk before each change, so a kill can be undone."""

    directory: str
    entries: List[Dict[str, Any]] = field(default_factory=list)     # files, in order
    undo: List[List[str]] = field(default_factory=list)             # argv undoing started services
    touched: int = 0        # entries[:touched] may have changed on disk (in this process)

    def started(self, undo: Sequence[str]) -> None:
        self.undo.append(list(undo))
        self.save()

    def save(self) -> None:
        filesystem.atomic_write(os.path.join(self.directory, JOURNAL), json.dumps(
            {"entries": self.entries, "undo": self.undo}).encode(), 0o600)


def recover(state_dir: str) -> List[str]:
    """Roll back a transaction a killed run left behind; returns the paths restored."""
    directory = os.path.join(state_dir, TXN)
    path = os.path.join(directory, JOURNAL)
    if not os.path.exists(path):
        if os.path.isdir(directory):
            _discard(directory)           # killed before its first journal entry
        return []
    try:
        with open(path, "rb") as f:
            journal = json.load(f)
        entries, undo = journal["entries"], journal.get("undo", [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ApplyError("cannot read the interrupted transaction in %s: %s" % (directory, exc),
                         "restore the listed files by hand, then remove that directory")
    for argv in reversed(undo):
        try:
            _run(RunCommand(plugin="recover", argv=tuple(argv)))
        except ApplyError as exc:
            log.warning("could not undo a service the interrupted run started: %s", exc.message)
    restored = _undo_files(directory, entries)
    _discard(directory)
    return restored


def _undo_files(directory: str, entries: Sequence[Dict[str, Any]]) -> List[str]:
    """Put every listed file back as it was; returns the paths that had changed. A file the
    run never reached (the journal lists them all up front) is left untouched, unlisted."""
    restored = []
    for entry in reversed(entries):
        target = entry["path"]
        filesystem.remove_stale_temporaries(os.path.dirname(target))
        if entry.get("backup") is not None:
            with open(os.path.join(directory, entry["backup"]), "rb") as f:
                content = f.read()
            before = filesystem.FileState(content, entry["mode"], entry["uid"], entry["gid"])
            changed = _state_or_none(target) != before
            if changed:
                filesystem.restore(target, before)
        else:
            changed = os.path.lexists(target)
            filesystem.remove(target)
        for created in reversed(entry.get("created_dirs", [])):
            try:
                os.rmdir(created)
            except OSError:
                pass
        if changed:
            restored.append(target)
    return restored


def _state_or_none(path: str) -> Optional[filesystem.FileState]:
    """The file as it is, or None when it cannot be read as one (then restore rewrites it)."""
    try:
        return filesystem.state_of(path)
    except OSError:
        return None


def execute(actions: Sequence[Action], root: str, state_dir: str,
            run_commands: bool) -> List[Dict[str, Any]]:
    """Perform `actions`; returns one result per action or raises ApplyFailed."""
    files = [a for a in actions if isinstance(a, WriteFile)]
    commands = [a for a in actions if isinstance(a, RunCommand) and not a.service]
    services = [a for a in actions if isinstance(a, RunCommand) and a.service]
    may_run = run_commands or root in ("", "/")

    filesystem.private_dir(state_dir)
    journal = _Journal(os.path.join(state_dir, TXN))
    filesystem.private_dir(journal.directory)
    results: List[Dict[str, Any]] = []
    done_services: List[RunCommand] = []
    irreversible: List[str] = []
    current: Optional[Dict[str, Any]] = None
    try:
        planned = []
        for action in files:
            current = _result(action)
            results.append(current)
            start = time.monotonic()
            entry = _prepare(action, root, journal)
            if entry is None:
                current["status"] = "unchanged"
                current["ms"] = _ms(start)
            else:
                planned.append((action, entry, current, start))
        current = None
        if planned:
            journal.save()
        for action, entry, current, start in planned:
            journal.touched += 1
            _write(action, entry)
            current["status"] = "written" if entry["backup"] is not None else "created"
            current["ms"] = _ms(start)
        for action in list(commands) + list(services):
            current = _result(action)
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
                if action.undo:
                    journal.started(action.undo)
            if not action.reversible:
                irreversible.append(action.target)
        current = None
    except (OSError, ApplyError) as exc:
        message = exc.message if isinstance(exc, ApplyError) else "%s" % exc
        if current is not None:
            current["status"] = "failed"
            current["error"] = message
        results[:] = [r for r in results if r["status"] != "pending"]   # never reached
        rolled_back, not_undone = _rollback(journal, done_services, irreversible, results)
        raise ApplyFailed("apply failed at %s %s: %s; rolled back %d change%s" % (
            current["kind"] if current else "step", current["target"] if current else "",
            message, len(rolled_back), "" if len(rolled_back) == 1 else "s"),
            results, rolled_back, not_undone)
    _discard(journal.directory)
    return results


def _prepare(action: WriteFile, root: str, journal: _Journal) -> Optional[Dict[str, Any]]:
    """The journal entry for `action` (its backup written), or None if nothing would change."""
    target = filesystem.under_root(root, action.path)
    before = filesystem.state_of(target)
    owner = _owner(action, root)
    if before is not None and before.content == action.content and \
            before.mode == action.mode and owner in (None, (before.uid, before.gid)):
        return None
    entry: Dict[str, Any] = {"path": target, "backup": None, "owner": owner,
                             "created_dirs": filesystem.missing_dirs(os.path.dirname(target))}
    if before is not None:
        name = "%d.bak" % len(journal.entries)
        filesystem.atomic_write(os.path.join(journal.directory, name), before.content, 0o600)
        entry.update(backup=name, mode=before.mode, uid=before.uid, gid=before.gid)
    journal.entries.append(entry)
    return entry


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


def _write(action: WriteFile, entry: Dict[str, Any]) -> None:
    target = entry["path"]
    parent = os.path.dirname(target)
    created = filesystem.ensure_dir(parent, action.dir_mode or 0o755)
    owner = entry["owner"]
    if action.dir_mode is not None:
        if not created:
            os.chmod(parent, action.dir_mode)   # tokens.d must be 0700 even if it existed
        if owner is not None:                       # (only ever set when running as root)
            os.chown(parent, owner[0], owner[1])    # and its reader's, to be entered
    if owner is None and entry["backup"] is not None:
        owner = (entry["uid"], entry["gid"])
    filesystem.atomic_write(target, action.content, action.mode,
                            owner[0] if owner else None, owner[1] if owner else None)
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
    rolled_back = _undo_files(journal.directory, journal.entries[:journal.touched])
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
