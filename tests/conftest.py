"""Shared fixtures: real keys from ssh-keygen, payloads, policies and a scratch site."""

import copy
import datetime
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# Fixtures shared by several test modules, kept beside the helpers they use.
pytest_plugins = ["image_fixtures"]

# No test reaches past this machine: HTTP(S) to anything but loopback goes to a proxy port
# nothing listens on (payloads name https://factory.example.org; reports to it get spooled).
os.environ.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
                  NO_PROXY="127.0.0.1,localhost,::1")
for _name in ("http_proxy", "https_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_name, None)


def utc(delta_days: float = 0) -> str:
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=delta_days)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def keygen(directory: Path, name: str, kind: str = "ed25519") -> Tuple[Path, str]:
    path = directory / name
    extra = {"ed25519": [], "ecdsa": ["-b", "256"], "rsa": ["-b", "3072"]}[kind]
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", name, "-f",
                    str(path)], check=True)
    return path, Path(str(path) + ".pub").read_text().strip()


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> Dict[str, Tuple[Path, str]]:
    d = tmp_path_factory.mktemp("keys")
    return {
        "atlas": keygen(d, "atlas-ctx"),
        "atlas2": keygen(d, "atlas-ctx-2", "ecdsa"),
        "cms": keygen(d, "cms-ctx"),
        "stranger": keygen(d, "stranger"),
    }


TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0QGF0bGFzIn0.c2VjcmV0LXRva2VuLXZhbHVl"
REPORT_TOKEN = "r3p0rt-t0ken-5ecret-value-0123456789"


def base_payload() -> Dict[str, Any]:
    return {
        "contextd": "payload/v1",
        "vo": "atlas",
        "serial": 2026112401,
        "not_before": utc(-1),
        "expires": utc(10),
        "targets": [{"site": "TEST-SITE"}],
        "cvmfs": {"repositories": ["atlas.cern.ch", "sft.cern.ch"], "quota_limit_mb": 20000},
        "htcondor": {"role": "execute", "central_manager": "atlas-cm.cern.ch",
                     "attributes": {"VMType": "atlas-worker"}, "token": TOKEN},
        "puppet": {"server": "puppet.cern.ch", "environment": "production"},
        "report": {"url": "https://factory.example.org/reports", "token": REPORT_TOKEN},
    }


def base_policy(keys: Dict[str, Tuple[Path, str]]) -> Dict[str, Any]:
    return {
        "version": 1,
        "site": "TEST-SITE",
        "sources": [],
        "clock_skew": "5m",
        "max_validity": "31d",
        "site_settings": {"cvmfs": {"http_proxy": "http://squid.example.org:3128;DIRECT"}},
        "trust": {
            "atlas": {
                "threshold": 1,
                "min_serial": 2026110100,
                "signers": [{"id": "atlas-ctx", "ssh_key": keys["atlas"][1]},
                            {"id": "atlas-ctx-2", "ssh_key": keys["atlas2"][1]}],
                "allow": {
                    "cvmfs": {"repositories": ["atlas*.cern.ch", "sft.cern.ch"],
                              "max_quota_mb": 50000},
                    "htcondor": {"roles": ["execute"], "central_managers": ["atlas-cm*.cern.ch"],
                                 "attributes": ["VMType"]},
                    "puppet": {"servers": ["puppet.cern.ch"], "environments": ["production"]},
                    "report": {"urls": ["https://*.example.org/*"]},
                },
            },
            "cms": {
                "signers": [{"id": "cms-ctx", "ssh_key": keys["cms"][1]}],
                "allow": {"cvmfs": {"repositories": ["cms.cern.ch"]}},
            },
        },
    }


def one_key_policy(pub: str) -> Dict[str, Any]:
    """The smallest policy that trusts `pub` for VO atlas (any CVMFS repository)."""
    return {"version": 1, "site": "S", "trust": {"atlas": {
        "signers": [{"id": "a", "ssh_key": pub}],
        "allow": {"cvmfs": {"repositories": ["*"]}}}}}


def dump_payload(doc: Dict[str, Any]) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False).encode()


