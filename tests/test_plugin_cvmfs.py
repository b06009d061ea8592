"""The cvmfs plugin: schema, policy decisions and a default.local that /bin/sh reads back."""

import json
import re
import subprocess

import pytest

from contextd.actions import RunCommand, WriteFile
from contextd.errors import PayloadError, PolicyError
from contextd.plugin import Finding, PlanContext, Plugin
from contextd_plugins import cvmfs

P = cvmfs.PLUGIN
SHA = "0123456789abcdef" * 4
PROXY = "http://squid1.example.org:3128|http://squid2.example.org:3128;DIRECT"


def ctx(**kw):
    values = dict(payload_sha256=SHA, vo="atlas", serial=2026112401, hostname="vm1.cern.ch",
                  read_file=lambda path: None)
    values.update(kw)
    return PlanContext(**values)


def allow(**kw):
    data = {"repositories": ["atlas*.cern.ch", "sft.cern.ch"], "max_quota_mb": 50000}
    data.update(kw)
    return P.parse_allow(data)


def settings(**kw):
    data = {"repositories": ["atlas.cern.ch", "atlas-condb.cern.ch", "sft.cern.ch"]}
    data.update(kw)
    return P.parse_settings(data)


def source(tmp_path, content, names=("CVMFS_REPOSITORIES", "CVMFS_HTTP_PROXY",
                                     "CVMFS_QUOTA_LIMIT")):
    """What a real /bin/sh sees after sourcing the file."""
    (tmp_path / "default.local").write_bytes(content)
    script = '. ./default.local; printf "%%s\\n" %s' % " ".join('"$%s"' % n for n in names)
    out = subprocess.run(["/bin/sh", "-c", script], cwd=str(tmp_path), check=True,
                         capture_output=True)
    assert out.stderr == b""
    return out.stdout.decode().split("\n")[:-1]


def test_plugin_object():
    assert isinstance(P, Plugin)
    assert P.name == "cvmfs"
    assert P.secret_fields == frozenset()


def test_entry_point_loads_it():
    from contextd import plugin
    assert plugin.load("cvmfs") is P


# --- payload schema -------------------------------------------------------------------

def test_parse_full_section():
    s = P.parse_settings({"repositories": ["atlas.cern.ch", "sft.cern.ch"],
                          "quota_limit_mb": 20000, "http_proxy": PROXY})
    assert s == cvmfs.Settings(("atlas.cern.ch", "sft.cern.ch"), 20000, PROXY)


def test_parse_minimal_section():
    s = P.parse_settings({"repositories": ["atlas.cern.ch"]})
    assert s.quota_limit_mb is None and s.http_proxy is None


@pytest.mark.parametrize(("data", "message"), [
    (None, "cvmfs must be a mapping, not null"),
    ({}, "cvmfs.repositories is required"),
    ({"repositories": []}, "cvmfs.repositories must not be empty"),
    ({"repositories": "atlas.cern.ch"}, "cvmfs.repositories must be a list, not a string"),
    ({"repositories": ["atlas.cern.ch", "x y"]},
     "cvmfs.repositories[1] 'x y' is not a valid repository name"),
    ({"repositories": ["atlas"]}, "cvmfs.repositories[0] 'atlas' is not a valid repository name"),
    ({"repositories": ["a" * 58 + ".ch"]}, "is not a valid repository name"),
    ({"repositories": ["atlas.cern.ch", "sft.cern.ch", "atlas.cern.ch"]},
     "cvmfs.repositories[2] 'atlas.cern.ch' is listed twice"),
    ({"repositories": ["atlas.cern.ch"], "repo": 1}, "cvmfs: unknown key 'repo'"),
    ({"repositories": ["atlas.cern.ch"], "quota_limit_mb": "20000"},
     "cvmfs.quota_limit_mb must be an integer, not a string"),
    ({"repositories": ["atlas.cern.ch"], "quota_limit_mb": True},
     "cvmfs.quota_limit_mb must be an integer, not a boolean"),
    ({"repositories": ["atlas.cern.ch"], "quota_limit_mb": 0},
     "cvmfs.quota_limit_mb must be at least 1, not 0"),
    ({"repositories": ["atlas.cern.ch"], "http_proxy": "http://a b:3128"},
     "cvmfs.http_proxy 'http://a b:3128' is not a valid CVMFS proxy list"),
])
def test_parse_errors(data, message):
    with pytest.raises(PayloadError) as e:
        P.parse_settings(data)
    assert message in e.value.message
    assert "\n" not in e.value.one_line()


