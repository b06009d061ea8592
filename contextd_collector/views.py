"""Reading the fleet out of the database: what the JSON API, the page and /metrics show.

Every listing is bounded (LIMITS.collector_page_rows) and newest first.

What it must never do: write, or return a report body it did not store (bodies are passed
through as parsed JSON, never re-rendered into HTML here).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from sqlalchemy import Engine, func, select

from contextd.limits import LIMITS
from contextd_collector.tables import images, reports

SUMMARY = (reports.c.report_id, reports.c.instance_id, reports.c.hostname, reports.c.site,
           reports.c.vo, reports.c.serial, reports.c.outcome, reports.c.stage,
           reports.c.message, reports.c.finished_at, reports.c.received_at,
           reports.c.authenticated, reports.c.image_sha256)


def _latest_ids() -> Any:
    return select(func.max(reports.c.id)).group_by(reports.c.instance_id)


def instances(engine: Engine, site: Optional[str] = None, vo: Optional[str] = None,
              outcome: Optional[str] = None, since: Optional[float] = None) -> List[Dict[str, Any]]:
    """The latest report of every instance, filtered on that latest report."""
    query = select(*SUMMARY).where(reports.c.id.in_(_latest_ids()))
    for column, value in ((reports.c.site, site), (reports.c.vo, vo),
                          (reports.c.outcome, outcome)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(reports.c.received_at >= since)
    query = query.order_by(reports.c.id.desc()).limit(LIMITS.collector_page_rows)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def instance(engine: Engine, instance_id: str) -> List[Dict[str, Any]]:
    query = (select(*SUMMARY, reports.c.body).where(reports.c.instance_id == instance_id)
             .order_by(reports.c.id.desc()).limit(LIMITS.collector_page_rows))
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    for row in rows:
        row["report"] = json.loads(row.pop("body"))
    return rows


def counts(engine: Engine, since: Optional[float] = None) -> List[Dict[str, Any]]:
    """Per site x VO x payload serial, reports per outcome (received since `since`)."""
    query = select(reports.c.site, reports.c.vo, reports.c.serial, reports.c.outcome,
                   func.count().label("n"))
    if since is not None:
        query = query.where(reports.c.received_at >= since)
    query = query.group_by(reports.c.site, reports.c.vo, reports.c.serial, reports.c.outcome)
    table: Dict[Any, Dict[str, Any]] = {}
    with engine.connect() as conn:
        found: List[Any] = list(conn.execute(query))
    for site, vo, serial, outcome, n in found:
        row = table.setdefault((site or "", vo or "", serial or 0), {
            "site": site, "vo": vo, "serial": serial, "applied": 0, "unchanged": 0,
            "skipped": 0, "rejected": 0, "failed": 0})
        row[outcome] = row.get(outcome, 0) + int(n)
    return [table[key] for key in sorted(table)][:LIMITS.collector_page_rows]


def failures(engine: Engine) -> List[Dict[str, Any]]:
    """The latest report of each instance whose latest run was rejected or failed."""
    query = (select(*SUMMARY).where(reports.c.id.in_(_latest_ids()),
                                    reports.c.outcome.in_(("rejected", "failed")))
             .order_by(reports.c.id.desc()).limit(LIMITS.collector_page_rows))
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def catalogue(engine: Engine) -> List[Dict[str, Any]]:
    """The image catalogue: per manifest digest, who signed it, when seen, run outcomes."""
    outcomes: Dict[str, Dict[str, int]] = {}
    tally = (select(reports.c.image_sha256, reports.c.outcome, func.count())
             .where(reports.c.image_sha256.is_not(None))
             .group_by(reports.c.image_sha256, reports.c.outcome))
    query = (select(images.c.manifest_sha256, images.c.site, images.c.name, images.c.version,
                    images.c.signer, images.c.verified, images.c.problem, images.c.first_seen,
                    images.c.last_seen)
             .order_by(images.c.last_seen.desc()).limit(LIMITS.collector_page_rows))
    with engine.connect() as conn:
        tallied: List[Any] = list(conn.execute(tally))
        for digest, outcome, n in tallied:
            outcomes.setdefault(digest, {})[outcome] = int(n)
        rows = [dict(row._mapping) for row in conn.execute(query)]
    for row in rows:
        row["verified"] = bool(row["verified"])
        row["outcomes"] = outcomes.get(row["manifest_sha256"], {})
    return rows


def metric_counts(engine: Engine) -> Dict[str, List[Any]]:
    """What /metrics exports: reports by site/VO/outcome, failures by site/VO/stage."""
    by_outcome = (select(reports.c.site, reports.c.vo, reports.c.outcome, func.count())
                  .group_by(reports.c.site, reports.c.vo, reports.c.outcome))
    by_stage = (select(reports.c.site, reports.c.vo, reports.c.stage, func.count())
                .where(reports.c.outcome.in_(("rejected", "failed")))
                .group_by(reports.c.site, reports.c.vo, reports.c.stage))
    latest = (select(reports.c.site, reports.c.vo, reports.c.outcome, func.count())
              .where(reports.c.id.in_(_latest_ids()))
              .group_by(reports.c.site, reports.c.vo, reports.c.outcome))
    with engine.connect() as conn:
        return {name: [tuple(r) for r in conn.execute(q)]
                for name, q in (("reports", by_outcome), ("failures", by_stage),
                                ("instances", latest))}
