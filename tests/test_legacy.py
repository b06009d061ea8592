"""Legacy contexts: amiconfig INI user-data behind the explicit unsigned opt-in, and the
HEPiX prolog.sh/epilog.sh scripts that run only when pinned."""

import datetime
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from contextd import apply, legacy, payload, policy, settings
from contextd.trust import verify
from contextd.errors import ApplyError, PayloadError, PolicyViolation, SignatureError

from conftest import base_policy
from fakes_sources import b64, make_iso, one_context_sh, run_over_ec2, wait_until

NOW = datetime.datetime(2026, 11, 24, tzinfo=datetime.timezone.utc)
SECRET = "s3cr3t-pool-password"
AMICONFIG = ("""# CernVM user-data
[amiconfig]
plugins = cernvm condor puppet

[cernvm]
repositories = atlas.cern.ch, sft.cern.ch
proxy = http://vo-squid.cern.ch:3128;DIRECT
users = alice:atlas:pw
environment = A=1

[condor]
condor_master = atlas-cm.cern.ch
condor_secret = %s
extra_vars = START = True

[puppet]
puppet_server = puppet.cern.ch
puppet_extra_opts = --waitforcert=500

[ganglia]
host = ganglia.cern.ch
""" % SECRET).encode()


def opted_in(keys, **changes):
    doc = base_policy(keys)
    doc.update(require_signature=False, legacy={"amiconfig": {"as_vo": "atlas"}})
    doc.update(changes)
    return doc


# --------------------------------------------------------------------------------------
# The unsigned gate


def test_unsigned_needs_both_policy_switches(keys):
    strict = policy.parse(dict(opted_in(keys), require_signature=True))
    with pytest.raises(SignatureError, match="requires signatures"):
        verify.accept_unsigned_legacy(AMICONFIG, strict)
    denied = policy.parse(dict(opted_in(keys), legacy={"amiconfig": "deny"}))
    with pytest.raises(SignatureError, match=r"legacy.amiconfig: deny"):
        verify.accept_unsigned_legacy(AMICONFIG, denied)
    with pytest.raises(SignatureError, match="only amiconfig"):
        verify.accept_unsigned_legacy(AMICONFIG, policy.parse(opted_in(keys)), kind="shell")
    ok = verify.accept_unsigned_legacy(AMICONFIG, policy.parse(opted_in(keys)))
    assert ok.unsigned and ok.signers == {} and ok.sha256 == hashlib.sha256(AMICONFIG).hexdigest()
    with pytest.raises(TypeError):
        payload.parse(ok)                       # the signed path never reads unsigned bytes
    with pytest.raises(TypeError):
        verify.Verified(data=b"x", sha256="0", signers={}, notes=(), unsigned=True)


def test_signed_values_are_refused_by_the_legacy_path(keys):
    class Signed:
        unsigned = False
    with pytest.raises(TypeError):
        legacy.parse_amiconfig(Signed(), "atlas", NOW)   # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Translation


def unsigned(keys, data=AMICONFIG):
    return verify.accept_unsigned_legacy(data, policy.parse(opted_in(keys)))


def test_translation_and_what_is_ignored(keys):
    doc, info = legacy.parse_amiconfig(unsigned(keys), "atlas", NOW)
    assert doc.vo == "atlas" and doc.targets == () and doc.report_url is None
    assert set(doc.sections) == {"cvmfs", "htcondor", "puppet"}
    assert doc.sections["cvmfs"].repositories == ("atlas.cern.ch", "sft.cern.ch")
    assert doc.sections["htcondor"].central_manager == "atlas-cm.cern.ch"
    assert doc.sections["puppet"].server == "puppet.cern.ch"
    assert info["translated"] == [
        "cernvm.repositories -> cvmfs.repositories", "cernvm.proxy -> cvmfs.http_proxy",
        "condor.condor_master -> htcondor.central_manager (role execute)",
        "puppet.puppet_server -> puppet.server"]
    assert info["ignored"] == [
        "cernvm.environment", "cernvm.users", "condor.condor_secret", "condor.extra_vars",
        "ganglia.host", "puppet.puppet_extra_opts"]
    assert SECRET not in json.dumps(info)


def test_amiconfig_plugins_list_is_honoured(keys):
    data = AMICONFIG.replace(b"plugins = cernvm condor puppet", b"plugins = cernvm")
    doc, info = legacy.parse_amiconfig(unsigned(keys, data), "atlas", NOW)
    assert set(doc.sections) == {"cvmfs"}
    assert "condor.condor_master (plugin not enabled in [amiconfig])" in info["ignored"]


