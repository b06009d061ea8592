"""Image identity (DESIGN section 11): the image's signed manifest.

Two sides, kept apart: `identity` is the boot side (read the manifest under the root, verify
it against the policy's image signers, say so in the report and the facts); `build` and
`packages` are the site's image factory side (`contextd image sign`), which the boot path
never imports: a VM verifies its manifest, it never holds the image-signing key. `tool` holds
the two commands, `image sign` and `image show`. This module holds only the names both sides share.
"""

from __future__ import annotations

SCHEMA = "contextd.image/v1"
NAMESPACE = "contextd-image"          # the SSHSIG namespace: never a payload's
MANIFEST = "/etc/contextd/image.json"
SIGNATURE = MANIFEST + ".sig"
# os-release keys a manifest records and a boot compares with the running image's.
OS_KEYS = ("ID", "VERSION_ID", "IMAGE_ID", "IMAGE_VERSION")
