"""A bundle in a single local file (gzip or not): `--source file:PATH`."""

from __future__ import annotations

from contextd import bundle
from contextd.errors import SourceError
from contextd.sources import Context


def read(path: str) -> Context:
    try:
        with open(path, "rb") as f:
            data = f.read(bundle.MAX_BUNDLE + 1)
    except OSError as exc:
        raise SourceError("cannot read bundle %s: %s" % (path, exc.strerror or exc))
    if len(data) > bundle.MAX_BUNDLE:
        raise SourceError("bundle %s is larger than %d bytes" % (path, bundle.MAX_BUNDLE))
    parsed = bundle.decode(data, what="bundle %s" % path)
    return Context(kind="file", location=path, payload=parsed.payload,
                   signatures=parsed.ssh_signatures)
