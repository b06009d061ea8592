"""Opening the database and migrating it (Alembic, programmatically: no alembic.ini).

What it must never do: show a database password (URLs are shown with it hidden), or start
serving on a schema older than the code's.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from contextd.errors import CollectorConfigError
from contextd_collector import store

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0001"


def shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def open_engine(url: str) -> Engine:
    try:
        engine = store.engine_for(url)
    except (ArgumentError, SQLAlchemyError, ImportError) as exc:
        raise CollectorConfigError("database %s cannot be used: %s"
                                   % (shown(url), str(exc).splitlines()[0])) from None
    if engine.dialect.name not in ("sqlite", "postgresql"):
        raise CollectorConfigError("database %s: only SQLite and PostgreSQL are supported"
                                   % shown(url))
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        Path(engine.url.database or "").parent.mkdir(parents=True, exist_ok=True)
    return engine


def _alembic(connection: object) -> object:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    from alembic import command

    try:
        with engine.begin() as conn:
            command.upgrade(_alembic(conn), "head")  # type: ignore[arg-type]
    except SQLAlchemyError as exc:
        raise CollectorConfigError("cannot migrate %s: %s" % (
            shown(str(engine.url)), str(exc).splitlines()[0])) from None


def current(engine: Engine) -> str:
    """The schema revision the database is at ("" when never migrated)."""
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return ""
            from sqlalchemy import text

            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    except SQLAlchemyError as exc:
        raise CollectorConfigError("cannot open database %s: %s" % (
            shown(str(engine.url)), str(exc).splitlines()[0])) from None
    return str(row[0]) if row else ""


def require_current(engine: Engine, config_path: str) -> None:
    at = current(engine)
    if at != HEAD:
        raise CollectorConfigError(
            "database %s is at schema %s, this collector needs %s"
            % (shown(str(engine.url)), at or "(none)", HEAD),
            "run 'contextd-collector migrate --config %s' first" % config_path)
