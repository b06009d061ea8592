"""Reports reach their receivers: signed, spooled while they cannot be sent, never lost, never
sent twice after a 2xx. A real HTTP receiver on 127.0.0.1 checks every request with the
README's own verification code and the report schema."""

import json
import os
import re
import socket
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from conftest import REPO, REPORT_TOKEN, TOKEN

SITE_KEY = "s1te-hmac-key-0123456789abcdef-secret"
REPORT_KEYS = {"schema", "report_id", "outcome", "started_at", "finished_at", "duration_ms",
               "source", "payload", "policy_sha256", "actions", "denied", "overridden", "host",
               "contextd_version"}


def readme_verifier():
    """`verify_report` exactly as the README shows it to receivers."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    code = next(b for b in blocks if "def verify_report" in b)
    scope: Dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)   # our own documentation, run as written
    return scope["verify_report"]


verify_report = readme_verifier()


class Receiver:
    """An HTTP(S) receiver: answers `status`, records what arrived, checks it."""

    def __init__(self, tls_context=None):
        self.status = 200
        self.delay = 0.0
        self.requests: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        self.tls_context = tls_context
        self.server: Optional[ThreadingHTTPServer] = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()

    @property
    def scheme(self) -> str:
        return "https" if self.tls_context else "http"

    def url(self, path: str) -> str:
        return "%s://127.0.0.1:%d%s" % (self.scheme, self.port, path)

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):   # http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    status = receiver.status
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                              "body": body, "status": status})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        if self.tls_context is not None:
            self.server.socket = self.tls_context.wrap_socket(self.server.socket,
                                                              server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def acknowledged(self, path: str) -> List[Dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path and 200 <= r["status"] < 300]


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def reporting_site(site, payload_doc, receiver, site_key: bool = False):
    """The scratch site sends the VO's copy to /vo and its own to /site on the receiver."""
    site.policy["trust"]["atlas"]["allow"]["report"] = {"urls": ["http://127.0.0.1:*/vo"]}
    site.policy["report"] = {"urls": [receiver.url("/site")]}
    if site_key:
        key = site.root / "etc/contextd/report.key"
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_text(SITE_KEY + "\n")
        key.chmod(0o600)
        site.policy["report"]["hmac_key_file"] = "/etc/contextd/report.key"
    site.write_policy()
    payload_doc["report"]["url"] = receiver.url("/vo")
    os_release = site.root / "etc/os-release"
    os_release.parent.mkdir(parents=True, exist_ok=True)
    os_release.write_text('NAME="AlmaLinux"\nID="almalinux"\nVERSION_ID="9.4"\n')
    return site.bundle(payload_doc)


def check_schema(report: Dict[str, Any]) -> None:
    assert set(report) >= REPORT_KEYS, REPORT_KEYS - set(report)
    assert report["schema"] == "contextd.report/v1"
    assert report["outcome"] in ("applied", "unchanged", "skipped", "rejected", "failed")
    assert re.fullmatch(r"[0-9a-f]{32}", report["report_id"])
    assert report["host"]["image"]["os_id"] == "almalinux"
    assert report["host"]["image"]["os_version_id"] == "9.4"
    assert "image_id" in report["host"]["image"]
    if report["outcome"] != "applied":
        assert report["stage"] and report["message"]


def check_vo_copy(request: Dict[str, Any]) -> Dict[str, Any]:
    report = verify_report(request["headers"], request["body"], REPORT_TOKEN)
    check_schema(report)
    return report


def check_site_copy(request: Dict[str, Any], signed: bool) -> Dict[str, Any]:
    headers = request["headers"]
    if signed:
        report = verify_report(headers, request["body"], SITE_KEY)
    else:
        assert "X-Contextd-Signature" not in headers and "X-Contextd-Timestamp" not in headers
        report = json.loads(request["body"])
    with pytest.raises((ValueError, KeyError)):          # the VO's token never signs it
        verify_report(headers, request["body"], REPORT_TOKEN)
    check_schema(report)
    assert headers["X-Contextd-Report-Id"] == report["report_id"]
    return report


def spool_files(site) -> List[Path]:
    if not site.spool_dir.exists():
        return []
    return sorted(p for p in site.spool_dir.iterdir() if p.is_file())


def flush(site, *extra):
    return site.cli("report", "flush", "--spool-dir", str(site.spool_dir), *extra)


