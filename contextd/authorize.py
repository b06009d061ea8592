"""Authorization: does this site let this VO make these changes, now, on this machine?

Pure: the clock and the host facts are arguments. Facts come from the policy and the
platform, never from the payload. Each plugin first decides its section (what the site
overrides, which values it refuses); then the payload and those decisions, as one `Case`,
go through small rules (sigstore-python's verify/policy.py is the model: a rule is a value
with one method, `check`, that raises PolicyViolation; `AllOf` and `AnyOf` compose them).
Every violation is collected before deciding, so the VO learns all of them at once; any
violation rejects the whole payload.

What it must never do: read anything (files, the clock, the network), let a rule's failure
stop the others from being heard, or let a payload through that one rule refused.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from contextd import plugin, urls
from contextd.errors import PolicyViolation
from contextd.facts import IMAGE
from contextd.payload import Payload
from contextd.plugin import Decision, Finding
from contextd.policy import Policy, VoTrust
from contextd.record import record
from contextd.schema import glob_match
from contextd.settings import shown
from contextd.trust.verify import SignerMatch, Verified


@record(frozen=True)
class Authorization:
    payload: Payload
    signers: Tuple[SignerMatch, ...]
    decisions: Mapping[str, Decision]      # plugin name -> settings to plan with
    overridden: Tuple[Finding, ...]
    report_url: Optional[str]              # the payload's report URL, when allowed


@record(frozen=True)
class Case:
    """Everything the rules judge: the payload, who signed it, the site's trust in its VO,
    the host facts, the clock (None: an applied payload held against today's policy, not
    the clock) and what the plugins decided of its sections."""

    payload: Payload
    verified: Verified
    policy: Policy
    trust: VoTrust
    facts: Mapping[str, Optional[str]]
    now: Optional[datetime.datetime]
    denied: Tuple[Finding, ...] = ()      # refused values, the report URL's included

    @property
    def signers(self) -> Tuple[SignerMatch, ...]:
        return tuple(self.verified.signers.get(self.payload.vo, ()))


class Rule:
    """One thing a payload must satisfy; `check` returns None or raises PolicyViolation."""

    def check(self, case: Case) -> None:
        raise NotImplementedError


def _refuse(*violations: str) -> None:
    if violations:
        raise PolicyViolation(violations)


def _heard(rule: Rule, case: Case) -> List[str]:
    """What `rule` says of `case`: its violations, [] when it holds."""
    try:
        rule.check(case)
    except PolicyViolation as exc:
        return exc.violations
    return []


class AllOf(Rule):
    """Every rule must hold. Unlike sigstore's AllOf every rule is heard, not only the
    first that fails: the VO learns all violations at once."""

    def __init__(self, *rules: Rule):
        self.rules = rules

    def check(self, case: Case) -> None:
        _refuse(*(v for rule in self.rules for v in _heard(rule, case)))


class AnyOf(Rule):
    """At least one rule must hold; when none does, all their violations are raised."""

    def __init__(self, *rules: Rule):
        self.rules = rules

    def check(self, case: Case) -> None:
        violations: List[str] = []
        for rule in self.rules:
            said = _heard(rule, case)
            if not said:
                return
            violations.extend(said)
        raise PolicyViolation(violations)


class SignerThreshold(Rule):
    """Signed for the payload's VO by at least `threshold` distinct keys."""

    def check(self, case: Case) -> None:
        vo, signers = case.payload.vo, case.signers
        if not signers:
            _refuse("payload says vo %r but is signed only by signers of %s"
                    % (vo, ", ".join(repr(v) for v in sorted(case.verified.signers))))
        counted = case.verified.counted(vo)
        if counted < case.trust.threshold:
            shared = "; signers sharing a key count once" if counted < len(signers) else ""
            _refuse("VO %r needs %d distinct trusted signers, payload has %d (%s%s)" % (
                vo, case.trust.threshold, counted, ", ".join(s.label for s in signers), shared))


