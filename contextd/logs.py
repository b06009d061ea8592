"""Logging: structured journald entries when systemd-python is there, plain stderr lines otherwise.

Every module logs through the standard `logging` loggers; `setup` (called once by the CLI)
decides where records go. `event` attaches structured fields, which reach the journal as
`CONTEXTD_<NAME>` (CONTEXTD_STAGE, CONTEXTD_OUTCOME, CONTEXTD_PAYLOAD_SHA256, CONTEXTD_VO, ...)
so `journalctl CONTEXTD_OUTCOME=rejected` finds every rejected run.

What it must never do: write a secret. Nothing logs a secret on purpose; as a second line of
defence, every value registered with `add_secret` (the run registers the payload's secret
fields) is replaced by `[secret]` in every line, traceback and field this module writes.

Where records go:
- The journal, when systemd-python is importable: every record, INFO and up (DEBUG with -v),
  with its fields. A record the journal refuses (no journald running) goes to stderr instead.
- stderr, unless the journal gets the records and stderr is the journal too (a service):
  WARNING and up at a terminal, INFO and up with -v or when stderr is the unit's journal
  stream (a service without systemd-python still leaves its audit trail).
- At a terminal, records marked `terminal=False` (the run's outcome, which the CLI prints
  itself; deliveries, which the journal and `report flush` tell) need -v.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set

from contextd.record import fields as record_fields

SYSLOG_IDENTIFIER = "contextd"
_SECRETS: Set[str] = set()
_PRIORITY = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))   # syslog levels


def add_secret(value: Optional[str]) -> None:
    """Never let `value` reach a log line, whatever a message or a command's output holds."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def add_secrets_of(value: Any) -> None:
    """Register every string field that a record marks `repr=False` (contextd's mark for a
    secret: the payload's report.token, a plugin's token), in `value` and what it holds.
    A site plugin's dataclasses count too; `dataclasses` is imported only for them."""
    # contextd.record's fields or dataclasses': both have .name and .repr.
    found: Sequence[Any] = () if isinstance(value, type) else record_fields(value)
    if not found and hasattr(type(value), "__dataclass_fields__"):
        import dataclasses
        found = dataclasses.fields(value)
    if found:
        for f in found:
            item = getattr(value, f.name, None)
            if not f.repr and isinstance(item, str):
                add_secret(item)
            else:
                add_secrets_of(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            add_secrets_of(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            add_secrets_of(item)


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "[secret]")
    return text


def event(logger: logging.Logger, level: int, message: str, terminal: bool = True,
          **fields: Any) -> None:
    """Log `message` with structured fields (names become CONTEXTD_<NAME>; None is left out)."""
    logger.log(level, "%s", message, stacklevel=2,     # CODE_FILE/LINE: the caller's
               extra={"contextd_fields": fields, "contextd_terminal": terminal})


def fields_of(record: logging.LogRecord) -> Dict[str, str]:
    """The record's structured fields as journal fields, redacted."""
    out: Dict[str, str] = {}
    for name, value in (getattr(record, "contextd_fields", None) or {}).items():
        if value is not None:
            out["CONTEXTD_" + name.upper()] = redact(str(value))
    return out


class _TerminalFilter(logging.Filter):
    def __init__(self, show_all: bool):
        super().__init__()
        self.show_all = show_all

    def filter(self, record: logging.LogRecord) -> bool:
        return self.show_all or getattr(record, "contextd_terminal", True)


class _Formatter(logging.Formatter):
    """The whole rendered line is redacted: message, traceback (which another handler may
    already have cached on the record) and stack."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JournalHandler(logging.Handler):
    """Native journal entries through `systemd.journal.send`, with our fields."""

    def __init__(self, journal: Any, fallback: logging.Handler):
        super().__init__()
        self.journal = journal
        self.fallback = fallback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            priority = next((p for level, p in _PRIORITY if record.levelno >= level), 7)
            self.journal.send(message, PRIORITY=str(priority),
                              SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER, LOGGER=record.name,
                              CODE_FILE=record.pathname, CODE_LINE=str(record.lineno),
                              CODE_FUNC=record.funcName, **fields_of(record))
        except Exception:  # noqa: BLE001 - no journald (early boot, container): keep the line
            self.fallback.handle(record)


def _journal_module() -> Any:
    try:
        from systemd import journal  # type: ignore[import]  # optional: systemd-python
    except ImportError:
        return None
    return journal if callable(getattr(journal, "send", None)) else None


def _stderr_is_journal() -> bool:
    """True when systemd connected our stderr to the journal ($JOURNAL_STREAM is dev:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return stream == "%d:%d" % (st.st_dev, st.st_ino)


_installed: List[logging.Handler] = []


def setup(verbose: bool = False) -> None:
    """Route every record as the module docstring says. Safe to call again (tests do)."""
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
    del _installed[:]
    journal = _journal_module()
    service = _stderr_is_journal()

    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(_Formatter("contextd: %(message)s"))
    stderr.addFilter(_TerminalFilter(show_all=verbose or service))
    stderr.setLevel(logging.INFO if verbose or (service and journal is None) else logging.WARNING)
    if journal is not None:
        native = JournalHandler(journal, fallback=stderr)
        native.setFormatter(_Formatter("%(message)s"))
        native.setLevel(logging.DEBUG if verbose else logging.INFO)
        _installed.append(native)
    if journal is None or not service:
        _installed.append(stderr)
    for handler in _installed:
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # urllib3 says "Retrying (Retry(total=1 ...))" at WARNING on every retry; delivery reports
    # the result itself, once, in its own words: -v too shows only those (issue 15).
    logging.getLogger("urllib3").setLevel(logging.CRITICAL)
