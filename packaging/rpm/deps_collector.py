"""deps_collector.py COLLECTOR_RPM AGENT_RPM LOCK: what the collector's package needs, it has.

1. Every module contextd_collector (and the launcher) imports, lazily or not, is the standard
   library, the agent (`Requires: contextd = V-R`, exactly the agent RPM's version-release),
   a library of EL9 with its Requires (deps.py's map), or a bundled one; every `python3-*`
   Requires is imported by the collector or needed by a bundled library; none is unused.
2. Every bundled wheel's own requirements (its METADATA, markers evaluated for Python 3.9 on
   x86_64 Linux, no extras) are bundled or required, but greenlet: SQLAlchemy wants it only for
   its asyncio bridge, and the collector imports no `sqlalchemy.ext.asyncio` (checked here;
   `make rpm-check` runs the collector where greenlet is not installed).
3. The bundle is the lock file, exactly: the same names and versions as its dist-info, and one
   `Provides: bundled(python3dist(NAME)) = VERSION` per line.
4. The agent's RPM has no collector file and does not require the collector.
"""

import re
import subprocess
import sys
import tempfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

sys.path.insert(0, str(Path(__file__).parent))
from deps import EL9_PACKAGE, STDLIB, imports  # deps.py is a sibling script

BUNDLED = "/usr/share/contextd-collector/bundled/"
LAUNCHER = "/usr/bin/contextd-collector"
# Requirements a bundled library states that the collector never exercises (why: above).
NOT_NEEDED = {"greenlet": "SQLAlchemy's asyncio bridge; the collector uses no asyncio engine"}
# EL9 packages for the bundled libraries' requirements, by distribution name.
EL9_DIST = {"markupsafe": "python3-markupsafe", "idna": "python3-idna", "jinja2": "python3-jinja2"}
ENV_39 = {"python_version": "3.9", "python_full_version": "3.9.18", "platform_machine": "x86_64",
          "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython",
          "extra": ""}


def rpmq(rpm, *args):
    return subprocess.run(["rpm", "-qp", *args, rpm], check=True, capture_output=True,
                          text=True).stdout.splitlines()


def unpack(rpm, into):
    payload = subprocess.run(["rpm2cpio", rpm], check=True, capture_output=True).stdout
    subprocess.run(["cpio", "-idm", "--quiet"], input=payload, cwd=into, check=True)


def lock(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)\s+--hash=sha256:[0-9a-f]{64}$", line)
        if m:
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def collector_imports(root, listing):
    """{top-level module: files importing it}, and whether sqlalchemy.ext.asyncio is one."""
    found, asyncio_engine = {}, False
    for path in listing:
        if path == LAUNCHER or (path.endswith(".py") and "/contextd_collector/" in path):
            source = (root / path.lstrip("/")).read_bytes()
            asyncio_engine |= any(word in source for word in
                                  (b"sqlalchemy.ext.asyncio", b"create_async_engine"))
            for mod in imports(source, path) - STDLIB - {"contextd_collector"}:
                found.setdefault(mod, set()).add(path)
    return found, asyncio_engine


def bundle(root):
    """{distribution: (version, [requirement names for 3.9]), {top-level module names}."""
    dists, modules = {}, set()
    for entry in sorted((root / BUNDLED.lstrip("/")).iterdir()):
        if entry.name.endswith(".dist-info"):
            meta = Parser().parsestr(entry.joinpath("METADATA").read_text())
            reqs = [Requirement(line) for line in meta.get_all("Requires-Dist") or []]
            needs = [canonicalize_name(r.name) for r in reqs
                     if r.marker is None or r.marker.evaluate(ENV_39)]
            dists[canonicalize_name(meta["Name"])] = (meta["Version"], needs)
        elif entry.is_dir() or entry.suffix == ".py":
            modules.add(entry.name[:-3] if entry.suffix == ".py" else entry.name)
    return dists, modules


