"""amiconfig user-data as CernVM users wrote it: short repository names (`atlas,grid`) that
take the CVMFS default domain, and a leading `#!` script that is reported, never run.

The examples have the shape of CernVM's documented amiconfig contexts: an `[amiconfig]
plugins=cernvm` section and `[cernvm]` keys (organisations, repositories, users, shell, ...),
and amiconfig's script convention (a `#!/bin/sh` first line, the script ends at `exit`,
then the INI sections).
"""

import hashlib
import subprocess

import pytest

from contextd import legacy, policy
from contextd.errors import PolicyError
from contextd.trust import verify

from conftest import base_policy
from fakes_sources import run_over_ec2
from test_legacy import NOW, run_env

CERNVM = b"""[amiconfig]
plugins=cernvm

[cernvm]
organisations=atlas
repositories=atlas,atlas-condb,grid
shell=/bin/bash
config_url=http://cernvm.cern.ch/config
users=atlas:atlas:mypassword
edition=Batch
"""


def cernvm_policy(keys, **site_cvmfs):
    doc = base_policy(keys)
    doc.update(require_signature=False, legacy={"amiconfig": {"as_vo": "atlas"}})
    doc["trust"]["atlas"]["allow"]["cvmfs"]["repositories"] = ["atlas*.cern.ch", "grid.cern.ch",
                                                              "*.egi.eu"]
    doc["site_settings"]["cvmfs"].update(site_cvmfs)
    return doc


def sourced(path, name="CVMFS_REPOSITORIES"):
    """The value `/bin/sh` gives a variable after sourcing the CVMFS file, as CVMFS does."""
    proc = subprocess.run(["sh", "-c", '. "$1" && printf %s "$' + name + '"', "sh", str(path)],
                          capture_output=True, text=True, timeout=10, check=True)
    return proc.stdout


# --------------------------------------------------------------------------------------
# A `#!` script before the first section: reported with its SHA-256, never run


def script_userdata(marker, shebang="#!/bin/sh"):
    return ("%s\ntouch %s\nexit 0\n" % (shebang, marker)).encode() + CERNVM


@pytest.mark.parametrize("shebang", ["#!/bin/sh", "#!/bin/sh before", "#!/bin/bash after"])
def test_attack_a_leading_script_never_runs(site, tmp_path, shebang):
    marker = tmp_path / "script-ran"
    data = script_userdata(marker, shebang)
    site.write_policy(cernvm_policy(site.keys))
    user_data = tmp_path / "user-data"
    user_data.write_bytes(data)
    code, _, err = run_env(site, tmp_path, "--source", "file:%s" % user_data, "--run-commands")
    assert not marker.exists(), "the amiconfig script ran"
    assert code == 0, err
    script = site.report()["legacy"]["script"]
    digest = hashlib.sha256(data[:data.index(b"[amiconfig]")]).hexdigest()
    assert script["sha256"] == digest and script["status"] == "not run"
    assert "never runs" in script["reason"]
    assert sourced(site.root / "etc/cvmfs/default.local") == \
        "atlas.cern.ch,atlas-condb.cern.ch,grid.cern.ch"


def test_a_script_is_not_read_as_ini_and_its_lines_reach_no_plugin(site, tmp_path):
    """Script lines that look like keys (`repositories=evil`) are script, not amiconfig."""
    data = b"#!/bin/sh\nrepositories=evil.example.org\n[ -d /x ] && echo\nexit 0\n" + CERNVM
    site.write_policy(cernvm_policy(site.keys))
    user_data = tmp_path / "user-data"
    user_data.write_bytes(data)
    code, _, err = site.run("file:%s" % user_data)
    assert code == 0, err
    text = (site.root / "etc/cvmfs/default.local").read_text()
    assert "evil" not in text and "grid.cern.ch" in text


def test_script_without_ini_is_still_not_ours(site, tmp_path):
    marker = tmp_path / "script-ran"
    site.write_policy(cernvm_policy(site.keys))
    user_data = tmp_path / "user-data"
    user_data.write_bytes(("#!/bin/sh\ntouch %s\n" % marker).encode())
    code, _, err = site.run("file:%s" % user_data)
    assert code != 0 and "script" in err and "Traceback" not in err
    assert not marker.exists()


# --------------------------------------------------------------------------------------
# Short repository names take the site's CVMFS default domain


def test_run_ec2_cernvm_short_names_take_cern_ch(site):
    site.write_policy(cernvm_policy(site.keys))
    code, out, err = run_over_ec2(site, CERNVM, "--json")
    assert code == 0, err
    path = site.root / "etc/cvmfs/default.local"
    assert sourced(path) == "atlas.cern.ch,atlas-condb.cern.ch,grid.cern.ch"
    rep = site.report()
    assert rep["outcome"] == "applied" and rep["payload"]["unsigned"] is True
    assert rep["legacy"]["default_domain"] == "cern.ch"
    assert rep["legacy"]["qualified"] == ["atlas -> atlas.cern.ch",
                                          "atlas-condb -> atlas-condb.cern.ch",
                                          "grid -> grid.cern.ch"]
    assert "script" not in rep["legacy"]
    assert "cernvm.users" in rep["legacy"]["ignored"] and "mypassword" not in out + err


