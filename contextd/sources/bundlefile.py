"""User-data in a single local file, in any format (a bundle, gzip, MIME): `--source
file:PATH` and the policy's `file.path`. A file is a carrier the site or operator named, so
one without a contextd bundle is an error, not "no context"."""

from __future__ import annotations

from contextd.errors import SourceError
from contextd.sources import Context, read_regular, userdata


def read(path: str) -> Context:
    data = read_regular(path, userdata.MAX_USER_DATA, "user-data")   # a FIFO must not hang us
    ctx, why = userdata.context(data, "file", path, "user-data %s" % path)
    if ctx is None:
        raise SourceError(why, "give a file holding a bundle (contextd sign), gzip of one, "
                          "or MIME multipart with one bundle part")
    return ctx
