"""authorize, in process: a table of payload / policy / facts -> allowed, or the violation."""

from __future__ import annotations

import copy
import datetime

import pytest

from conftest import utc
from contextd import authorize, payload, policy, sources
from contextd.errors import PolicyViolation
from contextd.facts import facts_for
from contextd.trust.verify import verify

NOW = datetime.datetime.now(datetime.timezone.utc)


def _set(doc, dotted, value):
    *path, last = dotted.split(".")
    for key in path:
        doc = doc[key]
    if value is None:
        doc.pop(last, None)
    else:
        doc[last] = value


def review(site, doc, pol_changes=(), carrier=None, now=NOW, key="atlas"):
    pol_doc = copy.deepcopy(site.policy)
    for dotted, value in pol_changes:
        _set(pol_doc, dotted, value)
    site.write_policy(pol_doc)
    pol = policy.load(str(site.policy_path))
    ctx = sources.fetch("file:%s" % site.bundle(doc, key=key))
    verified = verify(ctx.payload, ctx.signatures, pol, now=now)
    parsed = payload.parse(verified)
    facts = facts_for(pol.site, carrier or {}, "wn1.example.org")
    return parsed, verified, pol, facts


CASES = [
    # (id, payload changes, policy changes, carrier facts, violation substring or None)
    ("as-signed", [], [], {}, None),
    ("cvmfs-repo-outside", [("cvmfs.repositories", ["cms.cern.ch"])], [], {},
     "cvmfs.repositories[0]"),
    ("quota-over", [("cvmfs.quota_limit_mb", 90000)], [], {}, "cvmfs.quota_limit_mb"),
    ("condor-cm-outside", [("htcondor.central_manager", "evil.example.com")], [], {},
     "htcondor.central_manager"),
    ("puppet-env-outside", [("puppet.environment", "devel")], [], {}, "puppet.environment"),
    ("section-not-allowed", [], [("trust.atlas.allow.puppet", None)], {},
     "does not allow VO 'atlas' to configure puppet"),
    ("report-url-outside", [("report.url", "https://evil.example.com/r")], [], {},
     "report.url"),
    ("serial-below-backstop", [], [("trust.atlas.min_serial", 2026112402)], {},
     "older than site backstop"),
    ("serial-revoked", [], [("trust.atlas.revoked", {"serials": [2026112401]})], {},
     "was revoked by the site"),
    ("threshold-two", [], [("trust.atlas.threshold", 2)], {},
     "needs 2 distinct trusted signers"),
    ("target-another-site", [("targets", [{"site": "OTHER"}])], [], {},
     "do not match this machine"),
    ("target-cloud-matches", [("targets", [{"site": "TEST-SITE", "cloud": "open*"}])], [],
     {"cloud": "openstack"}, None),
    ("target-cloud-unknown", [("targets", [{"cloud": "openstack"}])], [], {},
     "do not match this machine"),
    ("carrier-cannot-name-the-site", [("targets", [{"site": "OTHER"}])], [],
     {"site": "OTHER"}, "do not match this machine"),
    ("expired", [("not_before", utc(-20)), ("expires", utc(-1))], [], {}, "payload expired"),
    ("not-yet-valid", [("not_before", utc(2)), ("expires", utc(5))], [], {},
     "payload not valid before"),
    ("validity-over-site-max", [("not_before", utc(-1)), ("expires", utc(40))], [], {},
     "longer than the site maximum"),
]


@pytest.mark.parametrize(("changes", "pol_changes", "carrier", "violation"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_authorize_table(site, payload_doc, changes, pol_changes, carrier, violation):
    for dotted, value in changes:
        _set(payload_doc, dotted, value)
    doc, verified, pol, facts = review(site, payload_doc, pol_changes, carrier)
    result, violations, _ = authorize.review(doc, verified, pol, facts, NOW)
    if violation is None:
        assert violations == [] and result is not None
        assert set(result.decisions) == {"cvmfs", "htcondor", "puppet"}
        assert authorize.authorize(doc, verified, pol, facts, NOW) == result
        return
    assert any(violation in v for v in violations), violations
    with pytest.raises(PolicyViolation) as caught:
        authorize.authorize(doc, verified, pol, facts, NOW)
    assert caught.value.violations == violations and caught.value.stage == "authorize"


def test_every_violation_is_collected_at_once(site, payload_doc):
    payload_doc["cvmfs"]["repositories"] = ["cms.cern.ch"]
    payload_doc["htcondor"]["central_manager"] = "evil.example.com"
    payload_doc["targets"] = [{"site": "OTHER"}]
    doc, verified, pol, facts = review(site, payload_doc)
    _, violations, denied = authorize.review(doc, verified, pol, facts, NOW)
    assert len(violations) == 3, violations
    assert {f.qualified for f in denied} == {"cvmfs.repositories[0]", "htcondor.central_manager"}


def test_a_vo_the_site_does_not_trust_gets_no_authorization(site, payload_doc):
    payload_doc["vo"] = "cms"
    doc, verified, pol, facts = review(site, payload_doc, key="cms")
    del pol.trust["cms"]
    result, violations, _ = authorize.review(doc, verified, pol, facts, NOW)
    assert result is None and violations == ["VO 'cms' is not trusted by site TEST-SITE"]


def test_an_applied_payload_is_held_to_the_policy_not_the_clock(site, payload_doc):
    payload_doc["not_before"], payload_doc["expires"] = utc(-20), utc(-1)
    doc, verified, pol, facts = review(site, payload_doc)
    result, violations, _ = authorize.review(doc, verified, pol, facts, None)
    assert violations == [] and result is not None


def test_the_site_overrides_what_it_sets(site, payload_doc):
    payload_doc["cvmfs"]["http_proxy"] = "http://vo-squid.cern.ch:3128"
    doc, verified, pol, facts = review(site, payload_doc)
    result = authorize.authorize(doc, verified, pol, facts, NOW)
    assert [f.qualified for f in result.overridden] == ["cvmfs.http_proxy"]
