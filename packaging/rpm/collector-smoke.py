"""collector-smoke.py ROOT [postgresql]: the collector as installed from the RPMs into ROOT
(rpm2cpio or rpm --root) runs on this Python: `make rpm-check` runs it with EL9's Python 3.9
and only EL9's versions of the libraries (FLOOR_PINS), none of the collector's own, so the
bundle in ROOT/usr/share/contextd-collector/bundled must supply them.

It starts ROOT/usr/bin/contextd-collector (the launcher, as systemd would) for `migrate` and
`serve` on 127.0.0.1, POSTs a report signed as contextd signs it (README "Authentication":
tests/collector_support.py's helpers), reads it back from the JSON API, the page and
/metrics; and checks that each library came from where the package says: the bundle for the
bundled ones, the system for EL9's, and that greenlet is not installed at all. Exit 0 when
all of that holds; anything else fails (with the bundle removed it must fail). The database
is a fresh SQLite file, or with `postgresql` a throwaway PostgreSQL cluster on 127.0.0.1
(tests/collector_support.py's), reached with the psycopg2 of this Python (EL9 has 2.8.6).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(sys.argv[1]).resolve()
SITELIB = ROOT / "usr/lib/python3.9/site-packages"
LAUNCHER = ROOT / "usr/bin/contextd-collector"
BUNDLED = ROOT / "usr/share/contextd-collector/bundled"
REPO = Path(__file__).resolve().parent.parent.parent
ENV = dict(os.environ, PYTHONPATH=str(SITELIB), PYTHONDONTWRITEBYTECODE="1")
sys.path[:0] = [str(SITELIB), str(REPO / "tests")]
# EL9's versions (mk/floor.mk FLOOR_PINS): what the system must supply, not the bundle.
EL9 = {"jinja2": "2.11.3", "markupsafe": "1.1.1", "yaml": "5.4.1", "idna": "2.10",
       "cryptography": "36.0.2"}
FROM_BUNDLE = ("sqlalchemy", "alembic", "starlette", "uvicorn", "anyio", "h11", "click",
               "mako", "prometheus_client", "typing_extensions", "exceptiongroup", "tomli")

PROBE = """
import importlib, importlib.util, json, runpy, sys
runpy.run_path(sys.argv[1], run_name="probe")      # the launcher's path set-up, not run()
import contextd_collector.app, contextd_collector.cli
mods = [importlib.import_module(name) for name in sys.argv[2].split(",")]
out = {m.__name__: [getattr(m, "__version__", None), m.__file__] for m in mods}
out["greenlet"] = importlib.util.find_spec("greenlet") is not None
print(json.dumps(out))
"""


def launcher(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-s", str(LAUNCHER), *argv], env=ENV,
                          capture_output=True, text=True, timeout=120, check=False)


def check_sources() -> None:
    names = ",".join((*FROM_BUNDLE, *EL9))
    probe = subprocess.run([sys.executable, "-s", "-c", PROBE, str(LAUNCHER), names], env=ENV,
                           capture_output=True, text=True, timeout=120, check=False)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    for name in FROM_BUNDLE:
        assert found[name][1].startswith(str(BUNDLED) + "/"), (name, found[name])
    for name, version in EL9.items():
        assert not found[name][1].startswith(str(ROOT)), (name, found[name])
        assert found[name][0] == version, (name, found[name], "want EL9's", version)
    assert found["greenlet"] is False, "greenlet is installed: the check would prove nothing"
    print("collector-smoke: bundled from %s: %s; from the system: %s" % (
        BUNDLED, ", ".join("%s %s" % (n, found[n][0] or "") for n in FROM_BUNDLE),
        ", ".join("%s %s" % (n, found[n][0]) for n in EL9)))


def serve(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`contextd-collector serve` through the launcher, once it accepts connections."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-s", str(LAUNCHER), "serve", "--config",
                                 str(config)], env=ENV, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("serve exited %d: %s" % (proc.returncode, log.read_text()))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the collector did not start: %s" % log.read_text())


def exchange(base: str) -> None:
    """A signed report stored and read back; a forged one refused."""
    from collector_support import get, post, report, signed

    status, body = post(base + "/v1/reports", *signed(report(instance="i-rpm-smoke")))
    assert status == 201, (status, body)
    status, body = get(base + "/v1/instances")
    rows = {r["instance_id"]: r for r in json.loads(body)["instances"]}
    assert status == 200 and rows["i-rpm-smoke"]["outcome"] == "applied", (status, body)
    status, page = get(base + "/")
    assert status == 200 and b"i-rpm-smoke" in page, (status, page[:200])
    status, metrics = get(base + "/metrics")
    assert status == 200 and b'contextd_collector_posts_total{status="201"}' in metrics
    forged = signed(report(instance="i-forged"), secret="not-the-token-0123456789")
    assert post(base + "/v1/reports", *forged)[0] == 401


def main() -> int:
    from collector_support import Postgres

    if sys.argv[2:] != ["postgresql"]:
        return smoke(None)
    pg = Postgres().start()
    try:
        return smoke(pg.new_database())
    finally:
        pg.stop()


def smoke(url: Optional[str]) -> int:
    from collector_support import config_doc, free_port, write_config

    with tempfile.TemporaryDirectory(prefix="collector-smoke-") as name:
        tmp, port = Path(name), free_port()
        url = url or "sqlite:///%s/c.db" % tmp
        config = write_config(tmp, config_doc(tmp, url, port=port))
        done = launcher("migrate", "--config", str(config))
        assert done.returncode == 0, "migrate exited %d: %s" % (done.returncode, done.stderr)
        check_sources()
        proc = serve(config, port, tmp / "serve.log")
        try:
            exchange("http://127.0.0.1:%d" % port)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print("collector-smoke: OK on %s: migrate, serve, a signed report stored (201) and read "
          "back from /v1/instances, the page and /metrics; a forged one refused (401)"
          % url.split(":")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