@pytest.mark.parametrize(("ini", "message"), [
    (b"[condor]\ncondor_secret\n", "line 2 is not 'key = value'"),
    (b"[cernvm]\nrepositories = a.cern.ch\nrepositories = b.cern.ch\n", "line 3 sets cernvm"),
    (b"[cernvm]\nrepositories = a.cern.ch\n[CernVM]\nproxy = DIRECT\n", "appears twice"),
    (b"[ganglia]\nhost = x\n[amiconfig]\nplugins = ganglia\n", "holds nothing contextd"),
    (b"[cernvm]\nrepositories = bad_repo!, atlas.cern.ch\n", "translated to cvmfs"),
    (b"[DEFAULT]\nrepositories = atlas.cern.ch\n[cernvm]\nproxy = DIRECT\n", "holds nothing"),
    (b"[puppet]\npuppet_server = puppet.cern.ch:8140\n", "translated to puppet"),
    (b"[cernvm]\nrepositories = caf\xe9\n", "not UTF-8"),
])
def test_bad_amiconfig_is_a_payload_error_that_shows_no_value(keys, ini, message):
    with pytest.raises(PayloadError) as err:
        legacy.parse_amiconfig(unsigned(keys, ini), "atlas", NOW)
    assert message in err.value.one_line()
    assert SECRET not in err.value.one_line() and "condor_secret\n" not in err.value.one_line()


def test_authorized_against_the_vo_allow_lists_only(keys):
    pol = policy.parse(opted_in(keys))
    verified = unsigned(keys)
    doc, _ = legacy.parse_amiconfig(verified, "atlas", NOW)
    auth = legacy.authorize_unsigned(doc, verified, pol)
    assert auth.signers == () and set(auth.decisions) == {"cvmfs", "htcondor", "puppet"}
    assert [f.qualified for f in auth.overridden] == ["cvmfs.http_proxy"]   # the site's squid
    as_cms = legacy.parse_amiconfig(verified, "cms", NOW)[0]
    with pytest.raises(PolicyViolation) as err:
        legacy.authorize_unsigned(as_cms, verified, pol)
    assert "not allow VO 'cms' to configure htcondor" in err.value.one_line()
    assert "atlas.cern.ch" in err.value.one_line()
    nobody = legacy.parse_amiconfig(verified, "lhcb", NOW)[0]
    with pytest.raises(PolicyViolation, match="not a VO under the policy's trust"):
        legacy.authorize_unsigned(nobody, verified, pol)


# --------------------------------------------------------------------------------------
# amiconfig through contextd run


def test_run_ec2_amiconfig_opted_in_is_applied_and_marked_unsigned(site):
    site.write_policy(opted_in(site.keys))
    code, out, err = run_over_ec2(site, AMICONFIG, "--json")
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "applied"
    assert rep["payload"]["unsigned"] is True and rep["payload"]["signers"] == []
    assert rep["payload"]["vo"] == "atlas"
    assert rep["legacy"]["format"] == "amiconfig" and "condor.condor_secret" in \
        rep["legacy"]["ignored"]
    assert SECRET not in json.dumps(rep) + out + err
    cvmfs = (site.root / "etc/cvmfs/default.local").read_text()
    assert "atlas.cern.ch,sft.cern.ch" in cvmfs and "vo-squid" not in cvmfs


@pytest.mark.parametrize(("changes", "message"), [
    ({}, "legacy.amiconfig: deny"),
    ({"legacy": {"amiconfig": {"as_vo": "atlas"}}, "require_signature": True},
     "requires signatures"),
    ({"legacy": {"amiconfig": {"as_vo": "cms"}}}, "site policy does not allow VO 'cms'"),
])
def test_run_hepix_cd_amiconfig_refused(site, tmp_path, changes, message):
    doc = base_policy(site.keys)
    doc.update(require_signature=False)
    doc.update(changes)
    site.write_policy(doc)
    iso = make_iso("genisoimage", {"context.sh": one_context_sh(
        {"EC2_USER_DATA": b64(AMICONFIG)})}, tmp_path / "ami.iso")
    code, _, err = site.run("iso:%s" % iso)
    assert code == 1, err
    assert message in err and "Traceback" not in err
    assert site.report()["outcome"] == "rejected"
    assert site.snapshot() == {}


