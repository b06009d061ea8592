"""One record holds every size and count cap (contextd/limits.py), and nothing changes it."""

import re
from pathlib import Path

import pytest

from contextd.limits import LIMITS, Limits
from contextd.record import FrozenRecordError

REPO = Path(__file__).resolve().parents[1]
# A cap written as a number at module level: `MAX_X = 1024`, `_MAX_Y = 64 * 1024`, `LIMIT = 4`.
# (Limits a format fixes, such as ISO9660's `_ISO_FILE_MAX`, are the format's, not caps.)
NUMERIC_CAP = re.compile(r"^_?(MAX_[A-Z_]+|[A-Z_]*LIMIT) *= *[0-9][0-9 *]*(#.*)?$", re.M)


def test_the_record_is_frozen():
    with pytest.raises(FrozenRecordError):
        LIMITS.bundle_bytes = 1                        # type: ignore[misc]


def test_no_module_keeps_a_cap_of_its_own():
    found = []
    for path in sorted((REPO / "contextd").rglob("*.py")) + sorted((REPO / "plugins").glob("*.py")):
        if path.name == "limits.py":
            continue
        found += ["%s: %s" % (path.relative_to(REPO), m.group(0))
                  for m in NUMERIC_CAP.finditer(path.read_text())]
    assert found == []


def test_every_cap_is_documented_on_its_line():
    text = (REPO / "contextd" / "limits.py").read_text()
    for name in Limits.__annotations__:
        line = re.search(r"^    %s: int = .*$" % name, text, re.M)
        assert line and "  # " in line.group(0), name
