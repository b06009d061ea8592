"""`python -m contextd_collector`: the same as the contextd-collector command."""

from contextd_collector.cli import run

run()
