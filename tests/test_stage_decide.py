"""decision.decide: authorize + plan, in process; explain imports no executor."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys

import pytest

from contextd import decision, payload, policy, sources
from contextd.errors import PlanError, PolicyViolation
from contextd.facts import facts_for
from contextd.trust.verify import verify

NOW = datetime.datetime.now(datetime.timezone.utc)


def decided(site, doc, *, read_file=lambda path: None, refused=(), site_name=None):
    pol = policy.load(str(site.policy_path))
    ctx = sources.fetch("file:%s" % site.bundle(doc))
    verified = verify(ctx.payload, ctx.signatures, pol, now=NOW)
    parsed = payload.parse(verified)
    facts = facts_for(site_name or pol.site, {}, "wn1.example.org")
    return decision.decide(parsed, verified, pol, facts, NOW,
                           sources.listed_reader(ctx, parsed.files), read_file, refused=refused)


def test_an_allowed_payload_is_planned(site, payload_doc):
    d = decided(site, payload_doc)
    assert d.allowed and d.violations == () and d.denied == ()
    targets = [a.target for a in d.actions]
    assert "/etc/cvmfs/default.local" in targets and "/etc/condor/tokens.d/contextd.token" \
        in targets
    kinds = [a.kind for a in d.actions]
    assert kinds == sorted(kinds, key=lambda k: k != "file")      # files first
    assert d.authorized() is d.authorization


@pytest.mark.parametrize(("change", "violation"), [
    ({"cvmfs": {"repositories": ["cms.cern.ch"]}}, "cvmfs.repositories[0]"),
    ({"htcondor": {"role": "execute", "central_manager": "evil.example.com"}},
     "htcondor.central_manager"),
])
def test_a_denied_value_is_a_violation_and_nothing_is_planned(site, payload_doc, change,
                                                               violation):
    payload_doc.update(change)
    d = decided(site, payload_doc)
    assert not d.allowed and d.actions == ()
    assert any(v.startswith(violation) for v in d.violations), d.violations
    with pytest.raises(PolicyViolation) as caught:
        d.authorized()
    assert caught.value.violations == list(d.violations)


def test_another_site_is_not_a_target(site, payload_doc):
    d = decided(site, payload_doc, site_name="OTHER")
    assert not d.allowed and "do not match this machine" in d.violations[0]


def test_what_the_carrier_refused_stops_the_plan(site, payload_doc):
    d = decided(site, payload_doc, refused=["listed file 'x' has sha256 0"])
    assert d.authorization is not None and d.actions == ()
    assert d.violations == ("listed file 'x' has sha256 0",)


def test_a_plan_time_read_error_is_a_plan_error(site, payload_doc):
    def unreadable(path):
        raise PlanError("cannot read %s: Is a directory" % path)
    with pytest.raises(PlanError) as caught:
        decided(site, payload_doc, read_file=unreadable)
    assert caught.value.stage == "plan" and caught.value.exit_code == 1


EXECUTORS = ("contextd.run", "contextd.apply", "contextd.delivery")


def test_explain_imports_no_executor(site, payload_doc):
    """The whole `contextd explain` command, in a fresh interpreter: no run, apply, delivery."""
    probe = ("import sys, json; from contextd.cli import main; code = main(sys.argv[1:]); "
             "print(json.dumps([code, sorted(m for m in sys.modules if m.startswith('contextd'))]"
             "), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe, "explain", str(site.bundle(payload_doc)),
                           "--policy", str(site.policy_path)],
                          capture_output=True, text=True, timeout=120)
    code, modules = json.loads(proc.stderr.strip().splitlines()[-1])
    assert code == 0, proc.stderr
    assert "contextd.decision" in modules and "contextd.explain" in modules
    assert not set(EXECUTORS) & set(modules), modules
