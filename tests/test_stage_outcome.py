"""The one table of outcomes and exit codes, and a plan-time read error ending at `plan`."""

from __future__ import annotations

import pytest

from contextd import errors, report
from contextd.errors import Outcome


@pytest.mark.parametrize(("outcome", "word", "code"), [
    (Outcome.APPLIED, "applied", 0), (Outcome.UNCHANGED, "unchanged", 0),
    (Outcome.SKIPPED, "skipped", 0), (Outcome.REJECTED, "rejected", 1),
    (Outcome.USAGE, "failed", 2), (Outcome.POLICY, "failed", 2),
    (Outcome.APPLY_FAILED, "failed", 3), (Outcome.INTERNAL, "failed", 70)])
def test_the_table(outcome, word, code):
    assert (outcome.word, outcome.exit_code) == (word, code)


@pytest.mark.parametrize(("error", "outcome", "stage"), [
    (errors.UsageError, Outcome.USAGE, "usage"), (errors.PolicyError, Outcome.POLICY, "policy"),
    (errors.SourceError, Outcome.REJECTED, "fetch"),
    (errors.SignatureError, Outcome.REJECTED, "verify"),
    (errors.PayloadError, Outcome.REJECTED, "parse"),
    (errors.PlanError, Outcome.REJECTED, "plan"),
    (errors.ApplyError, Outcome.APPLY_FAILED, "apply"),
    (errors.JournalError, Outcome.REJECTED, "recover")])
def test_each_error_has_its_outcome_and_stage(error, outcome, stage):
    exc = error("x")
    assert (exc.outcome, exc.exit_code, exc.stage) == (outcome, outcome.exit_code, stage)


@pytest.mark.parametrize(("rep", "code"), [
    ({"outcome": "failed"}, 3), ({"outcome": "rejected"}, 1), ({"outcome": "skipped"}, 0),
    ({"outcome": "failed", "exit_code": 2}, 2), ({"outcome": "nonsense"}, 1),
    ({"outcome": "applied", "exit_code": True}, 0), ({"outcome": 7, "exit_code": 9}, 1)])
def test_a_recorded_report_exits_with_its_code_or_its_words_usual_one(rep, code):
    assert report.exit_code(rep) == code


def test_a_plan_time_read_error_ends_at_plan_and_rolls_nothing_back(site):
    # Not a file: it cannot be read.
    (site.root / "etc/puppetlabs/puppet/puppet.conf").mkdir(parents=True)
    before = site.snapshot()
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 1, err
    rep = site.report()
    assert (rep["outcome"], rep["stage"], rep["exit_code"]) == ("rejected", "plan", 1)
    assert "puppet.conf" in rep["message"] and "rolled back" not in rep["message"]
    assert rep["actions"] == [] and "rolled_back" not in rep
    assert site.snapshot() == before
