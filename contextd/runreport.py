"""The owner of a run's ending: its stage, outcome and exit code, its report, written and sent.

The run tells it each stage as it starts and each stage's typed result as it is returned; it
assembles the report (schema contextd.report/v1, DESIGN section 7) once, at the end, from
those values. It is the only place a run's report is built, written, logged and delivered.
It must never hold a secret in the report: the VO's report token is kept beside it, for
delivery only, and everything it shows went through a plugin's `describe` or a signer label.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

from contextd import logs, report
from contextd.errors import ContextdError, Outcome
from contextd.image import identity
from contextd.payload import Payload
from contextd.plugin import Finding
from contextd.policy import Policy
from contextd.sources import Context
from contextd.trust.verify import Verified

log = logging.getLogger("contextd.run")
_LEVELS = {"applied": logging.INFO, "unchanged": logging.INFO, "skipped": logging.INFO,
           "rejected": logging.WARNING, "failed": logging.ERROR}


class RunReport:
    """One run's report owner. Attributes are the stages' results, each set once by the run."""

    def __init__(self, pol: Policy, started: datetime.datetime, root: str, run_dir: str,
                 spool_dir: str, dry_run: bool):
        self.pol, self.started, self.dry_run = pol, started, dry_run
        self.root, self.run_dir, self.spool_dir = root, run_dir, spool_dir
        # The skeleton (report id, host identity) is fixed when the run starts.
        self._base = report.new(started, pol.site, root, pol.sha256)
        self.image = identity.identify(root, pol.image, self._base["host"]["image"])
        self._base["host"]["image"].update(self.image.section)
        self.stage = "recover"
        self.recovered: List[str] = []
        self.detection: Tuple[str, ...] = ()
        self.context: Optional[Context] = None
        self.legacy_scripts: Optional[Dict[str, Dict[str, Any]]] = None
        self.facts: Optional[Dict[str, Optional[str]]] = None
        self.amiconfig: Optional[Dict[str, Any]] = None     # the report's `legacy` section
        self.admitted: Optional[Tuple[Payload, Verified]] = None
        self.vo_url: Optional[str] = None       # the payload's report URL, once it is trusted
        self.token: Optional[str] = None        # its report.token: a secret, never in the report
        self.hold: Sequence[str] = ()           # sections whose services a rejection keeps down
        self.overridden: Tuple[Finding, ...] = ()
        self.actions: List[Dict[str, Any]] = []
        self.undo: Optional[Tuple[List[str], List[str]]] = None     # rolled back, not undone
        self.denied: List[str] = []
        self.held: Optional[List[str]] = None
        self.spooled: List[str] = []            # where reports not yet delivered wait

    @property
    def hostname(self) -> str:
        return str(self._base["host"]["hostname"])

    def enter(self, stage: str) -> None:
        """The stage now running: a bug (not a ContextdError) is reported at it."""
        self.stage = stage

    def assemble(self, outcome: Outcome, stage: Optional[str] = None,
                 message: Optional[str] = None) -> Dict[str, Any]:
        """The report, from the stages' results."""
        base = self._base
        rep = dict(base, host=dict(base["host"], image=dict(base["host"]["image"])))
        if self.recovered:
            rep["recovered"] = list(self.recovered)
        if self.detection:
            rep["detection"] = list(self.detection)
        if self.context is not None:
            rep["source"] = {"kind": self.context.kind, "location": self.context.location}
            rep["source"].update(self.context.details)
        if self.legacy_scripts is not None:
            rep["legacy_scripts"] = self.legacy_scripts
        if self.facts is not None:
            rep["host"]["instance_id"] = self.facts["instance_id"]
            rep["host"]["image"]["image_id"] = self.facts["image_id"]
        if self.amiconfig is not None:
            rep["legacy"] = self.amiconfig
        if self.admitted is not None:
            rep["payload"] = _payload_section(*self.admitted)
        rep["overridden"] = [f.as_dict() for f in self.overridden]
        rep["actions"] = list(self.actions)
        if self.undo is not None:
            rep["rolled_back"], rep["not_undone"] = self.undo
        # Reasons quote the payload: a registered secret is blanked here too, as in one_line.
        rep["denied"] = [{"reason": logs.redact(v)} for v in self.denied]
        if self.held is not None:
            rep["held"] = self.held
        return report.finish(rep, outcome, self.started, stage, message)

    def end(self, outcome: Outcome, stage: Optional[str] = None,
            message: Optional[str] = None) -> Dict[str, Any]:
        """Assemble the report, write it (status --wait sees it now), log it, deliver it."""
        rep = self.assemble(outcome, stage, message)
        if self.dry_run:
            return rep
        report.write(rep, self.run_dir)
        p = rep.get("payload") or {}
        logs.event(log, _LEVELS.get(outcome.word, logging.ERROR), "run %s%s%s" % (
            outcome.word, " at %s" % stage if stage else "", ": %s" % message if message else ""),
            terminal=False, stage=rep.get("stage", "done"), outcome=outcome.word,
            payload_sha256=p.get("sha256"), vo=p.get("vo"), serial=p.get("serial"),
            report_id=rep["report_id"], source=(rep.get("source") or {}).get("location"))
        if self.vo_url or self.pol.report_urls:     # delivery (and HTTP) only with a receiver
            from contextd import delivery

            sent = delivery.deliver(rep, delivery.destinations(self.pol, self.root, self.vo_url,
                                                               self.token), self.spool_dir)
            self.spooled = [o.spool_file or "(lost)" for o in sent
                            if o.verdict == delivery.KEPT]
        return rep

    def end_with(self, exc: ContextdError) -> Dict[str, Any]:
        """A known error ends the run at its own stage, with its outcome."""
        if getattr(exc, "violations", None):
            self.denied = list(exc.violations)  # type: ignore[attr-defined]
        return self.end(exc.outcome, exc.stage or self.stage, exc.one_line())


def _payload_section(doc: Payload, verified: Verified) -> Dict[str, Any]:
    signers = verified.signers.get(doc.vo, ())
    section: Dict[str, Any] = {
        "sha256": doc.sha256, "vo": doc.vo, "serial": doc.serial,
        "signers": sorted(m.label for m in signers),
        "signer_details": sorted((m.details() for m in signers), key=lambda d: d["label"])}
    if verified.unsigned:
        section["unsigned"] = True
    return section
