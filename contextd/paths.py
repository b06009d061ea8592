"""The one rule for paths a user named on the command line (DESIGN section 3, issue 15).

A file or directory the user named that cannot be read or written is a usage error (exit 2),
said in one line that names the path and the option; only the context a run or explain
judges is a rejection (exit 1), and that is the sources' business, not this module's. These
checks run before anything is read or written, so a mistake never reaches code that would
turn it into a traceback, or replace a FIFO or a device with a regular file.

What it must never do: create, open or change anything (it only looks, with lstat/stat), or
import anything heavy: the boot path calls it.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Optional

from contextd.errors import UsageError


def _stat(path: str, option: str, follow: bool = True) -> Optional[os.stat_result]:
    """The path's status; None when it does not exist (its parent does or does not)."""
    try:
        return os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise UsageError("%s %s: a part of the path is not a directory" % (option, path),
                             "name a path whose directories exist") from None
        raise UsageError("%s %s: %s" % (option, path, exc.strerror or exc)) from None


def existing_dir(path: str, option: str) -> None:
    """A directory the command reads from or works under (--root): it must exist."""
    st = _stat(path, option)
    if st is None:
        raise UsageError("%s %s does not exist" % (option, path), "name an existing directory")
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError("%s %s is not a directory" % (option, path),
                         "name a directory, not a file")


def dir_or_absent(path: str, option: str) -> bool:
    """A directory the command creates when it is missing (--state-dir, --run-dir, a spool);
    True when it exists. Anything else there (a file, a FIFO, a device) is refused."""
    st = _stat(path, option)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise UsageError("%s %s is not a directory" % (option, path),
                         "remove it or name another directory")
    return st is not None


def output(path: str, option: str) -> None:
    """A file the command writes (replacing it atomically): its directory must exist, and
    what is there now must be a regular file or nothing (a FIFO or a device is never
    replaced by a file, a directory never written into)."""
    parent = os.path.dirname(os.path.abspath(path))
    st = _stat(parent, option)
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise UsageError("%s %s: directory %s does not exist" % (option, path, parent),
                         "create it first or write elsewhere")
    here = _stat(path, option, follow=False)
    if here is not None and not (stat.S_ISREG(here.st_mode) or stat.S_ISLNK(here.st_mode)):
        raise UsageError("%s %s exists and is not a regular file" % (option, path),
                         "name a new file or a regular file to replace")


def unwritable(path: str, option: str, exc: OSError) -> UsageError:
    """The one-line error for a write that failed all the same (full disk, read-only)."""
    return UsageError("cannot write %s %s: %s" % (option, path, exc.strerror or exc))