def scan_for_secrets(texts: List[str], site, secrets=(TOKEN, REPORT_TOKEN, SITE_KEY)) -> None:
    """Every output, report, status and spool file of the test: no secret anywhere."""
    blobs = list(texts)
    for d in (site.run_dir, site.spool_dir, site.state_dir):
        if d.exists():
            blobs += [p.read_text(errors="replace") for p in d.rglob("*") if p.is_file()
                      and "backups" not in p.parts and "transaction" not in p.parts]
    for secret in secrets:
        hits = [b[:80] for b in blobs if secret in b]
        assert not hits, "secret found in %s" % hits


def test_delivered_signed_to_vo_and_site(site, payload_doc, receiver):
    bundle = reporting_site(site, payload_doc, receiver)
    code, out, err = site.run("file:%s" % bundle, "--json")
    assert code == 0, err
    vo, = receiver.acknowledged("/vo")
    report = check_vo_copy(vo)
    assert report == site.report()                       # exactly what is in the run dir
    assert report["outcome"] == "applied" and report["payload"]["vo"] == "atlas"
    site_copy, = receiver.acknowledged("/site")
    assert check_site_copy(site_copy, signed=False) == report
    assert vo["headers"]["Content-Type"] == "application/json"
    assert spool_files(site) == []                       # written ahead, removed after the 2xx
    assert stat.S_IMODE(site.spool_dir.stat().st_mode) == 0o700
    code, status_out, _ = site.cli("status", "--run-dir", str(site.run_dir), "--json")
    scan_for_secrets([out, err, status_out, json.dumps(report)], site)


def test_site_copy_signed_with_the_sites_own_key(site, payload_doc, receiver):
    bundle = reporting_site(site, payload_doc, receiver, site_key=True)
    code, out, err = site.run("file:%s" % bundle)
    assert code == 0, err
    check_vo_copy(receiver.acknowledged("/vo")[0])
    check_site_copy(receiver.acknowledged("/site")[0], signed=True)
    scan_for_secrets([out, err], site)


def test_tampered_or_stale_reports_fail_the_readme_check(site, payload_doc, receiver):
    site.run("file:%s" % reporting_site(site, payload_doc, receiver))
    request = receiver.acknowledged("/vo")[0]
    headers, body = dict(request["headers"]), request["body"]
    assert verify_report(headers, body, REPORT_TOKEN)
    with pytest.raises(ValueError, match="bad signature"):
        verify_report(headers, body.replace(b'"applied"', b'"failed"'), REPORT_TOKEN)
    with pytest.raises(ValueError, match="bad signature"):
        verify_report(headers, body, "another-token-0123456789")
    with pytest.raises(ValueError, match="stale"):
        verify_report(headers, body, REPORT_TOKEN, max_age=-1)


def test_rejected_payload_still_reports_to_its_vo(site, payload_doc, receiver):
    payload_doc["cvmfs"]["repositories"] = ["evil.example.com"]
    code, _, _ = site.run("file:%s" % reporting_site(site, payload_doc, receiver))
    assert code == 1
    report = check_vo_copy(receiver.acknowledged("/vo")[0])
    assert report["outcome"] == "rejected" and report["stage"] == "authorize"
    check_site_copy(receiver.acknowledged("/site")[0], signed=False)


def test_untrusted_signature_reports_only_to_the_site(site, payload_doc, receiver):
    bundle = reporting_site(site, payload_doc, receiver)
    stranger = site.sign(site.payload_file(payload_doc, name="p2.yaml"), key="stranger")
    code, _, _ = site.run("file:%s" % stranger)
    assert code == 1 and bundle.exists()
    assert receiver.acknowledged("/vo") == []            # an unverified URL is never contacted
    report = check_site_copy(receiver.acknowledged("/site")[0], signed=False)
    assert report["outcome"] == "rejected" and report["stage"] == "verify"


def test_vo_url_outside_the_allowed_globs_is_not_contacted(site, payload_doc, receiver):
    bundle = reporting_site(site, payload_doc, receiver)
    site.policy["trust"]["atlas"]["allow"]["report"] = {"urls": ["https://*.example.org/*"]}
    site.write_policy()
    code, _, err = site.run("file:%s" % bundle)
    assert code == 1 and "allow.report.urls" in err
    assert receiver.acknowledged("/vo") == [] and len(receiver.acknowledged("/site")) == 1


