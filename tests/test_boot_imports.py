"""The boot path imports no VO-side code: no ISO writer (pycdlib), no signing, no armouring.

A boot run (`contextd run`, as the unit starts it) is watched with `python -X importtime`,
on a signed bundle and on a context ISO, and every module it imported is checked. The VO
side (`contextd.vo`: sign, pack, write ISOs) costs import time and puts signing code where
hostile input arrives; the VM only reads and verifies.
"""

import re
import subprocess
import sys

import pytest

from conftest import fake_commands
from contextd.vo.isowriter import write_iso

FORBIDDEN = re.compile(r"\A(pycdlib|contextd\.vo|contextd\.signing|contextd\.packing)(\.|\Z)")


def imported_by(site, argv, env):
    """(exit code, stderr without importtime lines, modules imported) of `contextd ARGV`."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "contextd", *argv],
                          capture_output=True, text=True, timeout=120, env=env)
    modules, other = [], []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+\d+ \| *(\S+)", line)
        if m:
            modules.append(m.group(1))
        else:
            other.append(line)
    return proc.returncode, "\n".join(other), modules


def boot_run(site, source, env):
    return imported_by(site, ["run", "--source", source, "--policy", str(site.policy_path),
                              "--root", str(site.root), "--run-dir", str(site.run_dir),
                              "--state-dir", str(site.state_dir),
                              "--spool-dir", str(site.spool_dir)], env)


def context_iso(site, payload_doc):
    bundle = site.bundle(payload_doc).read_text()
    sig = bundle[bundle.index("-----BEGIN SSH SIGNATURE-----"):]
    iso = site.tmp / "context.iso"
    write_iso({"contextd/payload.yaml": (site.tmp / "payload.yaml").read_bytes(),
               "contextd/payload.yaml.sig": sig.encode()}, str(iso))
    return "iso:%s" % iso


@pytest.mark.parametrize("carrier", ["bundle", "iso"])
def test_a_boot_run_imports_no_vo_side_code(site, payload_doc, tmp_path, carrier):
    env = fake_commands(tmp_path / "bin", tmp_path / "commands.log")
    if carrier == "iso":
        source = context_iso(site, payload_doc)
    else:
        source = "file:%s" % site.bundle(payload_doc)
    code, err, modules = boot_run(site, source, env)
    assert code == 0, err
    assert site.report()["outcome"] == "applied"
    assert {"contextd.trust.verify", "contextd.trust.sshsig"} <= set(modules)  # it did verify
    assert [m for m in modules if FORBIDDEN.match(m)] == []


def test_the_vo_side_does_import_it(site, payload_doc, tmp_path):
    """The check above can see these modules: `contextd pack iso` imports all of them."""
    bundle = site.bundle(payload_doc)
    code, err, modules = imported_by(site, ["pack", "iso", str(bundle), "-o",
                                            str(tmp_path / "c.iso")], None)
    assert code == 0, err
    assert {"pycdlib", "contextd.vo.isowriter", "contextd.vo.packing",
            "contextd.vo.armor"} <= set(modules)
