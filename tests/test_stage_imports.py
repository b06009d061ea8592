"""The import graph follows the pipeline: no stage imports a later one (lazy imports too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "contextd"
# DESIGN section 2's order; a module may import its own stage and earlier ones only.
STAGES = ["policy", "sources", "trust.verify", "payload", "admission", "authorize", "plan",
          "decision", "apply", "delivery", "runreport", "run"]
EXECUTORS = {"run", "apply", "delivery", "runreport"}


def imported(module: str) -> set:
    """The contextd modules `module` imports, named as STAGES names them: "run", or within a
    subpackage "trust.verify" (its signature formats, trust.sshsig and trust.x509sig, are
    libraries the policy reads keys with, not stages)."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE / module / "__init__.py"
    names = set()

    def add(dotted: str) -> None:       # "contextd.trust.verify" -> "trust", "trust.verify"
        parts = dotted.split(".")[1:3]
        names.update({parts[0], ".".join(parts)})

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "contextd" or node.module.startswith("contextd.")):
            for alias in node.names:
                add("%s.%s" % (node.module, alias.name) if node.module.count(".") < 2
                    else node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("contextd."):
                    add(alias.name)
    return names


@pytest.mark.parametrize("module", STAGES)
def test_no_stage_imports_a_later_one(module):
    later = set(STAGES[STAGES.index(module) + 1:])
    assert not imported(module) & later, imported(module) & later


@pytest.mark.parametrize("module", ["explain", "decision", "admission", "authorize", "plan"])
def test_deciding_imports_no_executor(module):
    assert not imported(module) & EXECUTORS
