"""The files plugin: schema, policy decisions, and runs that write what the payload brings
(inline content, a listed file from the carrier, a template over the run's facts, the site's
settings and the payload's vars), with explain's previews and Jinja2 only when needed."""

from __future__ import annotations

import copy
import hashlib
import json
import os

import pytest

from conftest import base_payload
from contextd import plugin
from contextd.errors import PayloadError, PlanError, PolicyError
from contextd.plugin import PlanContext
from contextd.schema import path_match
from contextd_plugins import files
from test_boot_imports import boot_run

P = files.PLUGIN
SHA = "0123456789abcdef" * 4


def settings(*entries):
    return P.parse_settings(list(enumerate(entries)))


def allow(**kw):
    data = {"paths": ["/etc/ganglia/*.conf", "/etc/app/*"], "max_bytes": 1024}
    data.update(kw)
    return P.parse_allow(data)


def ctx(**kw):
    values = dict(payload_sha256=SHA, vo="atlas", serial=7, hostname="vm1",
                  read_file=lambda path: None,
                  facts={"site": "CERN-PROD", "hostname": "vm1.cern.ch", "cloud": "openstack"})
    values.update(kw)
    return PlanContext(**values)


def planned(entries, site=None, **allow_kw):
    decision = P.authorize(settings(*entries), allow(**allow_kw), site)
    assert decision.denied == []
    return P.plan(decision.settings, ctx())


# --- schema and policy ------------------------------------------------------------------

def test_path_match_never_crosses_a_slash():
    assert path_match("/etc/app/x.conf", "/etc/app/*")
    assert path_match("/etc/app/x.conf", "/etc/*/x.conf")
    assert not path_match("/etc/app/sub/x.conf", "/etc/app/*")
    assert not path_match("/etc/app", "/etc/app/*")
    assert not path_match("/etc/app/xy", "/etc/app/?")


@pytest.mark.parametrize(("entry", "problem"), [
    ({"path": "/etc/app/x"}, "exactly one of content, source, template"),
    ({"path": "/etc/app/x", "content": "a", "template": "b"}, "exactly one of"),
    ({"path": "/etc/app/x", "source": "a/b"}, "sha256"),
    ({"path": "/etc/app/x", "content": "a", "vars": {"x": 1}}, "template only"),
    ({"path": "/etc/app/x", "template": "a", "vars": {"1x": 1}}, "not a variable name"),
    ({"path": "/etc/app/x", "template": "a", "vars": []}, "mapping"),
    ({"path": "/etc/app/x", "content": "a", "mode": "rwx"}, "not a file mode"),
    ({"path": "/etc/app/x", "content": "a", "mode": True}, "not a file mode"),
    ({"path": "/etc/app/x", "content": "a", "owner": "Root;"}, "user name"),
    ({"path": "/etc/app/x", "content": "a", "colour": "red"}, "unknown key"),
    ({"path": "/etc/contextd/policy.yaml", "content": "a"}, "contextd's own"),
    ({"path": "/var/lib/contextd/applied.json", "content": "a"}, "contextd's own"),
    ({"path": "/etc/app/x y", "content": "a"}, "normalised"),
])
def test_schema_refuses_with_the_field_named(entry, problem):
    with pytest.raises(PayloadError) as e:
        settings(entry)
    assert problem in e.value.one_line()
    assert "files[0]" in e.value.one_line()


def test_the_same_path_twice_is_refused():
    with pytest.raises(PayloadError, match=r"files\[1\].path /etc/app/x is also files\[0\]"):
        settings({"path": "/etc/app/x", "content": "a"}, {"path": "/etc/app/x", "content": "b"})


def test_modes_in_both_spellings():
    assert settings({"path": "/etc/app/x", "content": "a", "mode": "0640"}).entries[0].mode \
        == 0o640
    assert settings({"path": "/etc/app/x", "content": "a", "mode": 0o600}).entries[0].mode \
        == 0o600


def test_denials_name_the_rule():
    decision = P.authorize(settings(
        {"path": "/etc/other/x", "content": "a"},
        {"path": "/etc/app/y", "content": "a", "owner": "ganglia"},
        {"path": "/etc/app/z", "content": "x" * 2000}), allow(), None)
    assert [(f.qualified, f.reason) for f in decision.denied] == [
        ("files[0].path", "not allowed by allow.files.paths [/etc/ganglia/*.conf, /etc/app/*] "
                          "(whole path; '*' never crosses '/')"),
        ("files[1].owner", "not allowed by allow.files.owners []"),
        ("files[2].content", "above allow.files.max_bytes 1024")]


