"""Boot side of image identity: which signed image is this VM running? (DESIGN section 11)

It reads /etc/contextd/image.json and its .sig under the root, checks the SSH signature
(namespace `contextd-image`) against the policy's `image.signers`, and compares the
manifest's os-release fields with the running image's. The result is the report's
`host.image` fields and the `image`/`image_version` facts a payload's targets may name.

What it must never do:
- give the facts of a manifest that did not verify (a target naming `image` then matches
  nothing), or take them from anywhere but the verified manifest;
- parse the manifest's JSON before its signature holds, or read past the LIMITS;
- raise on a missing, unreadable, tampered or foreign manifest: it says `verified: false`
  and why, and the run goes on;
- import the factory side (contextd.image.build, contextd.vo) or make a signature.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Mapping, Optional, Sequence

from contextd import filesystem
from contextd.errors import BundleError, SignatureError
from contextd.image import MANIFEST, NAMESPACE, OS_KEYS, SCHEMA, SIGNATURE
from contextd.limits import LIMITS
from contextd.record import record
from contextd.report import OS_RELEASE
from contextd.settings import ImageSettings, ImageSigner
from contextd.trust import sshsig

FACTS = ("image", "image_version")      # what a verified manifest tells authorize
_BAD_SIGNATURE = "signature does not match the manifest (manifest modified or wrong key)"


class Unverified(Exception):
    """Why the manifest does not verify: one line for the report's `reason`."""


@record(frozen=True)
class Identity:
    """The report's `host.image` additions and the facts they give targets."""

    section: Mapping[str, Any]
    facts: Mapping[str, Optional[str]]

    @property
    def verified(self) -> bool:
        return bool(self.section.get("verified"))


def identify(root: str, image: ImageSettings, shown: Mapping[str, Optional[str]]
             ) -> Identity:
    """The image's identity under `root`; `shown` is its /etc/os-release as the report shows
    it (report.os_release). Never raises for what the image holds: an unverified manifest
    is a value (verified false, the reason), not an error."""
    running = {key: shown.get(OS_RELEASE[key]) for key in OS_KEYS}
    section: Dict[str, Any] = {"manifest": None, "manifest_sha256": None, "signature": None,
                               "verified": False, "signer": None}
    facts: Dict[str, Optional[str]] = dict.fromkeys(FACTS)
    try:
        data = _read(root, MANIFEST, LIMITS.image_manifest_bytes,
                     " (the image was not signed at build: contextd image sign)")
        section["manifest_sha256"] = hashlib.sha256(data).hexdigest()
        armoured = _read(root, SIGNATURE, LIMITS.image_signature_bytes)
        section["signature"] = armoured.decode("ascii", "replace")
        signer = _signed_by(data, armoured, image.signers)
        section["signer"] = signer.id
        section["manifest"] = doc = _parse(data)
        _same_os(doc, running)
    except Unverified as exc:
        section["reason"] = str(exc)
        return Identity(section=section, facts=facts)
    section["verified"] = True
    facts.update(image=doc["name"], image_version=doc["version"])
    return Identity(section=section, facts=facts)


def _read(root: str, path: str, limit: int, missing: str = "") -> bytes:
    """The file at `path` under the root, within `limit`; Unverified when it cannot be."""
    try:
        data = filesystem.read_limited(filesystem.under_root(root, path), limit)
    except OSError as exc:
        raise Unverified("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    if data is None:
        raise Unverified("no %s%s" % (path, missing))
    return data


def _signed_by(data: bytes, armoured: bytes, signers: Sequence[ImageSigner]) -> ImageSigner:
    """The image signer whose key made a good `contextd-image` signature over `data`."""
    if not signers:
        raise Unverified("the site policy lists no image signers (image.signers)")
    from contextd import bundle         # its gzip import is a cost only a signed image pays

    try:
        blobs = bundle.decode_signatures(armoured, SIGNATURE)
    except BundleError as exc:
        raise Unverified(exc.message) from None
    why = []
    for blob in blobs:
        if not isinstance(blob, bytes):
            why.append("an X.509 signature (image manifests take SSH signatures only)")
            continue
        try:
            sig = sshsig.parse(blob)
            signer = next((s for s in signers if s.key_blob == sig.public_key), None)
            if signer is None:
                why.append("signed by %s, which is not one of the policy's image signers (%s)"
                           % (sshsig.fingerprint(sig.public_key),
                              ", ".join(s.id for s in signers)))
                continue
            sshsig.verify(sig, data, NAMESPACE)
        except SignatureError as exc:
            why.append(_BAD_SIGNATURE if exc.message == sshsig.BAD_SIGNATURE else exc.message)
            continue
        return signer
    raise Unverified("; ".join(why))


def _parse(data: bytes) -> Dict[str, Any]:
    """The signed manifest as a `contextd.image/v1` document, its fields checked."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Unverified("%s is not JSON: %s" % (MANIFEST, exc)) from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise Unverified("%s is not a %s manifest" % (MANIFEST, SCHEMA))
    for key in ("name", "version"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise Unverified("%s has no %s" % (MANIFEST, key))
    if not isinstance(doc.get("os_release"), dict):
        raise Unverified("%s has no os_release" % MANIFEST)
    return doc


def _same_os(doc: Mapping[str, Any], running: Mapping[str, Optional[str]]) -> None:
    """The manifest describes the OS that is running: an image updated to another release,
    or a manifest copied from another image, does not verify."""
    signed = doc["os_release"]
    differ = [key for key in OS_KEYS if signed.get(key) != running.get(key)]
    if differ:
        raise Unverified("the manifest is for %s but /etc/os-release says %s" % (
            _shown(signed, differ), _shown(running, differ)))


def _shown(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    return " ".join("%s=%s" % (k, values.get(k) if values.get(k) is not None else "(unset)")
                    for k in keys)
