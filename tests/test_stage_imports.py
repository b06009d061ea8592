"""The import graph follows the pipeline: no stage imports a later one (lazy imports too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "contextd"
# DESIGN section 2's order; a module may import its own stage and earlier ones only.
STAGES = ["policy", "sources", "verify", "payload", "admission", "authorize", "plan", "decision",
          "apply", "delivery", "runreport", "run"]
EXECUTORS = {"run", "apply", "delivery", "runreport"}


def imported(module: str) -> set:
    path = PACKAGE / (module + ".py")
    if not path.exists():
        path = PACKAGE / module / "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "contextd":
                names.update(alias.name for alias in node.names)
            elif node.module.startswith("contextd."):
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("contextd."))
    return names


@pytest.mark.parametrize("module", STAGES)
def test_no_stage_imports_a_later_one(module):
    later = set(STAGES[STAGES.index(module) + 1:])
    assert not imported(module) & later, imported(module) & later


@pytest.mark.parametrize("module", ["explain", "decision", "admission", "authorize", "plan"])
def test_deciding_imports_no_executor(module):
    assert not imported(module) & EXECUTORS