def test_without_max_bytes_nothing_is_allowed():
    decision = P.authorize(settings({"path": "/etc/app/x", "template": "a"}),
                           P.parse_allow({"paths": ["/etc/app/*"]}), None)
    assert [f.qualified for f in decision.denied] == ["files[0].template"]


def test_policy_schema():
    for bad in ({"paths": "/etc/*"}, {"paths": ["/etc/*"], "max_bytes": 0},
                {"paths": ["/etc/*"], "max_bytes": 10 ** 9}, {"paths": ["/etc/*"], "x": 1}):
        with pytest.raises(PolicyError):
            P.parse_allow(bad)
    with pytest.raises(PolicyError):
        P.parse_site({"x": object()})
    assert json.loads(P.parse_site({"collector": "gm.cern.ch", "ports": [8649]}).variables) \
        == {"collector": "gm.cern.ch", "ports": [8649]}


def test_footprint_declares_the_globs_of_every_vo():
    fp = plugin.footprint(["files"], {}, {"files": [allow(), allow(paths=["/opt/x/*.ini"])]})
    assert fp.declares("/etc/app/a") and fp.declares("/opt/x/b.ini")
    assert not fp.declares("/etc/app/a/b") and not fp.declares("/opt/x/b.conf")


# --- plans --------------------------------------------------------------------------------

def test_plan_content_and_template():
    site = P.parse_site({"collector": "gmond.cern.ch"})
    actions = planned([
        {"path": "/etc/app/plain", "content": "hello\n", "mode": 0o600},
        {"path": "/etc/ganglia/gmond.conf", "owner": None,
         "template": "cluster {{ vars.cluster }} on {{ facts.site }}/{{ facts.cloud }}\n"
                     "collector {{ site_settings.collector }}\n"
                     "{% for p in vars.ports %}port {{ p }}\n{% endfor %}",
         "vars": {"cluster": "atlas", "ports": [1, 2]}}], site=site)
    assert [(a.path, a.mode, a.no_links, a.content) for a in actions] == [
        ("/etc/app/plain", 0o600, True, b"hello\n"),
        ("/etc/ganglia/gmond.conf", 0o644, True,
         b"cluster atlas on CERN-PROD/openstack\ncollector gmond.cern.ch\nport 1\nport 2\n")]


def test_a_missing_name_is_an_error_not_an_empty_string():
    decision = P.authorize(settings({"path": "/etc/app/x", "template": "{{ facts.region }}"}),
                           allow(), None)
    with pytest.raises(PlanError, match=r"files\[0\].template: UndefinedError"):
        P.plan(decision.settings, ctx())


def test_template_output_is_bounded_by_max_bytes():
    decision = P.authorize(settings({"path": "/etc/app/x", "template": "{{ 'x' * 2000 }}"}),
                           allow(), None)
    with pytest.raises(PlanError, match="output exceeds 1024 bytes"):
        P.plan(decision.settings, ctx())


def test_a_source_comes_from_the_carrier_checked():
    data = b"[main]\nk = v\n"
    digest = hashlib.sha256(data).hexdigest()
    decision = P.authorize(settings({"path": "/etc/app/x", "source": "app/x",
                                     "sha256": digest}), allow(), None)
    actions = P.plan(decision.settings, ctx(listed_file={"app/x": data}.__getitem__))
    assert actions[0].content == data
    with pytest.raises(PlanError, match="sha256"):
        P.plan(decision.settings, ctx(listed_file=lambda rel: b"other"))


# --- runs ---------------------------------------------------------------------------------

TEMPLATE = "# {{ facts.site }} {{ vars.cluster }} {{ site_settings.collector }}\n"


def files_site(site, entries, **allow_extra):
    pol = copy.deepcopy(site.policy)
    pol["trust"]["atlas"]["allow"]["files"] = dict(
        {"paths": ["/etc/ganglia/*.conf", "/etc/app/*"], "max_bytes": 65536}, **allow_extra)
    pol["site_settings"]["files"] = {"collector": "gm.example.org"}
    site.write_policy(pol)
    doc = base_payload()
    for section in ("cvmfs", "htcondor", "puppet", "report"):
        doc.pop(section)
    doc["files"] = entries
    return doc


