"""Every security-sensitive file operation: atomic writes, modes, owners, bounded reads.

Nothing else in contextd opens a file for writing. A write never leaves a half-written
file behind (temp file in the same directory, fsync, rename), and mode and owner are set
before the new file becomes visible.
"""

from __future__ import annotations

import os
import stat
import time
from typing import Callable, List, Optional, Tuple

from contextd.errors import ApplyError
from contextd.record import field, record


@record(frozen=True)
class FileState:
    content: bytes = field(repr=False)
    mode: int
    uid: int
    gid: int


def under_root(root: str, path: str) -> str:
    """`path` (absolute on the target system) as seen from here, under `root`."""
    if root in ("", "/"):
        return path
    return os.path.join(os.path.abspath(root), path.lstrip("/"))


def read_limited(path: str, limit: int) -> Optional[bytes]:
    """The file's bytes, None when it does not exist; refuses to read past `limit`."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        return None
    if len(data) > limit:
        raise OSError("%s is larger than %d bytes" % (path, limit))
    return data


def user_ids(root: str, name: str) -> Optional[Tuple[int, int]]:
    """(uid, primary gid) of user `name` in the target system's /etc/passwd, or None.

    The target's, not the host's: under --root the image's users are what count, and
    contextd runs before any name service (sssd, LDAP) is up at boot anyway.
    """
    try:
        data = read_limited(under_root(root, "/etc/passwd"), 4 * 1024 * 1024)
    except OSError:
        return None
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == name and fields[2].isdigit() \
                and fields[3].isdigit():
            return int(fields[2]), int(fields[3])
    return None


def reader(root: str) -> Callable[[str], Optional[bytes]]:
    """What plugins get to look at the target system: bounded reads under `root`."""
    def read_file(path: str) -> Optional[bytes]:
        target = under_root(root, path)
        try:
            return read_limited(target, 4 * 1024 * 1024)
        except OSError as exc:
            raise ApplyError("cannot read %s: %s" % (target, exc.strerror or exc),
                             "it must be a regular file of at most 4 MiB")
    return read_file


def state_of(path: str, limit: int = 64 * 1024 * 1024) -> Optional[FileState]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise OSError("%s exists and is not a regular file" % path)
    content = read_limited(path, limit) or b""
    return FileState(content, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def missing_dirs(path: str) -> List[str]:
    """The directories `ensure_dir(path)` would create now, outermost first."""
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return missing[::-1]


def ensure_dir(path: str, mode: int = 0o755) -> List[str]:
    """Create `path` and missing parents; returns the directories created, outermost first."""
    created: List[str] = []
    for directory in missing_dirs(path):
        os.mkdir(directory, mode)
        os.chmod(directory, mode)          # the umask must not loosen or tighten it
        created.append(directory)
    return created


TEMP_SUFFIX = ".contextd-tmp"


def remove_stale_temporaries(directory: str) -> None:
    """Temp files a killed writer left behind (its rename never happened)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(".") and name.endswith(TEMP_SUFFIX):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _create_temp(directory: str, base: str) -> Tuple[int, str]:
    """A new file `.<base>.<random>.contextd-tmp` in `directory`, open for writing, 0600.

    What tempfile.mkstemp does, without importing tempfile (and with it shutil and random)
    on the boot path: O_EXCL refuses a name that exists, including a planted symlink.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(directory, ".%s.%s%s" % (base, os.urandom(6).hex(), TEMP_SUFFIX))
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError("no free temporary file name in %s" % directory)


def atomic_write(path: str, content: bytes, mode: int,
                 uid: Optional[int] = None, gid: Optional[int] = None) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = _create_temp(directory, os.path.basename(path))
    try:
        os.fchmod(fd, mode)
        if uid is not None and os.geteuid() == 0:
            os.fchown(fd, uid, gid if gid is not None else -1)
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def restore(path: str, state: FileState) -> None:
    atomic_write(path, state.content, state.mode, state.uid, state.gid)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(os.path.dirname(path) or ".")


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock(path: str, wait: float) -> Optional[int]:
    """An exclusive flock on `path`, held until the returned descriptor is closed (or the
    process dies); None when another holder kept it for `wait` seconds. The file is created
    0600 and only ever opened as a regular file of its own: never through a symlink, never
    a hard link to another file, never a FIFO's blocking open. Nothing is written to it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                 | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise OSError("%s is not a regular file of its own" % path)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(0.1)
    except BaseException:
        os.close(fd)
        raise


def private_dir(path: str) -> None:
    """A 0700 directory for state and spool, created if needed, tightened if not."""
    ensure_dir(path, 0o700)
    os.chmod(path, 0o700)
