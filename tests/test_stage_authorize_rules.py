"""authorize in-process: each rule, their composition, and `review` over a table of cases.

A case edits the payload document, the policy document and who signed; the table says which
violations (in order, by a distinctive part of each) and which denied fields come out.
"""

from __future__ import annotations

import datetime
import hashlib

import pytest

from conftest import base_payload, base_policy, dump_payload
from contextd import authorize, payload, policy
from contextd.trust import verify
from contextd.errors import PolicyViolation
from contextd.plugin import Review

NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
FACTS = {"site": "TEST-SITE", "hostname": "wn1.example.org", "cloud": None}


def signed(doc, pol, signer_ids=("atlas-ctx",), vo="atlas", keys_counted=None):
    """The Verified value `verify` would make for `doc` signed by `signer_ids` of `vo`."""
    data = dump_payload(doc)
    signers = {s.id: s for s in pol.trust[vo].signers} if vo in pol.trust else {}
    matches = tuple(verify.SignerMatch(vo, signers[i], "fp-" + i, key=i.encode())
                    for i in signer_ids)
    counted = len(matches) if keys_counted is None else keys_counted
    return verify.Verified(data=data, sha256=hashlib.sha256(data).hexdigest(),
                           signers={vo: matches} if matches else {}, notes=(),
                           key_counts={vo: counted} if matches else {}, _token=verify._TOKEN)


def judge(keys, edit_payload=None, edit_policy=None, now=NOW, **signing):
    doc, pdoc = base_payload(), base_policy(keys)
    if edit_payload:
        edit_payload(doc)
    if edit_policy:
        edit_policy(pdoc)
    pol = policy.parse(pdoc)
    verified = signed(doc, pol, **signing)
    return authorize.review(payload.parse(verified), verified, pol, FACTS, now)


def _set(path, value):
    """An edit of a nested document: _set("trust.atlas.threshold", 2)."""
    *parents, last = path.split(".")

    def edit(doc):
        for key in parents:
            doc = doc[int(key) if key.isdigit() else key]
        if value is None:
            del doc[last]
        else:
            doc[last] = value
    return edit


def _both(*edits):
    def edit(doc):
        for e in edits:
            e(doc)
    return edit


CASES = [
    # name, payload edit, policy edit, signing, now, violations (substrings, in order), denied
    ("accepted", None, None, {}, NOW, [], []),
    ("threshold not met", None, _set("trust.atlas.threshold", 2), {}, NOW,
     ["needs 2 distinct trusted signers, payload has 1 (atlas-ctx)"], []),
    ("two signers, one key", None, _set("trust.atlas.threshold", 2),
     {"signer_ids": ("atlas-ctx", "atlas-ctx-2"), "keys_counted": 1}, NOW,
     ["payload has 1 (atlas-ctx, atlas-ctx-2; signers sharing a key count once)"], []),
    ("signed by another VO only", None, None, {"signer_ids": ("cms-ctx",), "vo": "cms"}, NOW,
     ["payload says vo 'atlas' but is signed only by signers of 'cms'"], []),
    ("serial below the floor and revoked", _set("serial", 5),
     _set("trust.atlas.revoked", {"serials": [5]}), {}, NOW,
     ["payload serial 5 is older than site backstop 2026110100",
      "payload serial 5 was revoked by the site"], []),
    ("expired", None, None, {}, NOW + datetime.timedelta(days=11),
     ["payload expired at"], []),
    ("not yet valid", None, None, {}, NOW - datetime.timedelta(days=2),
     ["payload not valid before"], []),
    ("held: no clock, no window", None, None, {}, None, [], []),
    ("window longer than the site maximum", None, _set("max_validity", "1d"), {}, NOW,
     ["longer than the site maximum 1d"], []),
    ("no target matches", _set("targets", [{"site": "OTHER"}, {"cloud": "*"}]), None, {}, NOW,
     ["payload targets [{'site': 'OTHER'}, {'cloud': '*'}] do not match this machine "
      "{'site': 'TEST-SITE'}"], []),
    ("one target of two matches", _set("targets", [{"site": "OTHER"}, {"site": "TEST-*"}]),
     None, {}, NOW, [], []),
    ("signer scopes", None, _set("trust.atlas.signers.0.scopes", ["cvmfs"]), {}, NOW,
     ["signer 'atlas-ctx' may not set htcondor, puppet, report (its scopes: cvmfs)"], []),
    ("section not allowed", None, _set("trust.atlas.allow.puppet", None), {}, NOW,
     ["site policy does not allow VO 'atlas' to configure puppet"], []),
    ("plugin refuses a value", _set("cvmfs.repositories", ["lhcb.cern.ch"]), None, {}, NOW,
     ["cvmfs.repositories[0] 'lhcb.cern.ch' not allowed by allow.cvmfs.repositories"],
     ["cvmfs.repositories[0]"]),
    ("report url refused", _set("report.url", "https://evil.org/r"), None, {}, NOW,
     ["report.url 'https://evil.org/r' not allowed by allow.report.urls"], ["report.url"]),
    ("every violation at once", _both(_set("serial", 5), _set("targets", [{"site": "X"}]),
                                      _set("cvmfs.quota_limit_mb", 90000)),
     _set("trust.atlas.threshold", 2), {}, NOW + datetime.timedelta(days=11),
     ["needs 2 distinct", "older than site backstop", "payload expired at",
      "do not match this machine", "cvmfs.quota_limit_mb 90000 above allow.cvmfs.max_quota_mb"],
     ["cvmfs.quota_limit_mb"]),
]


