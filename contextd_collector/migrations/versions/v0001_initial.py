"""The first schema: reports (unique report_id) and the image catalogue.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("report_id", sa.String(64), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("instance_id", sa.String(255), nullable=False),
        sa.Column("hostname", sa.String(255)),
        sa.Column("site", sa.String(64)),
        sa.Column("vo", sa.String(64)),
        sa.Column("serial", sa.BigInteger),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(64)),
        sa.Column("message", sa.Text),
        sa.Column("finished_at", sa.String(40)),
        sa.Column("authenticated", sa.String(80), nullable=False),
        sa.Column("image_sha256", sa.String(64)),
        sa.Column("body", sa.Text, nullable=False),
        sa.UniqueConstraint("report_id", name="uq_reports_report_id"),
    )
    op.create_index("ix_reports_instance", "reports", ["instance_id", "id"])
    op.create_index("ix_reports_received", "reports", ["received_at"])
    op.create_table(
        "images",
        sa.Column("manifest_sha256", sa.String(64), primary_key=True),
        sa.Column("site", sa.String(64)),
        sa.Column("name", sa.String(255)),
        sa.Column("version", sa.String(255)),
        sa.Column("signer", sa.String(255)),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("problem", sa.Text),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("manifest", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("images")
    op.drop_index("ix_reports_received", "reports")
    op.drop_index("ix_reports_instance", "reports")
    op.drop_table("reports")
