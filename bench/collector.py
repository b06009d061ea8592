"""`make bench-collector`: reports/s, latency and collector memory under concurrent clients.

N reports (default 20,000; `--reports`), each signed as contextd signs it
(contextd.delivery.protocol), POSTed by C concurrent clients (keep-alive connections) to
`contextd-collector serve` on 127.0.0.1: on SQLite, on PostgreSQL (a throwaway cluster, as
the tests start it), and on two collector replicas sharing that PostgreSQL. Measures
reports/s, p50/p99 latency, and the collectors' RSS sampled every 0.5 s (first and last
quarter of the run, peak), and writes its section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from collector_support import (Postgres, Served, collector_cli, config_doc,  # noqa: E402
                               free_port, report, signed, write_config)

HEADING = "## contextd-collector"


def rss_mb(pid: int) -> float:
    text = Path("/proc/%d/status" % pid).read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


class Sampler(threading.Thread):
    def __init__(self, pids: List[int]):
        super().__init__(daemon=True)
        self.pids, self.samples, self.done = pids, [], threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(OSError, AttributeError):
                self.samples.append(sum(rss_mb(p) for p in self.pids))
            self.done.wait(0.5)


def client(ports: List[int], work: List[Dict[str, Any]],
           latencies: List[float], errors: List[str]) -> None:
    conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=30) for p in ports]
    for i, rep in enumerate(work):
        conn = conns[i % len(conns)]
        body, headers = signed(rep)        # at send time, as contextd signs: a fresh timestamp
        start = time.perf_counter()
        try:
            conn.request("POST", "/v1/reports", body=body, headers=headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 201:
                errors.append(str(answer.status))
        except (OSError, http.client.HTTPException) as exc:
            errors.append(type(exc).__name__)
            conn.close()
        latencies.append(time.perf_counter() - start)


def measure(name: str, url: str, replicas: int, n: int, clients: int,
            tmp: Path) -> Dict[str, Any]:
    ports = [free_port() for _ in range(replicas)]
    served = []
    for i, port in enumerate(ports):
        d = tmp / ("%s-%d" % (name.replace(" ", "-"), i))
        d.mkdir()
        path = write_config(d, config_doc(d, url, port=port))
        if i == 0:
            assert collector_cli("migrate", "--config", str(path)).returncode == 0
        served.append(Served(path, port).start())
    work = [report(instance="i-%06d" % (k % 50000)) for k in range(n)]
    shares = [work[c::clients] for c in range(clients)]
    latencies: List[float] = []
    errors: List[str] = []
    sampler = Sampler([s.proc.pid for s in served if s.proc])
    sampler.start()
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(ports, share, latencies, errors))
               for share in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    for s in served:
        s.stop()
    latencies.sort()
    q = max(1, len(sampler.samples) // 4)
    return {"name": name, "n": n, "clients": clients, "seconds": elapsed,
            "rate": n / elapsed, "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000, "errors": len(errors),
            "rss_first": sum(sampler.samples[:q]) / q, "rss_last": sum(sampler.samples[-q:]) / q,
            "rss_peak": max(sampler.samples)}


def section(rows: List[Dict[str, Any]]) -> str:
    lines = [HEADING, "",
             "`make bench-collector` (bench/collector.py), %s UTC, %s, %d CPUs, Python %s. "
             "Clients and collectors share this machine's cores." % (
                 datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                 platform.machine(), os.cpu_count() or 0, platform.python_version()), "",
             "| setup | reports | clients | seconds | reports/s | p50 ms | p99 ms | non-201 "
             "| RSS MB first/last quarter | peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append("| %s | %d | %d | %.1f | %.0f | %.1f | %.1f | %d | %.0f / %.0f | %.0f |" % (
            r["name"], r["n"], r["clients"], r["seconds"], r["rate"], r["p50"], r["p99"],
            r["errors"], r["rss_first"], r["rss_last"], r["rss_peak"]))
    pg = next((r for r in rows if r["name"].startswith("PostgreSQL, 1")), None)
    if pg is not None:
        lines += ["", "At PostgreSQL's rate here, 100,000 reports take %.0f s (goal: under 300 s)."
                  " RSS is sampled every 0.5 s over the collectors' processes. Two replicas on 2"
                  " cores compete with each other and the clients for the same CPUs: their"
                  " worth is availability and spreading load over machines." % (
                      100000 / pg["rate"])]
    return "\n".join(lines) + "\n"


def write(out: Path, text: str) -> None:
    old = out.read_text() if out.exists() else ""
    kept = old.split(HEADING)[0].rstrip("\n") if HEADING in old else old.rstrip("\n")
    out.write_text((kept + "\n\n" if kept else "") + text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reports", type=int, default=20000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--out", default=str(REPO / "bench" / "RESULTS.md"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        t = Path(tmp)
        rows.append(measure("SQLite, 1 collector", "sqlite:///%s" % (t / "c.db"), 1,
                            args.reports, args.clients, t))
        print(rows[-1], flush=True)
        pg = Postgres().start()
        try:
            rows.append(measure("PostgreSQL, 1 collector", pg.new_database(), 1,
                                args.reports, args.clients, t))
            print(rows[-1], flush=True)
            rows.append(measure("PostgreSQL, 2 replicas", pg.new_database(), 2,
                                args.reports, args.clients, t))
            print(rows[-1], flush=True)
        finally:
            pg.stop()
    write(Path(args.out), section(rows))


if __name__ == "__main__":
    main()
