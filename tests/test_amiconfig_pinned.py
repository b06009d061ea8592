"""A leading amiconfig `#!` script runs only when the site pinned its SHA-256
(`legacy.amiconfig.scripts`), as a pinned HEPiX prolog/epilog does: in apply's pre phase for
`#!/bin/sh before`, its post phase otherwise; any other bytes, and any other interpreter than
/bin/sh or /bin/bash, never run.
"""

import hashlib
import json

import pytest

from contextd import apply, legacy, policy
from contextd.errors import PolicyError, ScriptFailed
from contextd.trust import verify

from test_amiconfig_cernvm import CERNVM, cernvm_policy, sourced
from test_legacy import NOW, pin, run_env


def probe_script(marker, site, shebang="#!/bin/sh before", code=0):
    """A script that says, in `marker`, whether the cvmfs plugin had written its file yet."""
    applied = site.root / "etc/cvmfs/default.local"
    return ("%s\ntest -e %s && echo after-plugins >> %s || echo before-plugins >> %s\n"
            "echo said-on-stdout\nexit %d\n" % (shebang, applied, marker, marker, code)).encode()


def run_with(site, tmp_path, script, pins, *extra):
    doc = cernvm_policy(site.keys)
    doc["legacy"]["amiconfig"]["scripts"] = pins
    site.write_policy(doc)
    user_data = tmp_path / "user-data"
    user_data.write_bytes(script + CERNVM)
    return run_env(site, tmp_path, "--source", "file:%s" % user_data, *extra)


def flip_one_byte(data):
    i = data.index(b"echo") + 1
    return data[:i] + (b"E" if data[i:i + 1] != b"E" else b"e") + data[i + 1:]


# --------------------------------------------------------------------------------------
# Attacks: bytes other than the pinned ones never run


def test_attack_pinned_hash_but_one_byte_differs_does_not_run(site, tmp_path):
    marker = tmp_path / "ran"
    pinned = probe_script(marker, site)
    sent = flip_one_byte(pinned)
    assert len(sent) == len(pinned) and sent != pinned
    code, _, err = run_with(site, tmp_path, sent, [pin(pinned)], "--run-commands")
    assert code == 0, err
    assert not marker.exists(), "a script that differs from its pin by one byte ran"
    script = site.report()["legacy"]["script"]
    assert script["sha256"] == hashlib.sha256(sent).hexdigest()
    assert script["status"] == "not run" and "does not match" in script["reason"]


def test_attack_unpinned_script_does_not_run(site, tmp_path):
    marker = tmp_path / "ran"
    sent = probe_script(marker, site)
    code, _, err = run_with(site, tmp_path, sent, [pin(b"#!/bin/sh\ntrue\nexit 0\n")],
                            "--run-commands")
    assert code == 0, err
    assert not marker.exists(), "an unpinned amiconfig script ran"
    script = site.report()["legacy"]["script"]
    assert script["status"] == "not run" and "never runs" in script["reason"]


def test_pinned_script_with_another_interpreter_is_refused_clearly(site, tmp_path):
    marker = tmp_path / "ran"
    sent = probe_script(marker, site, shebang="#!/usr/bin/env python3")
    code, _, err = run_with(site, tmp_path, sent, [pin(sent)], "--run-commands")
    assert code == 0, err
    assert not marker.exists()
    script = site.report()["legacy"]["script"]
    assert script["status"] == "not run"
    assert script["reason"].startswith("interpreter /usr/bin/env not supported")


# --------------------------------------------------------------------------------------
# A pinned script runs, in its phase, inside apply


@pytest.mark.parametrize(("shebang", "seen"), [("#!/bin/sh before", "before-plugins"),
                                              ("#!/bin/sh", "after-plugins"),
                                              ("#!/bin/bash after", "after-plugins")])
def test_pinned_script_runs_in_its_phase(site, tmp_path, shebang, seen):
    marker = tmp_path / "ran"
    sent = probe_script(marker, site, shebang=shebang)
    code, _, err = run_with(site, tmp_path, sent, [pin(b"#!/bin/sh\n"), pin(sent)],
                            "--run-commands")
    assert code == 0, err
    assert marker.read_text().split() == [seen]
    rep = site.report()
    script = rep["legacy"]["script"]
    assert script["status"] == "ran" and script["result"] == "ok" and script["exit_code"] == 0
    assert script["pinned"] is True and "reason" not in script
    assert script["when"] == ("before" if seen == "before-plugins" else "after")
    assert all(a["kind"] != "script" for a in rep["actions"])
    assert sourced(site.root / "etc/cvmfs/default.local") == \
        "atlas.cern.ch,atlas-condb.cern.ch,grid.cern.ch"
    assert not list(site.state_dir.glob("hepix-*"))       # its private copy is gone


