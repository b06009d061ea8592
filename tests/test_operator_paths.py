"""The path matrix (issue 15): every command x every path argument x every way a path can be
wrong. One rule for the exit code: a file the user named that cannot be read or written is
2; only the context (what `run --source` and `explain` judge) is 1 when it cannot be read
(DESIGN section 3: "the context could not be read"). Never 70, one line on stderr naming the
path, and `run` always leaves its report when its run dir is usable.

The commands run in this process (cli.main), each under an alarm: a FIFO that hangs an open()
fails the case instead of the suite.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest

import inprocess
from conftest import base_payload, dump_payload, keygen

from contextd import cli


@pytest.fixture(autouse=True)
def _in_process():
    """cli.main in this process leaves no handler or secret behind (tests/inprocess.py)."""
    yield from inprocess.isolated()


# How a path can be wrong. For an argument that names a directory, "directory" is replaced
# by "file" (a regular file where a directory is wanted).
KINDS = ("missing", "directory", "under-a-file", "fifo", "devnull", "missing-parent")
ROOT = os.geteuid() == 0


class Hang(BaseException):
    """The alarm fired: not an Exception, so cli.main cannot turn it into exit 70."""


def _alarm(signum, frame):
    raise Hang()


class Scene:
    """Good inputs for every command, and bad paths of every kind."""

    def __init__(self, tmp: Path, keys):
        self.tmp = tmp
        self.key, pub = keys["atlas"]
        policy = {"version": 1, "site": "TEST-SITE", "sources": [],
                  "trust": {"atlas": {"signers": [{"id": "a", "ssh_key": pub}],
                                      "allow": {"cvmfs": {"repositories": ["*"]}}}}}
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(json.dumps(policy))
        self.policy.chmod(0o644)
        doc = dict(base_payload(), targets=[{"site": "TEST-SITE"}])
        doc["cvmfs"] = {"repositories": ["atlas.cern.ch"]}
        for section in ("htcondor", "puppet", "report"):
            del doc[section]
        self.payload = tmp / "payload.yaml"
        self.payload.write_bytes(dump_payload(doc))
        self.bundle = tmp / "payload.bundle"
        self.ctxdir = tmp / "ctxdir"
        (self.ctxdir / "contextd").mkdir(parents=True)
        self.iso = tmp / "context.iso"
        with inprocess.kept_clean():
            assert cli.main(["sign", "--key", str(self.key), str(self.payload), "-o",
                             str(self.bundle)]) == 0
            assert cli.main(["pack", "iso", str(self.bundle), "-o", str(self.iso)]) == 0
        ca, _ = keygen(tmp, "ca")
        subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "id", "-n", "p",
                        str(self.key) + ".pub"], check=True, capture_output=True)
        # Own copy of the key and cert: ssh-keygen writes KEY-cert.pub next to the key.
        self.cert = Path(str(self.key) + "-cert.pub")
        self.x509_key, self.x509_cert = tmp / "x.key", tmp / "x.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(self.x509_key),
                        "-out", str(self.x509_cert), "-subj", "/CN=robot", "-days", "2"],
                       check=True, capture_output=True)
        (tmp / "a-dir").mkdir()
        (tmp / "a-file").write_text("not what you think\n")
        os.mkfifo(str(tmp / "a-fifo"))
        self.root = tmp / "root"
        self.root.mkdir()
        self.count = 0

    def bad(self, kind: str, wants_dir: bool, written: bool) -> str:
        """A fresh bad path of `kind` (fresh: a case that creates it must not feed the next)."""
        self.count += 1
        n = self.count
        if kind == "missing":
            return str(self.tmp / ("missing-%d" % n))
        if kind == "directory":
            return str(self.tmp / ("a-file" if wants_dir else "a-dir"))
        if kind == "under-a-file":      # ENOTDIR: unreadable even for root
            return str(self.tmp / "a-file" / "x")
        if kind == "fifo":
            return str(self.tmp / "a-fifo")
        if kind == "missing-parent":
            return str(self.tmp / ("no-dir-%d" % n) / "x")
        assert kind == "devnull"
        if not (written or wants_dir) or not ROOT:
            return "/dev/null"
        # Root could replace /dev/null itself if the defence failed: use a twin device.
        twin = self.tmp / ("null-%d" % n)
        os.mknod(str(twin), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        return str(twin)

    def dirs(self, tag: str) -> Dict[str, str]:
        base = self.tmp / ("site-%s" % tag)
        return {"--root": str(self.root), "--state-dir": str(base / "state"),
                "--run-dir": str(base / "run"), "--spool-dir": str(base / "spool")}


@pytest.fixture(scope="module")
def scene(tmp_path_factory, keys) -> Scene:
    return Scene(tmp_path_factory.mktemp("matrix"), keys)


# An argument: (command, name, wants a directory, is written to, role). Roles decide the
# expected exit code: "context" is 1, "site"/"input"/"output"/"dir" 2, with the exceptions
# in expected() below.
Build = Callable[[Scene, str, str], List[str]]


def _run(opt: str, source_kind: Optional[str] = None) -> Build:
    def build(s: Scene, bad: str, tag: str) -> List[str]:
        d = dict(s.dirs(tag), **{"--policy": str(s.policy)})
        source = "file:%s" % s.bundle
        if source_kind is not None:
            source = "%s:%s" % (source_kind, bad)
        else:
            d[opt] = bad
        argv = ["run", "--source", source]
        for name, value in d.items():
            argv += [name, value]
        return argv
    return build


def _explain(opt: str) -> Build:
    def build(s: Scene, bad: str, tag: str) -> List[str]:
        d = {"bundle": str(s.bundle), "--policy": str(s.policy), "--root": str(s.root)}
        d[opt] = bad
        return ["explain", d.pop("bundle"), *[x for kv in d.items() for x in kv]]
    return build


def _sign(opt: str, x509: bool = False) -> Build:
    def build(s: Scene, bad: str, tag: str) -> List[str]:
        if x509:
            d = {"--x509-key": str(s.x509_key), "--x509-cert": str(s.x509_cert)}
        else:       # --cert only where it is the bad path: older cryptography cannot sign
            d = {"--key": str(s.key)}  # with SSH certificates (sshsig.certificate_support_problem)
            if opt == "--cert":
                d["--cert"] = str(s.cert)
        if opt == "--x509-chain":
            d["--x509-chain"] = ""
        d["payload"] = str(s.payload)
        d["-o"] = str(s.tmp / ("out-%s.bundle" % tag))
        d[opt] = bad
        return ["sign", d.pop("payload"), *[x for kv in d.items() for x in kv]]
    return build


def _pack(carrier: str, opt: str) -> Build:
    def build(s: Scene, bad: str, tag: str) -> List[str]:
        d = {"bundle": str(s.bundle), "-o": str(s.tmp / ("out-%s.%s" % (tag, carrier)))}
        if opt == "--file":
            d["--file"] = "contextd/extra=%s" % bad
        else:
            d[opt] = bad
        return ["pack", carrier, d.pop("bundle"), *[x for kv in d.items() for x in kv]]
    return build


def _simple(*words: str, opt: str, others: Tuple[str, ...] = ()) -> Build:
    def build(s: Scene, bad: str, tag: str) -> List[str]:
        d = {k: v for k, v in s.dirs(tag).items() if k in others}
        d[opt] = bad
        return [*words, *[x for kv in d.items() for x in kv]]
    return build


def _image(action: str, opt: str) -> Build:
    """`image sign` into a fresh image root per case (it writes the manifest there), or
    `image show` of the scene's root (no manifest: exit 1 when every path is good)."""
    def build(s: Scene, bad: str, tag: str) -> List[str]:
        if action == "sign":
            root = s.tmp / ("image-%s" % tag)
            root.mkdir()
            d = {"--key": str(s.key), "--root": str(root), "--name": "img", "--version": "1"}
        else:
            d = {"--root": str(s.root), "--policy": str(s.policy)}
        d[opt] = bad
        return ["image", action, *[x for kv in d.items() for x in kv]]
    return build


