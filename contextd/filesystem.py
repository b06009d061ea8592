"""Every security-sensitive file operation: atomic writes, modes, owners, bounded reads.

Nothing else in contextd opens a file for writing. A write never leaves a half-written
file behind (temp file in the same directory, fsync, rename), and mode and owner are set
before the new file becomes visible.

The root is a wall: a path on the target system is resolved as chroot(root) would resolve
it (an absolute symlink in the image starts again at the root, ".." stops there), by
walking directory fds with O_NOFOLLOW, never by handing the kernel a path through the
image. Nothing here ever writes, chmods or chowns through a symlink: a file is replaced by
rename within its directory's fd, modes and owners are set on fds. A secret is not even
written through a symlinked directory.

Long because it is the whole wall in one place: the walk, the reads, the writes, the lock and
the directories share one set of fd rules, and a reviewer checks them together; the tests hold
every chmod, chown and write open of contextd to this module.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from typing import BinaryIO, Callable, List, Optional, Tuple, Union

from contextd.errors import ApplyError, PlanError
from contextd.limits import LIMITS
from contextd.record import field, record


@record(frozen=True)
class FileState:
    content: bytes = field(repr=False)
    mode: int
    uid: int
    gid: int


MAX_SYMLINKS = LIMITS.symlinks  # contextd/limits.py says why
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# Walking needs only search permission on a directory, as the kernel's own lookup does:
# O_PATH where there is one; _usable reopens the last directory for reading.
_PATH = getattr(os, "O_PATH", os.O_RDONLY)
_STEP = _PATH | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC


def under_root(root: str, path: str, follow: bool = True, secret: bool = False) -> str:
    """`path` (absolute on the target system) as seen from here, resolved as chroot(root)
    would resolve it: an absolute symlink in the image starts again at `root`, ".." stops
    there. Parts that do not exist yet are appended as they are.

    follow=False leaves the last component alone (a file about to be replaced: rename
    replaces a link, never its target). secret=True refuses any symlink on the way, the
    last component included (ApplyError). A symlink loop raises OSError (ELOOP).
    """
    base = os.path.abspath(root or "/")
    head, name = (path, "") if follow else os.path.split("/" + path.lstrip("/"))
    try:
        fd, names, rest = _walk(base, head, secret=secret, partial=True)
    except (FileNotFoundError, NotADirectoryError):      # no root yet: nothing to resolve
        return os.path.join(base, path.lstrip("/"))
    try:
        if secret and name and not rest:
            target = _readlink(fd, name)
            if target is not None:
                raise _secret_link(_host(base, [*names, name]), target)
    finally:
        os.close(fd)
    return _host(base, _lexical(names + rest + ([name] if name else [])))


def default_dir(root: str, path: str) -> str:
    """A default directory (state, run, spool) under `root`, resolved inside it; a symlink
    loop there is the image's to fix, said in one line."""
    try:
        return under_root(root, path)
    except OSError as exc:
        raise ApplyError("cannot resolve %s under %s: %s" % (path, root, exc.strerror or exc),
                         "fix the symbolic links on that path in the image") from None


