"""Attacks on the state dir (issue 12 section 1): state is input, not authority.

The rollback journal `<state>/transaction/journal.json` is read at every run before any
signature check. These tests craft it as an attacker would and run the real CLI: it may only
put back files a plugin may write, under the root, from backups inside the transaction dir,
and undo only what a run itself does. A journal it cannot trust is moved aside (one line,
exit 1, report stage `recover`) and the next run converges. Two runs never overlap.

Every path an attack names is inside the test's temporary directory: on code without the
defences these journals are obeyed (as root, in CI).
"""

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import count, fake_commands

CVMFS = "/etc/cvmfs/default.local"


def write_journal(site, journal, backups=None):
    """A transaction dir as a killed run (or an attacker) leaves it."""
    txn = site.state_dir / "transaction"
    txn.mkdir(parents=True, exist_ok=True)
    text = journal if isinstance(journal, str) else json.dumps(journal)
    (txn / "journal.json").write_text(text)
    for name, content in (backups or {}).items():
        (txn / name).write_bytes(content)
    return txn


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("contextd: error: "), err
    assert "Traceback" not in err and "unexpected" not in err, err
    return lines[0]


def assert_refused_at_recover(site, result, bundle):
    """Exit 1, one line naming where the journal went, report stage recover; then the next
    run applies the payload as if there had been no journal (it converges)."""
    code, _, err = result
    assert code == 1, (code, err)
    line = one_error_line(err)
    assert "transaction.rejected-" in line, line
    rep = site.report()
    assert (rep["outcome"], rep["stage"]) == ("rejected", "recover"), rep
    assert not (site.state_dir / "transaction").exists()
    moved = list(site.state_dir.glob("transaction.rejected-*"))
    assert len(moved) == 1 and str(moved[0]) in line, (moved, line)
    assert site.snapshot() == {}, "the refused journal changed the root"
    code, _, err = site.run("file:%s" % bundle)
    assert code == 0, err
    assert site.report()["outcome"] == "applied"
    assert (site.root / CVMFS.lstrip("/")).is_file()
    count("tamperings rejected")
    return line


# --- 1. only the plugins' paths, under the root ---------------------------------------------

def test_journal_cannot_restore_a_file_outside_the_plugin_paths(site, tmp_path):
    victim = tmp_path / "victim"
    write_journal(site, {"entries": [{"path": str(victim), "backup": "0.bak", "mode": 0o4755,
                                      "uid": 0, "gid": 0}], "undo": []},
                  {"0.bak": b"#!/bin/sh\nid > /tmp/owned\n"})
    bundle = site.bundle()
    result = site.run("file:%s" % bundle)
    assert not victim.exists(), "the journal wrote %s (setuid: %o)" % (
        victim, victim.stat().st_mode)
    line = assert_refused_at_recover(site, result, bundle)
    assert str(victim) in line


