"""Parsers never crash and never hang (issue 12, section 7), proved by attacks.

- YAML whose constructors raise (a 5000-digit integer, `!!timestamp 2026-13-45`, ...) in a
  signed payload or in the policy: one typed line, never exit 70.
- Whatever happens while loading the policy, the run ends its report, so
  `status --wait` returns at once instead of at its timeout.
- MIME user-data with a hostile parameter list (`Content-Type: text/plain; a="` + `;` x N)
  parses in linear time and is refused; doubling the header at most about doubles the time.
- A FIFO where a file should be (`file:PATH`, the policy's `file.path`, `dir:PATH`, a listed
  file, `iso:PATH`) is refused at once instead of blocking the boot.

Every contextd here runs in a subprocess with a timeout, so a hang fails the test, not CI.
"""

import contextlib
import base64
import gzip
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import base_payload, dump_payload, one_key_policy, run_cli
from contextd import payload, policy, strictyaml
from contextd.trust import verify
from contextd.errors import ContextdError, PayloadError, PolicyError, SourceError
from contextd.sources import userdata

HANG = 30      # seconds: far above any honest run here, far below a hung boot


def contextd(*argv, timeout=HANG):
    """contextd in a subprocess; a run that outlives `timeout` is a hang, and fails."""
    try:
        proc = subprocess.run([sys.executable, "-m", "contextd", *argv],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("contextd %s hung (no answer after %ss)" % (" ".join(argv[:3]), timeout))
    return proc.returncode, proc.stdout, proc.stderr


def run(site, *extra, timeout=HANG):
    return contextd("run", "--policy", str(site.policy_path), "--root", str(site.root),
                    "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir),
                    "--spool-dir", str(site.spool_dir), *extra, timeout=timeout)


def one_clear_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "unexpected error" not in err and "a bug" not in err, err
    return lines[0]


def ssh_signed_bundle(site, text: bytes, key="atlas") -> Path:
    """A bundle made the way DESIGN says a VO can: ssh-keygen -Y sign, base64 and cat."""
    path = site.tmp / "payload.yaml"
    path.write_bytes(text)
    sig = Path(str(path) + ".sig")
    if sig.exists():
        sig.unlink()
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(site.keys[key][0]), "-n",
                    "contextd-payload", str(path)], check=True, capture_output=True)
    b64 = base64.encodebytes(text).decode().replace("\n", "")
    body = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    out = site.tmp / "payload.bundle"
    out.write_text("#contextd-signed-v1\n-----BEGIN CONTEXTD PAYLOAD-----\n%s\n"
                   "-----END CONTEXTD PAYLOAD-----\n%s" % (body, sig.read_text()))
    return out


# --------------------------------------------------------------------------------------
# 1. YAML constructor errors are typed, in payloads and in the policy

# Each is a YAML value whose construction raised something else than a YAML error.
CONSTRUCTOR_BOMBS = [
    "1" * 5000,                             # ValueError: int max str digits (3.11)
    "0x" + "f" * 5000,
    "1_" + "0" * 5000,
    "!!int " + "9" * 5000,
    "!!timestamp 2026-13-45",               # ValueError: month must be in 1..12
    "!!timestamp 2026-01-01T25:00:00Z",
    "!!timestamp 0000-01-01",
    "!!float abc",
    "!!int abc",
    "!!int 0x",
    "!!bool maybe",                         # KeyError
    "!!map x",                              # ValueError in construct_mapping
    "!!set [1]",                            # TypeError
]


def payload_with(value: str) -> bytes:
    """A valid payload but for one extra field, last, at a known line."""
    text = dump_payload(base_payload())
    return text + b"extra: " + value.encode() + b"\n"


@pytest.fixture(scope="module")
def signer(keys):
    from contextd.vo import sshsign
    key_path, pub = keys["atlas"]
    return (lambda text: verify.verify(text, [sshsign.sign(key_path.read_bytes(), text)],
                                       policy.parse(one_key_policy(pub))))


@pytest.mark.parametrize("bomb", CONSTRUCTOR_BOMBS, ids=lambda b: b[:24])
def test_yaml_constructor_errors_are_typed_in_payload_and_policy(bomb, signer, tmp_path):
    text = payload_with(bomb)
    line = text.count(b"\n")
    with pytest.raises(PayloadError) as info:
        payload.parse(signer(text))
    assert "line %d column" % line in info.value.one_line()
    pol = tmp_path / "policy.yaml"
    pol.write_bytes(b"version: 1\nsite: " + bomb.encode() + b"\n")
    with pytest.raises(PolicyError) as info:
        policy.load(str(pol))
    assert "line 2 column" in info.value.one_line()