class SerialFloor(Rule):
    """Not older than the site's backstop `min_serial` (a rollback)."""

    def check(self, case: Case) -> None:
        if case.payload.serial < case.trust.min_serial:
            _refuse("payload serial %d is older than site backstop %d (rollback?)"
                    % (case.payload.serial, case.trust.min_serial))


class SerialNotRevoked(Rule):
    """Not a serial the site revoked."""

    def check(self, case: Case) -> None:
        if case.payload.serial in case.trust.revoked.serials:
            _refuse("payload serial %d was revoked by the site" % case.payload.serial)


def _when(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(delta: datetime.timedelta) -> str:
    """A length of time as people write it: `41d`, `40d 3h`, not `41 days, 0:00:00`."""
    left, parts = int(delta.total_seconds()), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append("%d%s" % (left // size, unit))
            left %= size
    return " ".join(parts) or "0s"


class ValidityWindow(Rule):
    """The window is sane, no longer than the site maximum, and holds `now` (within the
    clock skew). Not checked without a clock: an applied payload stays applied."""

    def check(self, case: Case) -> None:
        if case.now is None:
            return
        p, policy, now = case.payload, case.policy, case.now
        skew = datetime.timedelta(seconds=policy.clock_skew)
        violations = []
        if p.expires <= p.not_before:
            violations.append("payload expires (%s) before it is valid (%s)"
                              % (_when(p.expires), _when(p.not_before)))
        elif (p.expires - p.not_before).total_seconds() > policy.max_validity:
            violations.append("payload validity %s is longer than the site maximum %s" % (
                _span(p.expires - p.not_before), shown(policy.max_validity)))
        if now + skew < p.not_before:
            violations.append("payload not valid before %s (clock says %s; is time synced?)"
                              % (_when(p.not_before), _when(now)))
        if now - skew > p.expires:
            violations.append("payload expired at %s (clock says %s); ask the VO to re-sign"
                              % (_when(p.expires), _when(now)))
        _refuse(*violations)


@record(frozen=True)
class Target(Rule):
    """Every fact the target names is known and matches its glob."""

    target: Mapping[str, str]

    def check(self, case: Case) -> None:
        facts = case.facts
        for key, glob in self.target.items():
            if facts.get(key) is None or not glob_match(str(facts[key]), [glob]):
                _refuse("%s=%s does not match %r" % (key, facts.get(key), glob))


class Targets(Rule):
    """A payload with targets is for a machine one of them matches."""

    def check(self, case: Case) -> None:
        targets = case.payload.targets
        if not targets:
            return
        try:
            AnyOf(*(Target(t) for t in targets)).check(case)
        except PolicyViolation:
            shown = {k: v for k, v in case.facts.items() if v is not None and k != "hostname"}
            unknown = case.facts.get("image") is None and any(
                key in target for target in targets for key in IMAGE)
            _refuse("payload targets %s do not match this machine %s%s"
                    % ([dict(t) for t in targets], shown, "; its image manifest did not "
                       "verify (the report's host.image.reason says why)" if unknown else ""))


class Scopes(Rule):
    """A signer with scopes signs only for those sections (`report` included)."""

    def check(self, case: Case) -> None:
        p = case.payload
        sections = list(p.sections) + (["report"] if p.report_url else [])
        violations = []
        for match in case.signers:
            scopes = match.signer.scopes
            outside = [s for s in sections if scopes is not None and s not in scopes]
            if outside:
                violations.append("signer %r may not set %s (its scopes: %s)" % (
                    match.label, ", ".join(outside), ", ".join(scopes or ()) or "none"))
        _refuse(*violations)


class SectionsAllowed(Rule):
    """The VO may configure every section the payload sets (its `allow` names it)."""

    def check(self, case: Case) -> None:
        _refuse(*_not_allowed(case.payload, case.trust))


class NothingDenied(Rule):
    """No value a plugin (or the report URL rule) refused."""

    def check(self, case: Case) -> None:
        _refuse(*("%s %s %s" % (f.qualified, f.value, f.reason) for f in case.denied))


# What a signed payload must satisfy, in the order its violations are reported.
SIGNED = AllOf(SignerThreshold(), SerialFloor(), SerialNotRevoked(), ValidityWindow(),
               Targets(), Scopes(), SectionsAllowed(), NothingDenied())


def review(payload: Payload, verified: Verified, policy: Policy,
           facts: Mapping[str, Optional[str]], now: Optional[datetime.datetime],
           rules: Rule = SIGNED) -> Tuple[Optional[Authorization], List[str], List[Finding]]:
    """Everything `authorize` decides, without raising: (result, violations, denied).

    `now` None: a payload this instance already applied, held against today's policy but
    not the clock (DESIGN section 8): its validity window and max_validity are not checked.
    """
    trust = policy.trust.get(payload.vo)
    if trust is None:
        return None, ["VO %r is not trusted by site %s" % (payload.vo, policy.site)], []
    decisions, overridden, denied = decide_sections(payload, trust, policy)
    report_url = payload.report_url
    if report_url is not None and not report_url_allowed(report_url, trust):
        denied.append(Finding("report", "url", repr(report_url),
                              "not allowed by allow.report.urls %s" % list(trust.report_urls)))
        report_url = None
    case = Case(payload=payload, verified=verified, policy=policy, trust=trust, facts=facts,
                now=now, denied=tuple(denied))
    try:
        rules.check(case)
        violations: List[str] = []
    except PolicyViolation as exc:
        violations = exc.violations
    result = Authorization(payload=payload, signers=case.signers, decisions=decisions,
                           overridden=tuple(overridden), report_url=report_url)
    return result, violations, denied


def decide_sections(payload: Payload, trust: VoTrust, policy: Policy
                    ) -> Tuple[Dict[str, Decision], List[Finding], List[Finding]]:
    """Each section the VO may set through its plugin, against the VO's allow rules and the
    site settings: (decisions, what the site overrode, what it refused)."""
    decisions: Dict[str, Decision] = {}
    overridden: List[Finding] = []
    denied: List[Finding] = []
    for name, settings in payload.sections.items():
        if name not in trust.allow:
            continue              # SectionsAllowed says so
        decision = plugin.load(name).authorize(settings, trust.allow[name],
                                               policy.site_settings.get(name))
        decisions[name] = decision
        denied.extend(decision.denied)
        overridden.extend(decision.overridden)
    return decisions, overridden, denied


def _not_allowed(payload: Payload, trust: VoTrust) -> List[str]:
    return ["site policy does not allow VO %r to configure %s" % (payload.vo, name)
            for name in payload.sections if name not in trust.allow]


def authorize_sections(payload: Payload, trust: VoTrust, policy: Any, violations: List[str],
                       denied: List[Finding]) -> Tuple[Dict[str, Decision], List[Finding]]:
    """`decide_sections` and the `SectionsAllowed` rule for a caller without a Case
    (contextd.legacy's unsigned amiconfig): sections the VO may not set at all go to
    `violations`, refused values to `denied`; returns the decisions and the overrides."""
    decisions, overridden, found = decide_sections(payload, trust, policy)
    violations.extend(_not_allowed(payload, trust))
    denied.extend(found)
    return decisions, overridden


def report_url_allowed(url: str, trust: VoTrust) -> bool:
    """May this VO's payload name `url` (canonical, as payload.parse makes it) for its
    reports? Scheme, host, port and path each against its part of an allow.report.urls glob:
    a host glob never reaches into the path, a query, a fragment or userinfo."""
    if "report" not in trust.allow:
        return False
    for text in trust.report_urls:
        try:
            if urls.parse_glob(text).matches(url):
                return True
        except ValueError:            # policy.load refused it already; never a match
            continue
    return False


def authorize(payload: Payload, verified: Verified, policy: Policy,
              facts: Mapping[str, Optional[str]],
              now: Optional[datetime.datetime]) -> Authorization:
    result, violations, _ = review(payload, verified, policy, facts, now)
    if violations or result is None:
        raise PolicyViolation(violations)
    return result


def finding_dicts(findings: Sequence[Finding]) -> List[Dict[str, Any]]:
    return [f.as_dict() for f in findings]
