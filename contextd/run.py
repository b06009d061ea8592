"""One boot run: load policy -> recover -> fetch -> admit (verify, parse) -> authorize -> plan
-> apply -> report (DESIGN section 2).

The stages are plain functions over values (admission, decision, apply, ...); this module
only threads values between them, keeps the once-per-instance state and tells the run's
RunReport each stage and result, so every run leaves a report, even one whose policy is
broken or that hit a bug (`status --wait` must never wait for a run that has ended). It
never builds the report itself: runreport assembles it once, at the end.
Runs never overlap: each holds the state dir's lock from before it reads anything there
until its report is out; a run that cannot get it in time ends without touching the state,
the root or the report, which are the live run's.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

from contextd import admission, apply, authorize, decision, filesystem, history, logs, payload
from contextd import killswitch, paths, plugin, policy, report, sources
from contextd.errors import ApplyFailed, ContextdError, Outcome, PolicyViolation, ScriptFailed
from contextd.errors import UsageError
from contextd.facts import facts_for, instance_key
from contextd.record import field, record
from contextd.runreport import RunReport
from contextd.trust.verify import Verified

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
    spooled: List[str] = field(default_factory=list)  # reports kept for `report flush`


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def execute(opts: Options) -> Result:
    """The whole run, one at a time. A dry run writes nothing (no state, no report), so it
    neither takes the lock nor waits for it."""
    _check_paths(opts)
    if opts.dry_run:
        return _execute(opts)
    held = _lock(opts.state)
    try:
        return _execute(opts)
    finally:
        os.close(held)


def _check_paths(opts: Options) -> None:
    """The directories the user named, before anything is read or written (issue 15): a
    mistake there is exit 2 in one line, and the report says so wherever it can be written,
    so `status --wait` does not wait out its timeout."""
    paths.dir_or_absent(opts.run, "--run-dir")      # else no report can say anything
    try:
        paths.existing_dir(opts.root, "--root")
        paths.dir_or_absent(opts.state, "--state-dir")
        paths.dir_or_absent(opts.spool, "--spool-dir")
    except UsageError as exc:
        _record_early(opts, now(), exc.one_line(), exc.outcome, "usage")
        raise


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
                         "regular file") from None
    if fd is None:
        raise UsageError("another contextd run holds %s and did not finish within %gs; this "
                         "run did nothing" % (path, LOCK_WAIT),
                         "its outcome: contextd status --wait")
    return fd


def _execute(opts: Options) -> Result:
    """The whole run, reported whatever happens. A broken policy raises after writing a
    report of its own (nothing is trusted without one); a bug raises after ending the report."""
    started = now()
    off = killswitch.reason(opts.root)
    if off:     # before the policy: a switched-off machine judges nothing, but says so
        return Result(_record_early(opts, started, off, Outcome.SKIPPED, "disabled"))
    pol = _load_policy(opts, started)
    trail = RunReport(pol, started, opts.root, opts.run, opts.spool, opts.dry_run)
    try:
        result = _stages(opts, pol, trail)
    except ContextdError as exc:
        if trail.hold and exc.outcome.word == "rejected":
            _hold(opts, trail)
        result = Result(trail.end_with(exc), error=exc)
    except Exception as exc:
        # A bug. The CLI turns it into exit 70 with a traceback file; the report still ends
        # here, so a pilot blocked on `status --wait` learns now, and the site and VO hear of
        # it. Only the exception's type goes in: its text may hold anything, secrets too.
        try:
            trail.end(Outcome.INTERNAL, trail.stage, _INTERNAL % type(exc).__name__)
        except Exception:  # the first bug is the one to report
            log.debug("could not end the report after an internal error", exc_info=True)
        raise
    result.spooled = list(trail.spooled)
    return result


def _load_policy(opts: Options, started: datetime.datetime) -> policy.Policy:
    """Stage `policy`: the site policy, or a report saying why there is none, then raise."""
    try:
        return policy.load(opts.policy)
    except ContextdError as exc:
        # Without a policy the run judged nothing: it failed, with the error's exit code.
        ended = exc.outcome if exc.outcome.word == "failed" else Outcome.POLICY
        _record_early(opts, started, exc.one_line(), ended)
        raise
    except Exception as exc:
        # A bug: exit 70 and a traceback file, but the run has ended, so its report says so.
        # Only the type: the exception's text may hold anything from the policy.
        _record_early(opts, started, _INTERNAL % type(exc).__name__, Outcome.INTERNAL)
        raise


def _stages(opts: Options, pol: policy.Policy, trail: RunReport) -> Result:
    """recover -> fetch -> state -> admit (verify, parse) -> [unchanged] or the change."""
    if not opts.dry_run and os.path.isdir(opts.state):
        trail.recovered = apply.recover(opts.state, opts.root, opts.run_commands,
                                        _footprint(pol))
    trail.enter("fetch")
    ctx, trail.detection = _fetch(opts, pol)
    if ctx is None:
        why = "".join("; %s" % note for note in trail.detection)
        return Result(trail.end(Outcome.SKIPPED, "fetch", "no context found in sources %s%s"
                                % (", ".join(pol.sources) or "(none configured)", why)))
    trail.context = ctx
    if ctx.scripts:
        from contextd import legacy

        trail.legacy_scripts = legacy.check_scripts(ctx.scripts, pol)
    facts = trail.facts = facts_for(pol.site, ctx.facts, trail.hostname, trail.image.facts)
    instance = instance_key(opts.root, facts)
    trail.enter("state")
    past = history.History() if opts.dry_run else history.load(opts.state, instance)
    unchanged = past.unchanged(hashlib.sha256(ctx.payload).hexdigest())
    if unchanged:           # if the site now refuses it, what it configured must not start
        trail.hold = past.sections
    # An applied payload is checked as of when it was applied: a certificate that has
    # expired since does not undo it (DESIGN section 8), a revocation does.
    clock = (past.applied_at or trail.started) if unchanged else trail.started
    doc, verified = _admit(ctx, pol, clock, trail)
    if unchanged:
        return _unchanged(opts, pol, trail, doc, verified, past, instance)
    return _change(opts, pol, trail, ctx, doc, verified, past, instance)


def _admit(ctx: sources.Context, pol: policy.Policy, clock: datetime.datetime,
           trail: RunReport) -> Tuple[payload.Payload, Verified]:
    """Stages `verify` and `parse`, by the carrier's admission strategy."""
    strategy = admission.strategy_for(ctx)
    trail.enter("verify")
    verified = strategy.verify(ctx, pol, clock)
    trail.enter("parse")
    doc, trail.amiconfig = strategy.parse(verified, pol, trail.started)
    logs.add_secrets_of(doc)            # report.token, htcondor.token, ...: never logged
    trail.vo_url, trail.token = _vo_report_url(pol, doc, verified), doc.report_token
    trail.admitted = (doc, verified)
    return doc, verified


