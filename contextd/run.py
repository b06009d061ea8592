"""One boot run: load policy -> fetch -> verify -> parse -> authorize -> plan -> apply -> report.

The stages are plain functions; this module only threads values between them, keeps the
once-per-instance state and makes sure every run leaves a report, even one whose policy is
broken or that hit a bug (`status --wait` must never wait for a run that has ended).
Runs never overlap: each holds the state dir's lock from before it reads anything there
until its report is out; a run that cannot get it in time ends without touching the state,
the root or the report, which are the live run's.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

from contextd import apply, authorize, decision, filesystem, history, logs, payload, plugin
from contextd import policy, report, sources
from contextd.errors import ApplyFailed, ContextdError, Outcome, PolicyViolation, UsageError
from contextd.facts import facts_for, instance_key
from contextd.record import record
from contextd.verify import Verified, verify

LOCK = "lock"
LOCK_WAIT = 60.0        # seconds a run waits for another to finish (a boot run takes ~1 s)
log = logging.getLogger("contextd.run")


@record(frozen=True)
class Options:
    policy: str = policy.DEFAULT_PATH
    root: str = "/"
    source: Optional[str] = None
    state_dir: Optional[str] = None
    run_dir: Optional[str] = None
    spool_dir: Optional[str] = None
    run_commands: bool = False
    dry_run: bool = False

    @property
    def state(self) -> str:
        return self.state_dir or filesystem.default_dir(self.root, "/var/lib/contextd")

    @property
    def run(self) -> str:
        return self.run_dir or filesystem.default_dir(self.root, "/run/contextd")

    @property
    def spool(self) -> str:
        return self.spool_dir or filesystem.default_dir(self.root, report.SPOOL)


@record
class Result:
    report: Dict[str, Any]
    error: Optional[ContextdError] = None
    planned: Optional[List[Dict[str, Any]]] = None   # dry run: what would happen


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def execute(opts: Options) -> Result:
    """The whole run, one at a time. A dry run writes nothing (no state, no report), so it
    neither takes the lock nor waits for it."""
    if opts.dry_run:
        return _execute(opts)
    held = _lock(opts.state)
    try:
        return _execute(opts)
    finally:
        os.close(held)


def _lock(state_dir: str) -> int:
    """The state dir's lock, held while the returned descriptor is open. Without it a second
    run would "recover" the first one's live journal and race it for files and report."""
    path = os.path.join(state_dir, LOCK)
    try:
        filesystem.private_dir(state_dir)
        fd = filesystem.lock(path, LOCK_WAIT)
    except OSError as exc:
        raise UsageError("cannot lock %s: %s" % (path, exc.strerror or exc),
                         "run as root or give a writable --state-dir; the lock must be a "
                         "regular file")
    if fd is None:
        raise UsageError("another contextd run holds %s and did not finish within %gs; this "
                         "run did nothing" % (path, LOCK_WAIT),
                         "its outcome: contextd status --wait")
    return fd


