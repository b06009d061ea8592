"""Host facts: what a run knows about this machine, for targets and the once-per-instance state.

Facts come from the carrier (cloud, region, instance and image ids) and from the policy (the
site); the hostname from the kernel. It must never let the platform name the site: that is
the policy's word alone. It reads nothing but /etc/machine-id under the root.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

from contextd import filesystem

NAMES = ("cloud", "region", "instance_id", "image_id")   # what a carrier may tell


def facts_for(site: Optional[str], carrier: Mapping[str, Optional[str]],
              hostname: str) -> Dict[str, Optional[str]]:
    """The facts authorize matches targets against: the carrier's known ones, the site, the
    hostname. Anything else a carrier says is dropped."""
    facts: Dict[str, Optional[str]] = dict.fromkeys(NAMES)
    facts.update({k: v for k, v in carrier.items() if k in facts})
    facts["site"] = site                # the site is the policy's word, never the platform's
    facts["hostname"] = hostname
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
