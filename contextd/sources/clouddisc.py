"""The clouds' own discs: an OpenStack config drive (`config-2`) and a NoCloud seed (`cidata`).

Both are read from a `Tree` (an `iso.IsoImage`, a `fat.FatImage`, or a directory through
`directory.Tree`), so `iso:`, `dir:` and the detected block devices recognise them by
content, the same way:

- config drive: `openstack/latest/meta_data.json` (Nova's: `uuid` is the instance id,
  `availability_zone` the zone) and `openstack/latest/user_data`;
- NoCloud: `meta-data` (`instance-id`) and `user-data`, as cloud-init's NoCloud reads them.

Detection (`look`) finds the disc by label, as cloud-init does: udev's /dev/disk/by-label/*
under the root, else the ISO9660 or FAT label read off each block device the kernel lists
(what blkid reads), since udev may not have named the disc yet; no pyudev, no mount.
Nova may write a config drive as vfat, cloud-localds a seed: those are read by contextd.fat.

What this module must never do: mount or execute anything, read past a bound, or parse the
NoCloud `meta-data` as YAML: it is unsigned and read before any signature holds, so only
its `instance-id` line is read, as text (or as JSON when it is a JSON object).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from contextd.errors import SourceError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.sources import Context, userdata

CONFIG_DRIVE, NOCLOUD = "config-drive", "nocloud"
LABELS = {CONFIG_DRIVE: ("config-2", "CONFIG-2"), NOCLOUD: ("cidata", "CIDATA")}
OS_META = "openstack/latest/meta_data.json"
OS_USER_DATA = "openstack/latest/user_data"
NC_META, NC_USER_DATA = "meta-data", "user-data"
MAX_META = LIMITS.cloud_meta_bytes  # contextd/limits.py says why
_ID = Pattern(r"[A-Za-z0-9._:/-]{1,255}\Z")
_NC_ID = Pattern(r"instance-id[ \t]*:[ \t]*(.*?)[ \t]*\Z")


def layout(tree: Any, label: str) -> Optional[str]:
    """config-drive, nocloud, or None: what the disc is, by its label or its content."""
    low = label.lower()
    if low == "config-2" or tree.exists(OS_META):
        return CONFIG_DRIVE
    if low == "cidata" or (tree.exists(NC_META) and tree.exists(NC_USER_DATA)):
        return NOCLOUD
    return None


def from_tree(tree: Any, found: str, location: str, kind: str) -> Tuple[Optional[Context], str]:
    """(context, "") or (None, why not) for a disc `layout` said is `found`."""
    if found == CONFIG_DRIVE:
        meta, data_path, what = OS_META, OS_USER_DATA, "config drive"
    else:
        meta, data_path, what = NC_META, NC_USER_DATA, "NoCloud seed"
    if not tree.exists(meta):
        raise SourceError("%s %s has no %s" % (what, location, meta),
                          "the cloud wrote a broken disc; check the instance's metadata")
    raw = tree.read(meta, limit=MAX_META)
    where = "%s on %s" % (meta, location)
    facts = openstack_facts(raw, where) if found == CONFIG_DRIVE else nocloud_facts(raw, where)
    if not tree.exists(data_path):
        return None, "%s %s has no %s" % (what, location, data_path)
    user_data = tree.read(data_path, limit=userdata.MAX_USER_DATA)
    return userdata.context(user_data, kind, location, "%s on %s" % (data_path, location),
                            facts=facts, details={"disc": found})


def openstack_facts(raw: bytes, where: str) -> Dict[str, Optional[str]]:
    """Nova's meta_data.json (config drive or metadata service): the instance's facts.
    `availability_zone` is the region fact, the one place a payload's targets can see it."""
    import json  # pylint: disable=import-outside-toplevel  (boot-time import cost)

    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SourceError("%s is not JSON" % where,
                          "the cloud wrote a broken meta_data.json") from None
    if not isinstance(doc, dict):
        raise SourceError("%s is not a JSON object" % where)
    return {"cloud": "openstack", "instance_id": _fact(doc.get("uuid"), "uuid", where),
            "region": _fact(doc.get("availability_zone"), "availability_zone", where,
                            required=False)}


