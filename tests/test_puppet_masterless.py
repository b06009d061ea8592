"""Masterless Puppet: a manifest shipped on the ISO, bound by its SHA-256, run by the real
`puppet apply` (Debian's puppet package), only where the site allows it for the VO."""

import hashlib
import os
import shutil
import subprocess
import sys
from typing import Optional

import pytest


def manifest_for(target):
    return ("file { '%s':\n  ensure  => file,\n  content => \"configured by puppet apply\\n\",\n}\n"
            % target).encode()


def build_iso(site, payload_doc, manifest: bytes, shipped: Optional[bytes] = None):
    payload_doc["files"] = [{"path": "manifests/site.pp",
                             "sha256": hashlib.sha256(manifest).hexdigest()}]
    payload_doc["puppet"] = {"run": "apply", "manifest": "manifests/site.pp"}
    pp = site.tmp / "site.pp"
    pp.write_bytes(shipped if shipped is not None else manifest)
    iso = site.tmp / "context.iso"
    code, _, err = site.cli("pack", "iso", str(site.bundle(payload_doc)), "-o", str(iso),
                            "--file", "manifests/site.pp=%s" % pp)
    assert code == 0, err
    return iso


def run_with_real_puppet(site, iso, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("cvmfs_config", "systemctl"):
        script = bindir / name
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
    assert shutil.which("puppet"), "Debian's puppet package must be installed (make test does)"
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]))
    return subprocess.run([sys.executable, "-m", "contextd", "run", "--source", "iso:%s" % iso,
                           "--policy", str(site.policy_path), "--root", str(site.root),
                           "--run-dir", str(site.run_dir), "--state-dir", str(site.state_dir),
                           "--spool-dir", str(site.spool_dir),
                           "--run-commands"], capture_output=True, text=True, env=env,
                          timeout=300)


def test_real_puppet_apply_runs_the_listed_manifest(site, payload_doc, tmp_path):
    site.policy["trust"]["atlas"]["allow"]["puppet"]["masterless"] = True
    site.write_policy()
    target = tmp_path / "out" / "hello.txt"
    target.parent.mkdir()
    iso = build_iso(site, payload_doc, manifest_for(target))
    proc = run_with_real_puppet(site, iso, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == "configured by puppet apply\n"
    statuses = {a["target"]: a["status"] for a in site.report()["actions"]}
    assert statuses["puppet apply --detailed-exitcodes"] == "ran"


def test_failing_manifest_is_a_failed_apply(site, payload_doc, tmp_path):
    site.policy["trust"]["atlas"]["allow"]["puppet"]["masterless"] = True
    site.write_policy()
    iso = build_iso(site, payload_doc, b"fail('the VO manifest refuses')\n")
    before = site.snapshot()
    proc = run_with_real_puppet(site, iso, tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert site.snapshot() == before
    assert "puppet apply" in proc.stderr


def test_masterless_not_allowed_is_rejected(site, payload_doc, tmp_path):
    iso = build_iso(site, payload_doc, manifest_for(tmp_path / "x"))
    code, _, err = site.run("iso:%s" % iso)
    assert code == 1 and "masterless" in err
    assert site.snapshot() == {}


def test_manifest_changed_on_the_carrier_is_rejected(site, payload_doc, tmp_path):
    site.policy["trust"]["atlas"]["allow"]["puppet"]["masterless"] = True
    site.write_policy()
    iso = build_iso(site, payload_doc, manifest_for(tmp_path / "x"),
                    shipped=manifest_for(tmp_path / "evil"))
    code, _, err = site.run("iso:%s" % iso)
    assert code == 1 and "sha256" in err
    assert site.snapshot() == {}


@pytest.mark.parametrize("puppet", [{"run": "apply"}, {"manifest": "site.pp"},
                                    {"run": "apply", "manifest": "/etc/passwd"}])
def test_manifest_settings_are_checked(site, payload_doc, puppet):
    from contextd.errors import PayloadError
    from contextd_plugins import puppet as plugin
    with pytest.raises(PayloadError):
        plugin.PLUGIN.parse_settings(puppet)
