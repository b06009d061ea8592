"""The ec2 source against a fake metadata service on 127.0.0.1: IMDSv2, the IMDSv1 rule,
token errors, 5xx, timeouts and trickling servers inside one budget, user-data formats,
and `contextd run` with `--source ec2:URL` and with detection."""

import gzip
import json
import socket
import time
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
import yaml

from conftest import run_cli
from contextd.errors import SourceError, UsageError
from contextd.sources import ec2

from fakes_sources import TOKEN, Imds

FAKE_BUNDLE = (b"#contextd-signed-v1\n-----BEGIN CONTEXTD PAYLOAD-----\nY29udGV4dGQ=\n"
               b"-----END CONTEXTD PAYLOAD-----\n-----BEGIN SSH SIGNATURE-----\nc2ln\n"
               b"-----END SSH SIGNATURE-----\n")


@pytest.fixture
def imds():
    server = Imds()
    yield server
    server.close()


def look(imds, budget=2.0, v1=False, per_attempt=ec2.PER_ATTEMPT):
    return ec2.look(imds.url, budget, v1, per_attempt=per_attempt)


def test_v2_happy_path_facts_and_token_on_every_get(imds):
    imds.user_data(FAKE_BUNDLE)
    ctx, why = look(imds)
    assert why == "" and ctx is not None
    assert ctx.kind == "ec2" and ctx.location == imds.url
    assert ctx.payload == b"contextd" and ctx.signatures == (b"sig",)
    assert ctx.facts == {"cloud": "ec2", "instance_id": "i-0123456789abcdef0",
                         "image_id": "ami-0fedcba9876543210", "region": "eu-central-1"}
    assert ctx.details == {"imds": "v2"}
    method, path, headers = imds.requests[0]
    assert (method, path) == ("PUT", "/latest/api/token")
    assert 60 <= int(headers["X-aws-ec2-metadata-token-ttl-seconds"]) <= 21600
    gets = [r for r in imds.requests if r[0] == "GET"]
    assert [p for _, p, _ in gets] == ["/latest/user-data", "/latest/meta-data/instance-id",
                                       "/latest/meta-data/ami-id",
                                       "/latest/meta-data/placement/region"]
    assert all(h.get("X-aws-ec2-metadata-token") == TOKEN for _, _, h in gets)


def test_no_user_data_is_no_context(imds):
    ctx, why = look(imds)
    assert ctx is None and "no user-data (HTTP 404)" in why
    assert imds.paths() == ["PUT /latest/api/token", "GET /latest/user-data"]


def test_missing_region_is_none(imds):
    imds.user_data(FAKE_BUNDLE)
    del imds.routes["/latest/meta-data/placement/region"]
    ctx, _ = look(imds)
    assert ctx.facts["region"] is None and ctx.facts["instance_id"]


@pytest.mark.parametrize("status", [400, 401, 404, 405])
def test_no_token_service_needs_the_v1_opt_in(imds, status):
    imds.token, imds.require_token = status, False
    imds.user_data(FAKE_BUNDLE)
    with pytest.raises(SourceError) as err:
        look(imds)
    message = err.value.one_line()
    assert "offers no IMDSv2 session token (HTTP %d on PUT /latest/api/token)" % status in message
    assert "imdsv1_fallback: true" in message
    assert [m for m, _, _ in imds.requests] == ["PUT"]
    imds.requests.clear()
    ctx, _ = look(imds, v1=True)
    assert ctx.details == {"imds": "v1"} and ctx.facts["instance_id"] == "i-0123456789abcdef0"
    assert all("X-aws-ec2-metadata-token" not in h for m, _, h in imds.requests if m == "GET")


def test_403_on_the_token_is_final_even_with_v1_allowed(imds):
    imds.token, imds.require_token = 403, False
    imds.user_data(FAKE_BUNDLE)
    with pytest.raises(SourceError, match=r"refused a session token \(HTTP 403"):
        look(imds, v1=True)
    assert imds.paths() == ["PUT /latest/api/token"]


