"""Modes and owners are set in one place: contextd/filesystem.py (certbot's compat/filesystem).

Every chmod and chown there is on a descriptor the module opened itself without following a
symlink; anywhere else such a call would be a way around that. This test keeps it so.
"""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODE_OR_OWNER = re.compile(r"\bos\.(f|l)?ch(mod|own)\b|\bshutil\.chown\b|\.chmod\(")


def test_only_filesystem_changes_modes_and_owners():
    found = []
    for path in sorted((REPO / "contextd").rglob("*.py")) + sorted((REPO / "plugins").glob("*.py")):
        if path == REPO / "contextd" / "filesystem.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if MODE_OR_OWNER.search(line):
                found.append("%s:%d: %s" % (path.relative_to(REPO), number, line.strip()))
    assert found == []
