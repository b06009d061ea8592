"""The run report (schema contextd.report/v1): built from values, written atomically.

What it must never hold: a secret (tokens, passwords). Only values the pipeline marked as
safe to show go in; plugins' `describe` replaces secrets before anything reaches here.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Dict, Optional

from contextd import __version__, filesystem
from contextd.errors import EXIT_CODES, Outcome

SCHEMA = "contextd.report/v1"
NAME = "report.json"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
SPOOL = "/var/spool/contextd/reports"   # reports not yet delivered (contextd.delivery)


def iso_time(t: datetime.datetime) -> str:
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# os-release keys the report carries (host.image), by their report names; IMAGE_* and
# BUILD_ID say which build of an image this is (DESIGN section 11).
OS_RELEASE = {"ID": "os_id", "VERSION_ID": "os_version_id", "IMAGE_ID": "os_image_id",
              "IMAGE_VERSION": "os_image_version", "BUILD_ID": "os_build_id"}


def os_release(root: str) -> Dict[str, Optional[str]]:
    values: Dict[str, Optional[str]] = dict.fromkeys(OS_RELEASE.values())
    try:
        data = filesystem.read_limited(filesystem.under_root(root, "/etc/os-release"), 64 * 1024)
    except OSError:
        data = None
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key in OS_RELEASE:
            values[OS_RELEASE[key]] = value.strip().strip("\"'")
    return values


def boot_id() -> Optional[str]:
    """The running kernel's boot id (a random UUID per boot), or None where there is none."""
    try:
        data = filesystem.read_limited(BOOT_ID, 64)
    except OSError:
        return None
    value = (data or b"").decode("ascii", "replace").strip()
    return value or None


def new(started: datetime.datetime, site: Optional[str], root: str,
        policy_sha256: Optional[str]) -> Dict[str, Any]:
    return {
        "schema": SCHEMA,
        # 128 random bits; receivers deduplicate on it (delivery is at least once).
        "report_id": os.urandom(16).hex(),
        "outcome": None,
        "started_at": iso_time(started),
        "finished_at": None,
        "duration_ms": None,
        "source": None,
        "payload": None,
        "policy_sha256": policy_sha256,
        "actions": [],
        "denied": [],
        "overridden": [],
        # os.uname().nodename is what socket.gethostname() returns, without importing socket.
        "host": {"hostname": os.uname().nodename, "instance_id": None, "site": site,
                 "boot_id": boot_id(),     # `status --wait` tells this boot's run by it
                 "image": dict(os_release(root), image_id=None)},
        "contextd_version": __version__,
    }


def finish(report: Dict[str, Any], outcome: Outcome, started: datetime.datetime,
           stage: Optional[str] = None, message: Optional[str] = None) -> Dict[str, Any]:
    """Close the report with its outcome's word and exit code; `status` exits with it."""
    finished = datetime.datetime.now(datetime.timezone.utc)
    report["outcome"] = outcome.word
    report["exit_code"] = outcome.exit_code
    if stage is not None:
        report["stage"] = stage
    if message is not None:
        report["message"] = message
    report["finished_at"] = iso_time(finished)
    report["duration_ms"] = int((finished - started).total_seconds() * 1000)
    return report


def exit_code(report: Dict[str, Any]) -> int:
    """The recorded run's exit code (older reports have none: the outcome's)."""
    code = report.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool) and code in EXIT_CODES:
        return code
    word = report.get("outcome")
    usual = Outcome.usual(word) if isinstance(word, str) else None
    return usual.exit_code if usual else Outcome.REJECTED.exit_code


def write(report: Dict[str, Any], run_dir: str) -> str:
    """This boot's report, replaced atomically. Not fsynced: the run dir is /run, which a
    reboot empties; what must survive one (the spool) is written durably by delivery."""
    path = os.path.join(run_dir, NAME)
    try:
        filesystem.ensure_dir(run_dir, 0o755)
        filesystem.atomic_write(path, (json.dumps(report, indent=2, sort_keys=True)
                                       + "\n").encode(), 0o644, durable=False)
    except OSError as exc:      # a run dir the user named that cannot be written: exit 2
        from contextd import paths

        raise paths.unwritable(path, "report", exc) from None
    return path


def read(run_dir: str) -> Optional[Dict[str, Any]]:
    try:
        data = filesystem.read_limited(os.path.join(run_dir, NAME), 4 * 1024 * 1024)
    except OSError:
        return None
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