def _unchanged(opts: Options, pol: policy.Policy, trail: RunReport, doc: payload.Payload,
               verified: Verified, past: history.History, instance: str) -> Result:
    """Already applied here: held against today's policy, not the clock (DESIGN section 8)."""
    trail.hold = tuple(doc.sections)    # its own word, also where the record predates sections
    trail.enter("authorize")
    facts = trail.facts or {}
    decision.judge(doc, verified, pol, facts, None).authorized()
    trail.hold = ()
    if past.vo is None:                 # a record of the older format: upgrade it
        history.remember(opts.state, past, instance, doc.sha256, doc.vo, doc.serial,
                         list(doc.sections), past.applied_at or trail.started,
                         signed=not verified.unsigned)
    return Result(trail.end(Outcome.UNCHANGED, "apply", "payload already applied on this "
                            "instance; nothing changed"))


def _change(opts: Options, pol: policy.Policy, trail: RunReport, ctx: sources.Context,
            doc: payload.Payload, verified: Verified, past: history.History,
            instance: str) -> Result:
    """authorize -> plan -> apply (HEPiX prolog and epilog around it) -> remember."""
    trail.enter("authorize")
    rollback = None if verified.unsigned else past.rollback(doc.vo, doc.serial, doc.sha256)
    if rollback:
        raise PolicyViolation([rollback])
    trail.enter("fetch")
    sources.check_listed_files(ctx, doc.files)
    trail.enter("authorize")
    facts = trail.facts or {}
    judged = decision.judge(doc, verified, pol, facts, trail.started)
    auth = judged.authorized()
    trail.overridden = tuple(auth.overridden)
    trail.enter("plan")
    actions = list(decision.planned(judged, facts, sources.listed_reader(ctx, doc.files),
                                    filesystem.reader(opts.root)).actions)
    if opts.dry_run:
        trail.actions = [{"plugin": a.plugin, "kind": a.kind, "target": a.target,
                          "status": "planned"} for a in actions]
        return Result(trail.end(Outcome.APPLIED), planned=list(trail.actions))
    trail.enter("apply")
    scripts = _pinned(ctx, trail)
    try:
        _took(trail, apply.execute(actions, opts.root, opts.state, opts.run_commands,
                                   _footprint(pol), scripts))
    except ScriptFailed as exc:         # the prolog: nothing was applied
        _took(trail, exc.results)
        raise
    except ApplyFailed as exc:
        _took(trail, exc.results)
        trail.undo = (exc.rolled_back, exc.not_undone)
        raise
    # After the epilog: a run killed before this point is rolled back and runs again.
    history.remember(opts.state, past, instance, doc.sha256, doc.vo, doc.serial,
                     list(auth.decisions), trail.started, signed=not verified.unsigned)
    return Result(trail.end(Outcome.APPLIED))


