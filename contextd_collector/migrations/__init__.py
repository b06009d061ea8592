"""Alembic's environment and revisions of the collector's schema (contextd_collector/tables.py).

`contextd-collector migrate` runs them (dbops.migrate) on a connection it hands over in the
Alembic config's attributes; there is no alembic.ini.
"""
