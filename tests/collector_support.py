"""Shared pieces of the contextd-collector tests (tests/test_collector_*.py): a throwaway
PostgreSQL cluster, databases on SQLite and PostgreSQL, a collector configuration, reports
signed exactly as contextd signs them, and a collector running under uvicorn.

Not a test file: the test modules import it (their fixtures wrap these helpers).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from contextd.delivery import protocol

REPORT_TOKEN = "r3p0rt-t0ken-5ecret-value-0123456789"      # conftest's: the payload's token
SITE_KEY = "s1te-hmac-key-0123456789abcdef-secret"
CMS_TOKEN = "cms-report-token-abcdefghijklmnop"
READER = "reader-bearer-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/%s" % name),
                   key=lambda p: int(p.split("/")[4]))
    assert found, "PostgreSQL is not installed (Debian package postgresql, in APT_PACKAGES)"
    return found[-1]


def _as_pg_user(argv: List[str]) -> List[str]:
    """postgres refuses to run as root: as root, run it as nobody."""
    return ["runuser", "-u", "nobody", "--", *argv] if os.geteuid() == 0 else argv


class Postgres:
    """A throwaway cluster on 127.0.0.1 and a free port, in a temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="collector-pg-"))
        self.port = free_port()
        self.n = 0

    def start(self) -> Postgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "nobody")
        data = str(self.dir / "data")
        subprocess.run(_as_pg_user([_pg_bin("initdb"), "-D", data, "-U", "postgres",
                                    "--auth=trust", "-E", "UTF8", "--no-sync"]),
                       check=True, stdout=subprocess.DEVNULL, timeout=120)
        subprocess.run(_as_pg_user([
            _pg_bin("pg_ctl"), "-D", data, "-w", "-t", "60", "-l", str(self.dir / "log"),
            "-o", "-h 127.0.0.1 -p %d -k %s -F -c max_connections=200" % (self.port, self.dir),
            "start"]), check=True, stdout=subprocess.DEVNULL, timeout=120)
        return self

    def stop(self) -> None:
        subprocess.run(_as_pg_user([_pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m",
                                    "immediate", "-w", "stop"]),
                       stdout=subprocess.DEVNULL, timeout=60, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, name: str = "postgres") -> str:
        return "postgresql+psycopg2://postgres@127.0.0.1:%d/%s" % (self.port, name)

    def new_database(self) -> str:
        import psycopg2

        self.n += 1
        name = "collector_%d" % self.n
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                                dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE %s" % name)
        conn.close()
        return self.url(name)


def write_secrets(directory: Path) -> Dict[str, Path]:
    files = {"atlas": (directory / "atlas.tokens", "# atlas's report tokens\n%s\n" % REPORT_TOKEN),
             "cms": (directory / "cms.tokens", CMS_TOKEN + "\n"),
             "site": (directory / "site.key", SITE_KEY + "\n"),
             "readers": (directory / "readers", READER + "\n")}
    for path, text in files.values():
        path.write_text(text)
        path.chmod(0o600)
    return {name: path for name, (path, _) in files.items()}


def config_doc(directory: Path, database: str, port: int = 8080, readers: bool = False,
               image_keys: Optional[List[str]] = None, host: str = "127.0.0.1") -> Dict[str, Any]:
    files = write_secrets(directory)
    doc: Dict[str, Any] = {
        "listen": "%s:%d" % (host, port), "database": database,
        "vos": {"atlas": {"tokens_file": str(files["atlas"])},
                "cms": {"tokens_file": str(files["cms"])}},
        "sites": {"TEST-SITE": {"report_key_file": str(files["site"]),
                                "image_keys": image_keys or []}},
    }
    if readers:
        doc["readers_file"] = str(files["readers"])
    return doc


def write_config(directory: Path, doc: Dict[str, Any]) -> Path:
    import yaml

    path = directory / "collector.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def report(outcome: str = "applied", vo: Optional[str] = "atlas", site: str = "TEST-SITE",
           instance: str = "i-0001", serial: int = 2026112401, **extra: Any) -> Dict[str, Any]:
    """A report shaped as contextd writes it (schema contextd.report/v1)."""
    rep: Dict[str, Any] = {
        "schema": "contextd.report/v1", "report_id": os.urandom(16).hex(), "outcome": outcome,
        "started_at": "2026-12-01T10:00:00.000000Z", "finished_at": "2026-12-01T10:00:01.000000Z",
        "duration_ms": 1000, "source": {"kind": "file", "location": "/x"},
        "payload": {"sha256": "0" * 64, "vo": vo, "serial": serial, "signers": ["atlas-ctx"]}
        if vo else None,
        "policy_sha256": "1" * 64, "actions": [], "denied": [], "overridden": [],
        "host": {"hostname": "wn-%s" % instance, "instance_id": instance, "site": site,
                 "boot_id": None, "image": {"os_id": "almalinux", "os_version_id": "9.4",
                                            "image_id": None}},
        "contextd_version": "test", "exit_code": 0,
    }
    if outcome in ("rejected", "failed", "skipped"):
        rep.update(stage="authorize" if outcome == "rejected" else "apply",
                   message="%s at its stage" % outcome)
    rep.update(extra)
    return rep


def signed(rep: Dict[str, Any], secret: Optional[str] = REPORT_TOKEN,
           now: Optional[float] = None) -> Tuple[bytes, Dict[str, str]]:
    """The body and headers contextd's delivery sends (contextd.delivery.protocol)."""
    body = protocol.body_of(rep)
    headers = protocol.static_headers(rep["report_id"])
    if secret is not None:
        key = protocol.report_key(secret.encode(), rep["report_id"])
        stamp = str(int(time.time() if now is None else now))
        headers["X-Contextd-Timestamp"] = stamp
        headers["X-Contextd-Signature"] = protocol.signature(key, stamp, body)
    return body, headers


def post(url: str, body: bytes, headers: Dict[str, str]) -> Tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get(url: str, token: Optional[str] = None) -> Tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": "Bearer %s" % token}
                                 if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def collector_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "contextd_collector", *argv],
                          capture_output=True, text=True, timeout=120, check=False)


class Served:
    """`contextd-collector serve` in a subprocess (uvicorn), on 127.0.0.1."""

    def __init__(self, config: Path, port: int):
        self.config = config
        self.port = port
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log = config.parent / ("serve-%d.log" % port)

    @property
    def base(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def start(self) -> Served:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "contextd_collector", "serve", "--config",
                 str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the collector did not start: %s" % self.log.read_text())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def databases(pg: Optional[Postgres], tmp: Path) -> Iterator[str]:
    yield "sqlite:///%s" % (tmp / "collector.db")
    if pg is not None:
        yield pg.new_database()