def test_5xx_is_retried_then_given_up_with_where(imds):
    imds.token = 503
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        look(imds, budget=5)
    assert time.monotonic() - started < 3
    message = err.value.one_line()
    assert "gave up at PUT /latest/api/token (3 attempts, last: HTTP 503" in message
    assert imds.paths() == ["PUT /latest/api/token"] * 3


def test_a_transient_5xx_is_survived(imds):
    imds.user_data(FAKE_BUNDLE)
    imds.routes["/latest/user-data"] = (500, b"")
    calls = []
    original = ec2.Client._once

    def flaky(self, method, path, *args):
        calls.append(path)
        if path == "/latest/user-data" and calls.count(path) == 2:
            imds.user_data(FAKE_BUNDLE)
        return original(self, method, path, *args)

    ec2.Client._once = flaky
    try:
        ctx, _ = look(imds)
    finally:
        ec2.Client._once = original
    assert ctx is not None and calls.count("/latest/user-data") == 2


@pytest.mark.parametrize(("where", "stops_at", "before"), [
    ("token", "PUT /latest/api/token", "nothing"),
    ("user-data", "GET /latest/user-data", "PUT /latest/api/token"),
])
@pytest.mark.parametrize("how", ["hang", "trickle"])
def test_slow_servers_end_within_the_budget(imds, where, stops_at, before, how):
    if where == "token":
        imds.token = how
    else:
        imds.user_data(b"")
        imds.routes["/latest/user-data"] = how
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        look(imds, budget=1, per_attempt=0.6)
    elapsed = time.monotonic() - started
    assert elapsed < 1.6, elapsed
    message = err.value.one_line()
    assert "the time budget of 1s ran out at %s" % stops_at in message, message
    assert "answered before: %s" % before in message, message
    assert "no complete answer within" in message or "timed out" in message, message
    assert not isinstance(err.value, ec2.NoService)


def test_nothing_listening_is_no_service(imds):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    started = time.monotonic()
    with pytest.raises(ec2.NoService) as err:
        ec2.look("http://127.0.0.1:%d" % port, 5, False)
    assert time.monotonic() - started < 2
    assert "no EC2 metadata service answered" in err.value.one_line()
    assert "connection refused" in err.value.one_line().lower()


def test_never_through_a_proxy(imds, monkeypatch):
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    imds.user_data(FAKE_BUNDLE)
    assert look(imds)[0] is not None


def test_user_data_formats(imds):
    imds.user_data(gzip.compress(FAKE_BUNDLE))
    assert look(imds)[0].payload == b"contextd"
    msg = MIMEMultipart()
    msg.attach(MIMEText("#cloud-config\n{}\n", "cloud-config"))
    msg.attach(MIMEText(FAKE_BUNDLE.decode()))
    imds.user_data(msg.as_bytes())
    ctx, _ = look(imds)
    assert ctx.payload == b"contextd"
    assert ctx.details["ignored_parts"] == [{"part": 1, "type": "text/cloud-config",
                                             "bytes": 17}]
    imds.user_data(b"#cloud-config\n{}\n")
    ctx, why = look(imds)
    assert ctx is None and "is not a contextd bundle" in why
    imds.user_data(b"[cernvm]\nrepositories = atlas.cern.ch\n")
    ctx, _ = look(imds)
    assert ctx.legacy == "amiconfig" and ctx.signatures == ()


def test_bounded_reads_and_hostile_answers(imds):
    imds.user_data(b"x" * (ec2.userdata.MAX_USER_DATA + 1))
    with pytest.raises(SourceError, match="over the limit"):
        look(imds)
    imds.user_data(FAKE_BUNDLE)
    imds.routes["/latest/meta-data/instance-id"] = (200, b"i-1\nX-Injected: yes")
    with pytest.raises(SourceError, match="instance-id is not a plain identifier"):
        look(imds)
    imds.routes["/latest/meta-data/instance-id"] = (302, b"")
    with pytest.raises(SourceError, match="HTTP 302 on GET /latest/meta-data/instance-id"):
        look(imds)


