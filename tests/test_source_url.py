"""User-data from a URL (`url.location`, `--source url:URL`): bounded in size and time, no
redirect, TLS verified (against url.ca_bundle, else the system's CAs), the query never
shown; the policy's `url` section checked."""

import ssl
import time

import pytest

from contextd.errors import SourceError, UsageError
from contextd.sources import urlsource

from fakes_clouds import Server
from test_report_tls import make_ca, make_server_cert

PATH = "/vo/atlas/user-data"


@pytest.fixture
def web():
    server = Server()
    yield server
    server.close()


def tls_server(tmp):
    ca_key, ca_cert = make_ca("test CA")
    context = make_server_cert(ca_key, ca_cert, tmp, "server")
    from cryptography.hazmat.primitives import serialization
    ca_file = tmp / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return Server(tls=context), ca_file


def test_policy_url_source_applies(site, web):
    web.routes[PATH + "?token=s3cret"] = (200, site.bundle().read_bytes())
    site.policy["sources"] = ["url"]
    site.policy["url"] = {"location": web.url + PATH + "?token=s3cret", "budget": "5s"}
    site.write_policy()
    code, _, err = site.cli("run", "--policy", str(site.policy_path), "--root", str(site.root),
                            "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir),
                            "--spool-dir", str(site.spool_dir))
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "applied"
    assert rep["source"] == {"kind": "url", "location": web.url + PATH}
    assert "s3cret" not in (site.run_dir / "report.json").read_text()


def test_404_is_no_context_and_redirect_is_refused(web):
    ctx, why = urlsource.look(web.url + PATH, 5)
    assert ctx is None and "HTTP 404" in why
    web.routes[PATH] = (302, b"", {"Location": "http://127.0.0.1:9/elsewhere"})
    with pytest.raises(SourceError) as err:
        urlsource.look(web.url + PATH, 5)
    assert "answered HTTP 302" in err.value.one_line()
    assert "follows no redirects" in err.value.one_line()
    assert web.paths() == ["GET %s" % PATH, "GET %s" % PATH]


def test_size_and_time_bounds(web):
    web.routes[PATH] = "huge"
    with pytest.raises(SourceError, match="over the limit"):
        urlsource.look(web.url + PATH, 5)
    web.routes[PATH + "?token=s3cret"] = "trickle"
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"ran out|gave up"):
        urlsource.look(web.url + PATH + "?token=s3cret", 1, per_attempt=0.4)
    assert time.monotonic() - started < 2.5


def test_query_is_never_in_a_message(web):
    web.routes[PATH + "?token=s3cret"] = (500, b"")
    with pytest.raises(SourceError) as err:
        urlsource.look(web.url + PATH + "?token=s3cret", 2, per_attempt=0.3)
    assert "s3cret" not in err.value.one_line() and PATH in err.value.one_line()


def test_tls_is_verified(site, tmp_path):
    server, ca_file = tls_server(tmp_path)
    try:
        server.routes[PATH] = (200, site.bundle().read_bytes())
        with pytest.raises(SourceError) as err:            # the system's CAs: not trusted
            urlsource.look(server.url + PATH, 3, per_attempt=1)
        assert "CERTIFICATE_VERIFY_FAILED" in err.value.one_line() or \
            "certificate verify failed" in err.value.one_line()
        assert server.requests == []                       # nothing sent before the check
        ctx, why = urlsource.look(server.url + PATH, 5, ca_bundle=str(ca_file))
        assert why == "" and ctx.kind == "url"
    finally:
        server.close()


@pytest.mark.parametrize("spec", ["url:ftp://x/y", "url:http://user:pw@127.0.0.1/y",
                                  "url:http://127.0.0.1/a/../b"])
def test_bad_spec_is_usage_exit_2(site, spec):
    code, _, err = site.run(spec)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "pw" not in err


def test_policy_checks(site):
    site.policy["sources"] = ["url"]
    site.write_policy()
    code, _, err = site.cli("policy", "check", str(site.policy_path))
    assert code == 2 and "url.location" in err
    site.policy["url"] = {"location": "https://x.example.org/u", "ca_bundle": "relative.pem"}
    site.write_policy()
    code, _, err = site.cli("policy", "check", str(site.policy_path))
    assert code == 2 and "ca_bundle" in err
    site.policy["url"] = {"location": "https://x.example.org/u?t=1"}
    site.write_policy()
    code, out, err = site.cli("policy", "check", str(site.policy_path))
    assert code == 0, err
    assert "https://x.example.org/u?t=1" in out


def test_urlsource_split():
    assert urlsource.split("https://H.example.org:8443/a/b?x=1") == \
        ("https://h.example.org:8443", "/a/b?x=1")
    with pytest.raises(UsageError):
        urlsource.split("https://h/#frag")
    assert ssl.HAS_SNI