def _execute(opts: Options) -> Result:
    """The whole run, reported whatever happens. A broken policy raises after writing a
    report of its own (nothing is trusted without one); a bug raises after ending the report."""
    started = now()
    try:
        pol = policy.load(opts.policy)
    except ContextdError as exc:
        # Without a policy the run judged nothing: it failed, with the error's exit code.
        ended = exc.outcome if exc.outcome.word == "failed" else Outcome.POLICY
        _record_broken_policy(opts, started, exc.one_line(), ended)
        raise
    except Exception as exc:
        # A bug: exit 70 and a traceback file, but the run has ended, so its report says so.
        # Only the type: the exception's text may hold anything from the policy.
        _record_broken_policy(opts, started, _INTERNAL % type(exc).__name__, Outcome.INTERNAL)
        raise
    rep = report.new(started, pol.site, opts.root, pol.sha256)
    stage = "recover"
    vo_url: Optional[str] = None            # the payload's report URL, once it is trusted
    token: Optional[str] = None             # its report.token: a secret, never in `rep`
    hold: Sequence[str] = ()                # sections whose services a rejection keeps down
    try:
        if not opts.dry_run and os.path.isdir(opts.state):
            rolled = apply.recover(opts.state, opts.root, opts.run_commands, _footprint(pol))
            if rolled:
                rep["recovered"] = rolled
        stage = "fetch"
        ctx = _fetch(opts, pol, rep)
        if ctx is None:
            why = "".join("; %s" % note for note in rep.get("detection", ()))
            return _done(opts, rep, Outcome.SKIPPED, started, "fetch", "no context found in sources %s%s"
                         % (", ".join(pol.sources) or "(none configured)", why), pol=pol)
        rep["source"] = {"kind": ctx.kind, "location": ctx.location}
        rep["source"].update(ctx.details)
        legacy: Any = None              # only legacy carriers (HEPiX scripts, amiconfig) need it
        if ctx.scripts or ctx.legacy:
            from contextd import legacy
        if ctx.scripts:
            rep["legacy_scripts"] = legacy.check_scripts(ctx.scripts, pol)
        facts = facts_for(pol.site, ctx.facts, rep["host"]["hostname"])
        rep["host"].update(instance_id=facts["instance_id"])
        rep["host"]["image"]["image_id"] = facts["image_id"]
        instance = instance_key(opts.root, facts)
        stage = "state"
        past = history.History() if opts.dry_run else history.load(opts.state, instance)
        unchanged = past.unchanged(hashlib.sha256(ctx.payload).hexdigest())
        if unchanged:       # if the site now refuses it, what it configured must not start
            hold = past.sections

        stage = "verify"
        if ctx.legacy:              # unsigned: only where the policy opted in, else this raises
            from contextd.verify import accept_unsigned_legacy
            verified = accept_unsigned_legacy(ctx.payload, pol, ctx.legacy)
        else:
            # An applied payload is checked as of when it was applied: a certificate that
            # has expired since does not undo it (DESIGN section 8), a revocation does.
            clock = (past.applied_at or started) if unchanged else started
            verified = verify(ctx.payload, ctx.signatures, pol, now=clock)
        stage = "parse"
        if verified.unsigned:
            doc, rep["legacy"] = legacy.parse_amiconfig(
                verified, pol.legacy["amiconfig"]["as_vo"], started)
        else:
            doc = payload.parse(verified)
        logs.add_secrets_of(doc)            # report.token, htcondor.token, ...: never logged
        vo_url, token = _vo_report_url(pol, doc, verified), doc.report_token
        signers = verified.signers.get(doc.vo, ())
        rep["payload"] = {"sha256": doc.sha256, "vo": doc.vo, "serial": doc.serial,
                          "signers": sorted(m.label for m in signers),
                          "signer_details": sorted((m.details() for m in signers),
                                                   key=lambda d: d["label"])}
        if verified.unsigned:
            rep["payload"]["unsigned"] = True
        if unchanged:
            hold = tuple(doc.sections)  # its own word, also where the record predates sections
            stage = "authorize"         # today's policy, not the clock (DESIGN section 8)
            decision.judge(doc, verified, pol, facts, None).authorized()
            hold = ()
            if past.vo is None:         # a record of the older format: upgrade it
                history.remember(opts.state, past, instance, doc.sha256, doc.vo, doc.serial,
                                 list(doc.sections), past.applied_at or started,
                                 signed=not verified.unsigned)
            return _done(opts, rep, Outcome.UNCHANGED, started, "apply", "payload already applied "
                         "on this instance; nothing changed", pol=pol, vo_url=vo_url,
                         token=token)
        stage = "authorize"
        rollback = None if verified.unsigned else past.rollback(doc.vo, doc.serial, doc.sha256)
        if rollback:
            raise PolicyViolation([rollback])

        stage = "fetch"
        sources.check_listed_files(ctx, doc.files)
        stage = "authorize"
        judged = decision.judge(doc, verified, pol, facts, started)
        auth = judged.authorized()
        rep["overridden"] = authorize.finding_dicts(auth.overridden)
        stage = "plan"
        actions = list(decision.planned(judged, facts, sources.listed_reader(ctx, doc.files),
                                        filesystem.reader(opts.root)).actions)
        if opts.dry_run:
            planned = [{"plugin": a.plugin, "kind": a.kind, "target": a.target,
                        "status": "planned"} for a in actions]
            rep["actions"] = planned
            report.finish(rep, Outcome.APPLIED, started)
            return Result(rep, planned=planned)
        stage = "apply"
        if ctx.scripts:
            legacy.run_pinned("prolog.sh", ctx.scripts, rep.get("legacy_scripts"), opts.root,
                              opts.run_commands, opts.state)
        try:
            rep["actions"] = apply.execute(actions, opts.root, opts.state, opts.run_commands,
                                           _footprint(pol))
        except ApplyFailed as exc:
            rep["actions"] = exc.results
            rep["rolled_back"] = exc.rolled_back
            rep["not_undone"] = exc.not_undone
            raise
        history.remember(opts.state, past, instance, doc.sha256, doc.vo, doc.serial,
                         list(auth.decisions), started, signed=not verified.unsigned)
        if ctx.scripts:
            legacy.run_pinned("epilog.sh", ctx.scripts, rep.get("legacy_scripts"), opts.root,
                              opts.run_commands, opts.state)
        return _done(opts, rep, Outcome.APPLIED, started, pol=pol, vo_url=vo_url, token=token)
    except ContextdError as exc:
        if getattr(exc, "violations", None):
            rep["denied"] = [{"reason": v} for v in exc.violations]  # type: ignore[attr-defined]
        if hold and exc.outcome.word == "rejected":
            _hold(opts, rep, hold)
        result = _done(opts, rep, exc.outcome, started, exc.stage or stage, exc.one_line(),
                       pol=pol, vo_url=vo_url, token=token)
        result.error = exc
        return result
    except Exception as exc:
        # A bug. The CLI turns it into exit 70 with a traceback file; the report still ends
        # here, so a pilot blocked on `status --wait` learns now, and the site and VO hear of
        # it. Only the exception's type goes in: its text may hold anything, secrets too.
        try:
            _done(opts, rep, Outcome.INTERNAL, started, stage, _INTERNAL % type(exc).__name__,
                  pol=pol, vo_url=vo_url, token=token)
        except Exception:  # noqa: BLE001 - the first bug is the one to report
            log.debug("could not end the report after an internal error", exc_info=True)
        raise


