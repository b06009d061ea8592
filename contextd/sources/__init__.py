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

from contextd.errors import NoService, PayloadError, SourceError, UsageError
from contextd.limits import LIMITS
from contextd.record import field, record

MAX_LISTED_FILE = LIMITS.listed_file_bytes  # contextd/limits.py says why


@record(frozen=True)
class Context:
    kind: str       # iso dir file hepix-cdrom config-drive nocloud ec2 openstack gce url
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


SPEC_HINT = "use iso:PATH, dir:PATH, file:PATH, ec2:URL, openstack:URL, gce:URL or url:URL"


def fetch(spec: str, policy: Any = None) -> Context:
    """A context from `--source KIND:PATH`; SourceError when that place holds none."""
    ctx, why = open_source(spec, policy)
    if ctx is None:
        raise SourceError(why)
    return ctx


def open_source(spec: str, policy: Any = None) -> Tuple[Optional[Context], str]:
    """(context, "") or (None, why) for `--source KIND:PATH`.

    Only the network kinds can find "no context" (a 404 on user-data, or user-data that is
    not ours); the other kinds name a carrier, and a carrier without a context is an error.
    `policy` gives the budgets and the IMDSv1 rule (defaults without one).
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
    if kind in NETWORK:
        return _network(kind, policy, where)
    raise UsageError("--source kind %r is not known" % kind, SPEC_HINT)


NETWORK = ("ec2", "openstack", "gce", "url")


def _network(kind: str, policy: Any, where: Optional[str] = None) -> Tuple[Optional[Context], str]:
    """A network source's look, at `where` (`--source`) or where the policy says."""
    conf = _settings(kind, policy)
    if kind == "ec2":
        from contextd.sources import ec2
        return ec2.look(ec2.check_url(where) if where else conf.url, conf.budget,
                        conf.imdsv1_fallback)
    if kind == "url":
        from contextd.sources import urlsource
        return urlsource.look(where or conf.location, conf.budget, conf.ca_bundle)
    from contextd.sources import gce, openstack
    return (gce if kind == "gce" else openstack).look(where or conf.url, conf.budget)


def _settings(kind: str, policy: Any) -> Any:
    """The policy's settings for a network source; their defaults without a policy."""
    if policy is not None:
        return getattr(policy, "url_source" if kind == "url" else kind)
    from contextd import settings
    if kind == "ec2":
        return settings.Ec2Settings()
    if kind == "url":
        return settings.UrlSettings()
    return settings.MetadataSettings(url=settings.GCE_URL if kind == "gce"
                                     else settings.OPENSTACK_URL)


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
    dmi: Dict[str, str] = {}
    if "openstack" in policy.sources or "gce" in policy.sources:
        from contextd.sources import dmi as platform
        dmi = platform.read(root)
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
        elif name in NETWORK:
            ctx, why = _probe(name, policy, dmi)
        elif name in ("config-drive", "nocloud"):
            from contextd.sources import clouddisc
            ctx, why = clouddisc.look(root, name)
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


def _probe(name: str, policy: Any, dmi: Dict[str, str]) -> Tuple[Optional[Context], str]:
    """A network source in detection: ruled out by DMI in microseconds where it cannot be,
    else looked at within its budget; nothing answering at all is a note, not an error."""
    from contextd.sources import dmi as platform

    skip = platform.ruled_out(name, dmi)
    if skip:
        return None, skip
    try:
        return _network(name, policy)
    except NoService as exc:
        return None, exc.one_line()


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