def _pinned(ctx: sources.Context, trail: RunReport) -> Tuple[Any, ...]:
    """The carrier's HEPiX scripts and the amiconfig script the site pinned, as apply's
    pre/post actions."""
    if not ctx.scripts and not (trail.amiconfig and "script" in trail.amiconfig):
        return ()
    from contextd import legacy

    verified = trail.admitted[1] if trail.admitted else None
    return (legacy.pinned_scripts(ctx.scripts or {}, trail.legacy_scripts)
            + legacy.amiconfig_script(verified, trail.amiconfig))


def _took(trail: RunReport, results: List[Dict[str, Any]]) -> None:
    """What apply did: the plugins' actions for the report, the scripts' results for its
    `legacy_scripts`."""
    trail.actions = [r for r in results if r["kind"] != "script"]
    ran = [r for r in results if r["kind"] == "script"]
    if ran and (trail.legacy_scripts is not None or trail.amiconfig is not None):
        from contextd import legacy

        if trail.legacy_scripts is not None:
            trail.legacy_scripts = legacy.with_results(trail.legacy_scripts, ran)
        if trail.amiconfig is not None:
            trail.amiconfig = legacy.with_amiconfig_result(trail.amiconfig, ran)


def _footprint(pol: policy.Policy) -> plugin.Footprint:
    """What a run under this policy may touch: the plugins it allows (authorize refuses every
    other section), with the site's settings. policy.load has imported them already."""
    names = {section for trust in pol.trust.values() for section in trust.allow
             if section != "report"}
    allows = {name: [t.allow[name] for t in pol.trust.values() if name in t.allow]
              for name in names}
    return plugin.footprint(names, pol.site_settings, allows)


def _fetch(opts: Options, pol: policy.Policy
           ) -> Tuple[Optional[sources.Context], Tuple[str, ...]]:
    """The named source, or detection in the policy's order; and why not, source by source."""
    if opts.source:
        ctx, why = sources.open_source(opts.source, pol)
        return ctx, (why,) if why else ()
    found = sources.detect(pol, opts.root)
    return found.context, tuple(found.notes)


def _record_early(opts: Options, started: datetime.datetime, message: str,
                  outcome: Outcome, stage: str = "policy") -> Dict[str, Any]:
    """Without a policy (or a usable directory) nothing is trusted, fetched or delivered; but
    the run did finish, and `status --wait` (pilots block on it) must see that now, not at
    its timeout."""
    rep = report.new(started, None, opts.root, None)
    report.finish(rep, outcome, started, stage, message)
    if opts.dry_run:
        return rep
    try:
        report.write(rep, opts.run)
    except Exception as err:  # noqa: BLE001 - the policy's error is what the run reports
        log.warning("cannot write the report to %s: %s", opts.run, err)
    return rep


_INTERNAL = "internal error (a bug): %s; the traceback is in the file contextd named on stderr"


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


def _hold(opts: Options, trail: RunReport) -> None:
    """Keep the services an applied payload configured from starting on this boot, now that
    the site refuses that payload: the run is rejected, and HTCondor must not take jobs
    with a configuration the site has revoked. Best effort; the report says what ran."""
    trail.held = []
    try:
        commands = history.hold_commands(trail.hold)
        results = apply.run_outside_transaction(commands, opts.root, opts.run_commands)
    except Exception:  # a broken site plugin must not cost the run its report
        log.exception("could not hold the services of %s", ", ".join(trail.hold))
        return
    trail.actions = [*trail.actions, *results]
    trail.held = [c.argv[-1] for c, r in zip(commands, results) if r["status"] == "ran"]
