"""The Nova metadata service on 127.0.0.1 (and ::1): no token (404 on the PUT, never needed),
facts from meta_data.json, one budget against slow, failing and huge answers, DMI ruling it
out in milliseconds where it cannot be, and the policy's `openstack` section."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from contextd.errors import NoService, SourceError, UsageError
from contextd.sources import openstack

from fakes_clouds import UUID, Server, dmi, nova_meta

USER_DATA, META = openstack.USER_DATA_PATH, openstack.META_PATH


@pytest.fixture
def nova():
    server = Server()
    server.routes[META] = (200, json.dumps(nova_meta()).encode())
    yield server
    server.close()


def detect_run(site):
    return site.cli("run", "--policy", str(site.policy_path), "--root", str(site.root),
                    "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir),
                    "--spool-dir", str(site.spool_dir))


def test_run_with_source_openstack(site, nova):
    nova.routes[USER_DATA] = (200, site.bundle().read_bytes())
    code, _, err = site.run("openstack:%s" % nova.url)
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "applied"
    assert rep["source"] == {"kind": "openstack", "location": nova.url}
    assert rep["host"]["instance_id"] == UUID
    assert nova.paths() == ["GET %s" % USER_DATA, "GET %s" % META]   # no token PUT


def test_ipv6_loopback(site):
    nova = Server("::1")
    try:
        nova.routes[META] = (200, json.dumps(nova_meta()).encode())
        nova.routes[USER_DATA] = (200, site.bundle().read_bytes())
        assert nova.url.startswith("http://[::1]:")
        ctx, why = openstack.look(nova.url, 5)
    finally:
        nova.close()
    assert why == "" and ctx.facts["instance_id"] == UUID


def test_no_user_data_is_no_context(nova):
    ctx, why = openstack.look(nova.url, 5)
    assert ctx is None and "has no user_data (HTTP 404)" in why
    assert nova.paths() == ["GET %s" % USER_DATA]


def test_5xx_is_retried_then_an_error_that_says_where(nova):
    nova.routes[USER_DATA] = (503, b"")
    with pytest.raises(SourceError) as err:
        openstack.look(nova.url, 5)
    assert not isinstance(err.value, NoService)
    assert "it gave up at GET /openstack/latest/user_data (3 attempts, last: HTTP 503" in \
        err.value.one_line()


def test_slow_service_stops_at_the_budget(nova):
    nova.routes[USER_DATA] = "trickle"
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"time budget of 1\.5s ran out|gave up"):
        openstack.look(nova.url, 1.5, per_attempt=0.5)
    assert time.monotonic() - started < 3


def test_huge_answer_is_cut_at_the_bound(nova):
    nova.routes[USER_DATA] = "huge"
    with pytest.raises(SourceError, match="over the limit of 1048576 bytes"):
        openstack.look(nova.url, 5)


def test_missing_meta_data_is_an_error(nova, site):
    nova.routes[USER_DATA] = (200, site.bundle().read_bytes())
    del nova.routes[META]
    with pytest.raises(SourceError, match=r"has no /openstack/latest/meta_data\.json"):
        openstack.look(nova.url, 5)


def test_nothing_listening_is_no_service():
    server = Server()
    url = server.url
    server.close()
    started = time.monotonic()
    with pytest.raises(NoService):
        openstack.look(url, 2, per_attempt=0.3)
    assert time.monotonic() - started < 2.5


def test_bad_url_is_usage():
    with pytest.raises(UsageError):
        openstack.look("http://169.254.169.254/openstack", 5)


def test_cli_bad_spec_and_bad_policy_exit_2(site):
    code, _, err = site.run("openstack:ftp://x")
    assert code == 2 and len(err.strip().splitlines()) == 1
    site.policy["openstack"] = {"url": "http://u:p@169.254.169.254"}
    site.write_policy()
    code, _, err = site.cli("policy", "check", str(site.policy_path))
    assert code == 2 and "openstack.url" in err


def test_detection_dmi_rules_it_out_in_milliseconds(site):
    dmi(site.root, sys_vendor="Google", product_name="Google Compute Engine")
    site.policy["sources"] = ["openstack"]
    site.policy["openstack"] = {"url": "http://127.0.0.1:9", "budget": "20s"}
    site.write_policy()
    started = time.monotonic()
    code, _, err = detect_run(site)
    assert code == 0, err
    assert time.monotonic() - started < 8          # a CLI start, not a 20 s budget
    rep = site.report()
    assert rep["outcome"] == "skipped"
    assert any("openstack: skipped: DMI says this is" in n and "Google Compute Engine" in n
               for n in rep["detection"])


def test_detection_on_nova_dmi_probes_and_applies(site, nova):
    dmi(site.root, sys_vendor="OpenStack Foundation", product_name="OpenStack Nova")
    nova.routes[USER_DATA] = (200, site.bundle().read_bytes())
    site.policy["sources"] = ["gce", "openstack"]
    site.policy["openstack"] = {"url": nova.url, "budget": "10s"}
    site.policy["gce"] = {"url": "http://127.0.0.1:9"}
    site.write_policy()
    code, _, err = detect_run(site)
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "applied" and rep["source"]["kind"] == "openstack"
    assert any(n.startswith("gce: skipped: DMI") for n in rep["detection"])


GENERATOR = Path(__file__).resolve().parent.parent / "packaging/systemd/contextd-generator"


@pytest.mark.parametrize(("sources", "wants"), [
    (["openstack"], True), (["config-drive", "gce"], True), (["url"], True),
    (["ec2"], True), (["config-drive", "nocloud", "hepix-cdrom"], False)])
def test_generator_wants_the_network_for_every_network_source(tmp_path, sources, wants):
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"version": 1, "site": "S", "sources": sources}))
    out = tmp_path / "gen"
    subprocess.run([sys.executable, str(GENERATOR), str(out)], check=True, timeout=30,
                   env=dict(os.environ, CONTEXTD_GENERATOR_POLICY=str(policy)))
    dropin = out / "contextd.service.d/50-network-online.conf"
    assert dropin.exists() == wants
