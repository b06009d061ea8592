"""Where a context comes from: a named source (`--source`) or detection in policy order.

A source returns a `Context`: the signed payload bytes and signature blobs, what it knows
about the platform (facts), and a bounded reader for files the payload lists. Sources
read; they never execute anything they find and never decide trust.

Detection (`detect`) reads only the sources the policy lists, in its order: first one quick
look at each (CD-ROMs present now, the metadata service within its budget, the file); then,
when nothing was found and `hepix-cdrom` is listed, it waits for a late CD-ROM until
`wait_for_source` (counted from the start of detection) runs out. So the policy's order
decides between contexts that are there, and a slow CD-ROM is still waited for, without
every EC2 boot first sitting out the CD-ROM wait.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from typing import IO, Any, Callable, Dict, List, Mapping, Optional, Tuple

from contextd.errors import PayloadError, SourceError, UsageError
from contextd.limits import LIMITS
from contextd.record import field, record

MAX_LISTED_FILE = LIMITS.listed_file_bytes  # contextd/limits.py says why


@record(frozen=True)
class Context:
    kind: str                                    # iso | dir | file | hepix-cdrom | ec2
    location: str
    payload: bytes = field(repr=False)
    signatures: Tuple[Any, ...] = field(repr=False)   # bundle.Signature values
    facts: Dict[str, Optional[str]] = field(default_factory=dict)
    # Opens a file the payload lists, relative to the carrier; None for bundles.
    open_file: Optional[Callable[[str], bytes]] = field(default=None, repr=False)
    # The SHA-256 of such a file, streamed (memory stays flat for big files); None: read it.
    hash_file: Optional[Callable[[str], str]] = field(default=None, repr=False)
    # "amiconfig": `payload` is unsigned amiconfig INI, usable only through
    # verify.accept_unsigned_legacy; None: a signed payload.
    legacy: Optional[str] = None
    # HEPiX prolog.sh / epilog.sh found on the carrier: bytes, for contextd.legacy to pin-check.
    scripts: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    # Shown in the report's `source` (carrier variable, IMDS version, ignored MIME parts).
    details: Mapping[str, Any] = field(default_factory=dict)


@record(frozen=True)
class Detection:
    context: Optional[Context]
    notes: Tuple[str, ...]          # why each source tried had no context


SPEC_HINT = "use iso:PATH, dir:PATH, file:PATH or ec2:URL"


def fetch(spec: str, policy: Any = None) -> Context:
    """A context from `--source KIND:PATH`; SourceError when that place holds none."""
    ctx, why = open_source(spec, policy)
    if ctx is None:
        raise SourceError(why)
    return ctx


def open_source(spec: str, policy: Any = None) -> Tuple[Optional[Context], str]:
    """(context, "") or (None, why) for `--source KIND:PATH`.

    Only `ec2:` can find "no context" (a 404 on user-data, or user-data that is not ours);
    the other kinds name a carrier, and a carrier without a context is an error. `policy`
    gives the EC2 budget and IMDSv1 rule (defaults without one).
    """
    kind, sep, where = spec.partition(":")
    if not sep or not where:
        raise UsageError("--source %r is not KIND:PATH" % spec, SPEC_HINT)
    if kind == "iso":
        from contextd.sources import isosource
        return isosource.read(where), ""
    if kind == "dir":
        from contextd.sources import directory
        return directory.read(where), ""
    if kind == "file":
        from contextd.sources import bundlefile
        return bundlefile.read(where), ""
    if kind == "ec2":
        from contextd.sources import ec2
        from contextd.settings import Ec2Settings
        settings = policy.ec2 if policy is not None else Ec2Settings()
        return ec2.look(ec2.check_url(where), settings.budget, settings.imdsv1_fallback)
    raise UsageError("--source kind %r is not known" % kind, SPEC_HINT)


def detect(policy: Any, root: str = "/", udev: Any = None,
           notify: Optional[Callable[[str], Any]] = None,
           clock: Callable[[], float] = time.monotonic) -> Detection:
    """The context of the first source in `policy.sources` that has one (see module doc).

    `udev` replaces the real udev (tests). A source that is there but broken raises;
    "nothing there" becomes a note.
    """
    from contextd import filesystem

    started = clock()
    notes: List[str] = []
    search = None
    for name in policy.sources:
        ctx: Optional[Context] = None
        why = ""
        if name == "hepix-cdrom":
            from contextd.sources import cdrom
            udev = udev if udev is not None else cdrom.default_udev()
            search = cdrom.Search()
            ctx = cdrom.look(udev, search)
            if ctx is None and not search.notes:
                why = "no CD-ROM with ISO9660 media yet"
            notes.extend("hepix-cdrom: %s" % n for n in search.notes)
            search.notes = []
        elif name == "ec2":
            from contextd.sources import ec2
            try:
                ctx, why = ec2.look(policy.ec2.url, policy.ec2.budget,
                                    policy.ec2.imdsv1_fallback)
            except ec2.NoService as exc:
                why = exc.one_line()
        elif name == "file":
            from contextd.sources import bundlefile
            path = filesystem.under_root(root, policy.file_source)
            if os.path.exists(path):
                ctx = bundlefile.read(path)
            else:
                why = "%s does not exist" % path
        if why:
            notes.append("%s: %s" % (name, why))
        if ctx is not None:
            return Detection(ctx, tuple(notes))
    if search is not None and not search.context_disc:
        left = policy.wait_for_source - (clock() - started)
        if left > 0:
            from contextd.sources import cdrom, sdnotify
            ctx = cdrom.wait(udev, left, search, notify or sdnotify.notify, clock)
            notes.extend("hepix-cdrom: %s" % n for n in search.notes)
            return Detection(ctx, tuple(notes))
    return Detection(None, tuple(notes))


def open_regular(path: str, what: str) -> IO[bytes]:
    """`path` opened for reading, refused unless it is a regular file.

    Opened with O_NONBLOCK and checked with fstat before any read: a FIFO where a bundle or
    payload should be would block the boot forever (open waits for a writer), a device or a
    socket would never end. Symbolic links are followed: the path is the site's (its
    policy's `file.path`, its image) or the operator's (`--source`), a link there is a way
    to install, and what is read is verified like any other bytes.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise SourceError("cannot read %s %s: %s" % (what, path, exc.strerror or exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SourceError("cannot read %s %s: it is %s, not a regular file"
                              % (what, path, _file_kind(mode)),
                              "give the path of a file holding it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str, limit: int, what: str) -> bytes:
    """The bytes of the regular file `path` (see open_regular); SourceError over `limit`."""
    with open_regular(path, what) as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise SourceError("cannot read %s %s: %s" % (what, path, exc.strerror or exc)) from None
    if len(data) > limit:
        raise SourceError("%s %s is larger than %d bytes" % (what, path, limit))
    return data


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a file"


def check_listed_files(ctx: Context, files: Tuple[Tuple[str, str], ...]) -> None:
    """Every file the signed payload lists must be on the carrier with that SHA-256."""
    for path, digest in files:
        if ctx.hash_file is None:
            _listed(ctx, path, digest)
        else:
            _compare(path, ctx.hash_file(path), digest)


def listed_reader(ctx: Context, files: Tuple[Tuple[str, str], ...]) -> Callable[[str], bytes]:
    """What plugins get: a listed file's bytes, its digest checked again on every read."""
    digests = dict(files)

    def listed_file(rel: str) -> bytes:
        if rel not in digests:
            raise PayloadError("%r is not listed under the payload's files" % rel,
                               "list it with its sha256 and ship it on the context ISO")
        return _listed(ctx, rel, digests[rel])
    return listed_file


def _listed(ctx: Context, path: str, digest: str) -> bytes:
    if ctx.open_file is None:
        raise SourceError("payload lists file %r but a %s carries no files" % (path, ctx.kind),
                          "ship it on a context ISO next to contextd/payload.yaml")
    data = ctx.open_file(path)
    _compare(path, hashlib.sha256(data).hexdigest(), digest)
    return data


def _compare(path: str, actual: str, digest: str) -> None:
    if actual != digest:
        raise SourceError("listed file %r has sha256 %s, the payload says %s"
                          % (path, actual, digest), "the carrier was modified; rebuild it")
