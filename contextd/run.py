"""One boot run: load policy -> fetch -> verify -> parse -> authorize -> plan -> apply -> report.

The stages are plain functions; this module only threads values between them, keeps the
once-per-instance state and makes sure every run that got past the policy leaves a report.
"""

import datetime
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from contextd import apply, authorize, filesystem, payload, plan, policy, report, sources
from contextd.errors import ContextdError
from contextd.plugin import PlanContext
from contextd.verify import verify

APPLIED = "applied.json"


@dataclass(frozen=True)
class Options:
    policy: str = policy.DEFAULT_PATH
    root: str = "/"
    source: Optional[str] = None
    state_dir: Optional[str] = None
    run_dir: Optional[str] = None
    run_commands: bool = False
    dry_run: bool = False

    @property
    def state(self) -> str:
        return self.state_dir or filesystem.under_root(self.root, "/var/lib/contextd")

    @property
    def run(self) -> str:
        return self.run_dir or filesystem.under_root(self.root, "/run/contextd")


@dataclass
class Result:
    report: Dict[str, Any]
    error: Optional[ContextdError] = None
    planned: Optional[List[Dict[str, Any]]] = None   # dry run: what would happen


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def facts_for(pol: policy.Policy, ctx_facts: Mapping[str, Optional[str]],
              hostname: str) -> Dict[str, Optional[str]]:
    facts: Dict[str, Optional[str]] = {"cloud": None, "region": None, "instance_id": None,
                                       "image_id": None}
    facts.update({k: v for k, v in ctx_facts.items() if k in facts})
    facts["site"] = pol.site            # the site is the policy's word, never the platform's
    facts["hostname"] = hostname
    return facts


def execute(opts: Options) -> Result:
    """The whole run. Policy errors raise (no report); everything later is reported."""
    started = now()
    pol = policy.load(opts.policy)
    rep = report.new(started, pol.site, opts.root, pol.sha256)
    stage = "recover"
    try:
        if not opts.dry_run and os.path.isdir(opts.state):
            rolled = apply.recover(opts.state)
            if rolled:
                rep["recovered"] = rolled
        stage = "fetch"
        ctx = _fetch(opts, pol)
        if ctx is None:
            return _done(opts, rep, "skipped", started, "fetch", "no context found in sources %s"
                         % (", ".join(pol.sources) or "(none configured)"))
        rep["source"] = {"kind": ctx.kind, "location": ctx.location}
        facts = facts_for(pol, ctx.facts, rep["host"]["hostname"])
        rep["host"].update(instance_id=facts["instance_id"])
        rep["host"]["image"]["image_id"] = facts["image_id"]

        stage = "verify"
        verified = verify(ctx.payload, ctx.signatures, pol)
        stage = "parse"
        doc = payload.parse(verified)
        rep["payload"] = {"sha256": doc.sha256, "vo": doc.vo, "serial": doc.serial,
                          "signers": sorted(m.label for m in verified.signers.get(doc.vo, ()))}
        instance = _instance_key(opts, facts)
        if not opts.dry_run and _already_applied(opts, instance, doc.sha256):
            return _done(opts, rep, "unchanged", started)

        stage = "fetch"
        sources.check_listed_files(ctx, doc.files)
        stage = "authorize"
        auth = authorize.authorize(doc, verified, pol, facts, started)
        rep["overridden"] = authorize.finding_dicts(auth.overridden)
        stage = "plan"
        pctx = PlanContext(payload_sha256=doc.sha256, vo=doc.vo, serial=doc.serial,
                           hostname=rep["host"]["hostname"],
                           read_file=filesystem.reader(opts.root),
                           listed_file=sources.listed_reader(ctx, doc.files))
        actions = plan.plan(auth, pctx)
        if opts.dry_run:
            planned = [{"plugin": a.plugin, "kind": a.kind, "target": a.target,
                        "status": "planned"} for a in actions]
            rep["actions"] = planned
            report.finish(rep, "applied", started)
            return Result(rep, planned=planned)
        stage = "apply"
        try:
            rep["actions"] = apply.execute(actions, opts.root, opts.state, opts.run_commands)
        except apply.ApplyFailed as exc:
            rep["actions"] = exc.results
            rep["rolled_back"] = exc.rolled_back
            rep["not_undone"] = exc.not_undone
            raise
        _remember(opts, instance, doc.sha256, doc.serial)
        return _done(opts, rep, "applied", started)
    except ContextdError as exc:
        if getattr(exc, "violations", None):
            rep["denied"] = [{"reason": v} for v in exc.violations]  # type: ignore[attr-defined]
        outcome = "failed" if exc.exit_code == 3 else "rejected"
        result = _done(opts, rep, outcome, started, exc.stage or stage, exc.one_line())
        result.error = exc
        return result


def _fetch(opts: Options, pol: policy.Policy) -> Optional[sources.Context]:
    if opts.source:
        return sources.fetch(opts.source)
    for name in pol.sources:
        if name == "file" and pol.file_source:
            path = filesystem.under_root(opts.root, pol.file_source)
            if os.path.exists(path):
                return sources.fetch("file:" + path)
    return None


def _done(opts: Options, rep: Dict[str, Any], outcome: str, started: datetime.datetime,
          stage: Optional[str] = None, message: Optional[str] = None) -> Result:
    report.finish(rep, outcome, started, stage, message)
    if not opts.dry_run:
        report.write(rep, opts.run)
    return Result(rep)


def _instance_key(opts: Options, facts: Mapping[str, Optional[str]]) -> str:
    if facts.get("instance_id"):
        return "instance:%s" % facts["instance_id"]
    try:
        machine = filesystem.read_limited(filesystem.under_root(opts.root, "/etc/machine-id"), 256)
    except OSError:
        machine = None
    return "machine:%s" % (machine or b"unknown").decode("ascii", "replace").strip()


def _already_applied(opts: Options, instance: str, digest: str) -> bool:
    try:
        data = filesystem.read_limited(os.path.join(opts.state, APPLIED), 64 * 1024)
        state = json.loads(data) if data else {}
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("instance") == instance and \
        state.get("payload_sha256") == digest


def _remember(opts: Options, instance: str, digest: str, serial: int) -> None:
    filesystem.private_dir(opts.state)
    filesystem.atomic_write(os.path.join(opts.state, APPLIED), json.dumps(
        {"instance": instance, "payload_sha256": digest, "serial": serial}).encode(), 0o600)