def test_a_run_writes_content_and_template_and_rolls_nothing_else(site):
    doc = files_site(site, [{"path": "/etc/app/motd", "content": "hi\n", "mode": "0640"},
                            {"path": "/etc/ganglia/gmond.conf", "template": TEMPLATE,
                             "vars": {"cluster": "t2"}}])
    code, out, err = site.run("file:%s" % site.bundle(doc), "--json")
    assert code == 0, err
    assert (site.root / "etc/app/motd").read_bytes() == b"hi\n"
    assert (site.root / "etc/app/motd").stat().st_mode & 0o7777 == 0o640
    assert (site.root / "etc/ganglia/gmond.conf").read_text() == "# TEST-SITE t2 gm.example.org\n"
    assert [(a["plugin"], a["target"], a["status"]) for a in json.loads(out)["actions"]] == [
        ("files", "/etc/app/motd", "created"), ("files", "/etc/ganglia/gmond.conf", "created")]
    # a second boot with the same payload is unchanged
    code, out, err = site.run("file:%s" % site.bundle(doc), "--json")
    assert code == 0 and json.loads(out)["outcome"] in ("unchanged", "applied"), err


def test_a_listed_source_from_a_context_tree(site):
    data = b"gmond config from the ISO\n"
    doc = files_site(site, [{"path": "/etc/ganglia/gmond.conf", "source": "ganglia/gmond.conf",
                             "sha256": hashlib.sha256(data).hexdigest()}])
    bundle = site.bundle(doc).read_text()
    tree = site.tmp / "ctx"
    (tree / "contextd").mkdir(parents=True)
    (tree / "ganglia").mkdir()
    (tree / "ganglia/gmond.conf").write_bytes(data)
    (tree / "contextd/payload.yaml").write_bytes((site.tmp / "payload.yaml").read_bytes())
    (tree / "contextd/payload.yaml.sig").write_text(
        bundle[bundle.index("-----BEGIN SSH SIGNATURE-----"):])
    code, _, err = site.run("dir:%s" % tree)
    assert code == 0, err
    assert (site.root / "etc/ganglia/gmond.conf").read_bytes() == data
    (tree / "ganglia/gmond.conf").write_bytes(b"tampered\n")
    (site.root / "etc/ganglia/gmond.conf").unlink()
    site.state_dir.joinpath("applied.json").unlink()
    code, _, err = site.run("dir:%s" % tree)
    assert code == 1 and "sha256" in err, err
    assert not (site.root / "etc/ganglia/gmond.conf").exists()


def test_an_existing_file_is_backed_up_and_put_back_on_failure(site, tmp_path):
    from conftest import fake_commands

    (site.root / "etc/app").mkdir(parents=True)
    (site.root / "etc/app/motd").write_bytes(b"old\n")
    doc = files_site(site, [{"path": "/etc/app/motd", "content": "new\n"}])
    doc["cvmfs"] = base_payload()["cvmfs"]
    env = fake_commands(tmp_path / "bin", tmp_path / "log", failing="cvmfs_config")
    code, _, err = site.run("file:%s" % site.bundle(doc), "--run-commands", env=env)
    assert code == 3, err
    assert (site.root / "etc/app/motd").read_bytes() == b"old\n"


def test_explain_previews_the_rendered_file(site):
    doc = files_site(site, [{"path": "/etc/ganglia/gmond.conf", "template": TEMPLATE * 9,
                             "vars": {"cluster": "t2"}},
                            {"path": "/etc/passwd", "content": "x"}])
    bundle = site.bundle(doc)
    argv = ["explain", str(bundle), "--policy", str(site.policy_path), "--fact",
            "site=TEST-SITE"]
    code, out, err = site.cli(*argv, "--json")
    result = json.loads(out)
    rows = {(r["field"], r["verdict"]) for r in result["changes"]}
    assert ("files[0]", "allowed") in rows and ("files[1].path", "denied") in rows
    doc["files"].pop()
    bundle = site.bundle(doc)
    argv[1] = str(bundle)
    code, out, err = site.cli(*argv, "--json")
    assert code == 0, err
    assert json.loads(out)["previews"] == {
        "/etc/ganglia/gmond.conf": ["# TEST-SITE t2 gm.example.org"] * 5}
    code, out, err = site.cli(*argv)
    assert "first lines of /etc/ganglia/gmond.conf:\n  | # TEST-SITE t2 gm.example.org" in out


def test_jinja2_is_imported_only_for_a_template(site, tmp_path):
    doc = files_site(site, [{"path": "/etc/app/motd", "content": "hi\n"}])
    code, err, modules = boot_run(site, "file:%s" % site.bundle(doc), dict(os.environ))
    assert code == 0, err
    assert not [m for m in modules if m.startswith(("jinja2", "contextd.render"))]
    doc = files_site(site, [{"path": "/etc/app/motd", "template": "{{ facts.site }}\n"}])
    doc["serial"] += 1
    code, err, modules = boot_run(site, "file:%s" % site.bundle(doc), dict(os.environ))
    assert code == 0, err
    assert {"jinja2.sandbox", "contextd.render"} <= set(modules)     # the check above can see
