"""The decision on a payload: authorize it, then plan it; shared by `run` and `explain`.

`decide` is pure apart from the two readers it is given (the target's current files, the
carrier's listed files), which only a plugin's plan calls. It never applies, delivers,
writes or imports anything that does (no run, apply or delivery): `explain` shows exactly
what a boot would decide, and importing it costs no executor.
"""

from __future__ import annotations

import datetime
from typing import Callable, Mapping, Optional, Sequence, Tuple

from contextd import authorize, plan
from contextd.actions import Action
from contextd.authorize import Authorization
from contextd.errors import PolicyViolation
from contextd.payload import Payload
from contextd.plugin import Finding, PlanContext
from contextd.policy import Policy
from contextd.record import record
from contextd.trust.verify import Verified


@record(frozen=True)
class Decision:
    """What the site decided: the authorization (None when there is none to plan with),
    every violation (any one rejects the payload), the refused values, and the plan."""

    authorization: Optional[Authorization]
    violations: Tuple[str, ...]
    denied: Tuple[Finding, ...]
    actions: Tuple[Action, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.authorization is not None and not self.violations

    def authorized(self) -> Authorization:
        """The authorization, or PolicyViolation with every violation at once."""
        if self.authorization is None or self.violations:
            raise PolicyViolation(self.violations)
        return self.authorization


def judge(doc: Payload, verified: Verified, pol: Policy, facts: Mapping[str, Optional[str]],
          now: Optional[datetime.datetime]) -> Decision:
    """Authorize only. `now` None: an applied payload held against today's policy but not
    the clock (DESIGN section 8). An unsigned (amiconfig) payload answers to the VO's allow
    lists and the site settings only."""
    if verified.unsigned:
        from contextd import legacy         # only an amiconfig carrier gets here

        try:
            auth = legacy.authorize_unsigned(doc, verified, pol)
        except PolicyViolation as exc:
            return Decision(None, tuple(exc.violations), ())
        return Decision(auth, (), ())
    result, violations, denied = authorize.review(doc, verified, pol, facts, now)
    return Decision(result, tuple(violations), tuple(denied))


def decide(doc: Payload, verified: Verified, pol: Policy, facts: Mapping[str, Optional[str]],
           now: Optional[datetime.datetime], listed_file: Callable[[str], bytes],
           read_file: Callable[[str], Optional[bytes]], *, refused: Sequence[str] = ()
           ) -> Decision:
    """Authorize, then plan what was allowed. `refused`: violations the caller found on the
    carrier (a listed file that does not match); any violation leaves the plan empty."""
    judged = judge(doc, verified, pol, facts, now)
    if refused:
        return Decision(judged.authorization, (*judged.violations, *refused), judged.denied)
    if not judged.allowed:
        return judged
    return planned(judged, facts, listed_file, read_file)


def planned(judged: Decision, facts: Mapping[str, Optional[str]],
            listed_file: Callable[[str], bytes],
            read_file: Callable[[str], Optional[bytes]]) -> Decision:
    """An allowed decision with its plan. Raises PolicyViolation when it is not allowed."""
    auth = judged.authorized()
    doc = auth.payload
    pctx = PlanContext(payload_sha256=doc.sha256, vo=doc.vo, serial=doc.serial,
                       hostname=facts.get("hostname") or "", read_file=read_file,
                       listed_file=listed_file,
                       facts={k: v for k, v in facts.items() if isinstance(v, str)})
    return Decision(auth, (), judged.denied, tuple(plan.plan(auth, pctx)))
