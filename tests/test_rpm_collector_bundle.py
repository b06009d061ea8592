"""The collector RPM's lock file (packaging/rpm/collector-bundle.txt) against setup.cfg's
`collector` extra: every library the extra asks for is either pinned there, at a version the
extra accepts, or one the spec takes from EL9 itself (a `Requires:` of the subpackage). A new
requirement of the extra, or a floor raised above the pinned version, fails here, long before
`make rpm-check` would find the import missing on EL9.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "packaging" / "rpm" / "collector-bundle.txt"
SPEC = REPO / "packaging" / "rpm" / "contextd.spec"
LINE = re.compile(r"([A-Za-z0-9_.-]+)==([0-9][0-9A-Za-z.]*) --hash=sha256:[0-9a-f]{64}")
# What the subpackage takes from EL9 (its Requires), by the extra's distribution names.
FROM_EL9 = {"jinja2": "python3-jinja2"}


def pinned():
    out = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            match = LINE.fullmatch(line)
            assert match, "not `name==version --hash=sha256:...`: %r" % line
            name = canonicalize_name(match.group(1))
            assert name not in out, "pinned twice: %s" % name
            out[name] = match.group(2)
    return out


def collector_extra():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options.extras_require"]["collector"].splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def subpackage_requires():
    spec = SPEC.read_text()
    part = spec[spec.index("%package collector"):spec.index("%description collector")]
    return set(re.findall(r"^Requires:\s+(python3-[A-Za-z0-9_.-]+)", part, re.M))


def test_every_requirement_of_the_extra_is_pinned_or_from_el9():
    locked, requires = pinned(), subpackage_requires()
    for req in collector_extra():
        name = canonicalize_name(req.name)
        if name in FROM_EL9:
            assert FROM_EL9[name] in requires, "%s: no `Requires: %s`" % (req, FROM_EL9[name])
            continue
        assert name in locked, "%s is in the collector extra but not in %s" % (req, LOCK.name)
        assert req.specifier.contains(locked[name], prereleases=False), (
            "%s==%s does not satisfy the extra's %s" % (name, locked[name], req))


def test_no_greenlet_and_no_duplicate_of_an_el9_requires():
    locked = pinned()
    assert "greenlet" not in locked      # a C extension; the collector uses no asyncio engine
    assert not set(locked) & {"jinja2", "markupsafe", "idna", "pyyaml", "psycopg2"}
