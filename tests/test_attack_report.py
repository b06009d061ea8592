"""Attacks on where reports go and what they say: report-URL globs, delivery credentials,
secret fields in error messages, metadata URLs, `crl: off` and Puppet certnames.

Each attack runs contextd for real (a subprocess, a receiver on 127.0.0.1) and asserts what
must not happen; on the code before issue 12 each of them happened.
"""

import datetime
import json

import pytest

from conftest import REPORT_TOKEN, TOKEN
from test_report_delivery import Receiver, reporting_site, scan_for_secrets

from contextd.errors import ContextdError, PayloadError


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def vo_requests(receiver, but=("/site",)):
    """Every request that reached the receiver other than the site's own copy."""
    return [r for r in receiver.requests if r["path"] not in but]


# -- 6. reports go only where allowed ----------------------------------------------------------

@pytest.mark.parametrize("path", ["/.example.org/", "/#.example.org/", "/?.example.org/"])
def test_a_host_glob_does_not_match_into_the_path_or_fragment(site, payload_doc, receiver, path):
    bundle = reporting_site(site, payload_doc, receiver)
    site.policy["trust"]["atlas"]["allow"]["report"] = {"urls": ["http://*.example.org/*"]}
    site.write_policy()
    payload_doc["report"]["url"] = receiver.url(path)
    bundle = site.bundle(payload_doc)
    code, _, err = site.run("file:%s" % bundle)
    assert vo_requests(receiver) == [], "the VO's report went to %s" % receiver.url(path)
    assert code == 1 and "report.url" in err
    assert len(receiver.acknowledged("/site")) == 1


def test_userinfo_in_the_report_url_is_refused(site, payload_doc, receiver):
    reporting_site(site, payload_doc, receiver)
    site.policy["trust"]["atlas"]["allow"]["report"] = {"urls": ["http://*:*/vo"]}
    site.write_policy()
    payload_doc["report"]["url"] = "http://vo.example.org:x@127.0.0.1:%d/vo" % receiver.port
    code, _, err = site.run("file:%s" % site.bundle(payload_doc))
    assert vo_requests(receiver) == []
    assert code == 1 and "report.url" in err and "user" in err


def test_the_payload_url_that_was_matched_is_the_one_delivered_to(site, payload_doc, receiver):
    """An IDN host is matched and sent in its one ASCII form; IPv6 literals and explicit
    default ports are matched as what they are."""
    reporting_site(site, payload_doc, receiver)
    site.policy["trust"]["atlas"]["allow"]["report"] = {"urls": ["http://127.0.0.1:*/vo*"]}
    site.write_policy()
    payload_doc["report"]["url"] = "http://127.0.0.1:%d/vo?run=1" % receiver.port
    code, _, err = site.run("file:%s" % site.bundle(payload_doc))
    assert code == 0, err
    assert [r["path"] for r in vo_requests(receiver)] == ["/vo?run=1"]


@pytest.mark.parametrize(("glob", "problem"), [
    ("http://u:p@*.example.org/*", "user"),
    ("http://*.example.org/#x", "fragment"),
    ("http://*.exa/mple.org", None),            # fine: host *.exa, path /mple.org
    ("ftp://*.example.org/*", "scheme"),
    ("http://*.exa mple.org/*", "host"),
    ("http://[::1/*", "host"),
    ("http://*.example.org:99999/*", "port"),
    ("http://*.example.org:/*", "port"),
    ("https://", "host"),
])
def test_policy_globs_are_parsed_at_load(site, glob, problem):
    site.policy["trust"]["atlas"]["allow"]["report"] = {"urls": [glob]}
    site.write_policy()
    code, _, err = site.cli("policy", "check", str(site.policy_path))
    if problem is None:
        assert code == 0, err
    else:
        assert code == 2 and "allow.report.urls[0]" in err and problem in err, err
        assert "Traceback" not in err


def test_the_sites_own_report_urls_refuse_userinfo(site):
    site.policy["report"] = {"urls": ["https://admin:pw@monitor.example.org/contextd"]}
    site.write_policy()
    code, _, err = site.cli("policy", "check", str(site.policy_path))
    assert code == 2 and "report.urls[0]" in err and "pw" not in err


