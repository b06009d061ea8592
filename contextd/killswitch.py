"""The agent's own kill switches (DESIGN section 4): `/etc/contextd/disabled` under the root,
or `contextd=off` on the kernel command line (`/proc/cmdline` under the root, so tests and
images can say it too).

The systemd unit checks both as conditions; the agent checks them again so that a run
started any other way ends `skipped` with a report, and `status --wait` returns at once
instead of waiting for a run the unit will never start. It only reads; it never creates or
removes a switch.
"""

from __future__ import annotations

import os
from typing import Optional

from contextd import filesystem
from contextd.limits import LIMITS

SWITCH = "/etc/contextd/disabled"
CMDLINE = "/proc/cmdline"
WORD = "contextd=off"


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/")) if root not in ("", "/") else path


def reason(root: str = "/") -> Optional[str]:
    """Why contextd is switched off on this machine, or None."""
    if os.path.lexists(_under(root, SWITCH)):
        return "contextd is disabled: %s exists (remove it to enable contextd)" % SWITCH
    try:        # read_limited: a FIFO or device planted there must not hang the boot
        words = (filesystem.read_limited(_under(root, CMDLINE), LIMITS.cmdline_bytes)
                 or b"").split()
    except OSError:
        return None
    if WORD.encode() in words:
        return "contextd is disabled: %s is on the kernel command line" % WORD
    return None