def test_5xx_and_down_spool_then_flush_delivers_each_exactly_once(site, payload_doc, receiver):
    outputs = []
    bundle = reporting_site(site, payload_doc, receiver)
    receiver.status = 503
    code, out, err = site.cli(
        "-v", "run", "--source", "file:%s" % bundle, "--policy", str(site.policy_path),
        "--root", str(site.root), "--run-dir", str(site.run_dir), "--state-dir",
        str(site.state_dir), "--spool-dir", str(site.spool_dir))
    outputs += [out, err]
    assert code == 0, err                                # the run itself succeeded
    assert "HTTP 503" in err and "spooled as" in err
    assert len([r for r in receiver.requests if r["path"] == "/vo"]) == 3   # 3 tries each
    assert len(spool_files(site)) == 2
    receiver.stop()                                      # now the receiver is down
    code, out, err = site.run("file:%s" % bundle)        # unchanged: reported too
    outputs += [out, err]
    assert code == 0 and site.report()["outcome"] == "unchanged"
    files = spool_files(site)
    assert len(files) == 4
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        entry = json.loads(path.read_text())
        assert entry["url"] in (receiver.url("/vo"), receiver.url("/site"))
        assert entry["headers"]["X-Contextd-Report-Id"] == entry["report_id"]
    code, out, err = flush(site)                         # still down
    outputs += [out, err]
    assert code == 1 and "4 still spooled" in out and "Connection refused" in out
    assert len(spool_files(site)) == 4

    time.sleep(1.1)                   # the timestamps signed at flush time are fresh ones
    receiver.status = 200
    receiver.start()
    code, out, err = flush(site)
    outputs += [out, err]
    assert code == 0 and "4 delivered, 0 refused" in out, out + err
    assert spool_files(site) == []
    code, out, err = flush(site)                         # nothing left, nothing sent again
    outputs += [out, err]
    assert code == 0 and "0 delivered" in out
    vo, site_copies = receiver.acknowledged("/vo"), receiver.acknowledged("/site")
    assert len(vo) == 2 and len(site_copies) == 2
    vo_reports = [check_vo_copy(r) for r in vo]
    site_reports = [check_site_copy(r, signed=False) for r in site_copies]
    assert sorted(r["outcome"] for r in vo_reports) == ["applied", "unchanged"]
    ids = {r["report_id"] for r in vo_reports}
    assert len(ids) == 2 and ids == {r["report_id"] for r in site_reports}
    assert all(int(r["headers"]["X-Contextd-Timestamp"]) >= time.time() - 30 for r in vo)
    scan_for_secrets(outputs, site)


def test_4xx_is_moved_aside_and_reported_not_retried(site, payload_doc, receiver):
    outputs = []
    bundle = reporting_site(site, payload_doc, receiver)
    receiver.status = 400
    code, out, err = site.run("file:%s" % bundle)
    outputs += [out, err]
    assert code == 0, err
    assert len(receiver.requests) == 2                   # one try each, no retries
    assert spool_files(site) == []
    failed = sorted((site.spool_dir / "failed").iterdir())
    assert len(failed) == 2
    assert all(json.loads(p.read_text())["last_error"].startswith("HTTP 400") for p in failed)
    code, out, err = flush(site)
    assert code == 0 and "0 delivered" in out
    assert len(receiver.requests) == 2                   # never again

    # the same at flush time: spooled while the receiver is down, refused when it is back
    receiver.stop()
    site.run("file:%s" % bundle)
    assert len(spool_files(site)) == 2
    receiver.status = 403
    receiver.start()
    code, out, err = flush(site)
    outputs += [out, err]
    assert code == 0, out + err
    assert "2 refused" in out and out.count("refused, moved aside") == 2 and "HTTP 403" in out
    assert len(list((site.spool_dir / "failed").iterdir())) == 4
    code, out, err = flush(site)
    assert code == 0 and len(receiver.requests) == 4
    scan_for_secrets(outputs, site)


@pytest.mark.parametrize("status", [408, 429])
def test_408_and_429_stay_spooled(site, payload_doc, receiver, status):
    bundle = reporting_site(site, payload_doc, receiver)
    receiver.status = status
    code, out, _ = site.run("file:%s" % bundle)
    assert code == 0
    assert len(spool_files(site)) == 2 and not (site.spool_dir / "failed").exists()
    code, out, _ = flush(site)
    assert code == 1 and "HTTP %d" % status in out
    receiver.status = 200
    code, out, _ = flush(site)
    assert code == 0 and "2 delivered" in out


