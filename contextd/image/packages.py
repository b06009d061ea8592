"""The image's package list, for its manifest (site side, at image build; DESIGN section 11).

`rpm -qa --root IMAGE_ROOT` when rpm is installed here and the image has an rpm database,
else dpkg's status file under the root: one `name<TAB>version<TAB>arch` line per installed
package, sorted, and the SHA-256 of those lines. Two builds with the same packages give the
same digest whatever order the database keeps them in.

What it must never do: be imported on the boot path (a VM does not list its packages at
boot), run rpm through a shell or without a timeout, or read past the LIMITS.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from typing import Any, Dict, List, Optional, Tuple

from contextd import filesystem
from contextd.errors import SigningError
from contextd.limits import LIMITS

# Where rpm keeps its database (EL9: /var/lib/rpm; Fedora 36+, EL10: /usr/lib/sysimage/rpm).
RPM_DB_DIRS = ("/usr/lib/sysimage/rpm", "/var/lib/rpm")
RPM_FORMAT = "%{NAME}\\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\\t%{ARCH}\\n"
DPKG_STATUS = "/var/lib/dpkg/status"
RPM_TIMEOUT = 300.0            # seconds; rpm -qa takes ~1 s on a 1000-package image


def listing(root: str) -> Tuple[Dict[str, Any], Optional[str]]:
    """(the manifest's `packages`: {db, count, sha256}, the version of the image's contextd
    package or None). db None: the image has neither an rpm database nor dpkg's status
    file (count 0, sha256 None)."""
    db, lines = _rpm(root) or _dpkg(root) or (None, [])
    lines = sorted(set(lines))
    digest = hashlib.sha256("".join(line + "\n" for line in lines).encode("utf-8")).hexdigest()
    ours = next((line.split("\t")[1] for line in lines if line.split("\t")[0] == "contextd"),
                None)
    if ours is not None and ours.startswith("0:"):     # rpm's EPOCHNUM: no epoch shown
        ours = ours[2:]
    return {"db": db, "count": len(lines), "sha256": digest if db else None}, ours


def _rpm_db(root: str) -> Optional[str]:
    for path in RPM_DB_DIRS:
        where = filesystem.under_root(root, path)
        try:
            if os.path.isdir(where) and os.listdir(where):
                return path
        except OSError:
            continue
    return None


def _rpm(root: str) -> Optional[Tuple[str, List[str]]]:
    db = _rpm_db(root)
    rpm = shutil.which("rpm")
    if db is None or rpm is None:
        return None
    argv = [rpm, "-qa", "--root", os.path.abspath(root), "--dbpath", db, "--qf", RPM_FORMAT]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=RPM_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SigningError("cannot list the image's packages with rpm: %s" % exc) from None
    if proc.returncode != 0:
        said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SigningError("rpm -qa --root %s failed (exit %d): %s" % (
            root, proc.returncode, said[-1] if said else "no message"),
            "check the image's rpm database (rpm --root %s --rebuilddb)" % root)
    if len(proc.stdout) > LIMITS.image_package_list_bytes:
        raise SigningError("rpm -qa printed more than %d bytes"
                           % LIMITS.image_package_list_bytes)
    return "rpm", [line for line in proc.stdout.decode("utf-8", "replace").splitlines()
                   if line]


def _dpkg(root: str) -> Optional[Tuple[str, List[str]]]:
    path = filesystem.under_root(root, DPKG_STATUS)
    try:
        data = filesystem.read_limited(path, LIMITS.image_package_list_bytes)
    except OSError as exc:
        raise SigningError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    if data is None:
        return None
    lines = []
    for stanza in data.decode("utf-8", "replace").split("\n\n"):
        fields = _fields(stanza)
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            lines.append("%s\t%s\t%s" % (fields["Package"], fields.get("Version", ""),
                                         fields.get("Architecture", "")))
    return "dpkg", lines


def _fields(stanza: str) -> Dict[str, str]:
    """The single-line fields of one dpkg status stanza (continuation lines are skipped)."""
    out = {}
    for line in stanza.splitlines():
        key, sep, value = line.partition(":")
        if sep and line[:1] not in (" ", "\t"):
            out[key] = value.strip()
    return out