# --------------------------------------------------------------------------------------
# HEPiX prolog.sh / epilog.sh


def script(log, name, code=0, probe="/nonexistent"):
    """A HEPiX-style script logging its name, whether `probe` exists, $1 and where it ran."""
    return ('test -e %s && s=after || s=before\necho "%s $s $1 $(pwd)" >> %s\nexit %d\n'
            % (probe, name, log, code)).encode()


def pin(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run_env(site, tmp_path, *extra):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name in ("cvmfs_config", "systemctl", "puppet"):
        tool = bindir / name
        tool.write_text("#!/bin/sh\nexit 0\n")
        tool.chmod(0o755)
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]))
    argv = [sys.executable, "-m", "contextd", "run", "--policy", str(site.policy_path),
            "--root", str(site.root), "--run-dir", str(site.run_dir),
            "--state-dir", str(site.state_dir), *extra]
    if getattr(site, "spool_dir", None) is not None:
        argv += ["--spool-dir", str(site.spool_dir)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def hepix_iso(site, tmp_path, prolog, epilog):
    files = {"context.sh": one_context_sh({"EC2_USER_DATA": b64(site.bundle().read_bytes())}),
             "prolog.sh": prolog, "epilog.sh": epilog}
    return make_iso("xorriso", files, tmp_path / "hepix.iso")


def test_pinned_scripts_run_around_apply(site, tmp_path):
    log = tmp_path / "scripts.log"
    applied = site.root / "etc/cvmfs/default.local"
    prolog, epilog = script(log, "prolog", probe=applied), script(log, "epilog", probe=applied)
    site.policy["legacy"] = {"hepix_scripts": {"prolog.sh": pin(prolog), "epilog.sh": pin(epilog)}}
    site.write_policy()
    iso = hepix_iso(site, tmp_path, prolog, epilog)
    code, _, err = run_env(site, tmp_path, "--source", "iso:%s" % iso, "--run-commands")
    assert code == 0, err
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [line[:3] for line in lines] == [["prolog", "before", "start"],
                                            ["epilog", "after", "start"]]
    assert all(line[3].startswith(str(site.state_dir)) for line in lines)   # a private copy
    assert not list(site.state_dir.glob("hepix-*"))                  # and is gone
    rep = site.report()
    assert {k: v["status"] for k, v in rep["legacy_scripts"].items()} == {
        "prolog.sh": "ok", "epilog.sh": "ok"}
    assert rep["legacy_scripts"]["prolog.sh"]["exit_code"] == 0


def test_the_epilog_runs_inside_the_transaction_before_the_state_is_remembered(site, tmp_path):
    """One executor: the epilog is apply's post phase (its journal still open), and the run
    remembers the payload only after it, so a run killed in the epilog is undone and redone."""
    log = tmp_path / "scripts.log"
    prolog = script(log, "prolog")
    epilog = ('test -e %s/applied.json && r=remembered || r=not-remembered\n'
              'test -d %s/transaction && t=in-transaction || t=outside\n'
              'echo "epilog $r $t" >> %s\n' % (site.state_dir, site.state_dir, log)).encode()
    site.policy["legacy"] = {"hepix_scripts": {"prolog.sh": pin(prolog), "epilog.sh": pin(epilog)}}
    site.write_policy()
    iso = hepix_iso(site, tmp_path, prolog, epilog)
    code, _, err = run_env(site, tmp_path, "--source", "iso:%s" % iso, "--run-commands")
    assert code == 0, err
    assert log.read_text().splitlines()[-1] == "epilog not-remembered in-transaction"
    assert (site.state_dir / "applied.json").is_file()
    assert not (site.state_dir / "transaction").exists()
    rep = site.report()
    assert rep["legacy_scripts"]["epilog.sh"]["status"] == "ok"
    assert all(a["kind"] != "script" for a in rep["actions"])       # scripts are not actions


def test_unpinned_mismatched_and_alternate_root_are_reported_not_run(site, tmp_path):
    log = tmp_path / "scripts.log"
    prolog, epilog = script(log, "prolog"), script(log, "epilog")
    site.policy["legacy"] = {"hepix_scripts": {"prolog.sh": pin(b"another script\n")}}
    site.write_policy()
    iso = hepix_iso(site, tmp_path, prolog, epilog)
    code, _, err = run_env(site, tmp_path, "--source", "iso:%s" % iso)
    assert code == 0, err
    assert not log.exists()
    scripts = site.report()["legacy_scripts"]
    assert scripts["prolog.sh"]["status"] == "not run"
    assert "does not match the pin" in scripts["prolog.sh"]["reason"]
    assert scripts["epilog.sh"] == {"sha256": hashlib.sha256(epilog).hexdigest(),
                                    "status": "not run",
                                    "reason": "not pinned in the policy's legacy.hepix_scripts"}
    entries = legacy.check_scripts({"prolog.sh": prolog}, policy.parse(
        dict(site.policy, legacy={"hepix_scripts": {"prolog.sh": pin(prolog)}})))
    entries = run_pinned("prolog.sh", prolog, entries, str(site.root), False,
                         str(tmp_path / "work"))
    assert entries["prolog.sh"]["status"] == "skipped"
    assert "alternate root" in entries["prolog.sh"]["reason"] and not log.exists()


def test_failing_prolog_stops_before_apply(site, tmp_path):
    log = tmp_path / "scripts.log"
    prolog, epilog = script(log, "prolog", code=3), script(log, "epilog")
    site.policy["legacy"] = {"hepix_scripts": {"prolog.sh": pin(prolog), "epilog.sh": pin(epilog)}}
    site.write_policy()
    iso = hepix_iso(site, tmp_path, prolog, epilog)
    code, _, err = run_env(site, tmp_path, "--source", "iso:%s" % iso, "--run-commands")
    assert code == 3, err
    assert "HEPiX prolog.sh exited 3; nothing was applied" in err
    assert site.snapshot() == {}
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["prolog"]
    scripts = site.report()["legacy_scripts"]
    assert scripts["prolog.sh"]["status"] == "failed" and scripts["epilog.sh"]["status"] == \
        "not run"


def run_pinned(name, data, entries, root, run_commands, work_dir,
               timeout=legacy.SCRIPT_TIMEOUT):
    """The script through apply's phase runner, as a run does; the report's entries after."""
    scripts = legacy.pinned_scripts({name: data}, entries, timeout)
    phase = "pre" if name == "prolog.sh" else "post"
    may_run = run_commands or root in ("", "/")
    return legacy.with_results(entries, apply.run_phase(scripts, phase, may_run, root,
                                                        work_dir))


def pinned_entries(data, name="prolog.sh"):
    pol = type("P", (), {"legacy": settings.LegacySettings(hepix_scripts={name: pin(data)})})()
    return legacy.check_scripts({name: data}, pol)


def test_script_timeout_kills_it_and_its_children(tmp_path):
    pidfile = tmp_path / "child.pid"
    data = b"sleep 30 &\necho $! > %s\nsleep 30\n" % str(pidfile).encode()
    entries = pinned_entries(data)
    started = time.monotonic()
    with pytest.raises(ApplyError, match=r"prolog.sh timed out after 1s") as failed:
        run_pinned("prolog.sh", data, entries, "/", False, str(tmp_path), timeout=1)
    assert time.monotonic() - started < 3
    assert legacy.with_results(entries, failed.value.results)["prolog.sh"]["status"] == \
        "timeout"
    child = pidfile.read_text().strip()
    assert wait_until(lambda: not alive_sleep(child), 2)     # its child was killed too


def alive_sleep(pid: str) -> bool:
    """Whether `pid` is still our `sleep 30` (and not a zombie, or another process now)."""
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            cmdline = f.read()
        with open("/proc/%s/stat" % pid) as f:
            state = f.read().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return cmdline == b"sleep\x0030\x00" and state not in "ZX"


def test_a_child_left_behind_does_not_hold_the_run(tmp_path):
    data = b"(sleep 5 &)\necho started\n"
    entries = pinned_entries(data, "epilog.sh")
    started = time.monotonic()
    entries = run_pinned("epilog.sh", data, entries, "/", False, str(tmp_path), timeout=10)
    assert time.monotonic() - started < 2
    assert entries["epilog.sh"]["status"] == "ok"


def test_failing_epilog_is_reported_not_raised(tmp_path):
    data = b"exit 2\n"
    entries = pinned_entries(data, "epilog.sh")
    entries = run_pinned("epilog.sh", data, entries, "/", False, str(tmp_path))
    assert entries["epilog.sh"]["status"] == "failed"
    assert entries["epilog.sh"]["reason"] == "exited 2"
