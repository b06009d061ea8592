"""The packages plugin: schema, policy decisions, the argv it plans, and runs with fake
dnf/rpm/apt-get (and the real dpkg-query) first on PATH under --run-commands: installs first,
already-installed packages unchanged, a failure rolls the files back and lists what stays."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import base_payload, fake_commands
from contextd.errors import PayloadError, PlanError, PolicyError
from contextd.plugin import PlanContext
from contextd_plugins import packages

P = packages.PLUGIN
SHA = "0123456789abcdef" * 4
EL = b'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n'
DEBIAN = b'PRETTY_NAME="Debian GNU/Linux 13"\nID=debian\nVERSION_ID="13"\n'


def ctx(os_release):
    return PlanContext(payload_sha256=SHA, vo="atlas", serial=7, hostname="vm1",
                       read_file=lambda path: os_release if path == "/etc/os-release" else None)


def decide(install, names=("ganglia-gmond", "condor*"), repos=("epel", "htcondor")):
    allow = P.parse_allow({"names": list(names), "repos": list(repos)})
    return P.authorize(P.parse_settings({"install": list(install)}), allow, None)


# --- schema and policy ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["-y", "--installroot=/x", "/tmp/evil.rpm", "http://x/y.rpm",
                                  "@development", "ganglia*", "a b", "pkg;id", "pkg>=1.0",
                                  "", "x" * 200, "a\nb"])
def test_names_outside_the_grammar_are_refused(name):
    with pytest.raises(PayloadError) as e:
        P.parse_settings({"install": [name]})
    assert "packages.install[0]" in e.value.one_line()


def test_schema_errors():
    for data in ({}, {"install": []}, {"install": ["a", "a"]}, {"install": "a"},
                 {"install": ["a"], "remove": ["b"]}):
        with pytest.raises(PayloadError):
            P.parse_settings(data)
    with pytest.raises(PolicyError):
        P.parse_allow({"names": ["a"], "repos": ["--enablerepo=*"]})
    with pytest.raises(PolicyError):
        P.parse_allow({"names": ["a"], "mirrors": []})
    with pytest.raises(PolicyError):
        P.parse_site({"manager": "dnf"})


def test_names_outside_the_globs_are_denied():
    d = decide(["ganglia-gmond", "condor-stash-plugin", "nmap"])
    assert [(f.qualified, f.reason) for f in d.denied] == [
        ("packages.install[2]", "not allowed by allow.packages.names [ganglia-gmond, condor*]")]


def test_without_repos_nothing_is_allowed():
    d = decide(["ganglia-gmond"], repos=())
    assert [f.qualified for f in d.denied] == ["packages.install[0]"]
    assert "allow.packages.repos is not set" in d.denied[0].reason
    d = P.authorize(P.parse_settings({"install": ["x"]}), P.parse_allow({}), None)
    assert len(d.denied) == 1


# --- the plan ---------------------------------------------------------------------------

def test_el_plan_is_dnf_with_only_the_allowed_repos():
    actions = P.plan(decide(["ganglia-gmond", "condor"]).settings, ctx(EL))
    assert [a.argv for a in actions] == [
        ("dnf", "-y", "--disablerepo=*", "--enablerepo=epel", "--enablerepo=htcondor",
         "install", "ganglia-gmond"),
        ("dnf", "-y", "--disablerepo=*", "--enablerepo=epel", "--enablerepo=htcondor",
         "install", "condor")]
    assert all(a.first and not a.reversible and not a.service for a in actions)
    assert actions[0].unless == ("rpm", "-q", "--quiet", "ganglia-gmond")
    assert actions[0].timeout == 1800


def test_debian_plan_is_apt_with_one_sources_list():
    actions = P.plan(decide(["ganglia-gmond"], repos=["local"]).settings, ctx(DEBIAN))
    opts = ("-o", "Dir::Etc::SourceList=/etc/apt/sources.list.d/local.list",
            "-o", "Dir::Etc::SourceParts=-")
    assert [a.argv for a in actions] == [
        ("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", *opts,
         "-o", "APT::Get::List-Cleanup=0", "update"),
        ("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q", *opts,
         "install", "ganglia-gmond")]
    assert actions[1].unless == ("dpkg-query", "-W", "-f=${db:Status-Status}", "ganglia-gmond")
    assert actions[1].unless_stdout == b"installed"
    with pytest.raises(PlanError, match="one repository"):
        P.plan(decide(["ganglia-gmond"]).settings, ctx(DEBIAN))


def test_unknown_image_is_one_clear_error():
    for data in (None, b"ID=alpine\n"):
        with pytest.raises(PlanError) as e:
            P.plan(decide(["condor"]).settings, ctx(data))
        assert "/etc/os-release" in e.value.one_line()


# --- runs ---------------------------------------------------------------------------------

TEMPLATE = "# {{ facts.site }}\ncluster {{ vars.cluster }}\nhost {{ facts.hostname }}\n"


def pkg_site(site, os_release=EL, repos=("epel",)):
    pol = copy.deepcopy(site.policy)
    pol["trust"]["atlas"]["allow"]["packages"] = {"names": ["ganglia-gmond", "condor*"],
                                                  "repos": list(repos)}
    pol["trust"]["atlas"]["allow"]["files"] = {"paths": ["/etc/ganglia/*.conf"],
                                               "max_bytes": 4096}
    site.write_policy(pol)
    (site.root / "etc").mkdir(exist_ok=True)
    (site.root / "etc" / "os-release").write_bytes(os_release)
    doc = base_payload()
    for section in ("cvmfs", "puppet", "report"):
        doc.pop(section)
    doc["packages"] = {"install": ["ganglia-gmond", "condor"]}
    doc["files"] = [{"path": "/etc/ganglia/gmond.conf", "template": TEMPLATE,
                     "vars": {"cluster": "atlas-t2"}}]
    return doc


def fakes(tmp_path: Path, failing: str = "", installed=("condor",)):
    """fake_commands plus dnf, rpm, apt-get: each logs its argv; rpm -q says yes only for
    `installed`; `failing` exits 1."""
    log = tmp_path / "commands.log"
    bindir = tmp_path / "bin"
    env = fake_commands(bindir, log, failing)
    for name in ("dnf", "apt-get"):
        code = 1 if name == failing else 0
        (bindir / name).write_text("#!/bin/sh\necho \"%s $*\" >> %s\nexit %d\n"
                                   % (name, log, code))
    (bindir / "rpm").write_text(
        "#!/bin/sh\necho \"rpm $*\" >> %s\ncase \"$3\" in %s) exit 0;; esac\nexit 1\n"
        % (log, "|".join(installed)))
    for name in ("dnf", "apt-get", "rpm"):
        (bindir / name).chmod(0o755)
    return env, log


def run(site, doc, env):
    bundle = site.bundle(doc)
    return site.run("file:%s" % bundle, "--run-commands", "--json", env=env)


def test_installs_first_then_files_then_the_service(site, tmp_path):
    doc = pkg_site(site)
    env, log = fakes(tmp_path)
    code, out, err = run(site, doc, env)
    assert code == 0, err
    lines = log.read_text().splitlines()
    assert lines == [
        "rpm -q --quiet ganglia-gmond",
        "dnf -y --disablerepo=* --enablerepo=epel install ganglia-gmond",
        "rpm -q --quiet condor",
        "systemctl enable --now --no-block condor"]
    report = json.loads(out)
    assert [(a["plugin"], a["kind"], a["status"]) for a in report["actions"]] == [
        ("packages", "command", "ran"), ("packages", "command", "unchanged"),
        ("files", "file", "created"), ("htcondor", "file", "created"),
        ("htcondor", "file", "created"), ("htcondor", "service", "ran")]
    assert (site.root / "etc/ganglia/gmond.conf").read_text() == \
        "# TEST-SITE\ncluster atlas-t2\nhost %s\n" % os.uname().nodename


def test_a_failed_install_writes_no_file(site, tmp_path):
    doc = pkg_site(site)
    env, log = fakes(tmp_path, failing="dnf", installed=())
    before = site.snapshot()
    code, _, err = run(site, doc, env)
    assert code == 3, err
    assert len(err.strip().splitlines()) == 1 and "dnf" in err
    assert site.snapshot() == before
    assert "systemctl" not in log.read_text()


def test_a_later_failure_rolls_files_back_and_names_the_installed_packages(site, tmp_path):
    doc = pkg_site(site)
    env, _ = fakes(tmp_path, failing="systemctl", installed=())
    before = site.snapshot()
    code, _, err = run(site, doc, env)
    assert code == 3, err
    assert site.snapshot() == before           # the template's file and condor's, undone
    report = site.report()
    assert report["not_undone"] == [
        "dnf -y --disablerepo=* --enablerepo=epel install ganglia-gmond",
        "dnf -y --disablerepo=* --enablerepo=epel install condor"]
    assert {a["status"] for a in report["actions"] if a["kind"] == "file"} == {"rolled-back"}


def test_without_run_commands_installs_are_skipped(site, tmp_path):
    doc = pkg_site(site)
    bundle = site.bundle(doc)
    code, out, err = site.run("file:%s" % bundle, "--json")
    assert code == 0, err
    statuses = [(a["plugin"], a["status"]) for a in json.loads(out)["actions"]]
    assert statuses[:2] == [("packages", "skipped"), ("packages", "skipped")]


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs Debian's dpkg-query")
def test_debian_real_dpkg_query_says_what_is_installed(site, tmp_path):
    """The real dpkg-query of the host (commands act on the host under --run-commands):
    `dpkg` is installed, so only the other package reaches (fake) apt-get."""
    doc = pkg_site(site, os_release=DEBIAN, repos=["local"])
    pol = site.policy
    pol["trust"]["atlas"]["allow"]["packages"]["names"] = ["dpkg", "contextd-no-such-*"]
    site.write_policy(pol)
    doc["packages"] = {"install": ["dpkg", "contextd-no-such-package"]}
    doc.pop("htcondor")
    env, log = fakes(tmp_path)
    os.remove(tmp_path / "bin" / "rpm")
    code, out, err = run(site, doc, env)
    assert code == 0, err
    statuses = [a["status"] for a in json.loads(out)["actions"] if a["plugin"] == "packages"]
    assert statuses == ["ran", "unchanged", "ran"]
    assert [line.split(" install ")[-1] for line in log.read_text().splitlines()
            if " install " in line] == ["contextd-no-such-package"]
    assert subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", "dpkg"],
                          capture_output=True).stdout == b"installed"


def test_explain_shows_each_package_and_the_command(site, tmp_path):
    doc = pkg_site(site)
    doc["packages"]["install"].append("nmap")
    bundle = site.bundle(doc)
    code, out, err = site.cli("explain", str(bundle), "--policy", str(site.policy_path),
                              "--fact", "site=TEST-SITE", "--json")
    result = json.loads(out)
    rows = {(r["field"], r["verdict"]) for r in result["changes"]}
    assert ("packages.install[2]", "denied") in rows
    doc["packages"]["install"].pop()
    bundle = site.bundle(doc)
    code, out, err = site.cli("explain", str(bundle), "--policy", str(site.policy_path),
                              "--fact", "site=TEST-SITE", "--root", str(site.root), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["would_run"][0] == \
        "dnf -y --disablerepo=* --enablerepo=epel install ganglia-gmond"
    assert ("packages.install[0]", "allowed") in {(r["field"], r["verdict"])
                                                  for r in result["changes"]}
