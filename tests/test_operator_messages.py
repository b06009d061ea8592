"""Messages that point at the cause (issue 15), each seen as a user sees it: the one line
`contextd` prints, from the real command line in this process."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import inprocess
from conftest import base_payload, dump_payload, keygen, utc

from contextd import cli


@pytest.fixture(autouse=True)
def _in_process():
    """cli.main in this process leaves no handler or secret behind (tests/inprocess.py)."""
    yield from inprocess.isolated()


NS = "contextd-payload"
LISTED = "listed under trust"        # the old catch-all hint


def main(capsys, *argv: str):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ssh_sign(key: Path, payload: bytes, tmp: Path, namespace: str = NS) -> str:
    data = tmp / "to-sign"
    data.write_bytes(payload)
    sig = Path(str(data) + ".sig")
    if sig.exists():
        sig.unlink()
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", namespace,
                    str(data)], check=True, capture_output=True)
    return sig.read_text()


def bundle_of(payload: bytes, sig: str) -> bytes:
    b64 = base64.b64encode(payload).decode()
    lines = [b64[i:i + 76] for i in range(0, len(b64), 76)]
    return ("#contextd-signed-v1\n-----BEGIN CONTEXTD PAYLOAD-----\n%s\n"
            "-----END CONTEXTD PAYLOAD-----\n%s" % ("\n".join(lines), sig)).encode()


def run_bundle(site, capsys, data: bytes, *extra: str):
    path = site.tmp / "hand.bundle"
    path.write_bytes(data)
    return main(capsys, "run", "--source", "file:%s" % path, "--policy", str(site.policy_path),
                "--root", str(site.root), "--run-dir", str(site.run_dir), "--state-dir",
                str(site.state_dir), "--spool-dir", str(site.spool_dir), *extra)


def small_payload(**changes) -> bytes:
    doc = dict(base_payload(), **changes)
    for section in ("htcondor", "puppet", "report"):
        doc.pop(section, None)
    return dump_payload(doc)


# --- "no trusted signature": each cause its own fix ---------------------------------------

def test_wrong_namespace_says_which_namespace(site, capsys):
    payload = small_payload()
    sig = ssh_sign(site.keys["atlas"][0], payload, site.tmp, namespace="file")
    code, _, err = run_bundle(site, capsys, bundle_of(payload, sig))
    assert code == 1
    assert "namespace" in err and "-n contextd-payload" in err, err
    assert LISTED not in err, err


def test_tampered_payload_says_it_changed_after_signing(site, capsys):
    payload = small_payload()
    sig = ssh_sign(site.keys["atlas"][0], payload, site.tmp)
    code, _, err = run_bundle(site, capsys, bundle_of(payload + b"# edited\n", sig))
    assert code == 1
    assert "changed after it was signed" in err, err
    assert LISTED not in err, err


def test_untrusted_key_says_to_list_it(site, capsys):
    payload = small_payload()
    sig = ssh_sign(site.keys["stranger"][0], payload, site.tmp)
    code, _, err = run_bundle(site, capsys, bundle_of(payload, sig))
    assert code == 1
    assert "trust.<vo>.signers" in err and "SHA256:" in err, err


def test_wrong_principal_says_which_principals(site, capsys, tmp_path):
    from contextd.trust import sshsig

    if sshsig.certificate_support_problem():       # as test_attack_threshold.py does
        pytest.skip("SSH certificates need a newer cryptography")
    ca, ca_pub = keygen(tmp_path, "vo-ca")
    key, _ = keygen(tmp_path, "user")
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "robot", "-n", "someone-else",
                    str(key) + ".pub"], check=True, capture_output=True)
    site.policy["trust"]["atlas"]["signers"].append(
        {"id": "atlas-ca", "ssh_ca": ca_pub, "principals": ["atlas-contextd"]})
    site.write_policy()
    payload = small_payload()
    sig = ssh_sign(Path(str(key) + "-cert.pub"), payload, tmp_path)
    code, _, err = run_bundle(site, capsys, bundle_of(payload, sig))
    assert code == 1
    assert "principal" in err and "atlas-contextd" in err, err
    assert LISTED not in err, err


# --- durations, policy errors, the command line -------------------------------------------

def test_durations_as_people_write_them(site, capsys):
    site.policy["max_validity"] = "90d"
    site.policy["clock_skew"] = "5m"
    site.write_policy()
    code, out, _ = main(capsys, "policy", "check", str(site.policy_path))
    assert code == 0
    assert "max_validity: 90d" in out and "clock_skew: 5m" in out, out
    assert "wait_for_source: 1m" in out, out


def test_validity_violation_in_days(site, capsys):
    payload = small_payload(not_before=utc(-1), expires=utc(40))
    sig = ssh_sign(site.keys["atlas"][0], payload, site.tmp)
    code, _, err = run_bundle(site, capsys, bundle_of(payload, sig))
    assert code == 1
    assert "longer than the site maximum 31d" in err, err
    assert "days," not in err, err


def test_policy_error_names_file_full_key_path_and_suggests(site, capsys):
    site.policy["trust"]["atlas"]["allow"]["cvmfs"] = {"repositorys": ["*"]}
    site.write_policy()
    code, _, err = main(capsys, "policy", "check", str(site.policy_path))
    assert code == 2
    assert str(site.policy_path) in err, err
    assert "trust.atlas.allow.cvmfs: unknown key 'repositorys'" in err, err
    assert "did you mean 'repositories'?" in err, err


def test_argparse_error_is_one_line_without_doubled_prefix(capsys):
    code, _, err = main(capsys, "run", "--bogus")
    assert code == 2
    assert err.count("contextd") <= 2 and "error: contextd:" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_verbose_after_the_subcommand(site, capsys):
    code, _, err = main(capsys, "policy", "check", str(site.policy_path), "-v")
    assert code == 0, err


# --- run at a terminal: what happened to the report ---------------------------------------

def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _down_site(site):
    site.policy["report"] = {"urls": ["http://127.0.0.1:%d/site" % _closed_port()]}
    site.write_policy()
    payload = small_payload()
    return bundle_of(payload, ssh_sign(site.keys["atlas"][0], payload, site.tmp))


def test_run_at_a_terminal_says_reports_were_spooled(site, capsys, monkeypatch):
    data = _down_site(site)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    code, _, err = run_bundle(site, capsys, data)
    assert code == 0, err
    # One line for a person (the journal, where there is one, gets one event per report).
    lines = [line for line in err.splitlines() if "not delivered, spooled in" in line]
    assert len(lines) == 1, err
    assert "spooled" in lines[0] and "contextd report flush" in lines[0], err
    assert str(site.spool_dir) in lines[0], err
    assert "Traceback" not in err
    assert list(site.spool_dir.glob("*.json"))


def test_verbose_shows_our_words_not_urllib3s(site, capsys):
    code, _, err = run_bundle(site, capsys, _down_site(site), "-v")
    assert code == 0, err
    assert "not delivered" in err, err
    assert "Retry(" not in err and "urllib3" not in err and "NewConnectionError" not in err, err


def test_dry_run_json_says_dry_run(site, capsys):
    payload = small_payload()
    sig = ssh_sign(site.keys["atlas"][0], payload, site.tmp)
    code, out, err = run_bundle(site, capsys, bundle_of(payload, sig), "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["dry_run"] is True



# --- sign checks with the agent's own parser ----------------------------------------------

def _sign_raw(site, capsys, raw: bytes):
    path = site.tmp / "raw.yaml"
    path.write_bytes(raw)
    out = site.tmp / "raw.bundle"
    if out.exists():
        out.unlink()
    code, _, err = main(capsys, "sign", "--key", str(site.keys["atlas"][0]), str(path), "-o",
                        str(out))
    return code, err, out


@pytest.mark.parametrize(("change", "needle"), [
    ({"ssh": {"authorized_keys": ["x"]}}, "no contextd plugin handles section 'ssh'"),
    ({"not_before": "2026-11-24T00:00:00"}, "'Z' required"),
    ({"cvmfs": {"repositorys": ["a"]}}, "did you mean 'repositories'?"),
])
def test_sign_refuses_what_every_vm_would_reject(site, capsys, change, needle):
    doc = dict(base_payload(), **change)
    code, err, out = _sign_raw(site, capsys, dump_payload(doc))
    assert code == 1 and needle in err and "not signed" in err, err
    assert not out.exists()


@pytest.mark.parametrize(("window", "needle"), [
    ((-20, -10), "expired at"), ((-1, 60), "valid for 61d, longer than the 31d")])
def test_sign_warns_of_what_sites_will_refuse(site, capsys, window, needle):
    doc = dict(base_payload(), not_before=utc(window[0]), expires=utc(window[1]))
    code, err, out = _sign_raw(site, capsys, dump_payload(doc))
    assert code == 0 and out.exists(), err
    assert "warning: " in err and needle in err, err


def test_policy_check_prints_allow_rules_and_revocations(site, capsys):
    fp = "SHA256:" + "A" * 43
    site.policy["trust"]["atlas"]["revoked"] = {"ssh_fingerprints": [fp], "serials": [7]}
    site.policy["trust"]["cms"]["allow"]["puppet"] = "deny"
    site.write_policy()
    code, out, _ = main(capsys, "policy", "check", str(site.policy_path), "--json")
    assert code == 0
    atlas = json.loads(out)["trust"]["atlas"]
    assert atlas["revoked"]["ssh_fingerprints"] == [fp] and atlas["revoked"]["serials"] == [7]
    assert atlas["allow"]["cvmfs"]["repositories"] == ["atlas*.cern.ch", "sft.cern.ch"]
    assert atlas["allow"]["htcondor"]["roles"] == ["execute"]
    assert json.loads(out)["trust"]["cms"]["allow"]["puppet"] == "deny"


def test_explain_accepts_every_fact_it_prints(site, capsys):
    b = site.bundle()
    code, out, err = main(capsys, "explain", str(b), "--policy", str(site.policy_path), "--json")
    assert code in (0, 1), err
    printed = json.loads(out)["facts"]
    argv = ["explain", str(b), "--policy", str(site.policy_path), "--json"]
    for name in ("site", "hostname", "cloud", "region", "instance_id", "image_id", *printed):
        argv += ["--fact", "%s=x-%s" % (name, name.replace("_", "-"))]
    code, out, err = main(capsys, *argv)
    assert code in (0, 1) and "not NAME=VALUE" not in err, err
    assert json.loads(out)["facts"]["hostname"] == "x-hostname"


# --- kill switches ------------------------------------------------------------------------

def test_switch_file_under_the_root_skips_the_run_with_a_report(site, capsys):
    (site.root / "etc" / "contextd").mkdir(parents=True)
    (site.root / "etc" / "contextd" / "disabled").touch()
    before = site.snapshot()
    code, _, err = main(capsys, "run", "--source", "file:%s" % site.bundle(), "--policy",
                        str(site.policy_path), "--root", str(site.root), "--run-dir",
                        str(site.run_dir), "--state-dir", str(site.state_dir))
    assert code == 0, err
    rep = site.report()
    assert (rep["outcome"], rep["stage"]) == ("skipped", "disabled"), rep
    assert "/etc/contextd/disabled" in rep["message"]
    assert site.snapshot() == before
    code, out, _ = main(capsys, "status", "--run-dir", str(site.run_dir))
    assert code == 0 and "disabled" in out


@pytest.mark.parametrize("switch", ["file", "cmdline"])
def test_status_wait_returns_at_once_when_switched_off(site, capsys, switch):
    import time

    if switch == "file":
        (site.root / "etc" / "contextd").mkdir(parents=True)
        (site.root / "etc" / "contextd" / "disabled").touch()
        needle = "/etc/contextd/disabled"
    else:
        (site.root / "proc").mkdir()
        (site.root / "proc" / "cmdline").write_text("ro quiet contextd=off console=ttyS0\n")
        needle = "contextd=off"
    started = time.monotonic()
    code, out, err = main(capsys, "status", "--wait", "--timeout", "30", "--root",
                          str(site.root))
    assert time.monotonic() - started < 5
    assert code == 0 and needle in out, (out, err)


# --- --help -------------------------------------------------------------------------------

def _parsers(parser, name="contextd"):
    import argparse

    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, sub in action.choices.items():
                yield from _parsers(sub, "%s %s" % (name, word))


def test_every_option_has_help_that_shows_its_default():
    import argparse

    missing = []
    for name, parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                                   argparse._SubParsersAction)):
                continue
            label = "%s %s" % (name, "/".join(action.option_strings) or action.dest)
            if not action.help:
                missing.append("%s: no help" % label)
                continue
            optional = (action.option_strings and action.nargs != 0 and not action.required) \
                or action.nargs == "?"
            if optional and "default" not in action.help:
                missing.append("%s: no default in %r" % (label, action.help))
    assert missing == []


def test_top_level_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for code, word in ((0, "success"), (1, "rejected"), (2, "usage"), (3, "apply failed"),
                       (70, "internal error")):
        assert "%d %s" % (code, word) in out, out


# --- make demo ----------------------------------------------------------------------------

def test_demo_tells_a_short_story_and_keeps_the_full_report(tmp_path):
    repo = Path(__file__).resolve().parent.parent
    wrapper = tmp_path / "contextd"
    wrapper.write_text('#!/bin/sh\nexec "%s" -m contextd "$@"\n' % sys.executable)
    wrapper.chmod(0o755)
    out = tmp_path / "demo"
    env = dict(__import__("os").environ, CONTEXTD=str(wrapper), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(repo / "examples" / "demo.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=str(repo))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) <= 40, proc.stdout                    # fits a screen
    for needle in ("signs", "explain", "verdict:   ACCEPTED", "contextd: applied",
                   "image almalinux 9.4", "receiver got 2 copies", "FULL=1"):
        assert needle in proc.stdout, needle
    rep = json.loads((out / "root" / "run" / "contextd" / "report.json").read_text())
    assert rep["outcome"] == "applied"
    assert rep["host"]["image"]["os_id"] == "almalinux"


def test_sign_force_signs_what_vms_reject_with_a_warning(site, capsys):
    path = site.tmp / "raw.yaml"
    path.write_bytes(dump_payload(dict(base_payload(), ssh={"authorized_keys": ["x"]})))
    code, out, err = main(capsys, "sign", "--force", "--key", str(site.keys["atlas"][0]),
                          str(path))
    assert code == 0 and out.startswith("#contextd-signed-v1"), err
    assert "warning: signed all the same (--force)" in err and "'ssh'" in err, err