def test_a_signed_payload_with_a_huge_integer_is_rejected_in_one_line(site):
    bundle = ssh_signed_bundle(site, payload_with("1" * 5000))
    code, _, err = run(site, "--source", "file:%s" % bundle)
    line = one_clear_line(err)
    assert code == 1, err
    assert "payload is not valid YAML at line" in line and "digits" in line
    rep = site.report()
    assert rep["outcome"] == "rejected" and rep["stage"] == "parse"


def test_a_policy_with_an_impossible_timestamp_is_a_config_error(site):
    site.policy_path.write_text(site.policy_path.read_text()
                                + "clock: !!timestamp 2026-13-45\n")
    code, _, err = contextd("policy", "check", str(site.policy_path))
    assert code == 2 and "is not valid YAML at line" in one_clear_line(err), err
    code, _, err = run(site, "--source", "file:%s" % site.bundle())
    assert code == 2 and "is not valid YAML at line" in one_clear_line(err), err


def test_only_plain_values_come_out():
    """The loader's promise: str, int, float, bool, None, list and dict; nothing else."""
    for text in (b"a: !!binary aGk=\n", b"a: !!timestamp 2026-01-01\n", b"a: !!set {x}\n",
                 b"a: !!omap [{b: 1}]\n", b"a: !!pairs [{b: 1}]\n"):
        with pytest.raises(PayloadError, match="not valid YAML at line 1 column 4"):
            strictyaml.load(text, "payload", PayloadError)


# --------------------------------------------------------------------------------------
# 2. Every run ends its report, whatever loading the policy did


def test_status_wait_returns_at_once_after_a_crashing_policy(site):
    site.policy_path.write_text(site.policy_path.read_text() + "clock: " + "7" * 5000 + "\n")
    code, out, err = run(site, "--source", "file:%s" % site.bundle())
    assert code == 2, err
    rep = site.report()
    assert rep["outcome"] == "failed" and rep["stage"] == "policy" and rep["exit_code"] == 2
    started = time.monotonic()
    code, out, err = contextd("status", "--run-dir", str(site.run_dir), "--wait",
                              "--timeout", "5")
    assert code == 2 and "timed out" not in err, err
    assert "policy" in out and time.monotonic() - started < 5


def test_a_bug_while_loading_the_policy_still_ends_the_report(site, monkeypatch):
    from contextd import report
    from contextd import run as runner

    def broken(path):
        raise RuntimeError("a bug, with a secret: hunter2")
    monkeypatch.setattr(runner.policy, "load", broken)
    opts = runner.Options(policy=str(site.policy_path), root=str(site.root),
                          source="file:%s" % site.bundle(), run_dir=str(site.run_dir),
                          state_dir=str(site.state_dir), spool_dir=str(site.spool_dir))
    with pytest.raises(RuntimeError):
        runner.execute(opts)
    rep = site.report()
    assert rep["outcome"] == "failed" and rep["stage"] == "policy"
    assert rep["exit_code"] == 70 and report.exit_code(rep) == 70
    assert "RuntimeError" in rep["message"] and "hunter2" not in json.dumps(rep)


# --------------------------------------------------------------------------------------
# 3. MIME user-data: linear, bounded


def hostile_mime(n: int) -> bytes:
    return b'MIME-Version: 1.0\nContent-Type: text/plain; a="' + b";" * n + b"\n\nx\n"


def per_call(data: bytes) -> float:
    """Seconds one classify takes, averaged over enough calls to be above timer noise."""
    calls, started = 0, time.perf_counter()
    while True:
        with contextlib.suppress(ContextdError):
            userdata.classify(data)
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed > 0.05:
            return elapsed / calls


def test_mime_parameter_parsing_is_linear():
    sizes = [8 * 1024, 16 * 1024, 32 * 1024, 64 * 1024]
    samples = {n: [] for n in sizes}
    for _ in range(9):              # round robin: a busy moment hits every size alike
        for n in sizes:
            samples[n].append(per_call(hostile_mime(n)))
    times = {n: statistics.median(samples[n]) for n in sizes}
    # Per doubling, over the whole range (three doublings): one noisy size cannot fail it,
    # and a linear parser (2x) stays far from a quadratic one (4x).
    per_doubling = (times[sizes[-1]] / times[sizes[0]]) ** (1.0 / (len(sizes) - 1))
    assert per_doubling <= 2.5, "doubling the header cost %.1fx on average (%s)" % (
        per_doubling, {n: "%.2gs" % t for n, t in times.items()})


