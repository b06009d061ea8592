"""Admission: a fetched context becomes a payload only through verify, then parse.

Two strategies, chosen by the carrier: a signed bundle (verify the signatures against the
policy's signers, then payload.parse) and legacy amiconfig user-data (unsigned, let through
only where the policy opted in, then translated by contextd.legacy). Each strategy is a pair
of steps the run calls under their own stage (verify, parse), so a failure names its stage.
Admission must never authorize, plan or touch the system: it only says what the payload is
and who signed it.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, Optional, Tuple

from contextd.payload import Payload
from contextd.policy import Policy
from contextd.record import record
from contextd.sources import Context
from contextd.trust.verify import Verified

# What parse gives: the payload, and for amiconfig the report's `legacy` section.
Parsed = Tuple[Payload, Optional[Dict[str, Any]]]


@record(frozen=True)
class Admission:
    name: str
    verify: Callable[[Context, Policy, datetime.datetime], Verified]
    parse: Callable[[Verified, Policy, datetime.datetime], Parsed]


def _verify_signed(ctx: Context, pol: Policy, clock: datetime.datetime) -> Verified:
    from contextd.trust.verify import load_anchors, needs_anchors, verify

    # The CA directory is read here, once, and only when a pinned X.509 signer can need it.
    anchors = load_anchors(pol) if needs_anchors(pol, ctx.signatures) else None
    return verify(ctx.payload, ctx.signatures, pol, now=clock, anchors=anchors)


def _parse_signed(verified: Verified, pol: Policy, started: datetime.datetime) -> Parsed:
    from contextd import payload

    return payload.parse(verified), None


def _verify_amiconfig(ctx: Context, pol: Policy, clock: datetime.datetime) -> Verified:
    # Unsigned: only where the policy opted in, else this raises.
    from contextd.trust.verify import accept_unsigned_legacy

    return accept_unsigned_legacy(ctx.payload, pol, ctx.legacy or "amiconfig")


def _parse_amiconfig(verified: Verified, pol: Policy, started: datetime.datetime) -> Parsed:
    from contextd import legacy

    ami = pol.legacy.amiconfig
    assert ami is not None      # accept_unsigned_legacy let nothing through without it
    return legacy.parse_amiconfig(verified, ami.as_vo, started,
                                  default_domain=legacy.cvmfs_domain(pol), pins=ami.scripts)


SIGNED = Admission("signed", _verify_signed, _parse_signed)
AMICONFIG = Admission("amiconfig", _verify_amiconfig, _parse_amiconfig)


def strategy_for(ctx: Context) -> Admission:
    """The carrier says which: a legacy carrier's bytes are never read as a signed bundle."""
    return AMICONFIG if ctx.legacy else SIGNED
