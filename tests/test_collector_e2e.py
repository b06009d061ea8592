"""End to end: real `contextd run`s (an EC2 metadata fake on 127.0.0.1 gives each VM its
instance id) report into `contextd-collector serve` (uvicorn, a subprocess on 127.0.0.1), on
SQLite and on a throwaway PostgreSQL cluster. A collector killed (SIGKILL) and restarted has
lost nothing it acknowledged; `report flush` after an outage delivers exactly once.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from collector_support import (SITE_KEY, Postgres, Served, collector_cli, config_doc, free_port,
                               get, write_config)
from conftest import Site, fake_commands
from fakes_sources import Imds


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture
def imds():
    server = Imds()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def collector(request, tmp_path):
    url = ("sqlite:///%s" % (tmp_path / "collector.db") if request.param == "sqlite"
           else request.getfixturevalue("postgres").new_database())
    port = free_port()
    path = write_config(tmp_path, config_doc(tmp_path, url, port=port))
    migrated = collector_cli("migrate", "--config", str(path))
    assert migrated.returncode == 0, migrated.stderr
    served = Served(path, port).start()
    yield served
    served.stop()


def vm(tmp_path: Path, keys, imds, collector: Served, name: str, payload_doc) -> Site:
    """A scratch VM of TEST-SITE whose payload and policy send reports to the collector."""
    (tmp_path / name).mkdir()
    site = Site(tmp_path / name, keys)
    url = collector.base + "/v1/reports"
    site.policy["trust"]["atlas"]["allow"]["report"] = {"urls": ["http://127.0.0.1:*/v1/*"]}
    key = site.root / "etc/contextd/report.key"
    key.parent.mkdir(parents=True)
    key.write_text(SITE_KEY + "\n")
    key.chmod(0o600)
    site.policy["report"] = {"urls": [url], "hmac_key_file": "/etc/contextd/report.key"}
    site.write_policy()
    payload_doc["report"]["url"] = url
    imds.routes["/latest/meta-data/instance-id"] = (200, name.encode())
    imds.user_data(site.bundle(payload_doc).read_bytes())
    return site


def instances(collector: Served):
    status, body = get(collector.base + "/v1/instances")
    assert status == 200
    return {r["instance_id"]: r for r in json.loads(body)["instances"]}


def posts(collector: Served, status: int) -> float:
    text = get(collector.base + "/metrics")[1].decode()
    line = 'contextd_collector_posts_total{status="%d"} ' % status
    found = [float(row[len(line):]) for row in text.splitlines() if row.startswith(line)]
    return found[0] if found else 0.0


def test_runs_report_and_survive_a_killed_collector(tmp_path, keys, imds, collector,
                                                    payload_doc):
    ok = vm(tmp_path, keys, imds, collector, "i-applied", copy.deepcopy(payload_doc))
    assert ok.run("ec2:%s" % imds.url)[0] == 0
    bad_doc = copy.deepcopy(payload_doc)
    bad_doc["cvmfs"]["repositories"] = ["evil.example.com"]
    bad = vm(tmp_path, keys, imds, collector, "i-rejected", bad_doc)
    assert bad.run("ec2:%s" % imds.url)[0] == 1
    broken = vm(tmp_path, keys, imds, collector, "i-failed", copy.deepcopy(payload_doc))
    env = fake_commands(tmp_path / "bin", tmp_path / "commands.log", failing="cvmfs_config")
    code, _, err = broken.run("ec2:%s" % imds.url, "--run-commands", env=env)
    assert code == 3, err
    seen = instances(collector)
    assert {k: v["outcome"] for k, v in seen.items()} == {
        "i-applied": "applied", "i-rejected": "rejected", "i-failed": "failed"}
    assert (seen["i-rejected"]["stage"], seen["i-failed"]["stage"]) == ("authorize", "apply")
    for site in (ok, bad, broken):
        assert seen[site.report()["host"]["instance_id"]]["report_id"] == \
            site.report()["report_id"]
        assert list(site.spool_dir.iterdir()) == []              # every copy acknowledged
    # The VO's copy and the site's copy are one report: stored once, the other answered 200.
    assert (posts(collector, 201), posts(collector, 200)) == (3.0, 3.0)
    collector.kill()                                              # SIGKILL, no shutdown
    collector.start()
    assert instances(collector) == seen
    page = get(collector.base + "/")[1].decode()
    assert "i-failed" in page and "i-rejected" in page


def test_flush_after_an_outage_delivers_exactly_once(tmp_path, keys, imds, collector,
                                                     payload_doc):
    site = vm(tmp_path, keys, imds, collector, "i-spooled", payload_doc)
    collector.stop()
    code, _, err = site.run("ec2:%s" % imds.url)
    assert code == 0, err
    assert len(list(site.spool_dir.iterdir())) == 2                # VO's and site's copies
    collector.start()
    code, _, err = site.cli("report", "flush", "--spool-dir", str(site.spool_dir))
    assert code == 0, err
    assert list(site.spool_dir.iterdir()) == []
    assert site.cli("report", "flush", "--spool-dir", str(site.spool_dir))[0] == 0
    assert (posts(collector, 201), posts(collector, 200)) == (1.0, 1.0)
    history = json.loads(get(collector.base + "/v1/instances/i-spooled")[1])["reports"]
    assert [r["report_id"] for r in history] == [site.report()["report_id"]]