MATCHES = [
    ("https://*.example.org/*", "https://pilot.example.org/reports", True),
    ("https://*.example.org/*", "https://a.b.example.org/", True),
    ("https://*.example.org/*", "https://PILOT.Example.ORG/x", True),
    ("https://*.example.org/*", "https://pilot.example.org", True),     # empty path is "/"
    ("https://*.example.org/*", "https://pilot.example.org:443/x", True),
    ("https://*.example.org/*", "https://pilot.example.org:8443/x", False),
    ("https://*.example.org:*/*", "https://pilot.example.org:8443/x", True),
    ("https://*.example.org/*", "http://pilot.example.org/x", False),
    ("https://*.example.org/*", "https://example.org/x", False),
    ("https://*.example.org/*", "https://evil.com/.example.org/", False),
    ("https://*.example.org/*", "https://evil.com/?.example.org/", False),
    ("https://*.example.org/*", "https://evil.com.example.org.evil.com/", False),
    ("https://*.example.org/r/*", "https://a.example.org/x/../r/y", False),
    ("https://*.example.org/*", "https://b\u00fccher.example.org/", True),
    ("https://xn--bcher-kva.example.org/*", "https://b\u00fccher.example.org/", True),
    ("https://b\u00fccher.example.org/*", "https://xn--bcher-kva.example.org/", True),
    ("http://[::1]:*/vo", "http://[::1]:8080/vo", True),
    ("http://[::1]:*/vo", "http://[0:0::1]:8080/vo", True),
    ("http://127.0.0.1/vo", "http://127.0.0.1/vo", True),
    ("http://127.0.0.1/vo", "http://127.0.0.1:80/vo", True),
    ("http://127.0.0.1/vo", "http://127.0.0.1:8080/vo", False),
    ("http://*/vo", "http://[::1]/vo", True),
]


@pytest.mark.parametrize(("glob", "url", "allowed"), MATCHES)
def test_url_glob_matching(glob, url, allowed):
    from contextd import urls
    pattern = urls.parse_glob(glob)
    try:
        canonical = urls.canonical(url)
    except ValueError:
        assert not allowed
        return
    assert pattern.matches(canonical) is allowed


@pytest.mark.parametrize("url", [
    "https://u@pilot.example.org/", "https://u:p@pilot.example.org/",
    "https://pilot.example.org/#frag", "https://pilot.example.org/x#",
    "https://pilot..example.org/", "https://pilot.example.org./", "https://%65vil.org/",
    "https://[fe80::1%25eth0]/", "https://[::1/", "https://pilot.example.org:0/",
    "https://pilot.example.org:99999/", "https://pilot.example.org/a/../b",
    "https://pilot.example.org/a/%2e%2E/b", "https://pilot.example.org/a%2f..%2fb",
    "https://pilot.example.org\\@evil.com/",
    "ftp://pilot.example.org/", "https:///x", "https://" + "a" * 64 + ".org/",
    "https://pilot.example.org/\u00e9", "https://pilot.example.org/a b",
])
def test_urls_that_do_not_canonicalise(url):
    from contextd import urls
    # urls' own refusal ("has ...", "holds ..."), not a ValueError from deeper down
    with pytest.raises(ValueError, match=r"^(is|has|holds|must) "):
        urls.canonical(url)


def test_canonical_form():
    from contextd import urls
    assert urls.canonical("HTTPS://B\u00fccher.Example.org:443/a?b=1") == \
        "https://xn--bcher-kva.example.org/a?b=1"
    assert urls.canonical("http://[0:0::1]:8080") == "http://[::1]:8080/"


# -- 6. deliveries take no credentials from the environment -----------------------------------

def test_netrc_credentials_are_not_sent_to_the_report_url(site, payload_doc, receiver, tmp_path,
                                                          monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine 127.0.0.1 login root password r00t-netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(netrc))
    bundle = reporting_site(site, payload_doc, receiver)
    code, _, err = site.run("file:%s" % bundle)
    assert code == 0, err
    assert {r["path"] for r in receiver.requests} == {"/vo", "/site"}
    for request in receiver.requests:
        assert "Authorization" not in request["headers"], request["path"]


def test_proxy_variables_are_still_honoured(site, payload_doc, receiver, monkeypatch):
    """The receiver plays the proxy: it sees the absolute URL in the request line."""
    reporting_site(site, payload_doc, receiver)
    site.policy["trust"]["atlas"]["allow"]["report"] = {"urls": ["http://*.example.org/*"]}
    site.policy["report"] = {"urls": []}
    site.write_policy()
    payload_doc["report"]["url"] = "http://reports.example.org/vo"
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:%d" % receiver.port)
    monkeypatch.setenv("NO_PROXY", "localhost")
    code, _, err = site.run("file:%s" % site.bundle(payload_doc))
    assert code == 0, err
    assert [r["path"] for r in receiver.requests] == ["http://reports.example.org/vo"]


