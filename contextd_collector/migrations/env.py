"""Alembic's env.py: migrate the connection dbops.migrate opened (online mode only).

What it must never do: open a connection of its own, or read a URL from anywhere else.
"""

from __future__ import annotations

from alembic import context

from contextd_collector.tables import metadata

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds the table instead.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
