"""`contextd run` end to end, through the command line, against a scratch root."""

import gzip
import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import REPORT_TOKEN, TOKEN, base_payload, fake_commands, utc

CONFIG = "etc/condor/config.d/50-contextd.conf"


def applied_files(site):
    return {
        "cvmfs": site.root / "etc/cvmfs/default.local",
        "condor": site.root / CONFIG,
        "token": site.root / "etc/condor/tokens.d/contextd.token",
        "puppet": site.root / "etc/puppetlabs/puppet/puppet.conf",
    }


def assert_applied(site, out):
    files = applied_files(site)
    for path in files.values():
        assert path.is_file(), path
    assert stat.S_IMODE(files["token"].stat().st_mode) == 0o600
    assert stat.S_IMODE(files["token"].parent.stat().st_mode) == 0o700
    assert files["token"].read_text().strip() == TOKEN
    rep = site.report()
    assert rep["schema"] == "contextd.report/v1"
    assert rep["outcome"] == "applied"
    # Every field DESIGN section 7 names, the host's included.
    assert {"schema", "outcome", "started_at", "finished_at", "duration_ms", "source", "payload",
            "policy_sha256", "actions", "denied", "overridden", "host",
            "contextd_version"} <= set(rep)
    assert {"hostname", "instance_id", "site", "image", "boot_id"} <= set(rep["host"])
    assert rep["host"]["site"] == site.policy["site"] and rep["host"]["hostname"]
    assert rep["payload"]["vo"] == "atlas" and rep["payload"]["signers"] == ["atlas-ctx"]
    assert len(rep["payload"]["sha256"]) == 64
    statuses = {a["target"]: a["status"] for a in rep["actions"]}
    assert statuses["/etc/cvmfs/default.local"] == "created"
    assert statuses["systemctl enable --now --no-block condor"] == "skipped"
    # services come last of all
    assert rep["actions"][-1]["target"] == "systemctl enable --now --no-block condor"
    text = json.dumps(rep) + out
    assert TOKEN not in text and REPORT_TOKEN not in text
    assert stat.S_IMODE((site.run_dir / "report.json").stat().st_mode) == 0o644
    return rep


def test_iso_source_applies_everything(site):
    bundle = site.bundle()
    iso = site.tmp / "context.iso"
    code, _, err = site.cli("pack", "iso", str(bundle), "-o", str(iso))
    assert code == 0, err
    code, out, err = site.run("iso:%s" % iso)
    assert code == 0, err
    rep = assert_applied(site, out)
    assert rep["source"] == {"kind": "iso", "location": str(iso)}
    cvmfs = applied_files(site)["cvmfs"]
    assert "CVMFS_HTTP_PROXY='http://squid.example.org:3128;DIRECT'" in cvmfs.read_text()


def test_genisoimage_iso_reads_the_same(site):
    bundle = site.bundle()
    tree = site.tmp / "tree"
    (tree / "contextd").mkdir(parents=True)
    lines = bundle.read_text().splitlines(True)
    end = lines.index("-----END CONTEXTD PAYLOAD-----\n")
    (tree / "contextd/payload.yaml").write_bytes((site.tmp / "payload.yaml").read_bytes())
    (tree / "contextd/payload.yaml.sig").write_text("".join(lines[end + 1:]))
    iso = site.tmp / "gen.iso"
    subprocess.run(["genisoimage", "-quiet", "-V", "CONTEXT", "-J", "-R", "-o", str(iso),
                    str(tree)], check=True)
    code, out, err = site.run("iso:%s" % iso)
    assert code == 0, err
    assert_applied(site, out)


def test_dir_source(site):
    bundle = site.bundle()
    iso_tree = site.tmp / "ctx"
    (iso_tree / "contextd").mkdir(parents=True)
    (iso_tree / "contextd/payload.yaml").write_bytes((site.tmp / "payload.yaml").read_bytes())
    text = bundle.read_text()
    (iso_tree / "contextd/payload.yaml.sig").write_text(
        text[text.index("-----BEGIN SSH SIGNATURE-----"):])
    code, out, err = site.run("dir:%s" % iso_tree)
    assert code == 0, err
    assert_applied(site, out)


@pytest.mark.parametrize("compress", [False, True])
def test_file_source_plain_and_gzip(site, compress):
    bundle = site.bundle()
    if compress:
        gz = site.tmp / "user-data.gz"
        gz.write_bytes(gzip.compress(bundle.read_bytes()))
        bundle = gz
    code, out, err = site.run("file:%s" % bundle, "--json")
    assert code == 0, err
    assert json.loads(out)["outcome"] == "applied"
    assert_applied(site, out)


