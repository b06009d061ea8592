"""Tell systemd what contextd is doing (`sd_notify`), without a dependency.

The protocol is one datagram of `KEY=value` lines to the AF_UNIX socket named in
`$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). Outside systemd, or on
any error, nothing happens: a status line is never worth failing a boot over.

What this module must never do: block (the datagram is sent non-blocking), raise, or
send more than one line per key (newlines in a status are flattened).
"""

from __future__ import annotations

import os
import socket
from typing import Mapping, Optional


def notify(status: str, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Send `STATUS=<status>`; True when a datagram went out."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    line = "STATUS=" + " ".join(status.split())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(line.encode("utf-8", "replace"), address)
    except OSError:
        return False
    return True
