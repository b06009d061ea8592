"""The man pages (docs/man/, shipped in the RPM): `man --warnings -l` renders each without a
warning, and each says what the code does: every command, exit code and kill switch in
contextd(8); every key of the schemas in contextd-policy(5) and contextd-payload(5)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Set

import pytest

from contextd import cli, errors

REPO = Path(__file__).resolve().parent.parent
MAN = REPO / "docs" / "man"
PAGES = ["contextd.8", "contextd-policy.5", "contextd-payload.5"]


def render(page: str) -> str:
    out = subprocess.run(["man", "--warnings", "-l", str(MAN / page)], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, MANWIDTH="80",
                                                         MAN_KEEP_FORMATTING="", LC_ALL="C.UTF-8"))
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr            # groff's and man's warnings
    # Joined words: a hyphenated break ("con-\ntextd") must not hide a word from the checks.
    return " ".join(out.stdout.replace("\u2010\n", "").replace("-\n", "-").split())


@pytest.mark.parametrize("page", PAGES)
def test_renders_without_warnings(page):
    assert len(render(page)) > 1000


def test_contextd_8_lists_commands_exit_codes_files_and_switches():
    text = render("contextd.8")
    for command in cli._COMMANDS:
        assert "contextd %s" % command in text, command
    for code in sorted(errors.EXIT_CODES):
        assert " %d " % code in " %s " % text, code
    for needle in ("/etc/contextd/disabled", "contextd=off", "/run/contextd/report.json",
                   "/var/spool/contextd/reports", "/etc/contextd/policy.yaml", "--wait",
                   "contextd-policy(5)", "contextd-payload(5)"):
        assert needle in text, needle


def _keys(node: Any) -> Set[str]:
    """Every key the schema names, at any depth (a plugin's rules, a files entry's mode)."""
    out: Set[str] = set()
    if isinstance(node, dict):
        out.update(node.get("properties") or {})
        for value in node.values():
            out |= _keys(value)
    elif isinstance(node, list):
        for value in node:
            out |= _keys(value)
    return out


def test_the_key_walk_reaches_nested_keys():
    doc = json.loads((REPO / "contextd" / "schemas" / "policy.schema.json").read_text())
    assert {"owners", "repos", "location", "signers", "ssh_key"} <= _keys(doc)


@pytest.mark.parametrize(("page", "schema"), [("contextd-policy.5", "policy"),
                                              ("contextd-payload.5", "payload")])
def test_section_5_pages_name_every_key_of_their_schema(page, schema):
    text = render(page)
    doc = json.loads((REPO / "contextd" / "schemas" / ("%s.schema.json" % schema)).read_text())
    for key in _keys(doc):
        assert key in text, "%s does not mention %r" % (page, key)
    assert "yaml-language-server: $schema=/usr/share/contextd/schemas/%s.schema.json" % schema \
        in text


def test_the_rpms_policy_and_the_readme_point_at_the_man_pages_not_outside():
    policy = (REPO / "packaging" / "policy.yaml").read_text()
    readme = (REPO / "README.md").read_text()
    assert "contextd-policy(5)" in policy and "DESIGN" not in policy
    assert "docs/man/contextd.8" in readme and "shared/design" not in readme
    assert "# yaml-language-server: $schema=" in readme