def test_site_default_domain_is_used_and_the_allow_globs_see_full_names(site, tmp_path):
    site.write_policy(cernvm_policy(site.keys, default_domain="egi.eu"))
    user_data = tmp_path / "user-data"
    user_data.write_bytes(b"[cernvm]\nrepositories = biomed, pheno.egi.eu\n")
    code, _, err = site.run("file:%s" % user_data)
    assert code == 0, err
    assert sourced(site.root / "etc/cvmfs/default.local") == "biomed.egi.eu,pheno.egi.eu"


def test_a_qualified_name_outside_the_allow_list_is_still_refused(site, tmp_path):
    site.write_policy(cernvm_policy(site.keys))
    user_data = tmp_path / "user-data"
    user_data.write_bytes(b"[cernvm]\nrepositories = atlas,lhcb\n")
    code, _, err = site.run("file:%s" % user_data)
    assert code == 1 and "lhcb.cern.ch" in err and "Traceback" not in err
    assert site.snapshot() == {}


def test_signed_payloads_keep_needing_full_names(site, tmp_path, payload_doc):
    """Only the amiconfig translation qualifies names: a signed payload must spell them out."""
    site.write_policy(cernvm_policy(site.keys))
    payload_doc["cvmfs"]["repositories"] = ["atlas"]
    bundle = site.bundle(payload_doc)
    code, _, err = site.run("file:%s" % bundle)
    assert code == 1 and "repositor" in err
    assert site.snapshot() == {}


@pytest.mark.parametrize("domain", ["", "no spaces.org", "-x.org", 3, "a" * 70 + ".org"])
def test_a_bad_default_domain_is_a_policy_error(keys, domain):
    with pytest.raises(PolicyError, match="default_domain"):
        policy.parse(cernvm_policy(keys, default_domain=domain))


def test_parse_amiconfig_uses_the_given_domain(keys):
    pol = policy.parse(cernvm_policy(keys))
    verified = verify.accept_unsigned_legacy(CERNVM, pol, "amiconfig")
    doc, info = legacy.parse_amiconfig(verified, "atlas", NOW, default_domain="example.org")
    assert doc.sections["cvmfs"].repositories == (
        "atlas.example.org", "atlas-condb.example.org", "grid.example.org")
    assert info["default_domain"] == "example.org"


def test_attack_ini_inside_the_script_before_its_exit_is_script(site, tmp_path):
    """A heredoc writing `[cernvm] repositories=...` inside the script is not amiconfig: the
    INI starts after the script's `exit` line, as amiconfig cut it."""
    marker = tmp_path / "script-ran"
    data = ("#!/bin/sh before\ncat > %s <<EOF\n[cernvm]\nrepositories = evil.example.org\nEOF\n"
            "exit 0\n" % marker).encode() + CERNVM
    site.write_policy(cernvm_policy(site.keys))
    user_data = tmp_path / "user-data"
    user_data.write_bytes(data)
    code, _, err = run_env(site, tmp_path, "--source", "file:%s" % user_data, "--run-commands")
    assert code == 0, err
    assert not marker.exists()
    text = (site.root / "etc/cvmfs/default.local").read_text()
    assert "evil" not in text and "atlas-condb.cern.ch" in text
    script = site.report()["legacy"]["script"]
    assert script["when"] == "before" and script["bytes"] == data.index(b"[amiconfig]")


def test_a_script_with_ini_is_refused_where_the_site_did_not_opt_in(site, tmp_path):
    marker = tmp_path / "script-ran"
    doc = cernvm_policy(site.keys)
    del doc["legacy"]
    site.write_policy(doc)
    user_data = tmp_path / "user-data"
    user_data.write_bytes(script_userdata(marker))
    code, _, err = run_env(site, tmp_path, "--source", "file:%s" % user_data, "--run-commands")
    assert code == 1 and "legacy.amiconfig: deny" in err and "Traceback" not in err
    assert not marker.exists() and site.snapshot() == {}


def test_gzip_and_crlf_cernvm_user_data(site, tmp_path):
    import gzip

    data = script_userdata(tmp_path / "script-ran").replace(b"\n", b"\r\n")
    site.write_policy(cernvm_policy(site.keys))
    user_data = tmp_path / "user-data.gz"
    user_data.write_bytes(gzip.compress(data))
    code, _, err = site.run("file:%s" % user_data)
    assert code == 0, err
    assert sourced(site.root / "etc/cvmfs/default.local") == \
        "atlas.cern.ch,atlas-condb.cern.ch,grid.cern.ch"
    assert site.report()["legacy"]["script"]["status"] == "not run"
    assert not (tmp_path / "script-ran").exists()


@pytest.mark.parametrize(("data", "kind", "script"), [
    (b"#!/bin/sh\necho hi\nexit 0\n[cernvm]\nrepositories=atlas\n", "amiconfig",
     b"#!/bin/sh\necho hi\nexit 0\n"),
    (b"#!/bin/sh\necho hi\n[cernvm]\nrepositories=atlas\n", "amiconfig", b"#!/bin/sh\necho hi\n"),
    (b"#!/bin/sh\n[cernvm]\nexit 1\n\n[condor]\ncondor_master=cm\n", "amiconfig",
     b"#!/bin/sh\n[cernvm]\nexit 1\n\n"),
    (b"#!/bin/sh\necho hi\nexit 0\n", "other", None),
    (b"#!/bin/sh\necho '[x]'\nexit 0\n[ -f /x ] && echo\n", "other", None),
])
def test_classify_and_split(data, kind, script):
    from contextd.sources import userdata

    assert userdata.classify(data).kind == kind
    if script is not None:
        assert userdata.split_script(data) == (script, data[len(script):])