def test_malformed_token_is_refused(imds):
    imds.token = (200, b"bad token\r\nX-Evil: 1")
    with pytest.raises(SourceError, match="malformed session token"):
        look(imds)


def test_expired_token_is_renewed_once(imds):
    imds.user_data(FAKE_BUNDLE)
    normal = imds.routes["/latest/meta-data/ami-id"]
    imds.routes["/latest/meta-data/ami-id"] = (401, b"")     # as if the token had expired
    original_once = ec2.Client._once

    def once(self, method, path, *args):
        result = original_once(self, method, path, *args)
        if path == "/latest/meta-data/ami-id":
            imds.routes[path] = normal
        return result

    ec2.Client._once = once
    try:
        ctx, _ = look(imds)
    finally:
        ec2.Client._once = original_once
    assert ctx.facts["image_id"] == "ami-0fedcba9876543210"
    assert imds.paths().count("PUT /latest/api/token") == 2


def test_url_is_checked():
    with pytest.raises(UsageError):
        ec2.check_url("http://169.254.169.254/latest")
    with pytest.raises(UsageError):
        ec2.check_url("file:///etc/passwd")
    assert ec2.check_url("http://[fd00:ec2::254]/") == "http://[fd00:ec2::254]"


# --------------------------------------------------------------------------------------
# contextd run


def run_detect(site, *extra):
    argv = ["run", "--policy", str(site.policy_path), "--root", str(site.root), "--run-dir",
            str(site.run_dir), "--state-dir", str(site.state_dir)]
    if getattr(site, "spool_dir", None) is not None:
        argv += ["--spool-dir", str(site.spool_dir)]
    return run_cli(argv + list(extra))


def test_run_source_ec2_applies_with_platform_facts(site, imds, payload_doc):
    payload_doc["targets"] = [{"cloud": "ec2", "region": "eu-*", "site": "TEST-SITE"}]
    imds.user_data(gzip.compress(site.bundle(payload_doc).read_bytes()))
    code, out, err = site.run("ec2:%s" % imds.url)
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "applied"
    assert rep["source"] == {"kind": "ec2", "location": imds.url, "imds": "v2"}
    assert rep["host"]["instance_id"] == "i-0123456789abcdef0"
    assert rep["host"]["image"]["image_id"] == "ami-0fedcba9876543210"
    assert TOKEN not in json.dumps(rep) + out + err


def test_detection_reads_ec2_from_the_policy(site, imds):
    site.policy.update(sources=["ec2"], ec2={"url": imds.url, "budget": "2s"})
    site.write_policy()
    code, _, err = run_detect(site)
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "skipped"
    assert "no user-data (HTTP 404)" in rep["message"]
    assert rep["detection"] == ["ec2: EC2 metadata %s has no user-data (HTTP 404)" % imds.url]
    imds.user_data(site.bundle().read_bytes())
    code, _, err = run_detect(site)
    assert code == 0, err
    assert site.report()["outcome"] == "applied"


def test_detection_broken_metadata_is_rejected_not_skipped(site, imds):
    site.policy.update(sources=["ec2"], ec2={"url": imds.url, "budget": "2s"})
    site.write_policy()
    imds.token = 403
    code, _, err = run_detect(site)
    assert code == 1
    assert "refused a session token" in err and "Traceback" not in err
    assert site.report()["stage"] == "fetch"


def test_unlisted_sources_are_never_read(site, imds):
    imds.user_data(FAKE_BUNDLE)
    site.policy.update(sources=[], ec2={"url": imds.url})
    site.write_policy()
    code, _, err = run_detect(site)
    assert code == 0, err
    assert site.report()["outcome"] == "skipped"
    assert imds.requests == []


def test_policy_ec2_url_shape():
    doc = yaml.safe_load("version: 1\nsite: X\nec2: {url: 'http://127.0.0.1:8080'}\n")
    from contextd import policy
    assert policy.parse(doc).ec2.url == "http://127.0.0.1:8080"
