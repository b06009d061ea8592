"""The htcondor plugin: schema, policy decisions, a secret token, and a configuration that
HTCondor's own parser (htcondor2, in a subprocess) reads back as intended."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from contextd.actions import RunCommand, WriteFile
from contextd.errors import PayloadError, PolicyError
from contextd.plugin import Finding, PlanContext, Plugin
from contextd_plugins import htcondor

P = htcondor.PLUGIN
SHA = "0123456789abcdef" * 4
TOKEN = ("eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJpYXQiOjE3MDAwMDAwMDAsImlzcyI6ImF0bGFzLWNt"
         "LmNlcm4uY2giLCJzdWIiOiJjb25kb3JAYXRsYXMifQ.c2lnbmF0dXJlLW5vdC1yZWFs_-")


def ctx(**kw):
    values = dict(payload_sha256=SHA, vo="atlas", serial=2026112401, hostname="vm1.cern.ch",
                  read_file=lambda path: None)
    values.update(kw)
    return PlanContext(**values)


def section(**kw):
    data = {"role": "execute", "central_manager": "atlas-cm.cern.ch",
            "attributes": {"VMType": "atlas-worker"}, "token": TOKEN}
    data.update(kw)
    return data


def allow(**kw):
    data = {"roles": ["execute"], "central_managers": ["atlas-cm*.cern.ch"],
            "attributes": ["VMType"]}
    data.update(kw)
    return P.parse_allow(data)


def test_plugin_object():
    assert isinstance(P, Plugin)
    assert P.name == "htcondor"
    assert P.secret_fields == frozenset({"token"})


def test_entry_point_loads_it():
    from contextd import plugin
    assert plugin.load("htcondor") is P


# --- payload schema -------------------------------------------------------------------

def test_parse_full_section():
    s = P.parse_settings(section(attributes={"VMType": "atlas-worker", "Cores": 8,
                                             "IsCloud": True}))
    assert s.role == "Execute"
    assert s.central_manager == "atlas-cm.cern.ch"
    assert s.attributes == (("VMType", "atlas-worker"), ("Cores", 8), ("IsCloud", True))
    assert s.token == TOKEN


@pytest.mark.parametrize(("spelling", "knob"), [
    ("execute", "Execute"), ("Execute", "Execute"), ("EXECUTE", "Execute"),
    ("submit", "Submit"), ("Submit", "Submit"),
    ("central-manager", "CentralManager"), ("central_manager", "CentralManager"),
    ("CentralManager", "CentralManager"), ("centralmanager", "CentralManager"),
    ("Central-Manager", "CentralManager"),
    ("personal", "Personal"), ("Personal", "Personal"),
])
def test_role_spellings(spelling, knob):
    assert P.parse_settings(section(role=spelling)).role == knob


@pytest.mark.parametrize("role", ["worker", "execute submit", "Execute,Submit", "",
                                  "execute\n", "Execute CentralManager", 1, ["execute"]])
def test_bad_roles(role):
    with pytest.raises(PayloadError) as e:
        P.parse_settings(section(role=role))
    assert e.value.message.startswith("htcondor.role ")


@pytest.mark.parametrize("cm", ["atlas-cm.cern.ch", "atlas-cm.cern.ch:9618", "cm", "10.0.0.1"])
def test_central_manager_accepts(cm):
    assert P.parse_settings(section(central_manager=cm)).central_manager == cm


@pytest.mark.parametrize("cm", [
    "atlas-cm.cern.ch\n", "atlas-cm.cern.ch\nSTART = true", "atlas cm.cern.ch",
    "$(FULL_HOSTNAME)", "`hostname`", "cm.cern.ch;reboot", '"cm.cern.ch"', "cm\\x",
    "-cm.cern.ch", "cm.cern.ch:", ":9618", "cm.cern.ch:0", "cm.cern.ch:65536",
    "cm.cern.ch:96 18", "cm.cern.ch:9618:1", "cm_x.cern.ch", "",
])
def test_hostile_central_manager_rejected(cm):
    with pytest.raises(PayloadError) as e:
        P.parse_settings(section(central_manager=cm))
    assert e.value.message.startswith("htcondor.central_manager ")
    assert "\n" not in e.value.one_line()


@pytest.mark.parametrize("name", [
    "1VMType", "VM-Type", "VM Type", "VM.Type", "$(X)", "VMType\n", "", "A" * 101,
    "CONDOR_HOST", "condor_host", "STARTD_ATTRS", "DAEMON_LIST", "Contextd_VO",
    "CONTEXTD_PAYLOAD_SHA256", "CONTEXTD_anything", "use", "include", "if", "true",
])
def test_bad_attribute_names(name):
    with pytest.raises(PayloadError) as e:
        P.parse_settings(section(attributes={name: "x"}))
    assert e.value.message.startswith("htcondor.attributes key ")
    assert "\n" not in e.value.one_line()


@pytest.mark.parametrize("value", [
    'atlas"', "atlas\\", "$(CONDOR_HOST)", "$ENV(HOME)", "atlas\nSTART = true", "a\tb",
    "`id`", " atlas", "atlas ", "x" * 1025, 1.5, None, [1], {"a": 1}, 2 ** 63, -(2 ** 63) - 1,
    "caf\u00e9",
])
def test_bad_attribute_values(value):
    with pytest.raises(PayloadError) as e:
        P.parse_settings(section(attributes={"VMType": value}))
    assert e.value.message.startswith("htcondor.attributes.VMType ")
    assert "\n" not in e.value.one_line()


def test_attribute_values_that_are_fine():
    attrs = {"A": "atlas worker 2", "B": "x.y/z:1@site,2;3+4=5%~_-", "C": "", "D": -(2 ** 63),
             "E": 2 ** 63 - 1, "F": False}
    assert dict(P.parse_settings(section(attributes=attrs)).attributes) == attrs


def test_attribute_names_are_case_insensitive_duplicates():
    with pytest.raises(PayloadError) as e:
        P.parse_settings(section(attributes={"VMType": "a", "vmtype": "b"}))
    assert "htcondor.attributes.vmtype is the same HTCondor knob as VMType" in e.value.message


@pytest.mark.parametrize("token", [
    TOKEN + "\n", TOKEN + " ", "a b", "tok$(x)", 'tok"', "tok'", "tok\\", "x" * 16385, "", 12,
])
def test_bad_token_rejected_without_showing_it(token):
    with pytest.raises(PayloadError) as e:
        P.parse_settings(section(token=token))
    assert e.value.message.startswith("htcondor.token ")
    if isinstance(token, str) and token:
        assert token.strip() not in e.value.one_line()
    assert "\n" not in e.value.one_line()


def test_longest_token_accepted():
    assert P.parse_settings(section(token="x" * 16384)).token == "x" * 16384


@pytest.mark.parametrize(("data", "message"), [
    ({"role": "execute"}, "htcondor.central_manager is required"),
    ({"central_manager": "cm"}, "htcondor.role is required"),
    (section(pool="x"), "htcondor: unknown key 'pool'"),
    (section(attributes=["VMType"]), "htcondor.attributes must be a mapping, not a list"),
])
def test_parse_errors(data, message):
    with pytest.raises(PayloadError) as e:
        P.parse_settings(data)
    assert message in e.value.message


def test_settings_value_cannot_hold_a_hostile_value():
    with pytest.raises(ValueError, match="invalid central_manager"):
        htcondor.Settings(role="Execute", central_manager="cm\nSTART = true")
    with pytest.raises(ValueError, match="invalid attribute 'A'"):
        htcondor.Settings(role="Execute", central_manager="cm", attributes=(("A", '"'),))
    with pytest.raises(ValueError, match="invalid role"):
        htcondor.Settings(role="Execute; rm", central_manager="cm")


# --- policy schema --------------------------------------------------------------------

def test_parse_allow_and_site():
    a = P.parse_allow({"roles": ["execute", "Central-Manager"], "central_managers": ["cm*"],
                       "attributes": ["VMType"]})
    assert a == htcondor.Allow(("Execute", "CentralManager"), ("cm*",), ("VMType",))
    assert P.parse_allow({}) == htcondor.Allow((), None, ())
    s = P.parse_site({"central_manager": "site-cm.example.org:9618",
                      "attributes": {"SiteName": "CERN-PROD"}})
    assert s == htcondor.Site("site-cm.example.org:9618", (("SiteName", "CERN-PROD"),))


@pytest.mark.parametrize(("data", "message"), [
    ({"roles": ["worker"]}, "allow.htcondor.roles[0] 'worker' is not a valid role"),
    ({"central_managers": ["cm cern"]}, "allow.htcondor.central_managers[0]"),
    ({"attributes": ["VM-Type"]}, "allow.htcondor.attributes[0] 'VM-Type' is not a valid"),
    ({"token": "x"}, "allow.htcondor: unknown key 'token'"),
])
def test_parse_allow_errors(data, message):
    with pytest.raises(PolicyError) as e:
        P.parse_allow(data)
    assert message in e.value.message


@pytest.mark.parametrize(("data", "message"), [
    ({"central_manager": "cm\nx"}, "site_settings.htcondor.central_manager "),
    ({"attributes": {"A": "$(X)"}}, "site_settings.htcondor.attributes.A "),
    ({"attributes": {"CONDOR_HOST": "x"}}, "site_settings.htcondor.attributes key "),
    ({"role": "execute"}, "site_settings.htcondor: unknown key 'role'"),
])
def test_parse_site_errors(data, message):
    with pytest.raises(PolicyError) as e:
        P.parse_site(data)
    assert message in e.value.message


# --- authorize ------------------------------------------------------------------------

def test_everything_allowed():
    s = P.parse_settings(section())
    d = P.authorize(s, allow(), None)
    assert d.denied == [] and d.overridden == []
    assert d.settings == s


def test_role_outside_allow_denied():
    d = P.authorize(P.parse_settings(section(role="CentralManager")), allow(), None)
    assert d.denied == [Finding("htcondor", "role", "'central-manager'",
                                "not allowed by allow.htcondor.roles [execute]")]


def test_central_manager_outside_globs_denied():
    d = P.authorize(P.parse_settings(section(central_manager="cm.evil.org")), allow(), None)
    assert d.denied == [Finding("htcondor", "central_manager", "'cm.evil.org'",
                                "not allowed by allow.htcondor.central_managers "
                                "[atlas-cm*.cern.ch]")]


def test_central_manager_port_needs_a_glob_that_allows_it():
    s = P.parse_settings(section(central_manager="atlas-cm.cern.ch:9618"))
    assert len(P.authorize(s, allow(), None).denied) == 1
    assert P.authorize(s, allow(central_managers=["atlas-cm*.cern.ch:*"]), None).denied == []


def test_attribute_not_allowed_denied_case_insensitively_allowed():
    s = P.parse_settings(section(attributes={"vmtype": "w", "START": True, "Rank": 1}))
    d = P.authorize(s, allow(), None)
    assert d.denied == [
        Finding("htcondor", "attributes.START", "True",
                "not allowed by allow.htcondor.attributes [VMType]"),
        Finding("htcondor", "attributes.Rank", "1",
                "not allowed by allow.htcondor.attributes [VMType]"),
    ]


def test_all_denials_at_once():
    s = P.parse_settings(section(role="submit", central_manager="cm.evil.org",
                                 attributes={"VMType": "x", "Evil": "y"}))
    d = P.authorize(s, allow(), None)
    assert [f.field for f in d.denied] == ["role", "central_manager", "attributes.Evil"]


def test_site_overrides_central_manager_and_attributes():
    site = P.parse_site({"central_manager": "site-cm.example.org",
                         "attributes": {"vmtype": "site-worker", "SiteName": "CERN-PROD"}})
    s = P.parse_settings(section(central_manager="cm.evil.org",
                                 attributes={"VMType": "atlas-worker", "Cores": 8}))
    d = P.authorize(s, allow(attributes=["VMType", "Cores"]), site)
    assert d.denied == []
    assert d.overridden == [
        Finding("htcondor", "central_manager", "'cm.evil.org'",
                "site_settings.htcondor.central_manager wins"),
        Finding("htcondor", "attributes.VMType", "'atlas-worker'",
                "site_settings.htcondor.attributes.vmtype wins"),
    ]
    assert d.settings.central_manager == "site-cm.example.org"
    assert d.settings.attributes == (("vmtype", "site-worker"), ("Cores", 8),
                                     ("SiteName", "CERN-PROD"))
    assert d.settings.token == TOKEN


# --- secrets --------------------------------------------------------------------------

def test_token_never_shown():
    s = P.parse_settings(section(role="submit", central_manager="cm.evil.org",
                                 attributes={"Evil": "y"}))
    d = P.authorize(s, allow(), P.parse_site({"attributes": {"Evil": "z"}}))
    assert d.denied and d.overridden
    actions = P.plan(d.settings, ctx())
    shown = [repr(s), repr(d), repr(d.settings), json.dumps(P.describe(d.settings))]
    shown += [repr(f) for f in list(d.denied) + list(d.overridden)]
    shown += [json.dumps(f.as_dict()) for f in list(d.denied) + list(d.overridden)]
    shown += [repr(a) for a in actions] + [str(a) for a in actions]
    shown += [a.target for a in actions]
    for text in shown:
        assert TOKEN not in text
        assert TOKEN[:20] not in text
    assert P.describe(d.settings)["token"] == "<secret>"


def test_describe_is_json():
    s = P.parse_settings(section(attributes={"VMType": "w", "Cores": 8, "Cloud": True}))
    assert json.loads(json.dumps(P.describe(s))) == {
        "role": "execute", "central_manager": "atlas-cm.cern.ch",
        "attributes": {"VMType": "w", "Cores": 8, "Cloud": True}, "token": "<secret>"}
    assert "token" not in P.describe(P.parse_settings(section(token=None, attributes=None)))


# --- plan -----------------------------------------------------------------------------

def test_plan_actions():
    actions = P.plan(P.parse_settings(section()), ctx())
    assert [type(a) for a in actions] == [WriteFile, WriteFile, RunCommand]
    conf, token, start = actions
    assert (conf.plugin, conf.path, conf.mode, conf.secret) == (
        "htcondor", "/etc/condor/config.d/50-contextd.conf", 0o644, False)
    assert (token.plugin, token.path, token.mode, token.secret, token.dir_mode) == (
        "htcondor", "/etc/condor/tokens.d/contextd.token", 0o600, True, 0o700)
    assert token.content == (TOKEN + "\n").encode()
    # --no-block: contextd.service is Before=condor.service, a blocking start would deadlock
    assert start == RunCommand(
        "htcondor", ("systemctl", "enable", "--now", "--no-block", "condor"),
        service=True, undo=("systemctl", "disable", "--now", "--no-block", "condor"))
    assert start.kind == "service"


def test_plan_without_token_writes_no_token_file():
    actions = P.plan(P.parse_settings(section(token=None)), ctx())
    assert [a.target for a in actions] == ["/etc/condor/config.d/50-contextd.conf",
                                           "systemctl enable --now --no-block condor"]


def test_config_text():
    text = P.plan(P.parse_settings(section(attributes={"VMType": "atlas-worker", "Cores": 8,
                                                       "IsCloud": True})), ctx())[0].content
    assert text.decode() == (
        "# Written by contextd from payload sha256 %s (VO atlas, serial 2026112401).\n"
        "# Do not edit: the next contextd run replaces this file.\n"
        "use ROLE : Execute\n"
        "CONDOR_HOST = atlas-cm.cern.ch\n"
        'VMType = "atlas-worker"\n'
        "Cores = 8\n"
        "IsCloud = true\n"
        'CONTEXTD_PAYLOAD_SHA256 = "%s"\n'
        'CONTEXTD_VO = "atlas"\n'
        "CONTEXTD_SERIAL = 2026112401\n"
        "STARTD_ATTRS = $(STARTD_ATTRS) VMType Cores IsCloud CONTEXTD_PAYLOAD_SHA256 "
        "CONTEXTD_VO CONTEXTD_SERIAL\n" % (SHA, SHA))


@pytest.mark.parametrize("vo", ["atlas\nSTART = true", 'at"las', "$(X)", ""])
def test_plan_refuses_a_vo_it_cannot_write(vo):
    with pytest.raises(PayloadError):
        P.plan(P.parse_settings(section()), ctx(vo=vo))


def needs_htcondor(test):
    """HTCondor's own parser must be there (requirements-test.txt): without htcondor2 these
    tests fail, they never skip. The RPM's %check, whose EL9 buildroot has no htcondor2,
    deselects them by name (check_deselect in packaging/rpm/contextd.spec); `make test`, which
    CI runs on every change, runs them."""
    return test
KEYS = ["CONDOR_HOST", "COLLECTOR_HOST", "DAEMON_LIST", "STARTD_ATTRS", "VMType", "Cores",
        "IsCloud", "CONTEXTD_PAYLOAD_SHA256", "CONTEXTD_VO", "CONTEXTD_SERIAL",
        "SEC_TOKEN_SYSTEM_DIRECTORY", "ETC"]


def condor_read(tmp_path, content):
    """Values HTCondor's parser gives for KEYS, with the planned file in LOCAL_CONFIG_DIR.

    htcondor2 reads its configuration once per process, hence the subprocess. The base
    configuration mirrors the RPM's (ETC is /etc/condor there, here a directory in tmp).
    """
    assert importlib.util.find_spec("htcondor2") is not None, (
        "htcondor2 is missing: pip install -r requirements-test.txt (a missing reader fails, "
        "it never skips)")
    (tmp_path / "config.d").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "config.d" / "50-contextd.conf").write_bytes(content)
    (tmp_path / "condor_config").write_text(
        f"RELEASE_DIR = {tmp_path}\nLOCAL_DIR = {tmp_path}/local\nETC = {tmp_path}/etc\n"
        f"LOCAL_CONFIG_DIR = {tmp_path}/config.d\n")
    env = dict(os.environ, CONDOR_CONFIG=str(tmp_path / "condor_config"))
    code = ("import json, htcondor2\n"
            "print(json.dumps({k: htcondor2.param.get(k) for k in %r}))" % KEYS)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_htcondor
@pytest.mark.parametrize(("role", "daemons"), [
    ("execute", {"STARTD"}),
    ("submit", {"SCHEDD"}),
    ("central-manager", {"COLLECTOR", "NEGOTIATOR"}),
])
def test_htcondor_reads_back_the_config(tmp_path, role, daemons):
    s = P.parse_settings(section(role=role, central_manager="atlas-cm.cern.ch:9618",
                                 attributes={"VMType": "atlas worker", "Cores": 8,
                                             "IsCloud": True}))
    got = condor_read(tmp_path, P.plan(s, ctx())[0].content)
    print(role, "DAEMON_LIST =", got["DAEMON_LIST"])
    assert got["CONDOR_HOST"] == "atlas-cm.cern.ch:9618"
    assert got["COLLECTOR_HOST"] == "atlas-cm.cern.ch:9618"
    listed = set(got["DAEMON_LIST"].replace(",", " ").split())
    assert daemons <= listed, got["DAEMON_LIST"]
    attrs = got["STARTD_ATTRS"].split()
    for name in ("VMType", "Cores", "IsCloud", "CONTEXTD_PAYLOAD_SHA256", "CONTEXTD_VO",
                 "CONTEXTD_SERIAL"):
        assert name in attrs
    assert got["VMType"] == '"atlas worker"'
    assert got["Cores"] == "8"
    assert got["IsCloud"] == "true"
    assert got["CONTEXTD_PAYLOAD_SHA256"] == '"%s"' % SHA
    assert got["CONTEXTD_VO"] == '"atlas"'
    assert got["CONTEXTD_SERIAL"] == "2026112401"
    # The token goes where HTCondor looks by default, so the config need not say so.
    assert got["SEC_TOKEN_SYSTEM_DIRECTORY"] == got["ETC"] + "/tokens.d"


@needs_htcondor
def test_personal_role_keeps_our_central_manager(tmp_path):
    # ROLE:Personal sets CONDOR_HOST itself; the explicit line after it must win.
    s = P.parse_settings(section(role="personal"))
    got = condor_read(tmp_path, P.plan(s, ctx())[0].content)
    assert got["CONDOR_HOST"] == "atlas-cm.cern.ch"
    assert {"STARTD", "SCHEDD"} <= set(got["DAEMON_LIST"].replace(",", " ").split())
