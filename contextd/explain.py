"""`contextd explain`: the whole decision on a bundle, for humans, changing nothing.

It runs the same stages as a boot (verify, parse, then `decision.decide`: authorize and plan)
and shows every requested change as allowed, denied or overridden with the reason. Secrets are
never shown. It must never import an executor (run, apply, delivery): it changes nothing.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Mapping, Optional

from contextd import authorize, payload, plugin, policy, sources
from contextd.actions import WriteFile
from contextd.decision import decide
from contextd.errors import ContextdError
from contextd.facts import facts_for
from contextd.filesystem import reader

PREVIEW_LINES = 5        # lines of each payload-supplied file explain shows


def _image_facts(root: str, pol: policy.Policy) -> Mapping[str, Optional[str]]:
    """`image`/`image_version` of the image under `root`, as a boot would verify them."""
    from contextd import report
    from contextd.image import identity

    return identity.identify(root, pol.image, report.os_release(root)).facts


def explain(ctx: sources.Context, pol: policy.Policy, facts: Mapping[str, str], root: str,
            now: datetime.datetime, hostname: str) -> Dict[str, Any]:
    from contextd.trust.verify import verify

    out: Dict[str, Any] = {"source": {"kind": ctx.kind, "location": ctx.location},
                           "policy": pol.path, "verdict": "rejected"}
    try:
        verified = verify(ctx.payload, ctx.signatures, pol, now=now)
    except ContextdError as exc:
        out["signature"] = {"ok": False, "reason": exc.one_line()}
        return out
    out["signature"] = {"ok": True, "signers": {vo: [m.label for m in ms]
                                                for vo, ms in verified.signers.items()},
                        "notes": list(verified.notes)}
    try:
        doc = payload.parse(verified)
    except ContextdError as exc:
        out["payload_error"] = exc.one_line()
        return out
    out["payload"] = {"sha256": doc.sha256, "vo": doc.vo, "serial": doc.serial,
                      "not_before": _when(doc.not_before),
                      "expires": _when(doc.expires),
                      "targets": [dict(t) for t in doc.targets]}
    all_facts = facts_for(pol.site, {}, hostname, _image_facts(root, pol))
    all_facts.update(facts)
    out["facts"] = {k: v for k, v in all_facts.items() if v is not None}
    refused: List[str] = []
    try:
        sources.check_listed_files(ctx, doc.files)
    except ContextdError as exc:
        refused.append(exc.one_line())
    decision = decide(doc, verified, pol, all_facts, now, sources.listed_reader(ctx, doc.files),
                      reader(root), refused=refused)
    out["changes"] = _changes(doc, decision.authorization, list(decision.denied),
                              pol.trust.get(doc.vo))
    out["violations"] = list(decision.violations)
    if decision.allowed:
        actions = decision.actions
        out["would_write"] = ["%s (mode %04o%s)" % (a.target, a.mode, ", secret" if a.secret
                                                    else "")
                              for a in actions if isinstance(a, WriteFile)]
        out["would_run"] = [a.target for a in actions if not isinstance(a, WriteFile)]
        out["previews"] = _previews(actions)
        out["verdict"] = "accepted"
    return out


def _changes(doc: payload.Payload, result: Optional[authorize.Authorization],
             denied: List[plugin.Finding], trust: Any) -> List[Dict[str, str]]:
    rows: List[Dict[str, str]] = []
    overridden = list(result.overridden) if result else []
    for name, settings in doc.sections.items():
        described = plugin.load(name).describe(settings)
        if trust is None or name not in trust.allow:
            rows.append({"field": name, "value": _short(described), "verdict": "denied",
                         "reason": "the site does not allow VO %r to configure %s"
                         % (doc.vo, name)})
            continue
        for key, value in described.items():
            field = _field(name, key)
            rows.extend(_verdicts(field, value, denied, overridden))
        decision = result.decisions.get(name) if result else None
        if decision is not None:
            # Values only the site set (no payload value to override): show where they come from.
            final = plugin.load(name).describe(decision.settings)
            for key, value in final.items():
                field = _field(name, key)
                if value != described.get(key) and not any(
                        f.qualified == field for f in overridden):
                    rows.append({"field": field, "value": _short(value), "verdict": "site",
                                 "reason": "set by site_settings.%s" % name})
    if doc.report_url is not None:
        rows.extend(_verdicts("report.url", doc.report_url, denied, overridden))
    return rows


def _field(name: str, key: str) -> str:
    """`cvmfs.repositories`; an item of a list section or setting: `files[0]`."""
    return "%s%s%s" % (name, "" if key.startswith("[") else ".", key)


def _previews(actions: Any) -> Dict[str, List[str]]:
    """The first lines of each file a payload brings itself (files: content, a listed
    source, a rendered template), so a site admin sees what it would write."""
    out: Dict[str, List[str]] = {}
    for a in actions:
        if isinstance(a, WriteFile) and a.no_links and not a.secret:
            lines = a.content[:4096].decode("utf-8", "replace").splitlines()[:PREVIEW_LINES]
            out[a.path] = [line[:120] for line in lines]
    return out


def _verdicts(field: str, value: Any, denied: List[plugin.Finding],
              overridden: List[plugin.Finding]) -> List[Dict[str, str]]:
    def mine(f: plugin.Finding) -> bool:
        name = f.qualified
        return name == field or name.startswith(field + "[") or name.startswith(field + ".")
    rows = [dict(f.as_dict(), verdict="denied") for f in denied if mine(f)]
    rows += [dict(f.as_dict(), verdict="overridden") for f in overridden if mine(f)]
    if not rows:
        rows.append({"field": field, "value": _short(value), "verdict": "allowed",
                     "reason": "within the site's allow rules"})
    return rows


def _when(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