def test_bash_script_runs_with_bash(site, tmp_path):
    marker = tmp_path / "ran"
    sent = ("#!/bin/bash after\nx=(a b)\necho \"${x[1]} $BASH_VERSION\" > %s\nexit 0\n"
            % marker).encode()
    code, _, err = run_with(site, tmp_path, sent, [pin(sent)], "--run-commands")
    assert code == 0, err
    word, version = marker.read_text().split(None, 1)
    assert word == "b" and version.strip()


def test_failing_pinned_before_script_fails_the_run_and_nothing_is_applied(site, tmp_path):
    marker = tmp_path / "ran"
    sent = probe_script(marker, site, code=4)
    code, _, err = run_with(site, tmp_path, sent, [pin(sent)], "--run-commands")
    assert code == 3, err
    assert "amiconfig script exited 4; nothing was applied" in err and "Traceback" not in err
    assert "amiconfig script: failed (exit 4); output (tail): said-on-stdout" in err   # the log
    assert marker.read_text().split() == ["before-plugins"]
    assert site.snapshot() == {}
    script = site.report()["legacy"]["script"]
    assert script["status"] == "failed" and script["exit_code"] == 4
    assert script["reason"] == "exited 4"


def test_failing_pinned_after_script_is_reported_like_an_epilog(site, tmp_path):
    marker = tmp_path / "ran"
    sent = probe_script(marker, site, shebang="#!/bin/sh after", code=5)
    code, _, err = run_with(site, tmp_path, sent, [pin(sent)], "--run-commands")
    assert code == 0, err
    assert marker.read_text().split() == ["after-plugins"]
    script = site.report()["legacy"]["script"]
    assert script["status"] == "failed" and script["exit_code"] == 5


def test_alternate_root_without_run_commands_does_not_run_it(site, tmp_path):
    marker = tmp_path / "ran"
    sent = probe_script(marker, site)
    code, _, err = run_with(site, tmp_path, sent, [pin(sent)])
    assert code == 0, err
    assert not marker.exists()
    script = site.report()["legacy"]["script"]
    assert script["status"] == "not run" and script["result"] == "skipped"
    assert "--run-commands" in script["reason"]


def test_a_pinned_before_script_that_hangs_is_killed_and_fails(keys, tmp_path):
    """The same executor and time limit as a HEPiX prolog: killed, and the run fails."""
    sent = b"#!/bin/sh before\nsleep 30\nexit 0\n"
    doc = cernvm_policy(keys)
    doc["legacy"]["amiconfig"]["scripts"] = [pin(sent)]
    pol = policy.parse(doc)
    verified = verify.accept_unsigned_legacy(sent + CERNVM, pol, "amiconfig")
    _, info = legacy.parse_amiconfig(verified, "atlas", NOW, pins=pol.legacy.amiconfig.scripts)
    scripts = legacy.amiconfig_script(verified, info, timeout=1)
    assert [(s.phase, s.interpreter, s.args) for s in scripts] == [("pre", "/bin/sh", ())]
    with pytest.raises(ScriptFailed, match=r"amiconfig script timed out after 1s") as failed:
        apply.run_phase(scripts, "pre", True, "/", str(tmp_path / "work"))
    script = legacy.with_amiconfig_result(info, failed.value.results)["script"]
    assert script["status"] == "failed" and script["result"] == "timeout"
    assert script["ms"] < 3000


# --------------------------------------------------------------------------------------
# The policy: pins are checked at load and shown by `policy check`


@pytest.mark.parametrize("pins", ["sha256:" + "a" * 64, ["sha256:" + "A" * 64],
                                  ["sha256:" + "a" * 63], ["md5:" + "a" * 32], [7]])
def test_bad_pins_are_refused_at_load(keys, pins):
    doc = cernvm_policy(keys)
    doc["legacy"]["amiconfig"]["scripts"] = pins
    with pytest.raises(PolicyError, match=r"legacy\.amiconfig\.scripts"):
        policy.parse(doc)


def test_bad_pin_is_exit_2_and_policy_check_prints_the_pins(site):
    good = "sha256:" + "b" * 64
    doc = cernvm_policy(site.keys)
    doc["legacy"]["amiconfig"]["scripts"] = [good]
    site.write_policy(doc)
    code, out, err = site.cli("policy", "check", str(site.policy_path), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["legacy"]["amiconfig"] == {"as_vo": "atlas", "scripts": [good]}
    doc["legacy"]["amiconfig"]["scripts"] = ["sha256:xyz"]
    site.write_policy(doc)
    code, _, err = site.cli("policy", "check", str(site.policy_path))
    assert code == 2 and "legacy.amiconfig.scripts" in err and "Traceback" not in err
