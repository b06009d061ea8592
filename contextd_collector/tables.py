"""The collector's schema, one for SQLite and PostgreSQL (SQLAlchemy Core tables).

Alembic's migrations (migrations/versions/) create exactly this; tests/test_collector_*
compare the migrated database with it.

What it must never do: hold a secret (tokens and keys stay in the configuration), or let two
rows share a `report_id` (the unique constraint is what makes concurrent duplicates from two
replicas end as one row).
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String,
                        Table, Text, UniqueConstraint)

metadata = MetaData()

reports = Table(
    "reports", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("report_id", String(64), nullable=False),
    Column("received_at", Float, nullable=False),          # unix seconds, the collector's clock
    Column("instance_id", String(255), nullable=False),    # host.instance_id, else hostname
    Column("hostname", String(255)),
    Column("site", String(64)),
    Column("vo", String(64)),
    Column("serial", BigInteger),
    Column("outcome", String(16), nullable=False),
    Column("stage", String(64)),
    Column("message", Text),
    Column("finished_at", String(40)),
    Column("authenticated", String(80), nullable=False),   # "vo:atlas" or "site:CERN-PROD"
    Column("image_sha256", String(64)),
    Column("body", Text, nullable=False),                  # the report exactly as received
    UniqueConstraint("report_id", name="uq_reports_report_id"),
)
Index("ix_reports_instance", reports.c.instance_id, reports.c.id)
Index("ix_reports_received", reports.c.received_at)

images = Table(
    "images", metadata,
    Column("manifest_sha256", String(64), primary_key=True),
    Column("site", String(64)),
    Column("name", String(255)),
    Column("version", String(255)),
    Column("signer", String(255)),                         # the site image key that verified
    Column("verified", Boolean, nullable=False),           # by the collector, not the VM's word
    Column("problem", Text),                               # why not verified
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("manifest", Text),
)
