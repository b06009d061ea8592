"""Authorization: does this site let this VO make these changes, now, on this machine?

Pure: the clock and the host facts are arguments. Facts come from the policy and the
platform, never from the payload. Every violation is collected before deciding, so the VO
learns all of them at once; any violation rejects the whole payload.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from contextd import plugin, urls
from contextd.errors import PolicyViolation
from contextd.payload import Payload
from contextd.plugin import Decision, Finding
from contextd.policy import Policy, VoTrust
from contextd.record import record
from contextd.schema import glob_match
from contextd.verify import SignerMatch, Verified


@record(frozen=True)
class Authorization:
    payload: Payload
    signers: Tuple[SignerMatch, ...]
    decisions: Mapping[str, Decision]      # plugin name -> settings to plan with
    overridden: Tuple[Finding, ...]
    report_url: Optional[str]              # the payload's report URL, when allowed


def _when(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def review(payload: Payload, verified: Verified, policy: Policy,
           facts: Mapping[str, Optional[str]], now: Optional[datetime.datetime]
           ) -> Tuple[Optional[Authorization], List[str], List[Finding]]:
    """Everything `authorize` decides, without raising: (result, violations, denied).

    `now` None: a payload this instance already applied, held against today's policy but
    not the clock (DESIGN section 8): its validity window and max_validity are not checked.
    """
    violations: List[str] = []
    denied: List[Finding] = []
    trust = policy.trust.get(payload.vo)
    signers = verified.signers.get(payload.vo, ())
    if trust is None:
        violations.append("VO %r is not trusted by site %s" % (payload.vo, policy.site))
        return None, violations, denied
    if not signers:
        others = sorted(verified.signers)
        violations.append("payload says vo %r but is signed only by signers of %s"
                          % (payload.vo, ", ".join(repr(v) for v in others)))
    elif verified.counted(payload.vo) < trust.threshold:
        counted = verified.counted(payload.vo)
        shared = "; signers sharing a key count once" if counted < len(signers) else ""
        violations.append("VO %r needs %d distinct trusted signers, payload has %d (%s%s)" % (
            payload.vo, trust.threshold, counted, ", ".join(s.label for s in signers), shared))

    if payload.serial < trust.min_serial:
        violations.append("payload serial %d is older than site backstop %d (rollback?)"
                          % (payload.serial, trust.min_serial))
    if payload.serial in trust.revoked.serials:
        violations.append("payload serial %d was revoked by the site" % payload.serial)

    if now is not None:
        violations.extend(_validity(payload, policy, now))

    if payload.targets and not any(
            all(facts.get(k) is not None and glob_match(str(facts[k]), [v])
                for k, v in target.items())
            for target in payload.targets):
        shown = {k: v for k, v in facts.items() if v is not None and k != "hostname"}
        violations.append("payload targets %s do not match this machine %s"
                          % ([dict(t) for t in payload.targets], shown))

    sections = list(payload.sections) + (["report"] if payload.report_url else [])
    for match in signers:
        scopes = match.signer.scopes
        if scopes is not None:
            outside = [s for s in sections if s not in scopes]
            if outside:
                violations.append("signer %r may not set %s (its scopes: %s)" % (
                    match.label, ", ".join(outside), ", ".join(scopes) or "none"))

    decisions, overridden = authorize_sections(payload, trust, policy, violations, denied)

    report_url = payload.report_url
    if report_url is not None and not report_url_allowed(report_url, trust):
        denied.append(Finding("report", "url", repr(report_url),
                              "not allowed by allow.report.urls %s" % list(trust.report_urls)))
        report_url = None

    violations.extend("%s %s %s" % (f.qualified, f.value, f.reason) for f in denied)
    result = Authorization(payload=payload, signers=tuple(signers), decisions=decisions,
                           overridden=tuple(overridden), report_url=report_url)
    return result, violations, denied


def _validity(payload: Payload, policy: Policy, now: datetime.datetime) -> List[str]:
    """The payload's validity window against the site maximum and the clock."""
    violations = []
    skew = datetime.timedelta(seconds=policy.clock_skew)
    if payload.expires <= payload.not_before:
        violations.append("payload expires (%s) before it is valid (%s)"
                          % (_when(payload.expires), _when(payload.not_before)))
    elif (payload.expires - payload.not_before).total_seconds() > policy.max_validity:
        violations.append("payload validity %s is longer than the site maximum %s" % (
            payload.expires - payload.not_before,
            datetime.timedelta(seconds=policy.max_validity)))
    if now + skew < payload.not_before:
        violations.append("payload not valid before %s (clock says %s; is time synced?)"
                          % (_when(payload.not_before), _when(now)))
    if now - skew > payload.expires:
        violations.append("payload expired at %s (clock says %s); ask the VO to re-sign"
                          % (_when(payload.expires), _when(now)))
    return violations


def authorize_sections(payload: Payload, trust: VoTrust, policy: Policy, violations: List[str],
                       denied: List[Finding]) -> Tuple[Dict[str, Decision], List[Finding]]:
    """Each section through its plugin against the VO's allow rules and the site settings.

    A section the VO may not set at all goes to `violations`, refused values to `denied`;
    returns the decisions and what the site overrode.
    """
    decisions: Dict[str, Decision] = {}
    overridden: List[Finding] = []
    for name, settings in payload.sections.items():
        if name not in trust.allow:
            violations.append("site policy does not allow VO %r to configure %s"
                              % (payload.vo, name))
            continue
        decision = plugin.load(name).authorize(settings, trust.allow[name],
                                               policy.site_settings.get(name))
        decisions[name] = decision
        denied.extend(decision.denied)
        overridden.extend(decision.overridden)
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