def test_flush_skips_the_rest_of_a_destination_that_is_down(site, payload_doc, receiver):
    bundle = reporting_site(site, payload_doc, receiver)
    receiver.stop()
    for _ in range(3):
        site.run("file:%s" % bundle)
    assert len(spool_files(site)) == 6
    code, out, _ = flush(site)
    assert code == 1 and out.count("not tried") == 4     # one try per destination
    assert len(spool_files(site)) == 6


def test_dry_run_or_no_report_url_sends_and_spools_nothing(site, payload_doc):
    code, _, _ = site.run("file:%s" % site.bundle(), "--dry-run")
    assert code == 0 and not site.spool_dir.exists()
    del payload_doc["report"]
    code, _, _ = site.run("file:%s" % site.bundle(payload_doc))
    assert code == 0 and not site.spool_dir.exists()


def test_deliver_is_bounded_in_time(tmp_path, receiver):
    from contextd import delivery

    receiver.delay = 3.0
    report = {"schema": "contextd.report/v1", "report_id": "ab" * 16}
    dest = delivery.Destination(receiver.url("/slow"), token=REPORT_TOKEN)
    spool = tmp_path / "spool"
    started = time.monotonic()
    outcomes = delivery.deliver(report, [dest, delivery.Destination(receiver.url("/slow2"))],
                                str(spool), budget=1.0)
    assert time.monotonic() - started < 2.0
    assert [o.verdict for o in outcomes] == ["spooled", "spooled"]
    assert all("no answer within 1s" in o.message for o in outcomes)
    assert len(list(spool.iterdir())) == 2
    text = "".join(p.read_text() for p in spool.iterdir())
    assert REPORT_TOKEN not in text and '"key":' in text


def test_flush_waits_for_a_busy_spool_then_says_so(tmp_path, monkeypatch):
    import fcntl

    from contextd import delivery
    from contextd.errors import ContextdError

    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    fd = os.open(str(spool), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        monkeypatch.setattr(delivery, "LOCK_WAIT", 0.3)
        with pytest.raises(ContextdError, match="busy"):
            delivery.flush(str(spool))
    finally:
        os.close(fd)


def test_unreadable_spool_file_is_moved_aside(site):
    site.spool_dir.mkdir(mode=0o700)
    (site.spool_dir / "20260101T000000Z-x-y.json").write_text("{not json")
    (site.spool_dir / ".tmp.contextd-tmp").write_text("in progress")
    code, out, _ = flush(site)
    assert code == 0 and "1 refused" in out and "unreadable" in out
    assert (site.spool_dir / "failed/20260101T000000Z-x-y.json").exists()
    assert (site.spool_dir / ".tmp.contextd-tmp").exists()


def test_flush_without_a_spool_is_a_quick_no_op(site):
    code, out, _ = site.cli("report", "flush", "--root", str(site.root))
    assert code == 0 and "0 delivered" in out and not (site.root / "var").exists()


def test_policy_report_section_is_checked_and_printed(site):
    site.policy["report"] = {"urls": ["https://monitor.example.org/contextd"],
                             "ca_bundle": "/etc/pki/report-ca.pem",
                             "hmac_key_file": "/etc/contextd/report.key"}
    site.write_policy()
    code, out, err = site.cli("policy", "check", str(site.policy_path), "--json")
    assert code == 0, err
    assert json.loads(out)["report"] == site.policy["report"]
    for bad in ("etc/contextd/report.key", "/etc/contextd/report.key\n"):
        site.policy["report"]["hmac_key_file"] = bad
        site.write_policy()
        code, out, err = site.cli("policy", "check", str(site.policy_path))
        assert code == 2 and "report.hmac_key_file" in err


def test_same_url_for_vo_and_site_gets_two_entries(site, tmp_path):
    from contextd import delivery, policy

    site.policy["report"] = {"urls": ["http://127.0.0.1:9/both"],
                             "hmac_key_file": "/etc/contextd/report.key"}
    pol = policy.parse(site.policy)
    dests = delivery.destinations(pol, str(site.root), "http://127.0.0.1:9/both", REPORT_TOKEN)
    assert len(dests) == 2 and REPORT_TOKEN not in repr(dests)
    assert dests[1].key_file == str(site.root / "etc/contextd/report.key")
    report = {"report_id": "cd" * 16}
    outcomes = delivery.deliver(report, dests, str(tmp_path / "spool"))
    assert [o.verdict for o in outcomes] == ["spooled", "spooled"]
    assert len({o.spool_file for o in outcomes}) == 2
    # the site key file is missing: said so, and kept for when it is there
    assert "report.hmac_key_file" in outcomes[1].message
