"""Read a small FAT12/16/32 disc (a vfat config drive or NoCloud seed) without mounting.

Nova writes a config drive as vfat when `config_drive_format = vfat` (64 MiB, label
`config-2`), `cloud-localds -f vfat` a NoCloud seed (label `cidata`); both hold a handful of
files under long (VFAT) names. `FatImage` reads those: the boot sector, the directories
and the cluster chains of the files asked for, with the same interface as `iso.IsoImage`
(`label`, `exists`, `read`), so contextd.sources.clouddisc reads either the same way.

What this module must never do: mount, write, or read unbounded: every directory and file
is read through a cluster chain that stops at the disc's cluster count and never visits a
cluster twice (a loop in a hostile FAT ends), a file's size is checked against the caller's
limit before any of it is read, and any malformed structure is a SourceError naming the disc.
"""

from __future__ import annotations

import os
import struct
from typing import Dict, List, Optional, Tuple

from contextd.errors import SourceError
from contextd.limits import LIMITS

_HINT = "ask the cloud for an ISO9660 drive (Nova: config_drive_format = iso9660)"
_LFN, _VOLUME, _DIRECTORY = 0x0F, 0x08, 0x10
_Entry = Tuple[bool, int, int]          # (is a directory, first cluster, size)


def is_fat(boot: bytes) -> bool:
    """Whether a 512-byte boot sector is FAT's (the signature and a FAT type string)."""
    return boot[510:512] == b"\x55\xaa" and (boot[54:57] == b"FAT" or boot[82:87] == b"FAT32")


