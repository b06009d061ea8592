"""The GCE metadata server, faked on 127.0.0.1: `Metadata-Flavor: Google` both ways, the
`user-data` attribute in every format, facts (id, image, zone as region), bounds, and a
server that does not say it is Google refused."""

import base64
import gzip
import socket
import time

import pytest

from contextd.errors import NoService, SourceError
from contextd.sources import gce

from fakes_clouds import Server

BASE = gce.BASE
FLAVOR = {"Metadata-Flavor": "Google"}


@pytest.fixture
def google():
    server = Server(headers=FLAVOR)
    server.routes.update({
        BASE + "id": (200, b"4520031799277581759"),
        BASE + "image": (200, b"projects/cern-images/global/images/alma9-worker-20261124"),
        BASE + "zone": (200, b"projects/81234567890/zones/europe-west4-b"),
    })
    yield server
    server.close()


def test_run_with_source_gce(site, google):
    google.routes[gce.USER_DATA_PATH] = (200, gzip.compress(site.bundle().read_bytes()))
    code, _, err = site.run("gce:%s" % google.url)
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "applied" and rep["source"]["kind"] == "gce"
    assert rep["host"]["instance_id"] == "4520031799277581759"
    assert rep["host"]["image"]["image_id"] == \
        "projects/cern-images/global/images/alma9-worker-20261124"
    assert all(h.get("Metadata-Flavor") == "Google" for _, _, h in google.requests)


def test_zone_gives_the_region_for_targets(site, google, payload_doc):
    payload_doc["targets"] = [{"cloud": "gce", "region": "europe-west4"}]
    google.routes[gce.USER_DATA_PATH] = (200, site.bundle(payload_doc).read_bytes())
    ctx, why = gce.look(google.url, 5)
    assert why == "" and ctx.facts == {
        "cloud": "gce", "instance_id": "4520031799277581759",
        "image_id": "projects/cern-images/global/images/alma9-worker-20261124",
        "region": "europe-west4"}
    code, _, err = site.run("gce:%s" % google.url)
    assert code == 0, err


def test_no_attribute_is_no_context(google):
    ctx, why = gce.look(google.url, 5)
    assert ctx is None and "no user-data attribute" in why


def test_a_server_that_is_not_google_is_refused(site):
    impostor = Server()                       # answers, but without Metadata-Flavor
    try:
        impostor.routes[gce.USER_DATA_PATH] = (200, site.bundle().read_bytes())
        before = site.snapshot()
        code, _, err = site.run("gce:%s" % impostor.url)
    finally:
        impostor.close()
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "without Metadata-Flavor: Google" in err
    assert site.snapshot() == before


def test_bad_fact_is_refused(site, google):
    google.routes[gce.USER_DATA_PATH] = (200, site.bundle().read_bytes())
    google.routes[BASE + "id"] = (200, b"12 34")
    with pytest.raises(SourceError, match="instance/id is not a plain identifier"):
        gce.look(google.url, 5)


def test_bounds(google):
    google.routes[gce.USER_DATA_PATH] = "huge"
    with pytest.raises(SourceError, match="over the limit"):
        gce.look(google.url, 5)
    google.routes[gce.USER_DATA_PATH] = "hang"
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"ran out|gave up"):
        gce.look(google.url, 1, per_attempt=0.4)
    assert time.monotonic() - started < 2.5


def test_nothing_there_is_no_service():
    server = Server()
    url = server.url
    server.close()
    with pytest.raises(NoService, match="no GCE metadata service answered"):
        gce.look(url, 1, per_attempt=0.3)


def test_a_host_name_is_resolved_and_the_name_kept(site, google):
    google.routes[gce.USER_DATA_PATH] = (200, site.bundle().read_bytes())
    port = google.url.rsplit(":", 1)[1]
    ctx, why = gce.look("http://localhost:%s" % port, 5)
    assert why == "" and ctx.facts["instance_id"] == "4520031799277581759"
    assert google.requests[0][2]["Host"] == "localhost:%s" % port


def test_a_resolver_that_hangs_costs_the_attempt_not_the_boot(monkeypatch):
    def slow(*args, **kwargs):
        time.sleep(5)
        raise socket.gaierror("never")
    monkeypatch.setattr(socket, "getaddrinfo", slow)
    started = time.monotonic()
    with pytest.raises(NoService, match=r"cannot resolve metadata\.google\.internal within"):
        gce.look("http://metadata.google.internal", 1, per_attempt=0.3)
    assert time.monotonic() - started < 2


def test_user_data_encoding_base64(site, google):
    google.routes[gce.USER_DATA_PATH] = (200, base64.b64encode(site.bundle().read_bytes()))
    google.routes[gce.ENCODING_PATH] = (200, b"base64")
    ctx, why = gce.look(google.url, 5)
    assert why == "" and ctx.kind == "gce"
    google.routes[gce.USER_DATA_PATH] = (200, b"#contextd-signed-v1 but not base64 !!")
    with pytest.raises(SourceError, match="not valid base64"):
        gce.look(google.url, 5)
