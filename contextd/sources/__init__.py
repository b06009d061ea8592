"""Where a context comes from: a named source (`--source`) or detection in policy order.

A source returns a `Context`: the signed payload bytes and signature blobs, what it knows
about the platform (facts), and a bounded reader for files the payload lists. Sources
read; they never execute anything they find and never decide trust.
"""

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from contextd.errors import PayloadError, SourceError, UsageError

MAX_LISTED_FILE = 256 * 1024 * 1024


@dataclass(frozen=True)
class Context:
    kind: str                                    # iso | dir | file | hepix-cdrom | ec2
    location: str
    payload: bytes = field(repr=False)
    signatures: Tuple[bytes, ...] = field(repr=False)
    facts: Dict[str, Optional[str]] = field(default_factory=dict)
    # Opens a file the payload lists, relative to the carrier; None for bundles.
    open_file: Optional[Callable[[str], bytes]] = field(default=None, repr=False)


def fetch(spec: str) -> Context:
    """A context from `--source KIND:PATH`."""
    kind, sep, where = spec.partition(":")
    if not sep or not where:
        raise UsageError("--source %r is not KIND:PATH" % spec,
                         "use iso:PATH, dir:PATH or file:PATH")
    if kind == "iso":
        from contextd.sources import isosource
        return isosource.read(where)
    if kind == "dir":
        from contextd.sources import directory
        return directory.read(where)
    if kind == "file":
        from contextd.sources import bundlefile
        return bundlefile.read(where)
    raise UsageError("--source kind %r is not known" % kind, "use iso:, dir: or file:")


def check_listed_files(ctx: Context, files: Tuple[Tuple[str, str], ...]) -> None:
    """Every file the signed payload lists must be on the carrier with that SHA-256."""
    for path, digest in files:
        _listed(ctx, path, digest)


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
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise SourceError("listed file %r has sha256 %s, the payload says %s"
                          % (path, actual, digest), "the carrier was modified; rebuild it")
    return data
