"""`contextd image sign`: the site's image factory signs the image's manifest (DESIGN section 11).

Run at image build (Packer, virt-customize, a kickstart %post) against the image's root, with
or without contextd installed in it: it builds the manifest (schema `contextd.image/v1`) from
the root's os-release and package list, signs its canonical JSON bytes with the project's own
SSHSIG signer (namespace `contextd-image`, checkable with `ssh-keygen -Y verify`), and writes
/etc/contextd/image.json and image.json.sig under the root, atomically, mode 0644.

What it must never do: be imported on the boot path (contextd.vo is the signing side), write
outside the root or through a symlink there, or sign a manifest that claims what the root
does not hold (its os-release and packages are read, never given).
"""

from __future__ import annotations

import datetime
import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from contextd import filesystem, report
from contextd.errors import SigningError, UsageError
from contextd.image import MANIFEST, NAMESPACE, OS_KEYS, SCHEMA, SIGNATURE, packages
from contextd.record import record

_LABEL = re.compile(r"[^\x00-\x1f\x7f]{1,128}")     # a name, version or build id: one line
POLICY = "/etc/contextd/policy.yaml"


@record(frozen=True)
class Signed:
    """What `sign` wrote, for the command's message."""

    manifest_path: str
    signature_path: str
    manifest: Dict[str, Any]
    notes: List[str]


def canonical(doc: Dict[str, Any]) -> bytes:
    """The manifest's signed bytes: JSON, sorted keys, no spaces, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def built_at() -> str:
    """Now, or SOURCE_DATE_EPOCH for a reproducible build."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
            if epoch.isdigit() else datetime.datetime.now(datetime.timezone.utc))
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest(root: str, name: str, version: str, build_id: Optional[str],
             site: Optional[str]) -> Dict[str, Any]:
    """The manifest of the image under `root` (a document, not yet bytes)."""
    for what, value in (("--name", name), ("--version", version), ("--build-id", build_id),
                        ("--site", site)):
        if value is not None and not _LABEL.fullmatch(value):
            raise UsageError("%s %r must be 1 to 128 characters, no control characters"
                             % (what, value))
    shown = report.os_release(root)
    os_release = {key: shown[report.OS_RELEASE[key]] for key in OS_KEYS}
    listed, ours = packages.listing(root)
    return {"schema": SCHEMA, "site": site, "name": name, "version": version,
            "build_id": build_id if build_id is not None else shown["os_build_id"],
            "built_at": built_at(), "os_release": os_release, "packages": listed,
            "contextd_version": ours}


def sign(key_path: str, key_data: bytes, root: str, name: str, version: str,
         build_id: Optional[str] = None, site: Optional[str] = None) -> Signed:
    """Build, sign and write the manifest of the image under `root`."""
    from contextd.trust import sshsig
    from contextd.vo import sshsign

    if not os.path.isdir(root):
        raise UsageError("image root %s is not a directory" % root,
                         "give the mounted image's root, e.g. --root /mnt/image")
    notes: List[str] = []
    signers = _image_policy_signers(root, notes)
    if site is None and signers:
        site = signers[0]
    doc = manifest(root, name, version, build_id, site)
    data = canonical(doc)
    blob = sshsign.sign(key_data, data, namespace=NAMESPACE, key_name=key_path)
    keys = signers[1] if signers else None
    if keys is not None and sshsig.parse(blob).public_key not in keys:
        notes.append("the image's own policy (%s) does not list this key under "
                     "image.signers: the manifest will not verify at boot" % POLICY)
    paths = []
    for path, content in ((MANIFEST, data), (SIGNATURE, sshsign.armor(blob).encode("ascii"))):
        host = os.path.join(os.path.abspath(root), path.lstrip("/"))
        try:
            filesystem.ensure_dir(os.path.dirname(host), 0o755, root=root)
            filesystem.atomic_write(host, content, 0o644, 0, 0, root=root)
        except OSError as exc:
            raise SigningError("cannot write %s: %s" % (host, exc.strerror or exc),
                               "the image root must be writable (run as root?)") from None
        paths.append(host)
    return Signed(manifest_path=paths[0], signature_path=paths[1], manifest=doc, notes=notes)


def _image_policy_signers(root: str, notes: List[str]
                          ) -> Optional[Tuple[str, List[bytes]]]:
    """(site, image signer keys) from the image's own policy, None when it has none."""
    from contextd import policy

    path = filesystem.under_root(root, POLICY)
    if not os.path.exists(path):
        notes.append("the image has no %s yet: the site is only what --site says, and "
                     "the policy installed later must list this key under image.signers"
                     % POLICY)
        return None
    pol = policy.load(path, check_owner=False)
    return pol.site, [s.key_blob for s in pol.image.signers]