def _footprint(pol: policy.Policy) -> plugin.Footprint:
    """What a run under this policy may touch: the plugins it allows (authorize refuses every
    other section), with the site's settings. policy.load has imported them already."""
    names = {section for trust in pol.trust.values() for section in trust.allow
             if section != "report"}
    return plugin.footprint(names, pol.site_settings)


def _fetch(opts: Options, pol: policy.Policy, rep: Dict[str, Any]) -> Optional[sources.Context]:
    """The named source, or detection in the policy's order; why not, in rep["detection"]."""
    if opts.source:
        ctx, why = sources.open_source(opts.source, pol)
        notes = (why,) if why else ()
    else:
        found = sources.detect(pol, opts.root)
        ctx, notes = found.context, found.notes
    if notes:
        rep["detection"] = list(notes)
    return ctx


def _done(opts: Options, rep: Dict[str, Any], outcome: Outcome, started: datetime.datetime,
          stage: Optional[str] = None, message: Optional[str] = None, *, pol: policy.Policy,
          vo_url: Optional[str] = None, token: Optional[str] = None) -> Result:
    """Finish the report, write it (status --wait sees it now), log it, then deliver it."""
    report.finish(rep, outcome, started, stage, message)
    if not opts.dry_run:
        report.write(rep, opts.run)
        p = rep.get("payload") or {}
        logs.event(log, _LEVELS.get(outcome.word, logging.ERROR), "run %s%s%s" % (
            outcome.word, " at %s" % stage if stage else "", ": %s" % message if message else ""),
            terminal=False, stage=rep.get("stage", "done"), outcome=outcome.word,
            payload_sha256=p.get("sha256"), vo=p.get("vo"), serial=p.get("serial"),
            report_id=rep["report_id"], source=(rep.get("source") or {}).get("location"))
        if vo_url or pol.report_urls:      # delivery (and HTTP) only when there is a receiver
            from contextd import delivery

            delivery.deliver(rep, delivery.destinations(pol, opts.root, vo_url, token),
                             opts.spool)
    return Result(rep)


def _record_broken_policy(opts: Options, started: datetime.datetime, message: str,
                          outcome: Outcome) -> None:
    """Without a policy nothing is trusted, fetched or delivered; but the run did finish,
    and `status --wait` (pilots block on it) must see that now, not at its timeout."""
    if opts.dry_run:
        return
    try:
        rep = report.new(started, None, opts.root, None)
        report.finish(rep, outcome, started, "policy", message)
        report.write(rep, opts.run)
    except Exception as err:  # noqa: BLE001 - the policy's error is what the run reports
        log.warning("cannot write the report to %s: %s", opts.run, err)


_INTERNAL = "internal error (a bug): %s; the traceback is in the file contextd named on stderr"


_LEVELS = {"applied": logging.INFO, "unchanged": logging.INFO, "skipped": logging.INFO,
           "rejected": logging.WARNING, "failed": logging.ERROR}


def _vo_report_url(pol: policy.Policy, doc: payload.Payload,
                   verified: Verified) -> Optional[str]:
    """The payload's report URL when its VO signed it and may name one (the rule authorize
    applies too); known right after parse, so a rejected payload still reports to its VO."""
    trust = pol.trust.get(doc.vo)
    if not doc.report_url or trust is None:
        return None
    if verified.counted(doc.vo) < max(trust.threshold, 1):
        return None
    return doc.report_url if authorize.report_url_allowed(doc.report_url, trust) else None


def _hold(opts: Options, rep: Dict[str, Any], sections: Sequence[str]) -> None:
    """Keep the services an applied payload configured from starting on this boot, now that
    the site refuses that payload: the run is rejected, and HTCondor must not take jobs
    with a configuration the site has revoked. Best effort; the report says what ran."""
    rep["held"] = []
    try:
        commands = history.hold_commands(sections)
        results = apply.run_outside_transaction(commands, opts.root, opts.run_commands)
    except Exception:  # noqa: BLE001 - a broken site plugin must not cost the run its report
        log.exception("could not hold the services of %s", ", ".join(sections))
        return
    rep["actions"] = list(rep.get("actions") or ()) + results
    rep["held"] = [c.argv[-1] for c, r in zip(commands, results) if r["status"] == "ran"]
