"""The site policy as `contextd policy check` prints it: every default spelled out, durations
as people write them, keys by fingerprint, allow rules as written.

What it must never do: print a secret (the report HMAC key is named by its file, never read
here) or anything the validated document does not hold.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from contextd.policy import Policy, Signer, VoTrust
from contextd.settings import shown
from contextd.trust import sshsig


def normalised(policy: Policy) -> Dict[str, Any]:
    """The policy as `policy check` prints it: every default spelled out."""
    return {
        "version": 1, "site": policy.site, "require_signature": policy.require_signature,
        "sources": list(policy.sources), "wait_for_source": shown(policy.wait_for_source),
        "clock_skew": shown(policy.clock_skew), "max_validity": shown(policy.max_validity),
        "file": {"path": policy.file_source} if policy.file_source else None,
        "ec2": {"url": policy.ec2.url, "imdsv1_fallback": policy.ec2.imdsv1_fallback,
                "budget": shown(policy.ec2.budget)},
        "openstack": {"url": policy.openstack.url, "budget": shown(policy.openstack.budget)},
        "gce": {"url": policy.gce.url, "budget": shown(policy.gce.budget)},
        "url": ({"location": policy.url_source.location,
                 "budget": shown(policy.url_source.budget),
                 "ca_bundle": policy.url_source.ca_bundle}
                if policy.url_source.location else None),
        "legacy": {"hepix_scripts": dict(policy.legacy.hepix_scripts),
                   "amiconfig": ({"as_vo": policy.legacy.amiconfig.as_vo,
                                  "scripts": list(policy.legacy.amiconfig.scripts)}
                                 if policy.legacy.amiconfig else "deny")},
        "site_settings": dict(policy.document.get("site_settings") or {}),
        "trust": {vo: _trust_doc(t, policy.document) for vo, t in policy.trust.items()},
        "report": {"urls": list(policy.report_urls), "ca_bundle": policy.report_ca_bundle,
                   "hmac_key_file": policy.report_hmac_key_file},
        "image": {"signers": [{"id": s.id, "fingerprint": sshsig.fingerprint(s.key_blob)}
                              for s in policy.image.signers]},
    }


def _trust_doc(t: VoTrust, document: Mapping[str, Any]) -> Dict[str, Any]:
    """One VO's trust as `policy check` prints it: its signers, revocations and allow rules
    (as written and validated: `deny` stays visible), every section it may set."""
    written = ((document.get("trust") or {}).get(t.name) or {}).get("allow") or {}
    return {"threshold": t.threshold, "min_serial": t.min_serial,
            "signers": [_signer_doc(s) for s in t.signers],
            "revoked": {"ssh_fingerprints": list(t.revoked.ssh_fingerprints),
                        "ssh_cert_key_ids": list(t.revoked.ssh_cert_key_ids),
                        "serials": list(t.revoked.serials)},
            "allow": {name: written[name] for name in written},
            "allowed_sections": sorted(t.allow)}


def _signer_doc(s: Signer) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"id": s.id, "kind": s.kind}
    if s.key_blob:
        doc["fingerprint"] = s.fingerprint
    if s.principals:
        doc["principals"] = list(s.principals)
    if s.x509_subject:
        doc["subject"], doc["issuer"] = s.x509_subject, s.x509_issuer
        if s.x509_anchor:
            doc["anchor"] = s.x509_anchor
    if s.scopes is not None:
        doc["scopes"] = list(s.scopes)
    return doc
