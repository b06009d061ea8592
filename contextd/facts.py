"""Host facts: what a run knows about this machine, for targets and the once-per-instance state.

Facts come from the carrier (cloud, region, instance and image ids), from the policy (the
site) and from the image's verified manifest (image name and version); the hostname from the
kernel. It must never let the platform name the site (the policy's word alone) or the image
(the signed manifest's). It reads nothing but /etc/machine-id under the root.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

from contextd import filesystem

NAMES = ("cloud", "region", "instance_id", "image_id")   # what a carrier may tell
IMAGE = ("image", "image_version")                       # what only a verified manifest tells


def facts_for(site: Optional[str], carrier: Mapping[str, Optional[str]],
              hostname: str, image: Optional[Mapping[str, Optional[str]]] = None
              ) -> Dict[str, Optional[str]]:
    """The facts authorize matches targets against: the carrier's known ones, the site, the
    hostname, and `image`/`image_version` from a verified image manifest (contextd.image.
    identity; None where it did not verify). Anything else a carrier says is dropped."""
    facts: Dict[str, Optional[str]] = dict.fromkeys(NAMES)
    facts.update({k: v for k, v in carrier.items() if k in facts})
    facts["site"] = site                # the site is the policy's word, never the platform's
    facts["hostname"] = hostname
    for name in IMAGE:                  # the signed manifest's word, never the carrier's
        facts[name] = (image or {}).get(name)
    return facts


def instance_key(root: str, facts: Mapping[str, Optional[str]]) -> str:
    """Whose history this is: the cloud's instance id, else the image's machine id."""
    if facts.get("instance_id"):
        return "instance:%s" % facts["instance_id"]
    try:
        machine = filesystem.read_limited(filesystem.under_root(root, "/etc/machine-id"), 256)
    except OSError:
        machine = None
    return "machine:%s" % (machine or b"unknown").decode("ascii", "replace").strip()
