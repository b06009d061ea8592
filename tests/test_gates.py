"""Issue 13's gates: size limits as a ratchet, record typing at no run-time cost, and mypy and
the extended ruff rules clean on the whole tree.

The scopes are directories, not lists of files: mypy checks every module under contextd/ and
plugins/, ruff every Python file under the directories in LINTED_DIRS plus the extension-less
Python scripts found there by their shebang. A new file is in the gates the moment it exists;
a new top-level directory of Python fails test_every_python_file_is_linted until it joins.

mypy and ruff are test dependencies (requirements-test.txt): a gate never skips. The RPM's
%check, whose buildroot has neither, leaves this file out. `make lint-strict` runs both over
the same scopes (mk/floor.mk's RUFF_SCOPE is checked against this file's).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION, MAX_MODULE = 60, 400
# A function or module may be longer when its docstring has a line starting so, saying why.
EXEMPT = "Long because"
# What is over the limits today: each is held at its size, so it may shrink (lower its
# ceiling, or drop it once under the limit), never grow, and nothing may join them. Empty
# since issue 13 closed the last ones; an entry here is a debt, with its size.
CEILINGS: dict = {}
# mypy's scope (as [tool.mypy] files in pyproject.toml): what runs on the VM.
TYPED_DIRS = ("contextd", "plugins", "contextd_collector")
# ruff's scope: that, the tests, the packaging and CI helpers, the examples and the benchmark.
LINTED_DIRS = (*TYPED_DIRS, "tests", "packaging", "examples", "bench")
# Directories under ROOT that hold no source of ours: virtualenvs and caches (dot names), and
# what builds leave behind.
NOT_SOURCE = ("build", "dist", "__pycache__")


def _sources():
    for top in TYPED_DIRS:
        for path in sorted((ROOT / top).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text()


def _too_long():
    """(name, length, limit) of every module and function over its limit, exemptions left out."""
    for rel, text in _sources():
        tree = ast.parse(text)
        if len(text.splitlines()) > MAX_MODULE and EXEMPT not in (ast.get_docstring(tree) or ""):
            yield rel, len(text.splitlines()), MAX_MODULE
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION and EXEMPT not in (ast.get_docstring(node) or ""):
                    yield "%s:%s" % (rel, node.name), length, MAX_FUNCTION


def test_no_function_or_module_grows_past_the_limits():
    over = ["%s is %d lines (limit %d)" % (name, length, CEILINGS.get(name, limit))
            for name, length, limit in _too_long() if length > CEILINGS.get(name, limit)]
    assert over == [], "split it, or say in its docstring: %s ..." % EXEMPT


def test_no_ceiling_is_slack():
    today = {name: length for name, length, _ in _too_long()}
    slack = ["%s: ceiling %d, now %s" % (name, ceiling, today.get(name, "under the limit"))
             for name, ceiling in CEILINGS.items() if today.get(name) != ceiling]
    assert slack == [], "lower the ceiling to today's size, or drop it"


def test_record_typing_imports_nothing_at_run_time():
    # record alone pulls in none of them; the modules that use it add no typing_extensions
    # nor dataclasses (inspect they may: cryptography 36, EL9's, imports it itself).
    code = ("import sys; import contextd.record; "
            "print(sorted(m for m in ('typing_extensions', 'dataclasses', 'inspect') "
            "if m in sys.modules)); import contextd.policy, contextd.authorize; "
            "print(sorted(m for m in ('typing_extensions', 'dataclasses') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["[]", "[]"]


def _python_files():
    """Every Python file of ours under ROOT, by suffix or by a python shebang line."""
    for top, dirs, files in os.walk(str(ROOT)):
        dirs[:] = sorted(d for d in dirs if not (d.startswith(".") or d in NOT_SOURCE
                                                 or d.endswith(".egg-info")))
        for name in sorted(files):
            path = Path(top, name)
            if name.endswith(".py") or ("." not in name and _is_python_script(path)):
                yield path.relative_to(ROOT).as_posix()


def _is_python_script(path):
    if not path.is_file():
        return False
    with path.open("rb") as f:
        first = f.readline(200)
    return first.startswith(b"#!") and b"python" in first


def _scripts():
    """The extension-less Python scripts, which ruff reads only when named."""
    return [rel for rel in _python_files() if not rel.endswith(".py")]


def test_every_python_file_is_linted():
    outside = [rel for rel in _python_files() if rel.split("/")[0] not in LINTED_DIRS]
    assert outside == [], "add its directory to LINTED_DIRS and to RUFF_SCOPE in mk/floor.mk"


def _make_variable(name):
    text = (ROOT / "mk" / "floor.mk").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.split(":=")[0].strip() == name)
    return line.split(":=", 1)[1].split()


def test_make_lint_strict_has_the_same_scope_and_pins():
    assert sorted(set(_make_variable("RUFF_SCOPE"))) == sorted({*LINTED_DIRS, *_scripts()})
    tools = ("mypy==", "ruff==")
    wanted = sorted(line.split("#")[0].strip()
                    for line in (ROOT / "requirements-test.txt").read_text().splitlines()
                    if line.startswith(tools))
    pinned = sorted(pin for pin in _make_variable("LINT_PINS") + _make_variable("STRICT_PINS")
                    if pin.startswith(tools))
    assert pinned == wanted


def test_mypy_clean_on_contextd_and_plugins():
    # /dev/null as the cache: nothing written into the checkout.
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental",
                           "--cache-dir", "/dev/null", *TYPED_DIRS], cwd=str(ROOT),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _ruff():
    local = Path(sys.executable).with_name("ruff")
    return str(local) if local.exists() else shutil.which("ruff")


def test_extended_ruff_rules_clean_on_the_whole_tree():
    done = subprocess.run([_ruff(), "check", "--no-cache", *LINTED_DIRS, *_scripts()],
                          cwd=str(ROOT), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