class FatImage:
    """A FAT disc opened read-only (an image file or a block device). Use as a context
    manager. Paths are '/'-separated, matched case-insensitively, as FAT does."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise SourceError("cannot open %s: %s" % (path, exc.strerror or exc)) from None
        try:
            self._geometry(self._pread(0, 512))
            self._root = self._directory(None)
        except BaseException:
            os.close(self._fd)
            raise

    def __enter__(self) -> FatImage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)

    def _fail(self, problem: str) -> SourceError:
        return SourceError("vfat disc %s: %s" % (self.path, problem), _HINT)

    def _pread(self, offset: int, length: int) -> bytes:
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as exc:
            raise self._fail("cannot read: %s" % (exc.strerror or exc)) from None
        if len(data) != length:
            raise self._fail("it ends before byte %d" % (offset + length))
        return data

    def _geometry(self, boot: bytes) -> None:
        if not is_fat(boot):
            raise self._fail("no FAT boot sector")
        sector, per_cluster, reserved, fats, root_entries, total16 = struct.unpack_from(
            "<HBHBHH", boot, 11)
        fat16, total32 = struct.unpack_from("<H", boot, 22)[0], struct.unpack_from(
            "<I", boot, 32)[0]
        fat_sectors = fat16 or struct.unpack_from("<I", boot, 36)[0]
        if sector not in (512, 1024, 2048, 4096) or per_cluster not in (1, 2, 4, 8, 16, 32, 64,
                                                                         128) \
                or not reserved or fats not in (1, 2) or not fat_sectors:
            raise self._fail("its boot sector's geometry is not FAT's")
        self._sector, self._cluster = sector, sector * per_cluster
        self._fat_at = reserved * sector
        root_sectors = (root_entries * 32 + sector - 1) // sector
        self._root_at = self._fat_at + fats * fat_sectors * sector
        self._data_at = self._root_at + root_sectors * sector
        total = total16 or total32
        self._clusters = (total * sector - self._data_at) // self._cluster
        if self._clusters < 1:
            raise self._fail("it has no data clusters")
        self._bits = 12 if self._clusters < 4085 else 16 if self._clusters < 65525 else 32
        self._root_cluster = struct.unpack_from("<I", boot, 44)[0] if self._bits == 32 else 0
        self._root_bytes = root_entries * 32
        label_at = 71 if self._bits == 32 else 43
        self.label = boot[label_at:label_at + 11].decode("ascii", "replace").strip()

    def _next(self, cluster: int) -> int:
        if self._bits == 12:
            raw = struct.unpack("<H", self._pread(self._fat_at + cluster * 3 // 2, 2))[0]
            return (raw >> 4) if cluster & 1 else (raw & 0xFFF)
        if self._bits == 16:
            return int(struct.unpack("<H", self._pread(self._fat_at + cluster * 2, 2))[0])
        return int(struct.unpack("<I", self._pread(self._fat_at + cluster * 4, 4))[0]) & 0x0FFFFFFF

    def _chain(self, first: int, limit: int) -> bytes:
        """The clusters from `first`, at most `limit` bytes: a loop or a cluster off the
        disc is an error, the end-of-chain mark ends it."""
        out: List[bytes] = []
        seen = set()
        cluster, size = first, 0
        end = {12: 0xFF8, 16: 0xFFF8, 32: 0x0FFFFFF8}[self._bits]
        while 2 <= cluster < end and size < limit:
            if cluster >= self._clusters + 2 or cluster in seen:
                raise self._fail("a cluster chain loops or leaves the disc")
            seen.add(cluster)
            out.append(self._pread(self._data_at + (cluster - 2) * self._cluster, self._cluster))
            size += self._cluster
            cluster = self._next(cluster)
        return b"".join(out)[:limit]

    def _directory(self, first: Optional[int]) -> Dict[str, _Entry]:
        # a directory is bounded as an ISO directory is: the same caps, the same purpose
        if first is None and self._bits != 32:        # FAT12/16: the fixed root area
            data = self._pread(self._root_at, self._root_bytes)
        else:
            data = self._chain(first or self._root_cluster, LIMITS.iso_dir_bytes)
        entries: Dict[str, _Entry] = {}
        long_name: List[str] = []
        for at in range(0, min(len(data), 32 * LIMITS.iso_dir_records), 32):
            raw = data[at:at + 32]
            if raw[0] == 0:
                break
            attr = raw[11]
            if raw[0] == 0xE5:
                long_name = []
            elif attr == _LFN:
                piece = (raw[1:11] + raw[14:26] + raw[28:32]).decode("utf-16-le", "replace")
                long_name.insert(0, piece.split("\x00", 1)[0])
            elif not attr & _VOLUME:
                name = "".join(long_name) or _short_name(raw)
                long_name = []
                cluster = struct.unpack_from("<H", raw, 26)[0] | (
                    struct.unpack_from("<H", raw, 20)[0] << 16 if self._bits == 32 else 0)
                entries[name.lower()] = (bool(attr & _DIRECTORY), cluster,
                                         struct.unpack_from("<I", raw, 28)[0])
        return entries

    def _find(self, rel: str) -> Optional[_Entry]:
        entries, found = self._root, None
        parts = [p for p in rel.split("/") if p]
        for depth, part in enumerate(parts):
            found = entries.get(part.lower())
            if found is None or part in (".", ".."):
                return None
            if depth < len(parts) - 1:
                if not found[0]:
                    return None
                entries = self._directory(found[1])
        return found

    def exists(self, rel: str) -> bool:
        return self._find(rel) is not None

    def read(self, rel: str, limit: int = LIMITS.iso_file_bytes) -> bytes:
        found = self._find(rel)
        if found is None or found[0]:
            raise self._fail("%s is not a file on it" % rel)
        if found[2] > limit:
            raise SourceError("%s on %s is %d bytes, over the limit of %d"
                              % (rel, self.path, found[2], limit))
        data = self._chain(found[1], found[2]) if found[2] else b""
        if len(data) != found[2]:
            raise self._fail("%s is shorter than its directory entry says" % rel)
        return data


def _short_name(raw: bytes) -> str:
    base = raw[0:8].decode("ascii", "replace").rstrip()
    ext = raw[8:11].decode("ascii", "replace").rstrip()
    return base + ("." + ext if ext else "")
