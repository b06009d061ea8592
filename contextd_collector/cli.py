"""`contextd-collector serve|migrate --config FILE` (DESIGN section 3 and 12).

Exit codes as contextd's: 0 ok, 2 usage or configuration error (one line on stderr),
70 a bug.

What it must never do: print a traceback for a known error, or listen on a non-loopback
address without readers (config.parse refuses that).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import List, Optional

from contextd.errors import EXIT_CONFIG, EXIT_OK, CollectorConfigError, ContextdError
from contextd_collector import config as configuration
from contextd_collector import dbops, store

RETENTION_EVERY = 3600.0          # seconds between two retention passes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="contextd-collector",
                                description="Receive, check and store contextd reports.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("serve", "serve the API, the page and /metrics"),
                       ("migrate", "create or upgrade the database schema")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--config", required=True, metavar="FILE")
    return p


def _retention(engine: object, seconds: int) -> None:
    while True:
        try:
            store.expire(engine, time.time() - seconds)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the next pass retries; serving goes on
            print("contextd-collector: retention pass failed: %s" % exc, file=sys.stderr)
        time.sleep(RETENTION_EVERY)


def _check_listen(host: str, port: int) -> None:
    """A taken port or a foreign address is a configuration error (exit 2), not uvicorn's
    exit 1 after a logged traceback."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CollectorConfigError("cannot listen on %s port %d: %s"
                                       % (host, port, exc.strerror or exc),
                                       "change listen in the configuration") from None


def serve(path: str) -> int:
    import uvicorn

    from contextd_collector.app import build

    config = configuration.load(path)
    engine = dbops.open_engine(config.database)
    dbops.require_current(engine, path)
    _check_listen(config.host, config.port)
    if config.retention:
        threading.Thread(target=_retention, args=(engine, config.retention),
                         daemon=True).start()
    print("contextd-collector: serving http://%s:%d/ (database %s)" % (
        "[%s]" % config.host if ":" in config.host else config.host, config.port,
        dbops.shown(config.database)), file=sys.stderr, flush=True)
    uvicorn.run(build(config, engine), host=config.host, port=config.port,
                log_level="warning", access_log=False)
    return EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "migrate":
            config = configuration.load(args.config)
            dbops.migrate(dbops.open_engine(config.database))
            print("contextd-collector: %s is at schema %s" % (
                dbops.shown(config.database), dbops.HEAD))
            return EXIT_OK
        return serve(args.config)
    except ContextdError as exc:
        print("contextd-collector: %s" % exc.one_line(), file=sys.stderr)
        return EXIT_CONFIG


def run() -> None:
    sys.exit(main())
