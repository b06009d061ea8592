"""What the platform tells the image before any network is touched: DMI, as ds-identify reads it.

`/sys/class/dmi/id/{sys_vendor,product_name,chassis_asset_tag}` (under the root) say whose
hypervisor this is. Detection asks `ruled_out` before probing a network metadata source, so
a source that cannot be there costs three small file reads, not its budget. The rules are
cloud-init's tools/ds-identify: GCE is product `Google Compute Engine` (or vendor `Google`);
OpenStack is product `OpenStack Nova`/`OpenStack Compute` or one of the public clouds'
asset tags. With no DMI at all (non-x86, a container) nothing is ruled out: the budget is
then the bound. `ec2` and `url` are never ruled out: EC2-compatible metadata runs on many
platforms, and a URL is wherever the site says.

What this module must never do: read anything but these files, or rule a source out on a
guess: only a platform that names itself as something else rules a source out.
"""

from __future__ import annotations

from typing import Dict, Optional

FIELDS = ("sys_vendor", "product_name", "chassis_asset_tag")
_OPENSTACK_PRODUCTS = ("OpenStack Nova", "OpenStack Compute")
_OPENSTACK_TAGS = ("OpenTelekomCloud", "HUAWEICLOUD", "SAP CCloud VM", "Samsung Cloud Platform",
                   "OpenStack Nova", "OpenStack Compute")


def read(root: str) -> Dict[str, str]:
    """The DMI fields present under `root`, stripped; {} when the platform has no DMI."""
    from contextd import filesystem

    out: Dict[str, str] = {}
    for name in FIELDS:
        try:
            raw = filesystem.read_limited(
                filesystem.under_root(root, "/sys/class/dmi/id/" + name), 256)
        except OSError:
            raw = None
        if raw is not None:
            out[name] = raw.decode("ascii", "replace").strip()
    return out


def ruled_out(source: str, dmi: Dict[str, str]) -> Optional[str]:
    """Why `source` cannot be on this platform, or None when it may be."""
    if not any(dmi.values()):
        return None
    product = dmi.get("product_name", "")
    if source == "gce":
        if product == "Google Compute Engine" or dmi.get("sys_vendor") == "Google":
            return None
    elif source == "openstack":
        if product in _OPENSTACK_PRODUCTS or dmi.get("chassis_asset_tag") in _OPENSTACK_TAGS:
            return None
    else:
        return None
    return "skipped: DMI says this is %s" % _describe(dmi)


def _describe(dmi: Dict[str, str]) -> str:
    shown = ", ".join("%s %r" % (k, "".join(c for c in v[:40] if c.isprintable()))
                      for k, v in sorted(dmi.items()) if v)
    return shown or "no cloud it knows"