def test_second_run_same_instance_is_unchanged(site):
    bundle = site.bundle()
    (site.root / "etc").mkdir()
    (site.root / "etc/machine-id").write_text("0123456789abcdef\n")
    assert site.run("file:%s" % bundle)[0] == 0
    before = site.snapshot()
    code, _, err = site.run("file:%s" % bundle)
    assert code == 0, err
    assert site.report()["outcome"] == "unchanged"
    assert site.snapshot() == before


def test_dry_run_writes_nothing(site):
    bundle = site.bundle()
    code, out, err = site.run("file:%s" % bundle, "--dry-run", "--json")
    assert code == 0, err
    planned = json.loads(out)["actions"]
    assert {a["status"] for a in planned} == {"planned"}
    assert site.snapshot() == {}
    assert not site.run_dir.exists() and not site.state_dir.exists()


def test_site_settings_override_is_reported(site, payload_doc):
    payload_doc["cvmfs"]["http_proxy"] = "http://vo-squid.cern.ch:3128"
    bundle = site.bundle(payload_doc)
    code, _, err = site.run("file:%s" % bundle)
    assert code == 0, err
    overridden = site.report()["overridden"]
    assert any(o["field"].startswith("cvmfs.http_proxy") for o in overridden), overridden
    assert "vo-squid" not in applied_files(site)["cvmfs"].read_text()


def test_existing_puppet_conf_is_kept(site):
    conf = site.root / "etc/puppetlabs/puppet/puppet.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("# site comment\n[main]\nlogdir = /var/log/puppet\n")
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    text = conf.read_text()
    assert text.startswith("# site comment\n[main]\nlogdir = /var/log/puppet\n")
    assert "server = puppet.cern.ch" in text


def test_commands_succeed_in_order(site, tmp_path):
    """Failures at each command are the fault suite's (test_apply_faults.py); this is the
    successful order: files, then commands, then the service start last of all."""
    log = tmp_path / "calls.log"
    env = fake_commands(tmp_path / "bin", log)
    returncode, _, stderr = site.run("file:%s" % site.bundle(), "--run-commands", env=env)
    assert returncode == 0, stderr
    assert log.read_text().splitlines() == [
        "cvmfs_config setup",
        "puppet agent --onetime --no-daemonize --detailed-exitcodes",
        "systemctl enable --now --no-block condor",
    ]


def test_status_reports_last_outcome(site):
    site.run("file:%s" % site.bundle())
    code, out, err = site.cli("status", "--run-dir", str(site.run_dir))
    assert code == 0 and out.startswith("applied")
    code, out, err = site.cli("status", "--run-dir", str(site.run_dir), "--json")
    assert json.loads(out)["outcome"] == "applied"
    code, out, err = site.cli("status", "--run-dir", str(site.tmp / "nothing"))
    assert code == 1 and "no finished contextd run" in err


def test_status_wait_returns_outcome_code(site, payload_doc):
    payload_doc["cvmfs"]["repositories"] = ["evil.example.com"]
    site.run("file:%s" % site.bundle(payload_doc))
    code, out, _ = site.cli("status", "--run-dir", str(site.run_dir), "--wait",
                            "--timeout", "5")
    assert code == 1 and out.startswith("rejected")


def test_python_m_and_entry_point_agree(site):
    exe = os.path.join(os.path.dirname(sys.executable), "contextd")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("contextd ")


def test_expired_by_clock_but_dates_are_utc(site, payload_doc):
    payload_doc["not_before"] = utc(-40)
    payload_doc["expires"] = utc(-35)
    code, _, err = site.run("file:%s" % site.bundle(payload_doc))
    assert code == 1 and "expired" in err


def test_base_payload_is_valid_for_the_fixture():
    assert base_payload()["vo"] == "atlas"


