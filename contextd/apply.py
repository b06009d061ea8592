"""The one executor: performs a plan's actions as a transaction.

Package installs first (the files may configure them), files, commands after, services
last. Before the first file changes, every file that
will change is backed up in the state dir and one journal listing them all is written (one
journal write, not one per file: each costs two fsyncs of a boot). If anything fails, every
file is put back byte for byte with its mode and owner, files the run created are removed,
and services it started are stopped again. A journal left by a killed run is rolled back by
`recover` before anything else happens: it undoes every listed file, which for a file the
run had not reached yet restores what is already there.

The journal (its format, read back as untrusted input, and the file undo) is
contextd.journal's: it names only files a plugin declares and units a plugin starts, which
recover stops by a fixed argv. A journal recover cannot trust, or cannot finish, is moved
aside whole and the run ends with one line saying where (JournalError): the next run starts
afresh. Pinned HEPiX scripts run in a pre phase (before the files) and a post phase (after
the services, the transaction still open); they are commands, never journal entries.
It never runs a shell, never runs commands (undo included) against an alternate root unless
told to, and never writes a file no plugin declares.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from contextd import filesystem
from contextd.actions import (Action, RunCommand, RunScript, WriteFile, disable_unit,
                              unit_disabled_by)
from contextd.errors import ApplyError, ApplyFailed, JournalError, ScriptFailed
from contextd.journal import JOURNAL, TXN, Journal, discard, set_aside, undo_files
from contextd.journal import read as journal_read
from contextd.plugin import Footprint, show

log = logging.getLogger("contextd.apply")


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
            discard(directory)           # killed before its first journal entry
            return []
        entries, units = journal_read(directory, root, allowed)
        _undo_units(units, root, run_commands)
        restored = undo_files(directory, root, entries)
        discard(directory)
        return restored
    except (JournalError, OSError) as exc:
        raise set_aside(directory, exc) from None


def commands_may_run(root: str, run_commands: bool) -> bool:
    """DESIGN section 8: under an alternate root a command would act on the host, not the
    image, so commands run there only when --run-commands says so."""
    return run_commands or root in ("", "/")


def _undo_units(units: Sequence[str], root: str, run_commands: bool) -> None:
    if units and not commands_may_run(root, run_commands):
        log.warning("alternate root %s: not stopping %s (commands need --run-commands)",
                    root, ", ".join(units))
        return
    for unit in reversed(units):
        try:
            _run(RunCommand(plugin="recover", argv=disable_unit(unit)))
        except (ApplyError, OSError) as exc:
            log.warning("could not undo a service the interrupted run started: %s",
                        exc.message if isinstance(exc, ApplyError) else exc)


def execute(actions: Sequence[Action], root: str, state_dir: str, run_commands: bool,
            allowed: Footprint, scripts: Sequence[RunScript] = ()) -> List[Dict[str, Any]]:
    """Perform `actions`; returns one result per action or raises ApplyFailed.
    `allowed`: what the plugins declare; any other file or undo is refused before any change.
    `scripts`: pinned HEPiX scripts, `pre` before the files (a failure raises ScriptFailed:
    nothing was applied), `post` after the services (a failure is only in its result); their
    results come last, kind "script"."""
    _check_declared(actions, allowed)
    files = [a for a in actions if isinstance(a, WriteFile)]
    first = [a for a in actions if isinstance(a, RunCommand) and a.first]
    commands = [a for a in actions if isinstance(a, RunCommand) and not a.service
                and not a.first]
    services = [a for a in actions if isinstance(a, RunCommand) and a.service]
    may_run = commands_may_run(root, run_commands)

    filesystem.private_dir(state_dir)
    ran = run_phase(scripts, "pre", may_run, root, state_dir)
    journal = Journal(os.path.join(state_dir, TXN), root)
    filesystem.private_dir(journal.directory)
    results: List[Dict[str, Any]] = []
    done_services: List[RunCommand] = []
    irreversible: List[str] = []
    cursor: List[Dict[str, Any]] = []         # the result of the action under way, if any
    try:
        _run_commands(first, may_run, root, journal, results, cursor, done_services,
                      irreversible)
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
            results + ran, rolled_back, not_undone) from None
    ran += run_phase(scripts, "post", may_run, root, state_dir)    # still in the transaction
    discard(journal.directory)
    return results + ran


def _write_files(files: Sequence[WriteFile], root: str, journal: Journal,
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


def _run_commands(actions: Sequence[RunCommand], may_run: bool, root: str, journal: Journal,
                  results: List[Dict[str, Any]], cursor: List[Dict[str, Any]],
                  done_services: List[RunCommand], irreversible: List[str]) -> None:
    """Commands, then service starts (each journalled as started, for rollback)."""
    for action in actions:
        current = _result(action)
        cursor[:] = [current]
        results.append(current)
        if _may_not_run(current, may_run, root) or _already_done(action, current):
            continue
        _run_timed(action, current)
        if action.service:
            done_services.append(action)
            unit = unit_disabled_by(action.undo)
            if unit:
                journal.started(unit)
        if not action.reversible:
            irreversible.append(action.target)
    cursor[:] = []


def _already_done(action: RunCommand, current: Dict[str, Any]) -> bool:
    """True, with the result `unchanged`, when the action's `unless` check says so (exit 0
    and, if the action expects one, that exact output): a package already installed."""
    if action.unless is None:
        return False
    import subprocess

    try:
        proc = subprocess.run(list(action.unless), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=action.timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("%s: cannot check (%s); running it", action.target, exc)
        return False
    done = proc.returncode == 0 and (action.unless_stdout is None
                                     or proc.stdout.strip() == action.unless_stdout)
    if done:
        current["status"] = "unchanged"
    return done


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
            raise ScriptFailed("%s %s; nothing was applied" % (script.label,
                                                              result["reason"]),
                               "the site's pinned %s must succeed; its output is in the log"
                               % script.label, ran)
    return ran


def _check_declared(actions: Sequence[Action], allowed: Footprint) -> None:
    """Every file a declared one, every undo disable_unit of a declared unit: so whatever
    journal this run leaves, recover accepts it."""
    for action in actions:
        if isinstance(action, WriteFile) and not allowed.declares(action.path):
            raise ApplyError("plugin %s may not write %s: it does not declare that file"
                             % (action.plugin, action.path),
                             "a plugin lists every file it writes in writes(); nothing changed")
        if isinstance(action, RunCommand) and action.undo is not None and \
                unit_disabled_by(action.undo) not in allowed.units:
            raise ApplyError("plugin %s: undo %s is not disable_unit() of a unit it declares"
                             % (action.plugin, show(action.undo)), "nothing changed")


def _prepare(action: WriteFile, root: str, owner: Optional[Tuple[int, int]],
             journal: Journal) -> Optional[Dict[str, Any]]:
    """The journal entry for `action` (its backup written), or None if nothing would change."""
    # Resolved inside the root (a symlink in the image never leads to the host); the file
    # itself is not followed: rename replaces a link. A secret refuses any link on the way.
    target = filesystem.under_root(root, action.path, follow=False,
                                   secret=action.secret or action.no_links)
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
    target = filesystem.under_root(root, action.path, follow=False,
                                   secret=action.secret or action.no_links)
    # With dir_mode the parent gets it even if it existed (tokens.d must be 0700), and the
    # file's owner (only ever set when running as root), so its reader can enter it.
    filesystem.ensure_dir(os.path.dirname(target), action.dir_mode or 0o755, root=root,
                          exact=action.dir_mode is not None,
                          owner=owner if action.dir_mode is not None else None,
                          secret=action.secret or action.no_links)
    if owner is None and entry["backup"] is not None:
        owner = (entry["uid"], entry["gid"])
    filesystem.atomic_write(target, action.content, action.mode,
                            owner[0] if owner else None, owner[1] if owner else None,
                            root=root, secret=action.secret or action.no_links)
    log.info("wrote %s", target)          # never the content: it may be a secret


def _run(action: RunCommand) -> None:
    import subprocess          # only runs that run commands pay for it

    try:
        proc = subprocess.run(list(action.argv), input=action.stdin or b"",
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=action.timeout, check=False)
    except FileNotFoundError:
        raise ApplyError("command %r not found" % action.argv[0],
                         "install it in the image or drop that section from the payload") from None
    except subprocess.TimeoutExpired:
        raise ApplyError("%s timed out after %ds" % (action.target, action.timeout)) from None
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
    may_run = commands_may_run(root, run_commands)
    results = []
    for action in commands:
        current = _result(action)
        results.append(current)
        if _may_not_run(current, may_run, root):
            continue
        try:
            _run_timed(action, current)
        except ApplyError as exc:
            current["status"] = "failed"
            current["error"] = exc.message
            log.warning("%s", exc.message)
    return results


def _may_not_run(current: Dict[str, Any], may_run: bool, root: str) -> bool:
    """Mark `current` skipped where commands may not run: under an alternate root without
    --run-commands they would act on the host, not the image."""
    if may_run:
        return False
    current["status"] = "skipped"
    current["reason"] = "alternate root %s: commands need --run-commands" % root
    return True


def _run_timed(action: RunCommand, current: Dict[str, Any]) -> None:
    """Run `action`, its result "ran" with its time; an ApplyError leaves the status to the
    caller (failed, or rolled back) and still says how long it took."""
    start = time.monotonic()
    try:
        _run(action)
        current["status"] = "ran"
    finally:
        current["ms"] = _ms(start)


def _rollback(journal: Journal, services: List[RunCommand], irreversible: List[str],
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
    rolled_back = undo_files(journal.directory, journal.root,
                              journal.entries[:journal.touched])
    try:
        discard(journal.directory)
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
