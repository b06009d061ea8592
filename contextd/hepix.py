"""Running one site-pinned HEPiX script (prolog.sh / epilog.sh), or a pinned amiconfig
script, for apply: the one executor.

`apply` calls `run` for a `RunScript` action in its pre phase (before the files) or its post
phase (after the services); `contextd.legacy` decides which scripts are pinned. A script runs
as `/bin/sh <private copy> start` (the HEPiX convention passes the phase as $1; an amiconfig
script as `/bin/sh` or `/bin/bash <private copy>`, the interpreter legacy checked) in a private
directory under the state dir, with a clean environment and a time limit that kills it and
everything it started.

What it must never do: run bytes other than the ones pinned, run a script through a command
line string, give it the CD's `context.sh`, or wait for it without a timeout.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, Dict, Optional, Tuple

from contextd import filesystem
from contextd.actions import RunScript
from contextd.errors import ApplyError
from contextd.limits import LIMITS

SCRIPT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "LC_ALL": "C"}
MAX_SHOWN_OUTPUT = LIMITS.shown_output_bytes  # contextd/limits.py says why
log = logging.getLogger("contextd.legacy")


def run(script: RunScript, may_run: bool, root: str, work_dir: str) -> Dict[str, Any]:
    """Run it; its result: status ok|failed|timeout (exit_code, ms) or skipped, with the
    reason when it did not succeed. Raises ApplyError only when it cannot be run at all."""
    result: Dict[str, Any] = {"plugin": script.plugin, "kind": script.kind,
                              "target": script.target}
    if not may_run:
        result.update(status="skipped",
                      reason="alternate root %s: scripts need --run-commands" % root)
        return result
    if hashlib.sha256(script.data).hexdigest() != script.sha256:  # the same bytes, or nothing
        raise ApplyError("%s changed after its pin was checked" % script.label)
    started = time.monotonic()
    status, code, output = _run(script, work_dir)
    result.update(status=status, exit_code=code, ms=int((time.monotonic() - started) * 1000))
    shown = output[-MAX_SHOWN_OUTPUT:].decode("utf-8", "replace")
    log.log(logging.INFO if status == "ok" else logging.WARNING, "%s: %s%s%s",
            script.label, status, " (exit %s)" % code if code is not None else "",
            "; output (tail): %s" % shown if shown.strip() else "")
    if status != "ok":
        result["reason"] = ("timed out after %gs" % script.timeout if status == "timeout"
                            else "exited %s" % code)
    return result


def _run(script: RunScript, work_dir: str) -> Tuple[str, Optional[int], bytes]:
    """Run a private copy of the script: (ok|failed|timeout, exit code, output)."""
    name, data, timeout = script.name, script.data, script.timeout
    filesystem.private_dir(work_dir)
    tmp = tempfile.mkdtemp(prefix="hepix-", dir=work_dir)
    try:
        path = os.path.join(tmp, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # Output goes to a file, not a pipe: a child the script leaves behind cannot hold
        # us waiting for the pipe to close.
        with tempfile.TemporaryFile(dir=tmp) as out:
            try:
                proc = subprocess.Popen([script.interpreter, path, *script.args], cwd=tmp,
                                        stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, env=dict(SCRIPT_ENV),
                                        close_fds=True, start_new_session=True)
            except OSError as exc:
                raise ApplyError("cannot run %s: %s"
                                 % (script.label, exc.strerror or exc)) from None
            try:
                code: Optional[int] = proc.wait(timeout=timeout)
                status = "ok" if code == 0 else "failed"
            except subprocess.TimeoutExpired:
                try:  # noqa: SIM105 - boot path: no contextlib import for this
                    os.killpg(proc.pid, signal.SIGKILL)   # the script and what it started
                except OSError:
                    pass
                proc.wait()
                code, status = None, "timeout"
            out.seek(0, os.SEEK_END)
            size = out.tell()
            out.seek(max(0, size - MAX_SHOWN_OUTPUT))
            output = out.read(MAX_SHOWN_OUTPUT)
        return status, code, output
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
