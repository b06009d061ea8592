"""A bundle in a single local file (gzip or not): `--source file:PATH`."""

from __future__ import annotations

from contextd import bundle
from contextd.sources import Context, read_regular


def read(path: str) -> Context:
    data = read_regular(path, bundle.MAX_BUNDLE, "bundle")     # a FIFO there must not hang us
    parsed = bundle.decode(data, what="bundle %s" % path)
    return Context(kind="file", location=path, payload=parsed.payload,
                   signatures=parsed.ssh_signatures)