def test_new_payload_or_new_instance_applies_again(site, payload_doc):
    (site.root / "etc").mkdir()
    machine_id = site.root / "etc/machine-id"
    machine_id.write_text("0123456789abcdef\n")
    assert site.run("file:%s" % site.bundle(payload_doc))[0] == 0
    assert site.report()["outcome"] == "applied"
    payload_doc["serial"] += 1
    payload_doc["cvmfs"]["quota_limit_mb"] = 30000
    code, _, err = site.run("file:%s" % site.bundle(payload_doc))
    assert code == 0, err
    assert site.report()["outcome"] == "applied"
    assert "CVMFS_QUOTA_LIMIT='30000'" in (site.root / "etc/cvmfs/default.local").read_text()
    assert site.run("file:%s" % site.bundle(payload_doc))[0] == 0
    assert site.report()["outcome"] == "unchanged"
    machine_id.write_text("fedcba9876543210\n")      # the image booted as a new instance
    assert site.run("file:%s" % site.bundle(payload_doc))[0] == 0
    assert site.report()["outcome"] == "applied"


def test_unchanged_does_not_recheck_the_clock(site, payload_doc, tmp_path):
    """A reboot after `expires` of an already applied payload is `unchanged`, not rejected."""
    (site.root / "etc").mkdir()
    (site.root / "etc/machine-id").write_text("0123456789abcdef\n")
    bundle = site.bundle(payload_doc)
    assert site.run("file:%s" % bundle)[0] == 0
    site.policy["max_validity"] = "1s"            # now the payload would be refused if re-checked
    site.write_policy()
    code, _, err = site.run("file:%s" % bundle)
    assert code == 0, err
    assert site.report()["outcome"] == "unchanged"


def test_detection_reads_the_file_source_named_in_the_policy(site):
    bundle = site.bundle()
    target = site.root / "var/lib/contextd-input/user-data"
    target.parent.mkdir(parents=True)
    target.write_bytes(gzip.compress(bundle.read_bytes()))
    site.policy["sources"] = ["file"]
    site.policy["file"] = {"path": "/var/lib/contextd-input/user-data"}
    site.write_policy()
    code, out, err = subprocess_run(site, "--json")
    assert code == 0, err
    assert json.loads(out)["outcome"] == "applied"
    target.unlink()
    code, out, err = subprocess_run(site)
    assert code == 0, err
    assert site.report()["outcome"] == "skipped"


def subprocess_run(site, *extra):
    from conftest import run_cli
    return run_cli(["run", "--policy", str(site.policy_path), "--root", str(site.root),
                    "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir), *extra])


def test_relative_root_and_dirs_work(site):
    bundle = site.bundle()
    code, _, err = __import__("conftest").run_cli(
        ["run", "--source", "file:%s" % bundle, "--policy", str(site.policy_path),
         "--root", os.path.relpath(site.root), "--spool-dir", str(site.tmp / "spool")])
    assert code == 0, err
    assert (site.root / "etc/cvmfs/default.local").is_file()
    assert (site.root / "run/contextd/report.json").is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root (CI runs as root)")
def test_token_belongs_to_the_condor_user_of_the_image(site):
    """HTCondor reads daemon tokens as the condor user: the token and tokens.d are condor's,
    by the image's /etc/passwd, not the host's; the config file stays root's."""
    passwd = site.root / "etc/passwd"
    passwd.parent.mkdir(parents=True)
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n"
                      "condor:x:4242:4343:Owner of HTCondor Daemons:/var/lib/condor:"
                      "/sbin/nologin\n")
    tokens = site.root / "etc/condor/tokens.d"
    tokens.mkdir(parents=True, mode=0o755)              # as an image might ship it
    old = tokens / "contextd.token"
    old.write_text(TOKEN + "\n")                        # right bytes, wrong owner
    os.chmod(old, 0o600)
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    token = applied_files(site)["token"]
    assert (token.stat().st_uid, token.stat().st_gid) == (4242, 4343)
    assert (tokens.stat().st_uid, tokens.stat().st_gid) == (4242, 4343)
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o700
    config = applied_files(site)["condor"].stat()
    assert (config.st_uid, config.st_gid) == (0, 0)
    statuses = {a["target"]: a["status"] for a in site.report()["actions"]}
    assert statuses["/etc/condor/tokens.d/contextd.token"] == "written"   # owner changed
    # A second boot: nothing to change, ownership included.
    os.unlink(site.state_dir / "applied.json")
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    statuses = {a["target"]: a["status"] for a in site.report()["actions"]}
    assert statuses["/etc/condor/tokens.d/contextd.token"] == "unchanged"


def test_token_stays_roots_without_a_condor_user(site):
    # No condor user, no HTCondor to read the token: the run goes on, the file stays ours.
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    token = applied_files(site)["token"]
    assert token.stat().st_uid == os.geteuid()