def test_longest_repository_name_is_accepted():
    name = "a" * 57 + ".ch"
    assert len(name) == 60
    assert P.parse_settings({"repositories": [name]}).repositories == (name,)


HOSTILE = [
    "atlas.cern.ch\n",
    "atlas.cern.ch\nCVMFS_IGNORE_SIGNATURE=yes",
    "atlas.cern.ch'",
    "atlas.cern.ch\"",
    "atlas.cern.ch\\",
    "$(reboot).cern.ch",
    "`id`.cern.ch",
    "atlas.cern.ch;reboot",
    "atlas.cern.ch sft.cern.ch",
    "atlas.cern.ch,sft.cern.ch",
    "../../etc.passwd",
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_repository_rejected(value):
    with pytest.raises(PayloadError) as e:
        P.parse_settings({"repositories": [value]})
    assert e.value.message.startswith("cvmfs.repositories[0] ")
    assert "\n" not in e.value.one_line()


@pytest.mark.parametrize("value", [
    "http://squid.example.org:3128",
    "http://squid.example.org:3128/",
    "http://squid.example.org",
    "http://10.0.0.1:3128",
    "DIRECT",
    "auto",
    "auto;DIRECT",
    PROXY,
])
def test_proxy_grammar_accepts(value):
    assert P.parse_settings({"repositories": ["a.cern.ch"], "http_proxy": value}).http_proxy \
        == value


@pytest.mark.parametrize("value", [
    "",
    " http://squid.example.org:3128",
    "http://squid.example.org:3128 ",
    "http://a.org:3128; DIRECT",
    "http://a.org:3128\n",
    "http://a.org:3128\nCVMFS_IGNORE_SIGNATURE=yes",
    "http://a.org:3128';reboot;'",
    'http://a.org:3128"',
    "http://a.org:3128\\",
    "http://$(reboot):3128",
    "http://`id`:3128",
    "http://a.org:3128;;DIRECT",
    "http://a.org:3128|",
    ";DIRECT",
    "direct",
    "AUTO",
    "https://a.org:3128",
    "socks5://a.org:1080",
    "http://a.org:3128/path",
    "http://user@a.org:3128",
    "http://a.org:0",
    "http://a.org:65536",
    "http://a.org:",
    "http://-a.org:3128",
    "http://a.org:3128" + "|http://a.org:3128" * 200,
])
def test_hostile_or_malformed_proxy_rejected(value):
    with pytest.raises(PayloadError) as e:
        P.parse_settings({"repositories": ["a.cern.ch"], "http_proxy": value})
    assert e.value.message.startswith("cvmfs.http_proxy ")
    assert "is not a valid CVMFS proxy list" in e.value.message
    assert "\n" not in e.value.one_line()


@pytest.mark.parametrize("kw", [
    {"repositories": ("atlas.cern.ch'",)},
    {"repositories": ()},
    {"repositories": ("a.cern.ch",), "http_proxy": "http://a.org:3128\n"},
    {"repositories": ("a.cern.ch",), "quota_limit_mb": "1"},
])
def test_settings_value_cannot_hold_a_hostile_value(kw):
    with pytest.raises(ValueError, match=r"^cvmfs settings: invalid "):
        cvmfs.Settings(**kw)


# --- policy schema --------------------------------------------------------------------

def test_parse_allow_and_site():
    a = P.parse_allow({"repositories": ["atlas*.cern.ch"], "max_quota_mb": 50000,
                       "http_proxies": ["http://*.example.org:3128", "DIRECT"]})
    assert a == cvmfs.Allow(("atlas*.cern.ch",), 50000,
                            ("http://*.example.org:3128", "DIRECT"))
    assert P.parse_allow({}) == cvmfs.Allow(None, None, None)
    s = P.parse_site({"http_proxy": PROXY, "quota_limit_mb": 30000})
    assert s == cvmfs.Site(PROXY, 30000)


@pytest.mark.parametrize(("data", "message"), [
    ({"repos": []}, "allow.cvmfs: unknown key 'repos'"),
    ({"repositories": ["atlas cern"]},
     "allow.cvmfs.repositories[0] 'atlas cern' is not a valid repository glob"),
    ({"repositories": ["atlas.cern.ch\n"]}, "allow.cvmfs.repositories[0]"),
    ({"max_quota_mb": "big"}, "allow.cvmfs.max_quota_mb must be an integer"),
    ({"http_proxies": ["http://a b"]}, "allow.cvmfs.http_proxies[0]"),
])
def test_parse_allow_errors(data, message):
    with pytest.raises(PolicyError) as e:
        P.parse_allow(data)
    assert message in e.value.message


@pytest.mark.parametrize(("data", "message"), [
    ({"repositories": ["a.cern.ch"]}, "site_settings.cvmfs: unknown key 'repositories'"),
    ({"http_proxy": "http://squid:3128\nCVMFS_IGNORE_SIGNATURE=yes"},
     "site_settings.cvmfs.http_proxy "),
    ({"quota_limit_mb": -1}, "site_settings.cvmfs.quota_limit_mb must be at least 1"),
])
def test_parse_site_errors(data, message):
    with pytest.raises(PolicyError) as e:
        P.parse_site(data)
    assert message in e.value.message


# --- authorize ------------------------------------------------------------------------

def test_everything_allowed():
    s = settings(quota_limit_mb=20000)
    d = P.authorize(s, allow(), None)
    assert d.denied == [] and d.overridden == []
    assert d.settings == s


def test_repositories_outside_the_globs_are_all_denied():
    s = settings(repositories=["atlas.cern.ch", "cms.cern.ch", "sft.cern.ch", "lhcb.cern.ch"])
    d = P.authorize(s, allow(), None)
    reason = "not allowed by allow.cvmfs.repositories [atlas*.cern.ch, sft.cern.ch]"
    assert d.denied == [
        Finding("cvmfs", "repositories[1]", "'cms.cern.ch'", reason),
        Finding("cvmfs", "repositories[3]", "'lhcb.cern.ch'", reason),
    ]


def test_star_in_repository_glob_does_not_allow_other_domains():
    d = P.authorize(settings(repositories=["atlas.evil.org"]), allow(), None)
    assert [f.value for f in d.denied] == ["'atlas.evil.org'"]


def test_no_repository_rule_allows_nothing():
    d = P.authorize(settings(), P.parse_allow({}), None)
    assert len(d.denied) == 3
    assert d.denied[0].reason == \
        "not allowed by allow.cvmfs.repositories (not set: nothing allowed)"


def test_quota_above_max_denied():
    d = P.authorize(settings(quota_limit_mb=60000), allow(), None)
    assert d.denied == [Finding("cvmfs", "quota_limit_mb", "60000",
                                "above allow.cvmfs.max_quota_mb 50000")]
    assert P.authorize(settings(quota_limit_mb=50000), allow(), None).denied == []


def test_quota_without_max_rule_denied():
    d = P.authorize(settings(quota_limit_mb=1000), P.parse_allow({"repositories": ["*"]}), None)
    assert [(f.field, f.reason) for f in d.denied] == [
        ("quota_limit_mb", "not allowed: allow.cvmfs.max_quota_mb is not set")]


def test_proxy_without_proxy_rule_denied():
    d = P.authorize(settings(http_proxy="DIRECT"), allow(), None)
    assert d.denied == [Finding("cvmfs", "http_proxy", "'DIRECT'",
                                "not allowed by allow.cvmfs.http_proxies "
                                "(not set: nothing allowed)")]


def test_every_denial_listed_at_once():
    s = settings(repositories=["cms.cern.ch", "alice.cern.ch"], quota_limit_mb=99999,
                 http_proxy="DIRECT")
    d = P.authorize(s, allow(), None)
    assert [f.field for f in d.denied] == ["repositories[0]", "repositories[1]",
                                          "quota_limit_mb", "http_proxy"]


@pytest.mark.parametrize(("globs", "value", "ok"), [
    (["http://squid*.example.org:3128", "DIRECT"], PROXY, True),
    (["http://squid*.example.org:3128"], PROXY, False),           # DIRECT not listed
    (["http://squid*.example.org:3128"], "http://squid1.example.org:3128", True),
    ([PROXY], PROXY, True),                                         # a whole list, exactly
    (["http://squid*.example.org:3128|http://squid*.example.org:3128;DIRECT"], PROXY, True),
    # `*` must not swallow a separator and smuggle in another proxy:
    (["http://*.example.org:3128"], "http://evil.org:3128|http://a.example.org:3128", False),
    (["http://*.example.org:3128"], "http://evil.org:80;http://a.example.org:3128", False),
    (["http://*"], "http://a.org:1;DIRECT", False),
    (["*"], "http://a.org:1;DIRECT", True),
])
def test_proxy_globs(globs, value, ok):
    d = P.authorize(settings(http_proxy=value), allow(http_proxies=globs), None)
    assert (d.denied == []) is ok, d.denied


def test_site_proxy_overrides_payload_proxy():
    site = P.parse_site({"http_proxy": PROXY})
    d = P.authorize(settings(http_proxy="http://elsewhere.org:3128"), allow(), site)
    assert d.overridden == [Finding("cvmfs", "http_proxy", "'http://elsewhere.org:3128'",
                                    "site_settings.cvmfs.http_proxy wins")]
    assert d.denied == []            # the payload's proxy is not the one used: nothing to deny
    assert d.settings.http_proxy == PROXY


def test_site_value_only_the_site_sets_is_just_used():
    site = P.parse_site({"http_proxy": PROXY, "quota_limit_mb": 30000})
    d = P.authorize(settings(), allow(), site)
    assert d.denied == [] and d.overridden == []
    assert (d.settings.http_proxy, d.settings.quota_limit_mb) == (PROXY, 30000)


def test_site_quota_overrides_payload_quota_even_above_max():
    site = P.parse_site({"quota_limit_mb": 80000})
    d = P.authorize(settings(quota_limit_mb=99999), allow(), site)
    assert d.denied == []
    assert [f.field for f in d.overridden] == ["quota_limit_mb"]
    assert d.overridden[0].reason == "site_settings.cvmfs.quota_limit_mb wins"
    assert d.settings.quota_limit_mb == 80000


# --- plan -----------------------------------------------------------------------------

def test_plan_actions():
    s = P.authorize(settings(quota_limit_mb=20000), allow(), P.parse_site({"http_proxy": PROXY}))
    actions = P.plan(s.settings, ctx())
    assert [type(a) for a in actions] == [WriteFile, RunCommand]
    w, c = actions
    assert (w.plugin, w.path, w.mode, w.secret) == ("cvmfs", "/etc/cvmfs/default.local",
                                                    0o644, False)
    assert c == RunCommand("cvmfs", ("cvmfs_config", "setup"))
    text = w.content.decode()
    assert text.startswith("# Written by contextd from payload sha256 %s (VO atlas, serial "
                           "2026112401).\n# Do not edit: the next contextd run replaces"
                           % SHA)
    assert "CVMFS_REPOSITORIES='atlas.cern.ch,atlas-condb.cern.ch,sft.cern.ch'\n" in text
    assert "CVMFS_HTTP_PROXY='%s'\n" % PROXY in text
    assert "CVMFS_QUOTA_LIMIT='20000'\n" in text


def test_sh_reads_back_exactly_the_intended_values(tmp_path):
    d = P.authorize(settings(quota_limit_mb=20000), allow(), P.parse_site({"http_proxy": PROXY}))
    content = P.plan(d.settings, ctx())[0].content
    assert source(tmp_path, content) == [
        "atlas.cern.ch,atlas-condb.cern.ch,sft.cern.ch", PROXY, "20000"]


def test_sh_without_proxy_and_quota(tmp_path):
    content = P.plan(settings(), ctx())[0].content
    assert b"CVMFS_HTTP_PROXY" not in content and b"CVMFS_QUOTA_LIMIT" not in content
    assert source(tmp_path, content, ("CVMFS_REPOSITORIES",)) == [
        "atlas.cern.ch,atlas-condb.cern.ch,sft.cern.ch"]
    # Nothing but comments and single-quoted assignments: sourcing it runs no command.
    for line in content.decode().splitlines():
        assert re.match(r"#[^\n]*\Z|CVMFS_[A-Z_]+='[^'\n]*'\Z", line), line


@pytest.mark.parametrize("vo", ["atlas\nCVMFS_IGNORE_SIGNATURE=yes", "at las", "", "$(id)"])
def test_plan_refuses_a_vo_it_cannot_write(vo):
    with pytest.raises(PayloadError):
        P.plan(settings(), ctx(vo=vo))


def test_describe_is_json_and_plain():
    s = settings(quota_limit_mb=20000, http_proxy="DIRECT")
    out = P.describe(s)
    assert json.loads(json.dumps(out)) == {
        "repositories": ["atlas.cern.ch", "atlas-condb.cern.ch", "sft.cern.ch"],
        "quota_limit_mb": 20000, "http_proxy": "DIRECT"}
    assert P.describe(settings()) == {
        "repositories": ["atlas.cern.ch", "atlas-condb.cern.ch", "sft.cern.ch"]}