def _check(s: Scene, bad: str, tag: str) -> List[str]:
    return ["policy", "check", bad]


ARGS: Dict[str, Tuple[Build, bool, bool, str]] = {
    "run --policy": (_run("--policy"), False, False, "site"),
    "run --source file:": (_run("", "file"), False, False, "context"),
    "run --source iso:": (_run("", "iso"), False, False, "context"),
    "run --source dir:": (_run("", "dir"), True, False, "context"),
    "run --root": (_run("--root"), True, True, "dir"),
    "run --state-dir": (_run("--state-dir"), True, True, "made"),
    "run --run-dir": (_run("--run-dir"), True, True, "made"),
    "run --spool-dir": (_run("--spool-dir"), True, True, "made"),
    "explain BUNDLE": (_explain("bundle"), False, False, "context"),
    "explain --policy": (_explain("--policy"), False, False, "site"),
    "explain --root": (_explain("--root"), True, False, "dir"),
    "sign PAYLOAD": (_sign("payload"), False, False, "input"),
    "sign --key": (_sign("--key"), False, False, "input"),
    "sign --cert": (_sign("--cert"), False, False, "input"),
    "sign -o": (_sign("-o"), False, True, "output"),
    "sign --x509-key": (_sign("--x509-key", True), False, False, "input"),
    "sign --x509-cert": (_sign("--x509-cert", True), False, False, "input"),
    "sign --x509-chain": (_sign("--x509-chain", True), False, False, "input"),
    "pack iso BUNDLE": (_pack("iso", "bundle"), False, False, "input"),
    "pack iso -o": (_pack("iso", "-o"), False, True, "output"),
    "pack iso --file": (_pack("iso", "--file"), False, False, "input"),
    "pack user-data BUNDLE": (_pack("user-data", "bundle"), False, False, "input"),
    "pack user-data -o": (_pack("user-data", "-o"), False, True, "output"),
    "policy check FILE": (_check, False, False, "site"),
    "status --root": (_simple("status", opt="--root"), True, False, "dir"),
    "status --run-dir": (_simple("status", opt="--run-dir"), True, False, "status"),
    "report flush --root": (_simple("report", "flush", opt="--root"), True, False, "dir"),
    "report flush --spool-dir": (_simple("report", "flush", opt="--spool-dir"), True, True,
                                 "spool"),
    "image sign --key": (_image("sign", "--key"), False, False, "input"),
    "image sign --root": (_image("sign", "--root"), True, True, "dir"),
    "image show --root": (_image("show", "--root"), True, False, "dir"),
    "image show --policy": (_image("show", "--policy"), False, False, "site"),
}


