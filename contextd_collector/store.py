"""Writing reports: once per report_id, in one transaction with its image; and retention.

What it must never do: tell the caller a report is stored before the transaction committed,
or delete an instance's latest report.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Mapping, Optional

from sqlalchemy import Engine, case, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from contextd_collector.auth import Image
from contextd_collector.tables import images, reports


def engine_for(url: str) -> Engine:
    """An Engine; SQLite waits for a lock instead of failing, and writes ahead (WAL)."""
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
    return engine


def _text(value: Any, size: int) -> Optional[str]:
    return value[:size] if isinstance(value, str) else None


def row_of(report: Mapping[str, Any], who: str, body: bytes, image: Optional[Image],
           now: float) -> Dict[str, Any]:
    host = report.get("host") or {}
    payload = report.get("payload") if isinstance(report.get("payload"), dict) else {}
    serial = (payload or {}).get("serial")
    hostname = _text(host.get("hostname"), 255)
    instance = _text(host.get("instance_id"), 255) or "host:%s" % (hostname or "?")
    return {
        "report_id": report["report_id"], "received_at": now, "instance_id": instance[:255],
        "hostname": hostname, "site": _text(host.get("site"), 64),
        "vo": _text((payload or {}).get("vo"), 64),
        "serial": serial if isinstance(serial, int) and not isinstance(serial, bool)
        and 0 <= serial < 2 ** 63 else None,
        "outcome": report["outcome"], "stage": _text(report.get("stage"), 64),
        "message": _text(report.get("message"), 4096),
        "finished_at": _text(report.get("finished_at"), 40), "authenticated": who,
        "image_sha256": image.sha256 if image else None, "body": body.decode("ascii", "replace"),
    }


def _upsert_image(engine: Engine, image: Image, now: float) -> Any:
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    values = {"manifest_sha256": image.sha256, "site": image.site, "name": image.name,
              "version": image.version, "signer": image.signer, "verified": image.verified,
              "problem": image.problem, "first_seen": now, "last_seen": now,
              "manifest": image.manifest}
    stmt = dialect.insert(images).values(**values)
    # A verified sighting wins over an unverified one (the same bytes, checked again).
    new = stmt.excluded
    return stmt.on_conflict_do_update(index_elements=[images.c.manifest_sha256], set_={
        "last_seen": new.last_seen,
        "verified": case((new.verified, True), else_=images.c.verified),
        "signer": case((new.verified, new.signer), else_=images.c.signer),
        "problem": case((new.verified, None), else_=images.c.problem)})


def store(engine: Engine, report: Mapping[str, Any], who: str, body: bytes,
          image: Optional[Image], now: Optional[float] = None) -> bool:
    """True: stored now; False: this report_id was already stored. Returns after commit."""
    now = time.time() if now is None else now
    try:
        with engine.begin() as conn:
            conn.execute(reports.insert().values(**row_of(report, who, body, image, now)))
            if image is not None:
                conn.execute(_upsert_image(engine, image, now))
    except IntegrityError:
        with engine.connect() as conn:
            found = conn.execute(select(reports.c.id).where(
                reports.c.report_id == report["report_id"])).first()
        if found is None:
            raise
        return False
    return True


def expire(engine: Engine, older_than: float) -> int:
    """Delete reports received before `older_than`, each instance's latest kept; how many."""
    latest = select(func.max(reports.c.id)).group_by(reports.c.instance_id)
    with engine.begin() as conn:
        result = conn.execute(reports.delete().where(
            reports.c.received_at < older_than, reports.c.id.not_in(latest)))
    return int(result.rowcount or 0)


def parsed(body: str) -> Any:
    return json.loads(body)
