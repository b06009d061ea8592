"""Running `contextd` in this process (cli.main), as the operator tests do for speed, without
leaving anything behind for the tests after them: cli.main installs logging handlers on the
stream it finds (pytest's capture, closed after the test) and registers the payload's secrets
for redaction, both process-wide."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from contextd import logs


def isolated() -> Iterator[None]:
    """Use as an autouse fixture: `yield from isolated()`."""
    secrets = set(logs._SECRETS)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        del logs._installed[:]
        root.setLevel(level)
        logs._SECRETS.clear()
        logs._SECRETS.update(secrets)


kept_clean = contextlib.contextmanager(isolated)    # the same, as a `with` block
