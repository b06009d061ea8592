"""`contextd image sign` and `contextd image show`: the commands of the image factory.

`show` says what a boot would report as `host.image`: the manifest under the root and
whether it verifies against a policy (the one given, else the image's own). It must never
print a verdict other than the boot's: it calls the boot side's `identify`, nothing else.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, Optional, Tuple

from contextd import filesystem, paths, report
from contextd.errors import EXIT_OK, EXIT_REJECTED, UsageError
from contextd.image import MANIFEST, identity
from contextd.settings import ImageSettings


def sign_command(args: Any) -> int:
    from contextd.image import build

    try:
        key = filesystem.read_limited(args.key, 64 * 1024)
    except OSError as exc:
        raise UsageError("cannot read key %s: %s" % (args.key, exc.strerror or exc)) from None
    if key is None:
        raise UsageError("key file %s does not exist" % args.key)
    done = build.sign(args.key, key, args.root, args.name, args.version,
                      build_id=args.build_id, site=args.site)
    for note in done.notes:
        print("contextd: note: %s" % note, file=sys.stderr)
    print("contextd: signed image %s %s -> %s, %s" % (
        args.name, args.version, done.manifest_path, done.signature_path), file=sys.stderr)
    return EXIT_OK


def show(root: str, policy_path: Optional[str]) -> Dict[str, Any]:
    """host.image as a boot under this root and policy would report it, and the policy used."""
    image, used = _image_settings(root, policy_path)
    shown = report.os_release(root)
    return dict(shown, **identity.identify(root, image, shown).section, policy=used)


def _image_settings(root: str, policy_path: Optional[str]
                    ) -> Tuple[ImageSettings, Optional[str]]:
    from contextd import policy

    if policy_path is not None:
        return policy.load(policy_path).image, policy_path
    path = filesystem.under_root(root, policy.DEFAULT_PATH)
    if not os.path.exists(path):
        return ImageSettings(), None
    return policy.load(path).image, path


def show_command(args: Any) -> int:
    # A root that is not a directory is the user's mistake (exit 2), not an unsigned image.
    paths.existing_dir(args.root, "--root")
    out = show(args.root, args.policy)
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        _print(out)
    return EXIT_OK if out["verified"] else EXIT_REJECTED


def _print(out: Dict[str, Any]) -> None:
    doc = out["manifest"] or {}
    print("manifest:  %s%s" % (MANIFEST, " (sha256 %s)" % out["manifest_sha256"]
                               if out["manifest_sha256"] else " (none)"))
    if doc:
        print("image:     %s %s, build %s, built %s, site %s" % (
            doc.get("name"), doc.get("version"), doc.get("build_id"), doc.get("built_at"),
            doc.get("site")))
        pk = doc.get("packages") or {}
        print("packages:  %s, %s packages, sha256 %s" % (pk.get("db"), pk.get("count"),
                                                        pk.get("sha256")))
    print("os:        ID=%s VERSION_ID=%s IMAGE_ID=%s IMAGE_VERSION=%s BUILD_ID=%s" % (
        out["os_id"], out["os_version_id"], out["os_image_id"], out["os_image_version"],
        out["os_build_id"]))
    print("policy:    %s" % (out["policy"] or "none (no image signers to verify against)"))
    if out["verified"]:
        print("verified:  yes, signed by %s" % out["signer"])
    else:
        print("verified:  NO: %s" % out["reason"])