def check_imports(found, modules, requires, agent_vr):
    """Problems of the collector's own imports, and the EL9 packages they use."""
    problems, used = [], set()
    for mod, paths in sorted(found.items()):
        where = ", ".join(sorted(paths))
        if mod == "contextd":
            if "contextd = %s" % agent_vr not in requires:
                problems.append("imports contextd (%s) without Requires: contextd = %s"
                                % (where, agent_vr))
        elif mod in EL9_PACKAGE:
            used.add(EL9_PACKAGE[mod])
        elif mod not in modules:
            problems.append("import %s (%s): neither bundled nor an EL9 package deps.py knows"
                            % (mod, where))
    return problems, used


def check_bundle_needs(dists):
    """Problems of the bundled libraries' own requirements, and the EL9 packages they use."""
    problems, used = [], set()
    for dist, (_version, needs) in sorted(dists.items()):
        for need in needs:
            if need in EL9_DIST:
                used.add(EL9_DIST[need])
            elif need not in dists and need not in NOT_NEEDED:
                problems.append("bundled %s needs %s: neither bundled nor required" % (dist, need))
    return problems, used


def check_lock(dists, collector_rpm, locked):
    problems = []
    installed = {d: v for d, (v, _) in dists.items()}
    if installed != locked:
        problems.append("bundled %s, but the lock file says %s"
                        % (sorted(installed.items()), sorted(locked.items())))
    provided = {}
    for line in rpmq(collector_rpm, "--provides"):
        m = re.match(r"^bundled\(python3dist\(([^)]+)\)\) = (\S+)$", line.strip())
        if m:
            provided[m.group(1)] = m.group(2)
    if provided != locked:
        problems.append("Provides: bundled(...) %s differ from the lock file %s"
                        % (sorted(provided.items()), sorted(locked.items())))
    return problems


def check_agent(agent_rpm):
    problems = []
    agent_files = [f for f in rpmq(agent_rpm, "-l") if "collector" in f]
    if agent_files:
        problems.append("the agent's RPM ships collector files: %s" % agent_files[:5])
    deps = rpmq(agent_rpm, "--requires") + rpmq(agent_rpm, "--recommends")
    if any("collector" in r for r in deps):
        problems.append("the agent's RPM requires or recommends the collector")
    return problems


def main(collector_rpm, agent_rpm, lock_file):
    agent_vr = rpmq(agent_rpm, "--qf", "%{VERSION}-%{RELEASE}\n")[0]
    requires = [r.strip() for r in rpmq(collector_rpm, "--requires")]
    python3_req = {m.group(1) for m in (re.match(r"^(python3-[A-Za-z0-9_.-]+)", r)
                                        for r in requires) if m}
    with tempfile.TemporaryDirectory() as tmp:
        unpack(collector_rpm, tmp)
        found, asyncio_engine = collector_imports(Path(tmp), rpmq(collector_rpm, "-l"))
        dists, modules = bundle(Path(tmp))
    problems, used = check_imports(found, modules, requires, agent_vr)
    more, used_by_bundle = check_bundle_needs(dists)
    problems += more
    used |= used_by_bundle
    if asyncio_engine:
        problems.append("the collector uses SQLAlchemy's asyncio engine: greenlet is not bundled")
    problems += ["%s is needed but not required: add `Requires: %s`" % (pkg, pkg)
                 for pkg in sorted(used - python3_req)]
    problems += ["%s is required but nothing needs it: drop the Requires" % pkg
                 for pkg in sorted(python3_req - used)]
    locked = lock(lock_file)
    problems += check_lock(dists, collector_rpm, locked) + check_agent(agent_rpm)
    for p in problems:
        print("  " + p, file=sys.stderr)
    print("  requires: %s, contextd = %s" % (", ".join(sorted(python3_req)), agent_vr))
    print("  bundled: %s" % ", ".join("%s %s" % kv for kv in sorted(locked.items())))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