def _walk(base: str, path: str, mode: Optional[int] = None,
          created: Optional[List[str]] = None, secret: bool = False,
          partial: bool = False) -> Tuple[int, List[str], List[str]]:
    """Open directory `path` below the host directory `base`, component by component with
    O_NOFOLLOW, resolving symlinks by hand as chroot(base) would; never a path lookup by
    the kernel, so nothing in the image can lead outside `base`.

    Returns (fd, the resolved components, the rest). mode: create missing directories
    with it (chmod on the new fd: the umask must not change it), listing them in
    `created`. partial: stop at the first component that is missing or no directory and
    return the rest unresolved (else that is an OSError). secret: refuse any symlink.
    """
    stack = [os.open(base, _PATH | os.O_DIRECTORY | _CLOEXEC)]   # named by who runs us
    names: List[str] = []
    todo = _parts(path)[::-1]
    followed = 0
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                if names:
                    os.close(stack.pop())
                    names.pop()
                continue
            try:
                fd = os.open(name, _STEP, dir_fd=stack[-1])
            except FileNotFoundError:
                if mode is None:
                    if partial:
                        return stack.pop(), names, [name, *todo[::-1]]
                    raise
                fd = _make_dir(stack[-1], name, mode)
                if created is not None:
                    created.append(_host(base, [*names, name]))
            except OSError as exc:
                target = _readlink(stack[-1], name)
                if target is None:          # not a link: a file where a directory should be
                    if partial and exc.errno == errno.ENOTDIR:
                        return stack.pop(), names, [name, *todo[::-1]]
                    raise
                if secret:
                    raise _secret_link(_host(base, [*names, name]), target) from None
                followed += 1
                if followed > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP),
                                  _host(base, [*names, name])) from None
                if target.startswith("/"):          # absolute: from the root, not the host's
                    for fd in stack[1:]:
                        os.close(fd)
                    del stack[1:], names[:]
                todo.extend(_parts(target)[::-1])
                continue
            stack.append(fd)
            names.append(name)
        return stack.pop(), names, []
    finally:
        for fd in stack:
            os.close(fd)



def _make_dir(dir_fd: int, name: str, mode: int) -> int:
    """Create directory `name` in `dir_fd` and open it; its mode set on the fd (the umask
    must not change it)."""
    os.mkdir(name, mode, dir_fd=dir_fd)
    fd = os.open(name, _DIR, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd

def _usable(fd: int) -> int:
    """A directory fd from _walk, reopened for what O_PATH cannot do (fchmod, fsync,
    listdir); the one given is closed."""
    try:
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def _parts(path: str) -> List[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _lexical(parts: List[str]) -> List[str]:
    out: List[str] = []
    for part in parts:
        if part != "..":
            out.append(part)
        elif out:
            out.pop()
    return out


def _host(base: str, names: List[str]) -> str:
    return os.path.join(base, *names) if names else base


def _readlink(dir_fd: int, name: str) -> Optional[str]:
    """The target of symlink `name` in `dir_fd`, None when it is not a symlink."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def _secret_link(where: str, target: str) -> ApplyError:
    return ApplyError("%s is a symbolic link (to %s) and a secret or a payload's file is never "
                      "written through one: make it a real directory or file" % (where, target))


def _below(root: str, path: str) -> Tuple[str, str]:
    """(the root, `path` relative to it): `path` is a host path under `root`."""
    base = os.path.abspath(root or "/")
    full = os.path.abspath(path)
    if base == "/":
        return base, full
    if full != base and not full.startswith(base + "/"):
        raise ValueError("%s is not under %s" % (full, base))
    return base, full[len(base):]


def _open_parent(root: str, path: str, secret: bool = False) -> Tuple[int, str]:
    """(fd of the directory holding `path`, its last component); the walk stays in `root`."""
    base, rel = _below(root, path)
    head, name = os.path.split(rel)
    if name in ("", ".."):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    return _usable(_walk(base, head, secret=secret)[0]), name


def read_limited(path: str, limit: int) -> Optional[bytes]:
    """The file's bytes, None when it does not exist; refuses to read past `limit`, and
    anything but a regular file (opened without blocking: a FIFO in an image would hang the
    boot in open(), a device never ends)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("%s is not a regular file" % path)
        os.set_blocking(fd, True)
        data = f.read(limit + 1)
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
        target = path
        try:
            target = under_root(root, path)
            return read_limited(target, 4 * 1024 * 1024)
        except OSError as exc:
            raise PlanError("cannot read %s: %s" % (target, exc.strerror or exc),
                            "it must be a regular file of at most 4 MiB") from None
    return read_file


def state_of(path: str, limit: int = 64 * 1024 * 1024, *, root: str = "/"
             ) -> Optional[FileState]:
    """The regular file at `path` (a host path under `root`), None when there is none.
    A symlink there is an error: its target is not the file, and is never read."""
    try:
        dir_fd, name = _open_parent(root, path)
    except FileNotFoundError:
        return None
    try:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise OSError("%s is a symbolic link, not a regular file; replace it with the "
                          "file itself" % path)
        if not stat.S_ISREG(st.st_mode):
            raise OSError("%s exists and is not a regular file" % path)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                     | getattr(os, "O_CLOEXEC", 0), dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):           # swapped since the stat above
            raise OSError("%s exists and is not a regular file" % path)
        content = f.read(limit + 1)
    if len(content) > limit:
        raise OSError("%s is larger than %d bytes" % (path, limit))
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


def ensure_dir(path: str, mode: int = 0o755, *, root: str = "/", exact: bool = False,
               owner: Optional[Tuple[int, int]] = None, secret: bool = False) -> List[str]:
    """Create `path` (a host path under `root`) and missing parents, never outside `root`;
    returns the directories created, outermost first. exact: `path` gets `mode` even if
    it existed; owner: and that (uid, gid). Both on the opened directory, never by name."""
    base, rel = _below(root, path)
    created: List[str] = []
    fd = _usable(_walk(base, rel, mode=mode, created=created, secret=secret)[0])
    try:
        if exact:
            os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, owner[0], owner[1])
    finally:
        os.close(fd)
    return created


