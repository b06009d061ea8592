"""Size bombs: huge or endless input ends in bounded time and memory with a clear message."""

import hashlib
import subprocess
import sys
import zlib

from conftest import count


# Linux carries the RSS high-water mark of the process that forked across exec, so a child
# of this (large) test process would report our size. A small launcher forks contextd and
# reports the child's own peak on its stdout.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "contextd"] + sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss)
sys.exit(os.WEXITSTATUS(status))
"""


def run_measured(site, *argv):
    """contextd as a child process; returns (exit code, stderr, peak RSS in MB)."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, "run", *argv,
                           "--policy", str(site.policy_path), "--root", str(site.root),
                           "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir),
                           "--spool-dir", str(site.tmp / "spool")],
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stderr, int(proc.stdout.split()[-1]) / 1024


def iso_with_listed_file(site, payload_doc, size, digest=None):
    tree = site.tmp / "tree"
    (tree / "contextd").mkdir(parents=True)
    big = tree / "data.bin"
    with open(big, "wb") as f:
        f.truncate(size)                      # sparse: zeros, cheap to make
    if digest is None:
        digest = hashlib.sha256()
        with open(big, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest = digest.hexdigest()
    payload_doc["files"] = [{"path": "data.bin", "sha256": digest}]
    bundle = site.bundle(payload_doc)
    text = bundle.read_text()
    (tree / "contextd/payload.yaml").write_bytes((site.tmp / "payload.yaml").read_bytes())
    (tree / "contextd/payload.yaml.sig").write_text(text[text.index("-----BEGIN SSH"):])
    iso = site.tmp / "big.iso"
    subprocess.run(["genisoimage", "-quiet", "-V", "CONTEXT", "-J", "-R", "-o", str(iso),
                    str(tree)], check=True)
    big.unlink()
    return iso


def test_a_1_gib_file_on_the_iso_is_refused_unread(site, payload_doc):
    iso = iso_with_listed_file(site, payload_doc, 1 << 30, digest="0" * 64)
    try:
        code, err, rss = run_measured(site, "--source", "iso:%s" % iso)
    finally:
        iso.unlink()
    assert code == 1, err
    assert "data.bin is 1073741824 bytes, over the limit" in err
    assert rss < 80, rss
    assert site.snapshot() == {}
    count("inputs fuzzed")


def test_a_listed_64_mib_file_is_hashed_in_flat_memory(site, payload_doc):
    iso = iso_with_listed_file(site, payload_doc, 64 << 20)
    try:
        code, err, rss = run_measured(site, "--source", "iso:%s" % iso)
    finally:
        iso.unlink()
    assert code == 0, err
    assert rss < 80, "peak RSS %.1f MB: the listed file was not streamed" % rss


def test_gzip_bomb_user_data(site):
    bomb = site.tmp / "bomb.gz"
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)        # gzip, made in 1 MiB steps
    with open(bomb, "wb") as f:
        f.write(packer.compress(b"#contextd-signed-v1\n"))
        for _ in range(256):
            f.write(packer.compress(b"A" * (1 << 20)))
        f.write(packer.flush())
    code, err, rss = run_measured(site, "--source", "file:%s" % bomb)
    assert code == 1 and "decompresses to more than" in err, err
    assert rss < 80, rss
    count("inputs fuzzed")


def test_deeply_nested_policy(site):
    site.policy_path.write_bytes(b"version: 1\nsite: S\ntrust: "
                                 + b"[" * 5000 + b"]" * 5000 + b"\n")
    code, err, _ = run_measured(site, "--source", "file:/nonexistent")
    assert code == 2 and "nest" in err and "Traceback" not in err, err
    count("inputs fuzzed")