def test_requests_ca_bundle_from_the_environment_is_not_trusted(site, payload_doc, tmp_path,
                                                                monkeypatch):
    from test_report_tls import make_ca, make_server_cert
    from cryptography.hazmat.primitives import serialization

    ca_key, ca = make_ca("env CA")
    receiver = Receiver(make_server_cert(ca_key, ca, tmp_path, "server")).start()
    try:
        bundle_path = tmp_path / "env-ca.pem"
        bundle_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle_path))
        monkeypatch.setenv("CURL_CA_BUNDLE", str(bundle_path))
        reporting_site(site, payload_doc, receiver)
        site.policy["trust"]["atlas"]["allow"]["report"] = {"urls": ["https://127.0.0.1:*/vo"]}
        site.write_policy()
        code, _, err = site.run("file:%s" % site.bundle(payload_doc))
        assert code == 0, err
        assert receiver.requests == []        # verified against the default store, not $ENV's
    finally:
        receiver.stop()


# -- 7. secrets never echo -------------------------------------------------------------------

BAD_REPORT_TOKEN = "bad-r3p0rt-t0ken-5ecret-0123456789$"
BAD_CONDOR_TOKEN = "eyJhbGciOiJIUzI1NiJ9.bad-condor-5ecret-0123456789$"


@pytest.mark.parametrize(("section", "value"), [("report", BAD_REPORT_TOKEN),
                                            ("htcondor", BAD_CONDOR_TOKEN),
                                            ("report", "x" * 5000),
                                            ("report", "sh0rt")])
def test_a_malformed_secret_is_never_echoed(site, payload_doc, receiver, section, value):
    reporting_site(site, payload_doc, receiver)
    payload_doc[section]["token"] = value
    bundle = site.bundle(payload_doc)
    code, out, err = site.cli("-v", "run", "--source", "file:%s" % bundle, "--policy",
                              str(site.policy_path), "--root", str(site.root), "--run-dir",
                              str(site.run_dir), "--state-dir", str(site.state_dir),
                              "--spool-dir", str(site.spool_dir), "--json")
    assert code == 1
    message = site.report()["message"]
    assert "%s.token" % section in message
    received = [r["body"].decode() for r in receiver.requests]
    assert received, "the site receiver got the report"
    _, explained, _ = site.cli("explain", str(bundle), "--policy", str(site.policy_path))
    scan_for_secrets([out, err, explained, *received], site,
                     secrets=(value, TOKEN, REPORT_TOKEN))


def test_the_report_token_message_says_what_is_wrong():
    from contextd.schema import Reader
    r = Reader({"token": BAD_REPORT_TOKEN}, "report", PayloadError)
    with pytest.raises(PayloadError) as e:
        r.secret("token", "A-Za-z0-9._~+/=-", 16, 4096, "token")
    assert e.value.message == ("report.token is not a valid token: %d characters, 1 of them "
                               "not in [A-Za-z0-9._~+/=-]" % len(BAD_REPORT_TOKEN))
    r = Reader({"token": "short"}, "report", PayloadError)
    with pytest.raises(PayloadError, match=r"5 characters, must be 16 to 4096$"):
        r.secret("token", "A-Za-z0-9._~+/=-", 16, 4096, "token")


def test_a_plugins_secret_fields_are_masked_before_it_reads_them(monkeypatch):
    """Whatever the plugin's own message says, its secret fields' values are not in it."""
    from contextd import logs, payload, plugin
    from contextd.trust.verify import Verified

    secret = "plugin-5ecret-value-0123"
    htcondor = plugin.load("htcondor")

    def leaky(data):
        raise PayloadError("htcondor.token %r is bad" % data["token"])

    monkeypatch.setattr(htcondor, "parse_settings", leaky)
    doc = {"contextd": "payload/v1", "vo": "atlas", "serial": 1,
           "not_before": "2026-01-01T00:00:00Z", "expires": "2026-01-02T00:00:00Z",
           "htcondor": {"token": secret}}
    import yaml
    from contextd.trust import verify
    verified = Verified(data=yaml.safe_dump(doc).encode(), sha256="0" * 64, signers={},
                        notes=(), _token=verify._TOKEN)
    with pytest.raises(ContextdError) as e:
        payload.parse(verified)
    assert secret not in e.value.one_line() and "[secret]" in e.value.one_line()
    assert secret in logs._SECRETS


