"""Attacks on the `files` plugin, as a VO (or whoever stole its key) would try them: Jinja2
sandbox escapes and resource bombs in a template, path tricks and unsafe modes. Each must be
refused with one clear line (exit 1 for the payload, 2 for a policy) and nothing written."""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any, Dict, List

import pytest

from conftest import base_payload

GLOBS = ["/etc/ganglia/*.conf", "/etc/app/*"]


def files_payload(entries: List[Dict[str, Any]]) -> Dict[str, Any]:
    doc = base_payload()
    for section in ("cvmfs", "htcondor", "puppet", "report"):
        doc.pop(section)
    doc["files"] = entries
    return doc


def allow_files(site, paths=GLOBS, max_bytes=65536, **extra) -> None:
    pol = copy.deepcopy(site.policy)
    pol["trust"]["atlas"]["allow"]["files"] = dict({"paths": paths, "max_bytes": max_bytes},
                                                   **extra)
    site.write_policy(pol)


def refused(site, entries, code=1):
    """Run the payload; it must end `code` with one stderr line and change nothing."""
    allow_files(site)
    (site.root / "etc").mkdir(exist_ok=True)
    before = site.snapshot()
    bundle = site.bundle(files_payload(entries))
    start = time.monotonic()
    got, _, err = site.run("file:%s" % bundle)
    took = time.monotonic() - start
    assert got == code, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert site.snapshot() == before
    return err, took


# --- the sandbox ------------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ vars.__class__.__init__.__globals__ }}",
    "{{ range.__self__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ facts.items.__self__.__class__ }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{{ self.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].system('id') }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_escapes_are_refused(site, template):
    err, _ = refused(site, [{"path": "/etc/ganglia/gmond.conf", "template": template}])
    assert "files[0].template" in err


BOMBS = [
    "{{ 99**99**99 }}",
    "{{ 10**100000000 }}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 10**10 }}",
    "{{ 'x' * 100000 * 100000 }}",
    "{% set ns = namespace(s='xx') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='xx') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "{{ 'x'|center(10**10) }}",
    "{% for i in range(99999) %}{{ 'y' * 99999 }}{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
]


@pytest.mark.parametrize("template", BOMBS)
def test_template_bombs_are_bounded(site, template):
    err, took = refused(site, [{"path": "/etc/ganglia/gmond.conf", "template": template}])
    assert "files[0].template" in err
    assert took < 30, "a bomb took %.1fs" % took


# --- paths and modes --------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/etc/app/../passwd",             # ..
    "//etc/app/x",                    # //
    "/etc//app/x",
    "/etc/app/./x",
    "/etc/app/sub/x",                 # `*` would cross '/'
    "/etc/ganglia/../../etc/shadow.conf",
    "etc/app/x",                      # relative: a listed file, with no sha256
    "/etc/app/x\n",
    "/etc/app/",
])
def test_path_tricks_are_denied(site, path):
    err, _ = refused(site, [{"path": path, "content": "x\n"}])
    assert "files" in err


def test_a_glob_never_crosses_a_slash(site):
    err, _ = refused(site, [{"path": "/etc/ganglia/conf.d/evil.conf", "content": "x\n"}])
    assert "files[0].path" in err and "allow.files.paths" in err


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1777, 0o666, 0o602, 0o10644])
def test_unsafe_modes_are_denied(site, mode):
    err, _ = refused(site, [{"path": "/etc/app/x", "mode": mode, "content": "x\n"}])
    assert "files[0].mode" in err


def test_too_big_content_is_denied(site):
    err, _ = refused(site, [{"path": "/etc/app/x", "content": "x" * 65537}])
    assert "max_bytes" in err


def test_a_symlinked_parent_is_refused(site, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (site.root / "etc").mkdir()
    os.symlink(str(outside), str(site.root / "etc" / "app"))
    allow_files(site)
    before = site.snapshot()
    bundle = site.bundle(files_payload([{"path": "/etc/app/x", "content": "x\n"}]))
    code, _, err = site.run("file:%s" % bundle)
    assert code == 3, err
    assert len(err.strip().splitlines()) == 1 and "symbolic link" in err
    assert site.snapshot() == before
    assert list(outside.iterdir()) == []


def test_a_symlinked_parent_inside_the_root_is_refused_too(site):
    (site.root / "etc" / "real").mkdir(parents=True)
    os.symlink("real", str(site.root / "etc" / "app"))
    allow_files(site)
    bundle = site.bundle(files_payload([{"path": "/etc/app/x", "content": "x\n"}]))
    code, _, err = site.run("file:%s" % bundle)
    assert code == 3 and "symbolic link" in err, err
    assert list((site.root / "etc" / "real").iterdir()) == []


@pytest.mark.parametrize("glob", ["/etc/contextd/*", "/var/lib/contextd/*", "/var/lib/*/x",
                                  "/*/contextd/policy.yaml", "/run/contextd/*",
                                  "/var/spool/contextd/reports/*", "/etc/*/policy.yaml"])
def test_a_policy_may_not_allow_contextds_own_paths(site, glob):
    allow_files(site, paths=[glob])
    code, _, err = site.cli("policy", "check", str(site.policy_path))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "contextd" in err


def test_a_path_under_contextds_state_is_denied_even_with_a_broad_glob(site):
    allow_files(site, paths=["/var/*/*/x"])
    code, _, err = site.cli("policy", "check", str(site.policy_path))
    assert code == 2, err


def test_a_policy_glob_must_be_absolute_and_normal(site):
    for glob in ["etc/app/*", "/etc/../x", "//x", "/etc/app/**"]:
        allow_files(site, paths=[glob])
        code, _, err = site.cli("policy", "check", str(site.policy_path))
        assert code == 2, (glob, err)


# --- recover: a journal may name a file only where allow.files globs reach --------------

def _journal(site, path):
    txn = site.state_dir / "transaction"
    txn.mkdir(parents=True)
    (txn / "journal.json").write_text(json.dumps({"entries": [{
        "path": path, "backup": "0.bak", "mode": 0o644, "uid": os.getuid(),
        "gid": os.getgid(), "created_dirs": []}], "undo": []}))
    (txn / "0.bak").write_bytes(b"before\n")


def test_recover_restores_a_file_under_an_allowed_glob(site):
    allow_files(site)
    target = site.root / "etc/app/motd"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"half-applied\n")
    _journal(site, "/etc/app/motd")
    bundle = site.bundle(files_payload([{"path": "/etc/app/other", "content": "x\n"}]))
    code, _, err = site.run("file:%s" % bundle)
    assert code == 0, err
    assert target.read_bytes() == b"before\n"
    assert site.report()["recovered"] == [str(target)]


@pytest.mark.parametrize("path", ["/etc/app/sub/motd", "/etc/passwd", "/etc/ganglia/x.sh"])
def test_recover_refuses_a_file_no_glob_allows(site, path):
    allow_files(site)
    victim = site.root / path.lstrip("/")
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"precious\n")
    _journal(site, path)
    bundle = site.bundle(files_payload([{"path": "/etc/app/other", "content": "x\n"}]))
    code, _, err = site.run("file:%s" % bundle)
    assert code == 1 and "not a file a plugin may write" in err, err
    assert victim.read_bytes() == b"precious\n"