def test_journal_cannot_remove_a_file_outside_the_plugin_paths(site, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    write_journal(site, {"entries": [{"path": str(victim), "backup": None}], "undo": []})
    bundle = site.bundle()
    result = site.run("file:%s" % bundle)
    assert victim.read_text() == "precious\n"
    assert_refused_at_recover(site, result, bundle)


def test_journal_cannot_remove_directories_outside_the_root(site, tmp_path):
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    write_journal(site, {"entries": [{"path": CVMFS, "backup": None,
                                      "created_dirs": [str(empty)]}], "undo": []})
    bundle = site.bundle()
    result = site.run("file:%s" % bundle)
    assert empty.is_dir()
    assert_refused_at_recover(site, result, bundle)


# --- 2. backups only inside the transaction dir ------------------------------------------------

@pytest.mark.parametrize("how", ["absolute name", "symlink", "dot-dot"])
def test_backup_cannot_copy_a_secret_out(site, tmp_path, how):
    secret = tmp_path / "secret"
    secret.write_text("TOP-SECRET\n")
    secret.chmod(0o600)
    copy = tmp_path / "copy"
    name = {"absolute name": str(secret), "symlink": "0.bak",
            "dot-dot": "../../secret"}[how]
    txn = write_journal(site, {"entries": [{"path": str(copy), "backup": name, "mode": 0o644,
                                            "uid": 0, "gid": 0}], "undo": []})
    if how == "symlink":
        (txn / "0.bak").symlink_to(secret)
    bundle = site.bundle()
    result = site.run("file:%s" % bundle)
    assert not copy.exists(), "the secret was copied to %s" % copy
    assert secret.read_text() == "TOP-SECRET\n"
    assert_refused_at_recover(site, result, bundle)


def test_transaction_dir_symlink_cannot_empty_another_directory(site, tmp_path):
    victim = tmp_path / "important"
    victim.mkdir()
    (victim / "a.conf").write_text("a\n")
    (victim / "b.conf").write_text("b\n")
    site.state_dir.mkdir()
    (site.state_dir / "transaction").symlink_to(victim)
    bundle = site.bundle()
    result = site.run("file:%s" % bundle)
    assert sorted(p.name for p in victim.iterdir()) == ["a.conf", "b.conf"]
    assert_refused_at_recover(site, result, bundle)


# --- 3. undo only from a fixed vocabulary ------------------------------------------------------

@pytest.mark.parametrize("run_commands", [False, True])
def test_undo_argv_from_the_journal_never_runs(site, tmp_path, run_commands):
    pwned = tmp_path / "pwned"
    write_journal(site, {"entries": [], "undo": [["touch", str(pwned)]]})
    bundle = site.bundle()
    env = fake_commands(tmp_path / "bin", tmp_path / "calls")
    extra = ["--run-commands"] if run_commands else []
    proc = subprocess.run([sys.executable, "-m", "contextd", *run_args(site, bundle), *extra],
                          capture_output=True, text=True, env=env)
    assert not pwned.exists(), "the journal's undo argv ran"
    if not run_commands:
        assert_refused_at_recover(site, (proc.returncode, proc.stdout, proc.stderr), bundle)
    else:
        assert proc.returncode == 1, proc.stderr
        assert site.report()["stage"] == "recover"


@pytest.mark.parametrize("unit", ["-H evil.example.org", "sshd", "condor;id", "../condor", 5])
def test_undo_names_only_units_a_plugin_starts(site, tmp_path, unit):
    write_journal(site, {"entries": [], "undo": [{"disable_unit": unit}]})
    bundle = site.bundle()
    env = fake_commands(tmp_path / "bin", tmp_path / "calls")
    proc = subprocess.run([sys.executable, "-m", "contextd", *run_args(site, bundle),
                           "--run-commands"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc.stderr
    one_error_line(proc.stderr)
    assert not (tmp_path / "calls").exists(), "a command ran"
    assert site.report()["stage"] == "recover"


def test_undo_of_a_started_unit_runs_only_where_commands_may(site, tmp_path):
    """The one undo a run records: systemctl disable of the unit it enabled. Under --root it
    runs only with --run-commands, like every other command."""
    bundle = site.bundle()
    env = fake_commands(tmp_path / "bin", tmp_path / "calls")
    write_journal(site, {"entries": [], "undo": [{"disable_unit": "condor"}]})
    proc = subprocess.run([sys.executable, "-m", "contextd", *run_args(site, bundle)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "calls").exists()            # alternate root: not run
    assert not (site.state_dir / "transaction").exists()
    os.unlink(site.state_dir / "applied.json")
    write_journal(site, {"entries": [], "undo": [{"disable_unit": "condor"}]})
    proc = subprocess.run([sys.executable, "-m", "contextd", *run_args(site, bundle),
                           "--run-commands"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "systemctl disable --now --no-block condor", calls


# --- 4. garbage: one line, stage recover, never 70, and the next run converges ----------------

GARBAGE = {
    "not json": "{entries: ",
    "null": "null",
    "a list": "[]",
    "no entries": "{}",
    "entries not a list": '{"entries": 5, "undo": []}',
    "path not a string": '{"entries": [{"path": 1, "backup": null}], "undo": []}',
    "empty entry": '{"entries": [{}], "undo": []}',
    "entry not a dict": '{"entries": ["/etc/cvmfs/default.local"], "undo": []}',
    "undo not a list": '{"entries": [], "undo": "systemctl"}',
    "undo item not a dict": '{"entries": [], "undo": [5]}',
    "mode a string": json.dumps({"entries": [{"path": CVMFS, "backup": "0.bak", "mode": "644",
                                              "uid": 0, "gid": 0}], "undo": []}),
    "mode a bool": json.dumps({"entries": [{"path": CVMFS, "backup": "0.bak", "mode": True,
                                            "uid": 0, "gid": 0}], "undo": []}),
    "uid negative": json.dumps({"entries": [{"path": CVMFS, "backup": "0.bak", "mode": 0o644,
                                             "uid": -1, "gid": 0}], "undo": []}),
    "missing backup": json.dumps({"entries": [{"path": CVMFS, "backup": "7.bak",
                                               "mode": 0o644, "uid": 0, "gid": 0}],
                                  "undo": []}),
    "unknown key": json.dumps({"entries": [], "undo": [], "run": ["id"]}),
    "deep nesting": "[" * 100000 + "]" * 100000,
    "binary": "\udcff",
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_journal_is_one_line_at_recover_never_70(site, name):
    txn = site.state_dir / "transaction"
    txn.mkdir(parents=True)
    text = GARBAGE[name]
    (txn / "journal.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    (txn / "0.bak").write_text("old\n")
    bundle = site.bundle()
    result = site.run("file:%s" % bundle)
    assert result[0] != 70, result[2]
    assert_refused_at_recover(site, result, bundle)


def test_legit_journal_still_rolls_back(site):
    """A killed run's journal (in the format apply writes) is still undone: the file comes
    back byte for byte, and the run goes on to apply."""
    target = site.root / CVMFS.lstrip("/")
    target.parent.mkdir(parents=True)
    target.write_text("half-applied\n")
    write_journal(site, {"entries": [{"path": CVMFS, "backup": "0.bak", "mode": 0o640,
                                      "uid": os.getuid(), "gid": os.getgid(),
                                      "created_dirs": []}], "undo": []},
                  {"0.bak": b"CVMFS_HTTP_PROXY=DIRECT\n"})
    code, _, err = site.run("file:%s" % site.bundle(), "--dry-run")
    assert code == 0, err
    assert target.read_text() == "half-applied\n"       # a dry run recovers nothing
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    assert site.report()["recovered"] == [str(target)]
    assert not (site.state_dir / "transaction").exists()


# --- 5. one run at a time -------------------------------------------------------------------------

HARNESS = r"""
import os, sys
import contextd.run
contextd.run.LOCK_WAIT = float(os.environ.get("LOCK_WAIT", "60"))
from contextd.cli import main
sys.exit(main(sys.argv[1:]))
"""

# systemctl that blocks the first run that calls it (with its journal live) until `go` exists.
BLOCKING_SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> {log}
if [ ! -e {started} ]; then
    touch {started}
    i=0
    while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
fi
exit 0
"""


def run_args(site, bundle):
    return ["run", "--source", "file:%s" % bundle, "--policy", str(site.policy_path),
            "--root", str(site.root), "--run-dir", str(site.run_dir), "--state-dir",
            str(site.state_dir), "--spool-dir", str(site.spool_dir)]


def blocked_first_run(site, tmp_path):
    """Run A, stopped in its service start: files written, journal live, lock held."""
    env = fake_commands(tmp_path / "bin", tmp_path / "calls")
    started, go = tmp_path / "started", tmp_path / "go"
    systemctl = tmp_path / "bin" / "systemctl"
    systemctl.write_text(BLOCKING_SYSTEMCTL.format(log=tmp_path / "calls", started=started,
                                                   go=go))
    bundle = site.bundle()
    first = subprocess.Popen([sys.executable, "-c", HARNESS, *run_args(site, bundle),
                              "--run-commands"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "run A never reached its service start"
        time.sleep(0.05)
    assert (site.state_dir / "transaction" / "journal.json").exists()
    return first, bundle, env, go


def test_second_run_waits_then_gives_up_without_touching_a_live_journal(site, tmp_path):
    first, bundle, env, go = blocked_first_run(site, tmp_path)
    try:
        before = site.snapshot()
        t0 = time.monotonic()
        second = subprocess.run([sys.executable, "-c", HARNESS, *run_args(site, bundle),
                                 "--run-commands"], capture_output=True, text=True,
                                env=dict(env, LOCK_WAIT="1.5"), timeout=60)
        waited = time.monotonic() - t0
        assert second.returncode == 2, (second.returncode, second.stderr)
        line = one_error_line(second.stderr)
        assert "another contextd run" in line and str(site.state_dir / "lock") in line, line
        assert waited >= 1.5, waited
        assert site.snapshot() == before                 # the live journal was not recovered
        assert (site.state_dir / "transaction" / "journal.json").exists()
        assert not (site.run_dir / "report.json").exists()   # run A's report is A's to write
    finally:
        go.touch()
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    rep = site.report()
    assert rep["outcome"] == "applied" and "recovered" not in rep
    assert not (site.state_dir / "transaction").exists()


def test_second_run_waits_for_the_first_then_proceeds(site, tmp_path):
    first, bundle, env, go = blocked_first_run(site, tmp_path)
    second = subprocess.Popen([sys.executable, "-c", HARNESS, *run_args(site, bundle),
                               "--run-commands"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(env, LOCK_WAIT="60"))
    try:
        time.sleep(1.5)
        assert second.poll() is None, second.communicate()    # it waits
    finally:
        go.touch()
        _, err = first.communicate(timeout=60)
        _, err2 = second.communicate(timeout=60)
    assert first.returncode == 0, err
    assert second.returncode == 0, err2
    rep = site.report()
    assert rep["outcome"] == "unchanged" and "recovered" not in rep, rep


def test_dry_run_does_not_wait_for_the_lock(site, tmp_path):
    first, bundle, env, go = blocked_first_run(site, tmp_path)
    try:
        dry = subprocess.run([sys.executable, "-c", HARNESS, *run_args(site, bundle),
                              "--dry-run"], capture_output=True, text=True,
                             env=dict(env, LOCK_WAIT="30"), timeout=20)
        assert dry.returncode == 0, dry.stderr
    finally:
        go.touch()
        first.communicate(timeout=60)
    assert first.returncode == 0


def test_lock_file_symlink_is_refused(site, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    site.state_dir.mkdir()
    (site.state_dir / "lock").symlink_to(target)
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 2, err
    line = one_error_line(err)
    assert str(site.state_dir / "lock") in line
    assert target.read_text() == "keep\n"


# --- recover itself, with a footprint: what a journal entry may and may not do ------------------

TOKEN_PATH = "/etc/condor/tokens.d/contextd.token"


def footprint():
    from contextd.plugin import Footprint
    return Footprint(paths=frozenset({CVMFS, TOKEN_PATH}), units=frozenset({"condor"}))


class Box:
    """A root, a state dir and an outside dir holding a secret, for recover() alone."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        self.state = base / "state"
        self.txn = self.state / "transaction"
        self.outside = base / "outside"
        for d in (self.root, self.txn, self.outside):
            d.mkdir(parents=True)
        self.secret = self.outside / "secret"
        self.secret.write_text("TOP-SECRET\n")

    def journal(self, entries, undo=(), backups=None):
        (self.txn / "journal.json").write_text(json.dumps({"entries": entries,
                                                           "undo": list(undo)}))
        for name, content in (backups or {}).items():
            (self.txn / name).write_bytes(content)

    def recover(self, run_commands=False):
        from contextd import apply
        return apply.recover(str(self.state), str(self.root), run_commands, footprint())

    def file(self, path):
        return self.root / path.lstrip("/")


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path)


def entry(path=CVMFS, backup="0.bak", mode=0o644, **kw):
    e = {"path": path, "backup": backup, "mode": mode, "uid": os.getuid(), "gid": os.getgid(),
         "created_dirs": []}
    e.update(kw)
    return e


def refused(box, needle):
    from contextd.errors import ContextdError
    with pytest.raises(ContextdError) as info:
        box.recover()
    err = info.value
    assert (err.exit_code, err.stage) == (1, "recover")
    assert needle in err.one_line(), err.one_line()
    assert "\n" not in err.one_line()
    assert not box.txn.exists()
    assert len(list(box.state.glob("transaction.rejected-*"))) == 1
    assert box.secret.read_text() == "TOP-SECRET\n"
    return err.one_line()


def test_recover_restores_a_plugin_path_under_the_root(box):
    box.file(CVMFS).parent.mkdir(parents=True)
    box.file(CVMFS).write_text("new\n")
    box.journal([entry(mode=0o640)], backups={"0.bak": b"old\n"})
    assert box.recover() == [str(box.file(CVMFS))]
    assert box.file(CVMFS).read_text() == "old\n"
    assert stat.S_IMODE(box.file(CVMFS).stat().st_mode) == 0o640
    assert not box.txn.exists()


def test_recover_resolves_paths_under_the_root_only(box):
    """A file and a directory the killed run created are removed under the root."""
    box.file(CVMFS).parent.mkdir(parents=True)
    box.file(CVMFS).write_text("created by the killed run\n")
    box.journal([entry(backup=None, created_dirs=["/etc/cvmfs"])])
    assert box.recover() == [str(box.file(CVMFS))]
    assert not box.file(CVMFS).parent.exists() and (box.root / "etc").is_dir()


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/cvmfs/../passwd",
                                  "/etc/cvmfs/default.local/", "etc/cvmfs/default.local",
                                  "/etc/cvmfs//default.local", ""])
def test_recover_refuses_paths_no_plugin_writes(box, path):
    box.journal([entry(path=path)], backups={"0.bak": b"x\n"})
    refused(box, "journal")
    assert not (box.root / "etc").exists()


@pytest.mark.parametrize("name", ["/abs/0.bak", "../0.bak", "0.bak/..", "x.bak", "0.bak ",
                                  "00000000000000000001.bak", "-1.bak", "", ".", "journal.json"])
def test_recover_refuses_backup_names_it_did_not_make(box, name):
    box.journal([entry(backup=name)], backups={"0.bak": b"x\n"})
    refused(box, "backup")


def test_recover_refuses_a_symlinked_backup(box):
    box.journal([entry()])
    (box.txn / "0.bak").symlink_to(box.secret)
    refused(box, "0.bak")
    assert not box.file(CVMFS).exists()


def test_recover_refuses_a_fifo_backup_without_blocking(box):
    box.journal([entry()])
    os.mkfifo(str(box.txn / "0.bak"))
    refused(box, "0.bak")


def test_recover_refuses_created_dirs_that_are_not_the_files_parents(box):
    (box.outside / "d").mkdir()
    box.journal([entry(backup=None, created_dirs=[str(box.outside / "d")])])
    refused(box, "created_dirs")
    assert (box.outside / "d").is_dir()


def test_recover_refuses_the_same_path_twice(box):
    box.journal([entry(), entry(backup="1.bak")], backups={"0.bak": b"a", "1.bak": b"b"})
    refused(box, "twice")


def test_recover_never_restores_setuid_or_writable_by_others(box):
    box.journal([entry(mode=0o6777)], backups={"0.bak": b"#!/bin/sh\n"})
    box.file(CVMFS).parent.mkdir(parents=True)
    box.recover()
    assert stat.S_IMODE(box.file(CVMFS).stat().st_mode) == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")
def test_recover_never_gives_a_file_to_another_user(box):
    box.file(CVMFS).parent.mkdir(parents=True)
    box.journal([entry(uid=4242, gid=0)], backups={"0.bak": b"x\n"})
    refused(box, "uid")
    assert not box.file(CVMFS).exists()


@pytest.mark.parametrize("undo", [{"disable_unit": "sshd"}, ["touch", "/tmp/pwned"],
                                  {"disable_unit": "condor", "argv": ["id"]}])
def test_recover_refuses_unknown_units_and_argv(box, undo):
    box.journal([], undo=[undo])
    refused(box, "not a unit a plugin starts")


def test_an_unwritable_restore_is_a_typed_error_not_a_crash(box):
    box.file(CVMFS).parent.mkdir(parents=True)
    box.file(CVMFS).mkdir()                        # a directory where the file must go back
    box.journal([entry()], backups={"0.bak": b"x\n"})
    refused(box, CVMFS)


@pytest.mark.parametrize("action", [
    ("write", "/etc/motd"), ("undo", ("touch", "/tmp/pwned")),
    ("undo", ("systemctl", "disable", "--now", "--no-block", "sshd"))])
def test_apply_refuses_what_no_plugin_declares(tmp_path, action):
    """So every journal a run leaves is one recover accepts: a plugin that writes a file or
    records an undo it did not declare is stopped before any change."""
    from contextd import apply
    from contextd.actions import RunCommand, WriteFile
    from contextd.errors import ApplyError
    kind, what = action
    act = WriteFile("site", what, b"x\n") if kind == "write" else RunCommand(
        "site", ("true",), service=True, undo=what)
    with pytest.raises(ApplyError) as info:
        apply.execute([act], str(tmp_path / "root"), str(tmp_path / "state"), True, footprint())
    assert "declare" in info.value.one_line()
    assert not (tmp_path / "root").exists() and not (tmp_path / "state").exists()
