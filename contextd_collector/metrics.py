"""/metrics in Prometheus text format, read from the database at each scrape, so several
replicas behind one database all export the same numbers.

What it must never do: register in prometheus_client's global registry (tests build many apps
in one process), or put a report's free text (a message) in a label.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from contextd_collector import views


class _Stored(Collector):
    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        counts = views.metric_counts(self.engine)
        families = (
            ("contextd_reports", "Reports stored, by site, VO and outcome",
             ["site", "vo", "outcome"], counts["reports"]),
            ("contextd_instances", "Instances by the outcome of their latest report",
             ["site", "vo", "outcome"], counts["instances"]),
            ("contextd_failures", "Rejected or failed reports stored, by the stage that ended them",
             ["site", "vo", "stage"], counts["failures"]),
        )
        for name, doc, labels, rows in families:
            family = GaugeMetricFamily(name, doc, labels=labels)
            for *values, n in rows:
                family.add_metric([str(v or "") for v in values], float(n))
            yield family


class Metrics:
    """The app's registry: stored counts from the database, and this process's POST answers."""

    def __init__(self, engine: Engine):
        self.registry = CollectorRegistry()
        self.registry.register(_Stored(engine))
        self.posts = Counter("contextd_collector_posts", "POST /v1/reports answers by status",
                             ["status"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