def test_hostile_mime_headers_are_refused_with_one_line():
    for data in (hostile_mime(990 * 1024),
                 b"MIME-Version: 1.0\nContent-Type: text/plain;\n a=\"" + b";\n " * 5000 + b"\n\n",
                 b"MIME-Version: 1.0\nContent-Type: text/plain" + b"; a=b" * 100 + b"\n\nx\n"):
        with pytest.raises(SourceError) as info:
            userdata.classify(data)
        assert "MIME" in info.value.one_line() and "Content-Type" in info.value.one_line()


def test_many_parts_are_bounded():
    part = b"--b\nContent-Type: text/plain\n\nx\n"
    data = (b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n'
            + part * 10000 + b"--b--\n")
    with pytest.raises(SourceError, match=r"more than .* MIME parts"):
        userdata.classify(data)


def test_a_run_on_hostile_user_data_ends_promptly(site):
    from fakes_sources import Imds

    data = gzip.compress(hostile_mime(990 * 1024), 9)
    assert len(data) < 16 * 1024                    # fits in EC2 user-data
    imds = Imds()
    try:
        imds.user_data(data)
        code, _, err = run(site, "--source", "ec2:%s" % imds.url, timeout=60)
    finally:
        imds.close()
    line = one_clear_line(err)
    assert code == 1 and "Content-Type" in line and "8192" in line, err
    assert site.report()["outcome"] == "rejected"


# --------------------------------------------------------------------------------------
# 4. A FIFO is not a file


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(str(path))
    return path


def refused_promptly(site, *extra):
    code, _, err = run(site, *extra)
    line = one_clear_line(err)
    assert code == 1 and "not a regular file" in line, err
    return line


def test_fifo_as_source_file(site):
    refused_promptly(site, "--source", "file:%s" % fifo(site.tmp / "user-data"))


def test_fifo_at_the_policys_file_path(site):
    site.policy.update(sources=["file"], file={"path": "/etc/contextd/context"})
    site.write_policy()
    fifo(site.root / "etc/contextd/context")
    refused_promptly(site)


def test_a_symlink_at_the_policys_file_path_is_followed(site):
    """The site's own choice (the policy and the image are trusted); the bundle is signed."""
    site.policy.update(sources=["file"], file={"path": "/etc/contextd/context"})
    site.write_policy()
    (site.root / "etc/contextd").mkdir(parents=True)
    os.symlink(str(site.bundle()), str(site.root / "etc/contextd/context"))
    code, _, err = run(site)
    assert code == 0, err


def test_fifo_in_a_context_directory(site):
    d = site.tmp / "ctx"
    fifo(d / "contextd/payload.yaml")
    refused_promptly(site, "--source", "dir:%s" % d)


def test_fifo_as_a_listed_file(site):
    d = site.tmp / "ctx"
    (d / "contextd").mkdir(parents=True)
    doc = base_payload()
    doc["files"] = [{"path": "extra.conf", "sha256": hashlib.sha256(b"").hexdigest()}]
    text = dump_payload(doc)
    (d / "contextd/payload.yaml").write_bytes(text)
    bundle = ssh_signed_bundle(site, text)
    sig = bundle.read_text().split("-----END CONTEXTD PAYLOAD-----\n", 1)[1]
    (d / "contextd/payload.yaml.sig").write_text(sig)
    fifo(d / "extra.conf")
    refused_promptly(site, "--source", "dir:%s" % d)


def test_fifo_as_iso(site):
    code, _, err = run(site, "--source", "iso:%s" % fifo(site.tmp / "context.iso"))
    assert code == 1 and "not a file or block device" in one_clear_line(err), err


def test_fifo_as_the_policy(site):
    """Trusted, but a FIFO there (a mistake, or a test harness) must not hang the boot: the
    policy is opened without blocking, then refused as not a regular file (exit 2)."""
    site.policy_path.unlink()
    fifo(site.policy_path)
    code, _, err = run(site, "--source", "file:%s" % site.bundle())
    assert code == 2 and "not a regular file" in one_clear_line(err), err
    assert site.report()["stage"] == "policy"


def test_fifo_given_to_explain(site):
    """`explain` sniffs its argument for an ISO before choosing a reader: that read must not
    block on a FIFO either."""
    code, _, err = run_cli(["explain", str(fifo(site.tmp / "bundle")), "--policy",
                              str(site.write_policy())])
    assert code == 1 and "not a regular file" in one_clear_line(err), err


def test_fifo_in_the_image_is_not_read(site):
    """Files the run reads from the image (/etc/machine-id names the instance when the
    platform does not) are read without blocking: a FIFO there is an error, not a hang."""
    site.write_policy()
    fifo(site.root / "etc/machine-id")
    code, _, err = run(site, "--source", "file:%s" % site.bundle())
    assert code == 0, err               # read as no machine id; before, open() never returned
    assert site.report()["outcome"] == "applied"
