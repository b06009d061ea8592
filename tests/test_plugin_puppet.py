"""The puppet plugin: schema, policy decisions, and a puppet.conf merge that keeps every
byte it does not own."""

import json

import pytest

from contextd.actions import RunCommand, WriteFile
from contextd.errors import PayloadError, PolicyError
from contextd.plugin import Finding, PlanContext, Plugin
from contextd_plugins import puppet

P = puppet.PLUGIN
SHA = "0123456789abcdef" * 4
CONF = "/etc/puppetlabs/puppet/puppet.conf"
MARK = ("# contextd: server, environment, certname in [agent] written by contextd from payload "
        "sha256 %s (VO atlas, serial 7); the next contextd run sets them again" % SHA)


def ctx(files=None, **kw):
    files = files or {}
    reads = []

    def read_file(path):
        reads.append(path)
        return files.get(path)

    values = dict(payload_sha256=SHA, vo="atlas", serial=7, hostname="VM1.cern.ch",
                  read_file=read_file)
    values.update(kw)
    c = PlanContext(**values)
    return c, reads


def allow(**kw):
    data = {"servers": ["puppet*.cern.ch"], "environments": ["production", "qa*"]}
    data.update(kw)
    return P.parse_allow(data)


def settings(**kw):
    data = {"server": "puppet.cern.ch", "environment": "production"}
    data.update(kw)
    return P.parse_settings(data)


def planned_conf(current, s=None, **kw):
    c, reads = ctx({CONF: current}, **kw)
    actions = P.plan(s or settings(), c)
    assert reads == [CONF]
    return actions[0].content


def test_plugin_object():
    assert isinstance(P, Plugin)
    assert P.name == "puppet"
    assert P.secret_fields == frozenset()


def test_entry_point_loads_it():
    from contextd import plugin
    assert plugin.load("puppet") is P


# --- payload schema -------------------------------------------------------------------

def test_parse_defaults():
    assert P.parse_settings({}) == puppet.Settings(run="agent-once", config=CONF)
    s = P.parse_settings({"server": "puppet.cern.ch", "environment": "qa_1", "run": "none",
                          "certname": "vm1.cern.ch", "waitforcert": 60})
    assert s == puppet.Settings("puppet.cern.ch", "qa_1", "none", "vm1.cern.ch", 60, CONF)


def test_server_with_port_rejected_with_a_hint():
    with pytest.raises(PayloadError) as e:
        P.parse_settings({"server": "puppet.cern.ch:8140"})
    assert e.value.message == "puppet.server 'puppet.cern.ch:8140' must be a host name " \
                              "without a port"
    assert "serverport" in e.value.one_line()


