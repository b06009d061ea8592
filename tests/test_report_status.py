"""`contextd status --wait`: pilots block until this boot's run has finished and get its exit
code; a report left from an earlier boot does not count, whatever the clock did."""

import json
import subprocess
import sys
import time
import uuid

from contextd import report


def status_waiting(site, *extra):
    return subprocess.Popen([sys.executable, "-m", "contextd", "status", "--run-dir",
                             str(site.run_dir), "--wait", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def old_report(site, **host):
    """A finished report as an earlier run left it."""
    site.run_dir.mkdir(parents=True, exist_ok=True)
    rep = {"schema": report.SCHEMA, "report_id": uuid.uuid4().hex, "outcome": "applied",
           "started_at": "2020-01-01T00:00:00.000000Z",
           "finished_at": "2020-01-01T00:00:01.000000Z", "host": host}
    (site.run_dir / "report.json").write_text(json.dumps(rep))
    return rep


def test_wait_blocks_until_the_run_finishes(site):
    waiter = status_waiting(site, "--timeout", "60")
    time.sleep(1.0)
    assert waiter.poll() is None                      # nothing to report yet: still waiting
    code, out, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert out.startswith("applied at ") and "VO atlas serial 2026112401" in out


def test_wait_returns_the_runs_exit_code_and_json(site, payload_doc):
    old_report(site, boot_id="not-this-boot")
    waiter = status_waiting(site, "--timeout", "60", "--json")
    time.sleep(1.0)
    assert waiter.poll() is None                      # the earlier boot's report does not count
    payload_doc["cvmfs"]["repositories"] = ["evil.example.com"]
    assert site.run("file:%s" % site.bundle(payload_doc))[0] == 1
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 1, err
    rep = json.loads(out)
    assert rep["outcome"] == "rejected" and rep["host"]["boot_id"] == report.boot_id()


def test_earlier_boot_times_out_with_one_line(site):
    old_report(site, boot_id="not-this-boot")
    started = time.monotonic()
    code, out, err = site.cli("status", "--run-dir", str(site.run_dir), "--wait",
                              "--timeout", "1")
    assert code == 1 and time.monotonic() - started < 20
    assert "timed out after 1s" in err and len(err.strip().splitlines()) == 1
    code, out, err = site.cli("status", "--run-dir", str(site.run_dir))   # no --wait: last run
    assert code == 0 and out.startswith("applied at 2020-01-01")


def test_this_boot_counts_even_when_the_clock_moved_past_it(site):
    """The run wrote its report before NTP stepped the clock: btime moved, the boot id not."""
    old_report(site, boot_id=report.boot_id())
    code, out, err = site.cli("status", "--run-dir", str(site.run_dir), "--wait",
                              "--timeout", "5")
    assert code == 0 and out.startswith("applied at 2020-01-01"), err


def test_report_without_boot_id_falls_back_to_the_clock(site):
    old_report(site)                                  # from 2020: before this boot
    code, _, err = site.cli("status", "--run-dir", str(site.run_dir), "--wait",
                              "--timeout", "0.5")
    assert code == 1 and "timed out" in err
    rep = json.loads((site.run_dir / "report.json").read_text())
    rep["started_at"] = report.iso_time(report.datetime.datetime.now(
        report.datetime.timezone.utc))
    (site.run_dir / "report.json").write_text(json.dumps(rep))
    code, _, err = site.cli("status", "--run-dir", str(site.run_dir), "--wait",
                              "--timeout", "5")
    assert code == 0, err


def test_boot_id_is_this_kernels():
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert report.boot_id() == f.read().strip()


def test_broken_policy_still_ends_the_wait_with_its_exit_code(site):
    """No policy, no trust, nothing fetched: but the run finished, and a pilot waiting on
    it learns so at once, with the run's own exit code (2) and the reason."""
    waiter = status_waiting(site, "--timeout", "60")
    time.sleep(1.0)
    assert waiter.poll() is None
    site.policy_path.write_text(site.policy_path.read_text() + "surprise: key\n")
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 2 and "surprise" in err
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 2, err
    assert out.startswith("failed at ") and "(policy: " in out and "surprise" in out
    rep = site.report()
    assert (rep["outcome"], rep["stage"], rep["exit_code"]) == ("failed", "policy", 2)
    assert rep["payload"] is None and rep["source"] is None and rep["policy_sha256"] is None
    assert site.snapshot() == {}                     # nothing under the root


BUGGY = r"""
import sys
import contextd.plan
def plan(*args, **kwargs):
    raise TypeError("an exception text that could hold anything, a token too")
contextd.plan.plan = plan
from contextd.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_bug_still_ends_the_report_and_the_wait(site):
    """A bug is exit 70 with a traceback file; the report ends too, so pilots never hang."""
    waiter = status_waiting(site, "--timeout", "60")
    proc = subprocess.run([sys.executable, "-c", BUGGY, "run", "--source",
                           "file:%s" % site.bundle(), "--policy", str(site.policy_path),
                           "--root", str(site.root), "--run-dir", str(site.run_dir),
                           "--state-dir", str(site.state_dir), "--spool-dir",
                           str(site.spool_dir)], capture_output=True, text=True)
    assert proc.returncode == 70, proc.stderr
    assert "unexpected error (a bug" in proc.stderr and "Traceback" not in proc.stderr
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 70, err
    assert "(plan: internal error (a bug): TypeError" in out
    rep = site.report()
    assert (rep["outcome"], rep["stage"], rep["exit_code"]) == ("failed", "plan", 70)
    assert "token" not in rep["message"]
    assert site.snapshot() == {}                     # it never got to apply