def nocloud_facts(raw: bytes, where: str) -> Dict[str, Optional[str]]:
    """The `instance-id` of a NoCloud meta-data: a top-level `instance-id: X` line, or the
    key of a JSON object. Anything else in the file is cloud-init's, not read."""
    text = raw.decode("utf-8", "replace")
    value: Any = None
    if text.lstrip().startswith("{"):
        import json  # pylint: disable=import-outside-toplevel  (boot-time import cost)
        try:
            doc = json.loads(text)
        except ValueError:
            raise SourceError("%s is not JSON" % where) from None
        value = doc.get("instance-id") if isinstance(doc, dict) else None
    else:
        for line in text.splitlines():
            match = _NC_ID.match(line.split(" #", 1)[0].rstrip())
            if match:
                value = match.group(1).strip("'\"")
                break
    return {"cloud": "nocloud", "instance_id": _fact(value, "instance-id", where)}


def _fact(value: Any, name: str, where: str, required: bool = True) -> Optional[str]:
    if value is None or value == "":
        if required:
            raise SourceError("%s has no %s" % (where, name),
                              "the disc must name the instance; rebuild it")
        return None
    if not isinstance(value, str) or not _ID.match(value):
        raise SourceError("%s: %s is not a plain identifier" % (where, name))
    return value


def read_disc(path: str, kind: str, wanted: Optional[str] = None) -> Tuple[Optional[Context], str]:
    """The cloud disc on the image or device `path`, ISO9660 or vfat. `wanted`: the layout
    detection looked for (a disc labelled so must hold it)."""
    with open_disc(path) as image:
        found = layout(image, image.label) or wanted
        if found is None:
            return None, "%s (label %r) is neither a config drive nor a NoCloud seed" % (
                path, image.label[:32])
        return from_tree(image, found, path, kind)


def open_disc(path: str) -> Any:
    """contextd.fat's reader for a vfat disc, else contextd.iso's."""
    if is_fat(path):
        from contextd import fat
        return fat.FatImage(path)
    from contextd import iso
    return iso.IsoImage(path)


def is_fat(path: str) -> bool:
    """Whether `path` (an image file or block device) starts with a FAT boot sector."""
    import stat  # pylint: disable=import-outside-toplevel  (boot-time import cost)

    try:        # O_NONBLOCK: a FIFO must not hang us; the ISO reader then says what it is
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False                            # the ISO reader says what is wrong
    try:
        mode = os.fstat(fd).st_mode
        boot = os.pread(fd, 512, 0) if stat.S_ISREG(mode) or stat.S_ISBLK(mode) else b""
    except OSError:
        boot = b""
    finally:
        os.close(fd)
    if boot[510:512] != b"\x55\xaa":
        return False
    from contextd import fat
    return fat.is_fat(boot)


def look(root: str, which: str) -> Tuple[Optional[Context], str]:
    """Detection: the disc labelled for `which` (config-drive or nocloud) under `root`."""
    dev = find(root, LABELS[which])
    if dev is None:
        return None, "no block device labelled %s" % " or ".join(LABELS[which])
    return read_disc(dev, which, wanted=which)


def find(root: str, labels: Tuple[str, ...]) -> Optional[str]:
    """The device labelled one of `labels`: udev's /dev/disk/by-label link, else the label
    read off each block device the kernel lists (/sys/class/block), as blkid would: udev
    may not have named a disc yet when contextd starts, the kernel has."""
    for label in labels:
        dev = os.path.join(root, "dev/disk/by-label", label)
        if os.path.exists(dev):
            return dev
    try:
        names = sorted(os.listdir(os.path.join(root, "sys/class/block")))
    except OSError:
        return None
    wanted = {label.lower() for label in labels}
    for name in names[:LIMITS.block_devices]:
        dev = os.path.join(root, "dev", name)
        if _label(dev).lower() in wanted:
            return dev
    return None


def _label(dev: str) -> str:
    """The ISO9660 volume id or the FAT label on `dev`; "" when it has neither (or no
    medium, or cannot be read: detection moves on)."""
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return ""
    try:
        boot, pvd = os.pread(fd, 512, 0), os.pread(fd, 80, 16 * 2048)
    except OSError:
        return ""
    finally:
        os.close(fd)
    if pvd[:6] == b"\x01CD001":
        raw = pvd[40:72]
    elif boot[510:512] == b"\x55\xaa" and boot[82:87] == b"FAT32":
        raw = boot[71:82]
    elif boot[510:512] == b"\x55\xaa" and boot[54:57] == b"FAT":
        raw = boot[43:54]
    else:
        return ""
    return raw.decode("ascii", "replace").strip()
