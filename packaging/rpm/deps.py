"""deps.py RPM: the package's Requires are exactly the EL9 packages of what its code imports.

Reads every Python file in the package's payload (imports inside functions too: contextd
imports heavy modules lazily), keeps the top-level modules that are neither the standard
library nor contextd itself, maps each to its EL9 package, and compares that set with the
`python3-*` names in `rpm -qp --requires`. An import without a Requires would fail at boot on
a site's VM; a Requires without an import is a useless package in every image. It also checks
that each Requires' version floor is the one setup.cfg states (which rpm turns into the
python3.9dist(...) requirements).
"""

import ast
import re
import subprocess
import sys
import tempfile

# Top-level module -> the EL9 package that provides it (EPEL for pycdlib).
EL9_PACKAGE = {
    "yaml": "python3-pyyaml",
    "cryptography": "python3-cryptography",
    "pycdlib": "python3-pycdlib",
    "requests": "python3-requests",
    "urllib3": "python3-urllib3",
    "pyudev": "python3-pyudev",
    "systemd": "python3-systemd",
    "jinja2": "python3-jinja2",
}
OWN = {"contextd", "contextd_plugins"}
STDLIB = set(sys.stdlib_module_names) | {"__future__"}  # Python >= 3.10 runs this check


def payload_files(rpm):
    """(path, bytes) of the payload's Python sources, read with rpm2cpio + cpio."""
    with tempfile.TemporaryDirectory() as tmp:
        payload = subprocess.run(["rpm2cpio", rpm], check=True, capture_output=True).stdout
        subprocess.run(["cpio", "-idm", "--quiet"], input=payload, cwd=tmp, check=True)
        listing = subprocess.run(["rpm", "-qlp", rpm], check=True, capture_output=True,
                                 text=True).stdout.split()
        out = []
        for path in listing:
            if path.endswith(".py") or path.endswith("/contextd-generator"):
                with open(tmp + path, "rb") as f:
                    out.append((path, f.read()))
        return out


def imports(source, path):
    """Top-level names imported at run time: what sits under `if TYPE_CHECKING:` is for type
    checkers only, never imported by the package, so it needs no Requires."""
    found = set()
    tree = ast.parse(source, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def main(rpm):
    needed = {}
    unknown = {}
    for path, data in payload_files(rpm):
        for mod in imports(data, path) - STDLIB - OWN:
            if mod in EL9_PACKAGE:
                needed.setdefault(EL9_PACKAGE[mod], set()).add(path)
            else:
                unknown.setdefault(mod, set()).add(path)
    requires = subprocess.run(["rpm", "-qp", "--requires", rpm], check=True, capture_output=True,
                              text=True).stdout.splitlines()
    floors = {}
    for line in requires:
        m = re.match(r"^(python3-[A-Za-z0-9_.-]+)(?:\s*>=\s*(\S+))?$", line.strip())
        if m:
            floors[m.group(1)] = m.group(2)
    dist = {}
    for line in requires:
        m = re.match(r"^python3\.\d+dist\(([^)]+)\)(?:\s*>=\s*(\S+))?$", line.strip())
        if m:
            dist[m.group(1).lower()] = m.group(2)

    problems = []
    for mod, paths in sorted(unknown.items()):
        problems.append("import %s (%s): not in deps.py's EL9_PACKAGE map; add its EL9 package "
                        "there and a Requires to contextd.spec" % (mod, ", ".join(sorted(paths))))
    for pkg in sorted(set(needed) - set(floors)):
        problems.append("%s is imported (%s) but not required: add `Requires: %s` to contextd.spec"
                        % (pkg, ", ".join(sorted(needed[pkg])), pkg))
    for pkg in sorted(set(floors) - set(needed)):
        problems.append("%s is required but nothing imports it: drop the Requires" % pkg)
    by_pkg = {v: k for k, v in EL9_PACKAGE.items()}
    for pkg, floor in sorted(floors.items()):
        mod = by_pkg.get(pkg)
        want = dist.get({"yaml": "pyyaml"}.get(mod, mod or ""))
        if want is not None and floor != want:
            problems.append("Requires: %s >= %s, but setup.cfg says >= %s" % (pkg, floor, want))
    for p in problems:
        print("  " + p, file=sys.stderr)
    print("  requires: %s" % ", ".join("%s >= %s" % (k, v) if v else k
                                       for k, v in sorted(floors.items())))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
