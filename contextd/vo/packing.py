"""The VO side: put a bundle on a carrier (a context ISO, or EC2 user-data).

It writes files only through the ISO writer or an atomic write, and refuses carriers a
platform would truncate (EC2 user-data above 16 KiB). It must never be imported on the boot
path (see `contextd.vo`).
"""

from __future__ import annotations

import gzip
import os
from typing import Dict, Sequence

from contextd import bundle, filesystem
from contextd.limits import LIMITS
from contextd.vo import armor
from contextd.errors import SigningError, UsageError



def iso_files(bundle_data: bytes, extra: Sequence[str] = ()) -> Dict[str, bytes]:
    parsed = bundle.decode(bundle_data)
    files = {
        "contextd/payload.yaml": parsed.payload,
        "contextd/payload.yaml.sig": "".join(
            armor.armor_signatures(parsed.ssh_signatures)).encode("ascii"),
    }
    for item in extra:
        rel, sep, path = item.partition("=")
        if not sep or not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise UsageError("--file %r is not REL=PATH with a relative REL" % item)
        try:        # never a FIFO (open would hang) or a device (it never ends)
            data = filesystem.read_limited(path, LIMITS.listed_file_bytes)
        except OSError as exc:
            raise UsageError("--file: cannot read %s: %s" % (path, exc.strerror or exc)) from None
        if data is None:
            raise UsageError("--file: %s does not exist" % path)
        files[rel] = data
    return files


def pack_iso(bundle_data: bytes, output: str, extra: Sequence[str] = (),
             label: str = "CONTEXT") -> None:
    from contextd.vo import isowriter

    isowriter.write_iso(iso_files(bundle_data, extra), output, label=label)


def pack_user_data(bundle_data: bytes, output: str) -> int:
    bundle.decode(bundle_data)                       # refuse to ship something unreadable
    plain = bundle.gunzip(bundle_data) if bundle.is_gzip(bundle_data) else bundle_data
    packed = gzip.compress(plain, compresslevel=9, mtime=0)
    data = packed if len(packed) < len(plain) else plain
    if len(data) > LIMITS.ec2_user_data_bytes:
        raise SigningError("user-data would be %d bytes, above EC2's limit of %d"
                           % (len(data), LIMITS.ec2_user_data_bytes),
                           "shrink the payload or ship it on a context ISO instead")
    try:
        filesystem.atomic_write(os.path.abspath(output), data, 0o644)
    except OSError as exc:
        raise UsageError("cannot write user-data %s: %s" % (output, exc.strerror or exc)
                         ) from None
    return len(data)