TEMP_SUFFIX = ".contextd-tmp"


def remove_stale_temporaries(directory: str, *, root: str = "/") -> None:
    """Temp files a killed writer left behind (its rename never happened)."""
    try:
        dir_fd = _usable(_walk(*_below(root, directory))[0])
    except OSError:
        return
    try:
        for name in os.listdir(dir_fd):
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                try:  # noqa: SIM105 - boot path: no contextlib import for this
                    os.unlink(name, dir_fd=dir_fd)
                except OSError:
                    pass
    finally:
        os.close(dir_fd)


def _create_temp(dir_fd: int, base: str) -> Tuple[int, str]:
    """A new file `.<base>.<random>.contextd-tmp` in `dir_fd`, open for writing, 0600.

    What tempfile.mkstemp does, without importing tempfile (and with it shutil and random)
    on the boot path: O_EXCL|O_NOFOLLOW refuses a name that exists, a planted symlink too.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = ".%s.%s%s" % (base, os.urandom(6).hex(), TEMP_SUFFIX)
        try:
            return os.open(tmp, flags, 0o600, dir_fd=dir_fd), tmp
        except FileExistsError:
            continue
    raise FileExistsError("no free temporary file name next to %s" % base)


def atomic_write(path: str, content: Union[bytes, Callable[[BinaryIO], None]], mode: int,
                 uid: Optional[int] = None, gid: Optional[int] = None, *,
                 root: str = "/", secret: bool = False, durable: bool = True) -> None:
    """Replace `path` (a host path under `root`) with `content`: temp file in the same
    directory, mode and owner on its fd, fsync, rename within the directory's fd (a
    symlink at `path` is replaced, never written through), fsync the directory.

    `durable=False` keeps the rename (readers never see half a file) but skips both fsyncs:
    for files a reboot discards anyway (the run dir is /run, a tmpfs), where each fsync
    would cost a boot a disk flush for nothing.

    `content` is the bytes, or a function that writes them to the file it is given (the
    VO side streams an ISO image that way instead of holding it in memory)."""
    dir_fd, name = _open_parent(root, path, secret=secret)
    try:
        fd, tmp = _create_temp(dir_fd, name)
        try:
            os.fchmod(fd, mode)
            if uid is not None and os.geteuid() == 0:
                os.fchown(fd, uid, gid if gid is not None else -1)
            if callable(content):
                with os.fdopen(fd, "wb", closefd=False) as out:
                    content(out)
            else:
                view = memoryview(content)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            if durable:
                os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:  # noqa: SIM105 - boot path: no contextlib import for this
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            raise
        if durable:
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def restore(path: str, state: FileState, *, root: str = "/") -> None:
    atomic_write(path, state.content, state.mode, state.uid, state.gid, root=root)


def remove(path: str, *, root: str = "/") -> None:
    try:
        dir_fd, name = _open_parent(root, path)
    except FileNotFoundError:
        return
    try:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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


def private_dir(path: str, *, root: str = "/") -> None:
    """A 0700 directory for state and spool, created if needed, tightened if not."""
    ensure_dir(path, 0o700, root=root, exact=True)
