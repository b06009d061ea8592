"""A context tree on disk: the directory carrier (`contextd/payload.yaml` and
`contextd/payload.yaml.sig`), or a cloud disc's files copied out (an OpenStack config drive's
`openstack/latest/`, a NoCloud seed's `meta-data` and `user-data`), recognised by content.

`--source dir:PATH` takes the directory holding `contextd/`, or `contextd/` itself.
Listed files are read relative to the directory holding `contextd/`, size-limited.
"""

from __future__ import annotations

import hashlib
import os

from contextd import bundle
from contextd.errors import SourceError
from contextd.sources import MAX_LISTED_FILE, Context, clouddisc, open_regular, read_regular

PAYLOAD = "contextd/payload.yaml"
SIGNATURES = "contextd/payload.yaml.sig"


def _read(path: str, limit: int) -> bytes:
    return read_regular(path, limit, "file")        # regular files only: a FIFO would hang


class Tree:
    """A directory read like an ISO image (clouddisc reads both): regular files only."""

    def __init__(self, base: str):
        self.base = base

    def exists(self, rel: str) -> bool:
        return os.path.exists(os.path.join(self.base, rel))

    def read(self, rel: str, limit: int) -> bytes:
        return _read(os.path.join(self.base, rel), limit)


def read(path: str) -> Context:
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, PAYLOAD)):
        found = clouddisc.layout(Tree(path), "")
        if found is not None:
            ctx, why = clouddisc.from_tree(Tree(path), found, path, "dir")
            if ctx is None:
                raise SourceError(why)
            return ctx
    base = path
    if not os.path.exists(os.path.join(base, PAYLOAD)) and \
            os.path.exists(os.path.join(base, "payload.yaml")):
        base = os.path.dirname(os.path.abspath(base))
    if not os.path.isdir(base):
        raise SourceError("context directory %s does not exist" % path)
    if not os.path.exists(os.path.join(base, PAYLOAD)):
        raise SourceError("context directory %s has no %s" % (path, PAYLOAD))
    payload = _read(os.path.join(base, PAYLOAD), bundle.MAX_BUNDLE)
    sigs = bundle.decode_signatures(_read(os.path.join(base, SIGNATURES), bundle.MAX_BUNDLE),
                                    what=os.path.join(base, SIGNATURES))

    def open_file(rel: str) -> bytes:
        return _read(os.path.join(base, rel), MAX_LISTED_FILE)

    def hash_file(rel: str) -> str:
        return _sha256(os.path.join(base, rel), MAX_LISTED_FILE)

    return Context(kind="dir", location=base, payload=payload, signatures=sigs,
                   open_file=open_file, hash_file=hash_file)


def _sha256(path: str, limit: int) -> str:
    """Streamed, so memory stays flat; refuses files over `limit`."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open_regular(path, "file") as f:
            for chunk in iter(lambda: f.read(1024 * 1024), b""):
                size += len(chunk)
                if size > limit:
                    raise SourceError("%s is larger than %d bytes" % (path, limit))
                digest.update(chunk)
    except OSError as exc:
        raise SourceError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    return digest.hexdigest()