class Site:
    """A scratch machine: a root, a run dir and a state dir outside it, and a policy."""

    def __init__(self, tmp: Path, keys: Dict[str, Tuple[Path, str]]):
        self.tmp = tmp
        self.keys = keys
        self.root = tmp / "root"
        self.root.mkdir()
        self.run_dir = tmp / "run"
        self.state_dir = tmp / "state"
        self.spool_dir = tmp / "spool"
        self.policy_path = tmp / "policy.yaml"
        self.policy = base_policy(keys)
        self.write_policy()

    def write_policy(self, doc: Optional[Dict[str, Any]] = None) -> Path:
        if doc is not None:
            self.policy = doc
        self.policy_path.write_text(yaml.safe_dump(self.policy, sort_keys=False))
        os.chmod(self.policy_path, 0o644)
        return self.policy_path

    def payload_file(self, doc: Optional[Dict[str, Any]] = None, name: str = "payload.yaml",
                     raw: Optional[bytes] = None) -> Path:
        path = self.tmp / name
        path.write_bytes(raw if raw is not None else dump_payload(doc or base_payload()))
        return path

    def sign(self, payload: Path, key: str = "atlas", out: Optional[Path] = None) -> Path:
        if out is None:                      # a fresh bundle; an explicit out appends
            out = payload.with_name(payload.name + ".bundle")
            if out.exists():
                out.unlink()
        # --force: the suite signs what sites must reject (contextd sign refuses it otherwise)
        code, _, err = self.cli("sign", "--force", "--key", str(self.keys[key][0]), str(payload),
                                "-o", str(out))
        assert code == 0, err
        return out

    def bundle(self, doc: Optional[Dict[str, Any]] = None, key: str = "atlas") -> Path:
        return self.sign(self.payload_file(doc), key)

    def cli(self, *argv: str) -> Tuple[int, str, str]:
        return run_cli(list(argv))

    def run(self, source: str, *extra: str,
            env: Optional[Dict[str, str]] = None) -> Tuple[int, str, str]:
        return run_cli(["run", "--source", source, "--policy", str(self.policy_path),
                        "--root", str(self.root), "--run-dir", str(self.run_dir),
                        "--state-dir", str(self.state_dir), "--spool-dir", str(self.spool_dir),
                        *extra], env=env)

    def snapshot(self) -> Dict[str, Tuple[bytes, int]]:
        return snapshot(self.root)

    def report(self) -> Dict[str, Any]:
        import json
        return json.loads((self.run_dir / "report.json").read_text())


COMMANDS = ("cvmfs_config", "puppet", "systemctl")


def fake_commands(bindir: Path, log: Path, failing: str = "") -> Dict[str, str]:
    """Stand-ins for the commands plugins run, first on PATH: each logs its argv to `log`
    and exits 0 (puppet: 2, its 'changes applied'), or 1 when it is `failing`."""
    bindir.mkdir(exist_ok=True)
    for name in COMMANDS:
        code = 1 if name == failing else (2 if name == "puppet" else 0)
        script = bindir / name
        script.write_text("#!/bin/sh\necho \"%s $*\" >> %s\nexit %d\n" % (name, log, code))
        script.chmod(0o755)
    return dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]))


# What the reliability suites tried, summed up in one line at the end of the run.
RELIABILITY = {"inputs fuzzed": 0, "tamperings rejected": 0, "faults injected": 0}


def count(kind: str, n: int = 1) -> None:
    RELIABILITY[kind] += n


def pytest_terminal_summary(terminalreporter):
    if any(RELIABILITY.values()):
        terminalreporter.write_line("reliability: " + ", ".join(
            "%d %s" % (n, kind) for kind, n in RELIABILITY.items()))


def snapshot(root: Path) -> Dict[str, Tuple[bytes, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (p.read_bytes() if p.is_file() else b"",
                                             st.st_mode)
    return out


def run_cli(argv: List[str], env: Optional[Dict[str, str]] = None) -> Tuple[int, str, str]:
    """contextd as a subprocess: what a user or an acceptance test sees."""
    proc = subprocess.run([sys.executable, "-m", "contextd", *argv],
                          capture_output=True, text=True, timeout=120, env=env)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def site(tmp_path, keys) -> Site:
    return Site(tmp_path, keys)


@pytest.fixture
def payload_doc() -> Dict[str, Any]:
    return copy.deepcopy(base_payload())