@pytest.mark.parametrize(("edit_payload", "edit_policy", "signing", "now", "expected", "denied"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_review(keys, edit_payload, edit_policy, signing, now, expected, denied):
    result, violations, found = judge(keys, edit_payload, edit_policy, now, **signing)
    assert result is not None
    assert len(violations) == len(expected), violations
    for got, want in zip(violations, expected):
        assert want in got
    assert [f.qualified for f in found] == denied
    if not expected:
        assert set(result.decisions) == {"cvmfs", "htcondor", "puppet"}
        # the site's proxy wins over none asked for: nothing overridden, the proxy planned
        assert result.decisions["cvmfs"].settings.http_proxy == "http://squid.example.org:3128;DIRECT"


def test_untrusted_vo_has_no_result(keys):
    result, violations, denied = judge(keys, edit_policy=_set("trust.atlas", None),
                                       signer_ids=())
    assert result is None and denied == []
    assert violations == ["VO 'atlas' is not trusted by site TEST-SITE"]


def test_authorize_raises_every_violation_and_returns_the_same_result(keys):
    doc, pol = base_payload(), policy.parse(base_policy(keys))
    verified = signed(doc, pol)
    auth = authorize.authorize(payload.parse(verified), verified, pol, FACTS, NOW)
    assert auth.report_url == "https://factory.example.org/reports"
    assert [m.signer.id for m in auth.signers] == ["atlas-ctx"]
    doc["serial"] = 5
    verified = signed(doc, pol)
    with pytest.raises(PolicyViolation) as exc:
        authorize.authorize(payload.parse(verified), verified, pol, FACTS, NOW)
    assert len(exc.value.violations) == 1


# --- composition ------------------------------------------------------------------------


class Says(authorize.Rule):
    def __init__(self, *violations):
        self.violations = violations

    def check(self, case):
        if self.violations:
            raise PolicyViolation(self.violations)


@pytest.mark.parametrize(("rule", "expected"), [
    (authorize.AllOf(), []),
    (authorize.AllOf(Says(), Says()), []),
    (authorize.AllOf(Says("a"), Says(), Says("b", "c")), ["a", "b", "c"]),
    (authorize.AnyOf(Says("a"), Says()), []),
    (authorize.AnyOf(Says("a"), Says("b")), ["a", "b"]),
    (authorize.AllOf(authorize.AnyOf(Says("a"), Says("b")), Says("c")), ["a", "b", "c"]),
    (authorize.AnyOf(authorize.AllOf(Says(), Says("x")), authorize.AllOf(Says())), []),
])
def test_rules_compose(rule, expected):
    try:
        rule.check(None)
        got = []
    except PolicyViolation as exc:
        got = exc.violations
    assert got == expected


def test_review_takes_other_rules(keys):
    doc, pol = base_payload(), policy.parse(base_policy(keys))
    doc["serial"] = 5
    verified = signed(doc, pol)
    parsed = payload.parse(verified)
    _, violations, _ = authorize.review(parsed, verified, pol, FACTS, NOW,
                                        rules=authorize.AllOf(authorize.Targets()))
    assert violations == []
    _, violations, _ = authorize.review(parsed, verified, pol, FACTS, NOW,
                                        rules=authorize.AllOf(Says("site says no")))
    assert violations == ["site says no"]


# --- the plugins' shared Review -----------------------------------------------------------


@pytest.mark.parametrize(("value", "site_value", "planned", "checked", "overridden"), [
    (None, None, None, False, []),
    ("p", None, "p", True, []),
    (None, "s", "s", False, []),
    ("p", "s", "s", False, ["x.key 'p' site_settings.x.key wins"]),
])
def test_site_wins(value, site_value, planned, checked, overridden):
    review = Review("x")
    assert review.site_wins("key", value, site_value) == (planned, checked)
    assert ["%s %s %s" % (f.qualified, f.value, f.reason) for f in review.overridden] == \
        overridden


@pytest.mark.parametrize(("call", "denied"), [
    (lambda r: r.globs("f", "a.b", "k", ["a.*"]), []),
    (lambda r: r.globs("f", "a.b", "k", None), ["x.f 'a.b' not allowed by allow.x.k (not set: "
                                                "nothing allowed)"]),
    (lambda r: r.globs("f", "c", "k", ["a", "b"]), ["x.f 'c' not allowed by allow.x.k [a, b]"]),
    (lambda r: r.at_most("f", 3, "max", 3), []),
    (lambda r: r.at_most("f", 4, "max", 3), ["x.f 4 above allow.x.max 3"]),
    (lambda r: r.at_most("f", 1, "max", None), ["x.f 1 not allowed: allow.x.max is not set"]),
])
def test_review_denies(call, denied):
    review = Review("x")
    call(review)
    decision = review.decision("settings")
    assert ["%s %s %s" % (f.qualified, f.value, f.reason) for f in decision.denied] == denied
    assert decision.settings == "settings" and decision.overridden == []
