"""contextd-collector's ingest and views, in process (Starlette's TestClient), the same tests on
SQLite and on a real PostgreSQL cluster (tests/collector_support.Postgres).

Reports are signed by contextd.delivery.protocol, the code contextd itself signs with.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from collector_support import (CMS_TOKEN, READER, REPORT_TOKEN, SITE_KEY, Postgres, config_doc,
                               report, signed)
from contextd_collector import config as configuration
from contextd_collector import dbops, store
from contextd_collector.app import build


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "collector.db")
    return request.getfixturevalue("postgres").new_database()


def make(tmp_path: Path, url: str, **kw):
    cfg = configuration.parse(config_doc(tmp_path, url, **kw))
    engine = dbops.open_engine(url)
    dbops.migrate(engine)
    return cfg, engine, TestClient(build(cfg, engine))


@pytest.fixture
def collector(tmp_path, db_url):
    _cfg, engine, client = make(tmp_path, db_url)
    yield client, engine
    engine.dispose()


def send(client, rep, secret=REPORT_TOKEN, **kw):
    body, headers = signed(rep, secret, **kw)
    return client.post("/v1/reports", content=body, headers=headers)


def count_rows(engine) -> int:
    from sqlalchemy import func, select

    from contextd_collector.tables import reports
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(reports)).scalar_one())


def test_stored_once_201_then_200(collector):
    client, engine = collector
    rep = report()
    first, again = send(client, rep), send(client, rep)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["stored"] == "already stored"
    assert count_rows(engine) == 1


def test_site_key_signs_the_sites_copy(collector):
    client, _ = collector
    rep = report(vo=None, outcome="rejected")
    assert send(client, rep, SITE_KEY).status_code == 201
    stored = client.get("/v1/instances/i-0001").json()["reports"][0]
    assert stored["authenticated"] == "site:TEST-SITE"
    assert stored["report"] == rep


def test_migrated_schema_is_the_codes(db_url, tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from contextd_collector.tables import metadata
    engine = dbops.open_engine(db_url)
    dbops.migrate(engine)
    dbops.migrate(engine)                                      # twice: nothing to do
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert dbops.current(engine) == dbops.HEAD


def test_views_latest_per_instance_filters_counts_failures(collector):
    client, _ = collector
    send(client, report("failed", instance="i-1"))
    time.sleep(0.01)
    send(client, report("applied", instance="i-1"))
    send(client, report("rejected", instance="i-2"))
    send(client, report("applied", vo="cms", instance="i-3", serial=7), CMS_TOKEN)
    latest = client.get("/v1/instances").json()["instances"]
    assert {(r["instance_id"], r["outcome"]) for r in latest} == {
        ("i-1", "applied"), ("i-2", "rejected"), ("i-3", "applied")}
    assert [r["instance_id"] for r in client.get("/v1/instances?vo=cms").json()["instances"]] \
        == ["i-3"]
    assert [r["instance_id"] for r in
            client.get("/v1/instances?outcome=rejected&site=TEST-SITE").json()["instances"]] \
        == ["i-2"]
    assert client.get("/v1/instances?since=%d" % (time.time() + 60)).json()["instances"] == []
    assert client.get("/v1/instances?since=2000-01-01T00:00:00Z").json()["instances"]
    assert client.get("/v1/instances?since=yesterday").status_code == 400
    history = client.get("/v1/instances/i-1").json()["reports"]
    assert [r["outcome"] for r in history] == ["applied", "failed"]
    assert client.get("/v1/instances/nope").status_code == 404
    metrics = client.get("/metrics").text
    assert 'contextd_reports{outcome="failed",site="TEST-SITE",vo="atlas"} 1.0' in metrics
    assert 'contextd_failures{site="TEST-SITE",stage="authorize",vo="atlas"} 1.0' in metrics
    assert 'contextd_instances{outcome="applied",site="TEST-SITE",vo="atlas"} 1.0' in metrics
    assert 'contextd_collector_posts_total{status="201"} 4.0' in metrics
    page = client.get("/").text
    assert "i-2" in page and "authorize" in page and "rejected at its stage" in page


def test_concurrent_duplicates_from_two_replicas_end_as_one_row(tmp_path, db_url):
    """Two apps (two replicas) on one database, eight threads posting the same report."""
    _, engine, one = make(tmp_path, db_url)
    _, engine2, two = make(tmp_path, db_url)
    rep, codes = report(), []
    gate = threading.Barrier(8)

    def post(client):
        gate.wait()
        codes.append(send(client, rep).status_code)

    threads = [threading.Thread(target=post, args=((one, two)[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(codes) == [200] * 7 + [201]
    assert count_rows(engine) == 1
    engine.dispose()
    engine2.dispose()


def test_retention_keeps_the_latest_report_of_each_instance(collector):
    client, engine = collector
    for outcome in ("failed", "rejected", "applied"):
        send(client, report(outcome, instance="i-old"))
    send(client, report("applied", instance="i-other"))
    assert store.expire(engine, time.time() + 1) == 2
    latest = client.get("/v1/instances").json()["instances"]
    assert {(r["instance_id"], r["outcome"]) for r in latest} == {
        ("i-old", "applied"), ("i-other", "applied")}
    assert count_rows(engine) == 2


def test_readers_token_guards_every_read_endpoint(tmp_path, db_url):
    _, engine, client = make(tmp_path, db_url, readers=True)
    assert send(client, report()).status_code == 201              # POST needs its HMAC only
    for path in ("/", "/v1/instances", "/v1/instances/i-0001", "/v1/images", "/metrics"):
        refused = client.get(path)
        assert refused.status_code == 401 and "bearer" in refused.json()["error"]
        assert client.get(path, headers={"Authorization": "Bearer wrong-token-xxxxxxxxx"}
                          ).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer %s" % READER}
                          ).status_code == 200
    engine.dispose()


def test_answers_are_one_line_json_never_a_trace(collector):
    client, _ = collector
    for answer in (client.post("/v1/reports", content=b"{", headers=signed(report())[1]),
                   client.post("/v1/reports", content=b"[]", headers=signed(report())[1])):
        assert answer.status_code in (400, 401)
        assert list(answer.json()) == ["error"] and "\n" not in answer.json()["error"]
        assert "Traceback" not in answer.text
    assert json.loads(client.get("/v1/images").text) == {"images": []}