def test_denied_reasons_in_the_report_blank_registered_secrets(site):
    """A second line of defence: a policy violation's reason that quotes a registered secret
    (a plugin's finding could) goes into report.json's `denied` blanked, as one_line does."""
    from contextd import logs, policy
    from contextd.errors import PolicyViolation
    from contextd.runreport import RunReport

    secret = "violation-5ecret-0123456789"
    logs.add_secret(secret)
    trail = RunReport(policy.load(str(site.policy_path)), datetime.datetime.now(
        datetime.timezone.utc), str(site.root), str(site.run_dir), str(site.spool_dir), True)
    rep = trail.end_with(PolicyViolation(["htcondor.token %s is not allowed" % secret]))
    assert secret not in json.dumps(rep) and "[secret]" in rep["denied"][0]["reason"]


# -- 7. ec2.url that passed `policy check` crashed `run` ---------------------------------------

@pytest.mark.parametrize("url", ["http://[::1", "http://[fe80::1%eth0]", "http://[fe80::1%25eth0]",
                                 "http://[::1]]", "http://host:99999", "http://[not-v6]",
                                 "http://a@169.254.169.254", "http://"])
def test_ec2_urls_that_crashed_run_are_refused_by_policy_check(site, url):
    site.policy["sources"] = ["ec2"]
    site.policy["ec2"] = {"url": url, "budget": "1s"}
    site.write_policy()
    code, _, err = site.cli("policy", "check", str(site.policy_path))
    assert code == 2 and "ec2.url" in err and "Traceback" not in err, (code, err)
    code, _, err = run_detect(site)
    assert code == 2 and "ec2.url" in err and len(err.strip().splitlines()) == 1, (code, err)


def run_detect(site):
    from conftest import run_cli
    return run_cli(["run", "--policy", str(site.policy_path), "--root", str(site.root),
                    "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir),
                    "--spool-dir", str(site.spool_dir)])


@pytest.mark.parametrize("url", ["http://[fd00:ec2::254]", "http://169.254.169.254:80/",
                                 "https://metadata.example.org"])
def test_well_formed_ec2_urls_pass(site, url):
    site.policy["ec2"] = {"url": url}
    site.write_policy()
    code, _, err = site.cli("policy", "check", str(site.policy_path))
    assert code == 0, err


# -- 7. crl: off, as documented ----------------------------------------------------------------

@pytest.mark.parametrize(("text", "code", "shown"), [("off", 0, "off"), ("false", 0, "off"),
                                               ("'off'", 0, "off"), ("if-present", 0, None),
                                               ("on", 2, "required"), ("true", 2, "required")])
def test_crl_off_as_documented(site, text, code, shown):
    site.policy_path.write_text(site.policy_path.read_text() +
                                "x509: {ca_dir: /etc/grid-security/certificates, crl: %s}\n"
                                % text)
    got, out, err = site.cli("policy", "check", str(site.policy_path))
    assert got == code, err
    if code == 0 and shown:
        assert "off" in out
    if code == 2:
        assert "x509.crl" in err and shown in err


# -- 7. puppet.certname is governed --------------------------------------------------------------

def test_a_payload_certname_needs_allow_puppet_certnames(site, payload_doc):
    payload_doc["puppet"]["certname"] = "puppet-master.cern.ch"
    bundle = site.bundle(payload_doc)
    code, out, err = site.run("file:%s" % bundle)
    assert code == 1, "certname not governed: %s" % err
    assert "puppet.certname 'puppet-master.cern.ch' not allowed by allow.puppet.certnames " \
           "(not set: nothing allowed)" in err
    assert site.snapshot() == {}
    code, out, err = site.cli("explain", str(bundle), "--policy", str(site.policy_path),
                              "--json")
    rows = [r for r in json.loads(out)["changes"] if r["field"] == "puppet.certname"]
    assert [r["verdict"] for r in rows] == ["denied"]


def test_allowed_certnames(site, payload_doc):
    site.policy["trust"]["atlas"]["allow"]["puppet"]["certnames"] = ["*.atlas.cern.ch"]
    site.write_policy()
    payload_doc["puppet"]["certname"] = "vm1.atlas.cern.ch"
    code, _, err = site.run("file:%s" % site.bundle(payload_doc))
    assert code == 0, err
    payload_doc["puppet"]["certname"] = "vm1.cms.cern.ch"
    payload_doc["serial"] += 1
    code, _, err = site.run("file:%s" % site.bundle(payload_doc))
    assert code == 1 and "allow.puppet.certnames [*.atlas.cern.ch]" in err


def test_an_ec2_source_url_on_the_command_line_is_checked_the_same_way(site):
    code, _, err = site.run("ec2:http://[::1")
    assert code == 2 and "ec2 metadata URL" in err and "Traceback" not in err, (code, err)