HOSTILE = ["puppet.cern.ch\n", "puppet.cern.ch\n[main]", "puppet cern", "$(reboot)", "`id`",
           "puppet.cern.ch;x", "'puppet'", '"puppet"', "puppet\\", "", "-puppet.cern.ch",
           "puppet.cern.ch#x"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_server_rejected(value):
    with pytest.raises(PayloadError) as e:
        P.parse_settings({"server": value})
    assert e.value.message.startswith("puppet.server ")
    assert "\n" not in e.value.one_line()


@pytest.mark.parametrize("value", [*HOSTILE, "Production", "prod-1", "prod.1", "x" * 256])
def test_hostile_environment_rejected(value):
    with pytest.raises(PayloadError) as e:
        P.parse_settings({"environment": value})
    assert e.value.message.startswith("puppet.environment ")
    assert "is not a valid Puppet environment name" in e.value.message


@pytest.mark.parametrize(("data", "message"), [
    ({"run": "daemon"}, "puppet.run 'daemon' is not a valid run"),
    ({"run": "agent-once\n"}, "puppet.run "),
    ({"certname": "VM1.cern.ch"}, "puppet.certname 'VM1.cern.ch' is not a valid certificate"),
    ({"certname": "vm1 cern"}, "puppet.certname "),
    ({"certname": "vm1\n"}, "puppet.certname "),
    ({"certname": "-vm1"}, "puppet.certname "),
    ({"waitforcert": -1}, "puppet.waitforcert must be at least 0, not -1"),
    ({"waitforcert": "60"}, "puppet.waitforcert must be an integer, not a string"),
    ({"waitforcert": True}, "puppet.waitforcert must be an integer, not a boolean"),
    ({"config": "/tmp/puppet.conf"}, "puppet: unknown key 'config'"),
])
def test_parse_errors(data, message):
    with pytest.raises(PayloadError) as e:
        P.parse_settings(data)
    assert message in e.value.message


def test_settings_value_cannot_hold_a_hostile_value():
    with pytest.raises(ValueError, match="invalid server"):
        puppet.Settings(server="p\n[main]")
    with pytest.raises(ValueError, match="invalid config"):
        puppet.Settings(config="relative/puppet.conf")


# --- policy schema --------------------------------------------------------------------

def test_parse_allow_and_site():
    assert P.parse_allow({}) == puppet.Allow(None, None, 0)
    assert allow(max_waitforcert=300) == puppet.Allow(("puppet*.cern.ch",),
                                                      ("production", "qa*"), 300)
    assert P.parse_site({"server": "puppet.site.org", "environment": "site",
                         "config": "/etc/puppet/puppet.conf"}) == \
        puppet.Site("puppet.site.org", "site", "/etc/puppet/puppet.conf")


@pytest.mark.parametrize(("data", "message"), [
    ({"servers": ["puppet cern"]}, "allow.puppet.servers[0] 'puppet cern' is not a valid"),
    ({"max_waitforcert": -5}, "allow.puppet.max_waitforcert must be at least 0"),
    ({"certnames": ["vm 1"]}, "allow.puppet.certnames[0] 'vm 1' is not a valid certname glob"),
    ({"certname": []}, "allow.puppet: unknown key 'certname'"),
])
def test_parse_allow_errors(data, message):
    with pytest.raises(PolicyError) as e:
        P.parse_allow(data)
    assert message in e.value.message


@pytest.mark.parametrize(("data", "message"), [
    ({"server": "p:8140"}, "site_settings.puppet.server 'p:8140' must be a host name"),
    ({"environment": "a b"}, "site_settings.puppet.environment "),
    ({"config": "puppet.conf"}, "site_settings.puppet.config 'puppet.conf' is not a valid"),
    ({"config": "/etc/../tmp/puppet.conf"}, "site_settings.puppet.config "),
    ({"config": "/etc/puppet/puppet conf"}, "site_settings.puppet.config "),
    ({"config": "/etc/puppet/"}, "site_settings.puppet.config "),
    ({"run": "none"}, "site_settings.puppet: unknown key 'run'"),
])
def test_parse_site_errors(data, message):
    with pytest.raises(PolicyError) as e:
        P.parse_site(data)
    assert message in e.value.message


# --- authorize ------------------------------------------------------------------------

def test_everything_allowed():
    d = P.authorize(settings(), allow(), None)
    assert d.denied == [] and d.overridden == []
    assert d.settings == settings()
    assert d.settings.config == CONF


def test_server_and_environment_outside_globs_denied():
    d = P.authorize(settings(server="puppet.evil.org", environment="devel"), allow(), None)
    assert d.denied == [
        Finding("puppet", "server", "'puppet.evil.org'",
                "not allowed by allow.puppet.servers [puppet*.cern.ch]"),
        Finding("puppet", "environment", "'devel'",
                "not allowed by allow.puppet.environments [production, qa*]"),
    ]


def test_no_rules_allow_nothing():
    d = P.authorize(settings(), P.parse_allow({}), None)
    assert [f.reason for f in d.denied] == [
        "not allowed by allow.puppet.servers (not set: nothing allowed)",
        "not allowed by allow.puppet.environments (not set: nothing allowed)"]


def test_waitforcert_over_the_limit_denied():
    d = P.authorize(settings(waitforcert=600), allow(max_waitforcert=300), None)
    assert d.denied == [Finding("puppet", "waitforcert", "600",
                                "above allow.puppet.max_waitforcert 300")]
    assert P.authorize(settings(waitforcert=300), allow(max_waitforcert=300), None).denied == []


def test_waitforcert_denied_by_default():
    d = P.authorize(settings(waitforcert=1), allow(), None)
    assert [f.reason for f in d.denied] == ["above allow.puppet.max_waitforcert 0"]
    assert P.authorize(settings(waitforcert=0), allow(), None).denied == []


def test_site_server_overrides():
    site = P.parse_site({"server": "puppet.site.org"})
    d = P.authorize(settings(server="puppet.evil.org"), allow(), site)
    assert d.denied == []
    assert d.overridden == [Finding("puppet", "server", "'puppet.evil.org'",
                                    "site_settings.puppet.server wins")]
    assert d.settings.server == "puppet.site.org"
    assert d.settings.environment == "production"


def test_site_values_only_the_site_sets_are_just_used():
    site = P.parse_site({"server": "puppet.site.org", "environment": "site",
                         "config": "/etc/puppet/puppet.conf"})
    d = P.authorize(P.parse_settings({}), P.parse_allow({}), site)
    assert d.denied == [] and d.overridden == []
    assert (d.settings.server, d.settings.environment, d.settings.config) == (
        "puppet.site.org", "site", "/etc/puppet/puppet.conf")


# --- plan -----------------------------------------------------------------------------

def test_plan_actions():
    c, _ = ctx()
    actions = P.plan(settings(), c)
    assert [type(a) for a in actions] == [WriteFile, RunCommand]
    w, run = actions
    assert (w.plugin, w.path, w.mode, w.secret) == ("puppet", CONF, 0o644, False)
    assert run == RunCommand(
        "puppet", ("puppet", "agent", "--onetime", "--no-daemonize", "--detailed-exitcodes"),
        timeout=1800, ok_codes=frozenset({0, 2}), reversible=False)


def test_plan_with_waitforcert_and_site_config():
    site = P.parse_site({"config": "/etc/puppet/puppet.conf"})
    d = P.authorize(settings(waitforcert=120), allow(max_waitforcert=300), site)
    c, reads = ctx()
    w, run = P.plan(d.settings, c)
    assert reads == ["/etc/puppet/puppet.conf"]
    assert w.path == "/etc/puppet/puppet.conf"
    assert run.argv == ("puppet", "agent", "--onetime", "--no-daemonize",
                        "--detailed-exitcodes", "--config", "/etc/puppet/puppet.conf",
                        "--waitforcert", "120")


def test_plan_run_none_only_writes():
    c, _ = ctx()
    assert [a.kind for a in P.plan(settings(run="none"), c)] == ["file"]


def test_certname_defaults_to_lowercased_hostname():
    assert b"certname = vm1.cern.ch\n" in planned_conf(None)
    assert b"certname = given\n" in planned_conf(None, settings(certname="given"))


@pytest.mark.parametrize("hostname", ["bad host", "vm1\n[main]", "", "vm_1$"])
def test_unusable_hostname_needs_a_certname(hostname):
    c, _ = ctx(hostname=hostname)
    with pytest.raises(PayloadError) as e:
        P.plan(settings(), c)
    assert "set puppet.certname" in e.value.one_line()
    assert len(P.plan(settings(certname="vm1"), c)) == 2


@pytest.mark.parametrize("vo", ["atlas\n[main]", "", "at las"])
def test_plan_refuses_a_vo_it_cannot_write(vo):
    c, _ = ctx(vo=vo)
    with pytest.raises(PayloadError):
        P.plan(settings(), c)


def test_describe():
    out = P.describe(settings(waitforcert=5))
    assert json.loads(json.dumps(out)) == {
        "server": "puppet.cern.ch", "environment": "production", "run": "agent-once",
        "waitforcert": 5}
    site = P.parse_site({"config": "/etc/puppet/puppet.conf"})
    final = P.authorize(settings(), allow(), site).settings
    assert P.describe(final)["config"] == "/etc/puppet/puppet.conf"


# --- the puppet.conf merge ------------------------------------------------------------

AGENT = ("[agent]\n" + MARK + "\nserver = puppet.cern.ch\nenvironment = production\n"
         "certname = vm1.cern.ch\n")


def test_merge_no_file():
    assert planned_conf(None).decode() == AGENT


def test_merge_empty_file():
    assert planned_conf(b"").decode() == AGENT


def test_merge_main_only():
    main = (b"# Site defaults\n[main]\nserver = main-server.cern.ch\n"
            b"logdir = /var/log/puppetlabs/puppet\n")
    assert planned_conf(main) == main + b"\n" + AGENT.encode()


def test_merge_main_without_final_newline():
    assert planned_conf(b"[main]\nvardir = /x") == b"[main]\nvardir = /x\n\n" + AGENT.encode()


def test_merge_agent_with_comments_replaces_in_place():
    before = (
        b"# puppet.conf from the image\n"
        b"[main]\n"
        b"    server = main-server.cern.ch   \n"
        b"certname = main-cert\n"
        b"\n"
        b"[agent]\n"
        b"# Which server to ask\n"
        b"  server=old.cern.ch  \n"
        b"runinterval = 30m ; not a comment to Puppet\n"
        b"# environment = commented-out\n"
        b"\n"
        b"# about the user section\n"
        b"[user]\n"
        b"environment = user_env\n"
    )
    after = (
        b"# puppet.conf from the image\n"
        b"[main]\n"
        b"    server = main-server.cern.ch   \n"
        b"certname = main-cert\n"
        b"\n"
        b"[agent]\n" + MARK.encode() + b"\n"
        b"# Which server to ask\n"
        b"  server=puppet.cern.ch  \n"
        b"runinterval = 30m ; not a comment to Puppet\n"
        b"environment = production\n"
        b"certname = vm1.cern.ch\n"
        b"# environment = commented-out\n"
        b"\n"
        b"# about the user section\n"
        b"[user]\n"
        b"environment = user_env\n"
    )
    assert planned_conf(before) == after


def test_merge_keeps_crlf_and_odd_bytes():
    before = (b"[main]\r\nfoo = caf\xe9 \xff\r\n[agent]\r\nenvironment = old\r\n"
              b"\r\n[server]\r\nx = 1\r\n")
    out = planned_conf(before)
    assert out == (b"[main]\r\nfoo = caf\xe9 \xff\r\n[agent]\r\n" + MARK.encode() + b"\r\n"
                   b"environment = production\r\nserver = puppet.cern.ch\r\n"
                   b"certname = vm1.cern.ch\r\n\r\n[server]\r\nx = 1\r\n")


def test_merge_agent_at_end_without_newline():
    out = planned_conf(b"[main]\nx = 1\n[agent]\nserver = a")
    assert out == (b"[main]\nx = 1\n[agent]\n" + MARK.encode() + b"\nserver = puppet.cern.ch\n"
                   b"environment = production\ncertname = vm1.cern.ch\n")


def test_merge_only_sets_what_is_known():
    s = P.parse_settings({"certname": "vm1"})
    before = b"[agent]\nserver = keep.cern.ch\nenvironment = keep\n"
    mark = MARK.replace("server, environment, certname", "certname")
    assert planned_conf(before, s) == (b"[agent]\n" + mark.encode() + b"\n"
                                       b"server = keep.cern.ch\nenvironment = keep\n"
                                       b"certname = vm1\n")


def test_merge_two_agent_sections():
    before = b"[agent]\nserver = a\n[main]\nx = 1\n[agent]\nsplay = true\n"
    assert planned_conf(before) == (
        b"[agent]\n" + MARK.encode() + b"\nserver = puppet.cern.ch\n[main]\nx = 1\n"
        b"[agent]\nsplay = true\nenvironment = production\ncertname = vm1.cern.ch\n")


@pytest.mark.parametrize("before", [
    None,
    b"[main]\nserver = m\n",
    b"# c\n[agent]\n  server=old  \n# tail\n\n[user]\nx=1\n",
    b"[main]\r\nx = 1\r\n[agent]\r\nsplay = true",
])
def test_merge_is_idempotent_and_the_next_run_replaces_its_marker(before):
    once = planned_conf(before)
    assert planned_conf(once) == once
    again = planned_conf(once, settings(server="puppet2.cern.ch"), serial=8)
    assert again.count(b"# contextd:") == 1
    assert b"serial 8)" in again and b"puppet2.cern.ch" in again
    assert b"puppet.cern.ch" not in again.replace(b"puppet2.cern.ch", b"")


@pytest.mark.parametrize("before", [
    b"# top\n[main]\nserver = m\ncertname = c\n\n[agent]\n# note\nsplay = true\n\n[user]\n",
    b"[main]\r\nx = 1\r\n\r\n",
    b"; ini comment\n[master]\nenvironment = p\n",
])
def test_merge_keeps_every_other_line(before):
    out = planned_conf(before)
    # Every original line is still there, in order, byte for byte.
    old = before.splitlines(True)
    new = iter(out.splitlines(True))
    for line in old:
        assert any(line == candidate for candidate in new), line


@pytest.mark.parametrize(("before", "sets_list"), [
    (b"[main]\nserver_list = old1.cern.ch,old2.cern.ch:8141\n", True),
    (b"server_list = old.cern.ch\n[agent]\nsplay = true\n", True),     # before any header: main
    (b"[agent]\n  server_list=old.cern.ch  \n", True),
    (b"[user]\nserver_list = old.cern.ch\n[main]\nserver = m\n", False),  # not the agent's
    (None, False),
])
def test_server_list_the_agent_reads_points_at_the_server_too(before, sets_list):
    """Puppet prefers server_list to server: left alone it would ignore the server we set."""
    import re

    out = planned_conf(before)
    assert bool(re.search(rb"(?m)^\s*server_list\s*=\s*puppet\.cern\.ch\s*$", out)) is sets_list
    assert (b"certname, server_list in [agent]" in out) is sets_list
    for line in (before or b"").splitlines(True):
        if b"[agent]" not in before:            # nothing of [main] or [user] is rewritten
            assert line in out.splitlines(True)


def test_real_puppet_reads_the_server_we_set(tmp_path):
    """What the agent will use, as Puppet itself resolves it."""
    import shutil
    import subprocess

    assert shutil.which("puppet"), "Debian's puppet package must be installed (make test does)"
    conf = tmp_path / "puppet.conf"
    conf.write_bytes(planned_conf(b"[main]\nserver_list = old.cern.ch\nserver = old.cern.ch\n"))
    out = subprocess.run(["puppet", "config", "print", "server", "server_list", "--section",
                          "agent", "--config", str(conf)], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}).stdout
    printed = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    assert printed["server"] == "puppet.cern.ch"
    assert printed["server_list"] in ("puppet.cern.ch", "puppet.cern.ch:8140", '["puppet.cern.ch"]',
                                      '[["puppet.cern.ch"]]')