def expected(role: str, kind: str) -> int:
    absent = kind in ("missing", "missing-parent")
    if role == "context":
        return 1
    if role == "output" and kind == "missing":
        return 0                    # created; a missing directory is not (exit 2)
    if role == "made" and absent:
        return 0                    # created, with its missing parents
    if role == "status" and absent:
        return 1                    # no run recorded there: status's own "not yet" (exit 1)
    if role == "spool" and absent:
        return 0                    # nothing spooled
    return 2


CASES = [(arg, kind) for arg in ARGS for kind in KINDS]


def invoke(argv: List[str], capsys) -> Tuple[int, str, str]:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    try:
        code = cli.main(argv)
    except Hang:
        code = -1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("arg", "kind"), CASES, ids=["%s|%s" % c for c in CASES])
def test_path_matrix(scene, capsys, arg, kind):
    build, wants_dir, written, role = ARGS[arg]
    bad = scene.bad(kind, wants_dir, written)
    tag = "%s-%s" % (arg.replace(" ", "_").replace("-", ""), kind)
    argv = build(scene, bad, tag)
    code, _, err = invoke(argv, capsys)
    want = expected(role, kind)
    assert code != -1, "hung: %s" % argv
    assert code == want, "%s -> exit %d, not %d: %s" % (argv, code, want, err)
    if want != 0:
        lines = err.strip().splitlines()
        assert len(lines) == 1, "not one line: %r" % err
        assert bad in lines[0] or bad.replace("/x", "") in lines[0], lines[0]
        assert "Traceback" not in err
    if argv[0] == "run" and arg != "run --run-dir":
        run_dir = Path(argv[argv.index("--run-dir") + 1])
        rep = json.loads((run_dir / "report.json").read_text())
        assert rep["finished_at"], rep
        assert rep.get("exit_code", code) == code, rep


def test_a_bad_source_spec_is_exit_2_and_its_report_says_failed(scene, capsys):
    argv = _run("--spool-dir")(scene, str(scene.tmp / "spool-bad-spec"), "bad-spec")
    argv[argv.index("--source") + 1] = "ftp:somewhere"
    code, _, err = invoke(argv, capsys)
    assert code == 2 and "ftp" in err, err
    rep = json.loads((Path(argv[argv.index("--run-dir") + 1]) / "report.json").read_text())
    assert (rep["outcome"], rep["exit_code"]) == ("failed", 2), rep
