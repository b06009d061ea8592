"""Read context ISO images in the VM, without mounting and without pycdlib (the boot side).

A context CD-ROM (HEPiX / OpenNebula convention, label ``CONTEXT``) is ISO9660 with Joliet
and Rock Ridge long names. ``IsoImage`` reads one, from an image file or straight from a block
device such as ``/dev/sr0``, by parsing the on-disc structures itself: it runs at every boot,
where pycdlib's import and open cost too much, and it must stay bounded on a hostile disc.
The VO-side writer (``contextd.vo.isowriter``, with pycdlib) shares only the name mangling
below, so what it writes is what this finds.

What this module must never do:

- never mount anything: the image is parsed in user space, so a hostile disc cannot reach the
  kernel's filesystem code and nothing needs cleaning up after a crash;
- never execute or source anything it reads: it hands back bytes, parsing is someone else's job;
- never read unbounded: every file's size is checked against a limit *before* its data is
  read, and only that many bytes are read; directories, Rock Ridge continuation areas and
  volume descriptors are read within fixed budgets, and nothing is followed twice;
- never let a parsing or I/O exception escape on hostile input: whatever the disc does,
  callers see a ``SourceError`` whose message names the image;
- never import pycdlib or the writer.

Long because Ecma-119, Joliet and SUSP/Rock Ridge are one on-disc format read in one pass by
one class, under one set of read budgets (limits.py); split, those budgets and the cursor
that enforces them would be shared across modules.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from typing import BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple

from contextd.errors import SourceError
from contextd.limits import LIMITS
from contextd.patterns import Pattern

_HASH_CHUNK = 1024 * 1024

_REBUILD_HINT = "rebuild it with contextd pack iso or genisoimage -V CONTEXT -J -R"

# ISO9660 name limits (Ecma-119 7.5, 7.6; interchange level 3): the writer mangles to them,
# the reader mangles a wanted name the same way to find it in a plain ISO9660 tree.
_ISO_FILE_MAX = 30     # name + extension, without the "." and ";1"
_ISO_DIR_MAX = 31
_NOT_D_CHAR = Pattern(r"[^A-Z0-9_]")
_VERSION_RE = Pattern(r";[0-9]*\Z")

# Smallest thing that can be ISO9660: 16 system-area sectors, the PVD and a terminator.
_MIN_ISO_BYTES = 18 * 2048
_MULTI_EXTENT = 0x80  # directory record file flag: more records follow for this file
_DIRECTORY = 0x02     # directory record file flag: a directory

# Name sets, in lookup order.
_RR, _JOLIET, _ISO = "rock-ridge", "joliet", "iso9660"


class _BadImage(ValueError):
    """A structural problem our own checks found (the message says it all)."""


def short_reason(exc: BaseException) -> str:
    """A short, one-line description of an exception raised on hostile input."""
    text = " ".join(str(exc).split())
    if not text:
        text = type(exc).__name__
    elif not isinstance(exc, _BadImage) and not type(exc).__module__.startswith("pycdlib"):
        text = "%s: %s" % (type(exc).__name__, text)
    if len(text) > 160:
        text = text[:157] + "..."
    return text


# --------------------------------------------------------------------------------------
# Names


def _split_rel(rel: str) -> List[str]:
    """'contextd/payload.yaml' -> ['contextd', 'payload.yaml'] (lenient: used for lookups)."""
    return [part for part in rel.split("/") if part not in ("", ".")]


def mangle_file(name: str, used: Optional[set] = None) -> str:
    """An ISO9660 level-3 file identifier (without ';1') for a long name, unique in `used`.

    Upper-cased, anything but A-Z 0-9 _ becomes _, the last dot separates the extension,
    name + extension <= 30 characters. Collisions get a _N suffix on the name part.
    """
    base, dot, ext = name.rpartition(".")
    if not dot:
        base, ext = name, ""
    base = _NOT_D_CHAR.sub("_", base.upper())
    ext = _NOT_D_CHAR.sub("_", ext.upper())[:8]
    if not base and not ext:  # pragma: no cover - names are validated non-empty
        base = "_"
    base = base[: _ISO_FILE_MAX - len(ext)]
    candidate = "%s.%s" % (base, ext)
    counter = 0
    while used is not None and iso_key(candidate) in used:
        counter += 1
        suffix = "_%d" % counter
        candidate = "%s%s.%s" % (base[: _ISO_FILE_MAX - len(ext) - len(suffix)], suffix, ext)
    return candidate


def mangle_dir(name: str, used: Optional[set] = None) -> str:
    """An ISO9660 level-3 directory identifier for a long name, unique in `used`."""
    base = _NOT_D_CHAR.sub("_", name.upper())[:_ISO_DIR_MAX]
    candidate = base
    counter = 0
    while used is not None and iso_key(candidate) in used:
        counter += 1
        suffix = "_%d" % counter
        candidate = base[: _ISO_DIR_MAX - len(suffix)] + suffix
    return candidate


def _mangle_8_3(name: str, is_dir: bool) -> str:
    """What genisoimage makes of a name at its default interchange level 1 (8.3)."""
    if is_dir:
        return _NOT_D_CHAR.sub("_", name.upper())[:8]
    base, dot, ext = name.rpartition(".")
    if not dot:
        base, ext = name, ""
    base = _NOT_D_CHAR.sub("_", base.upper())[:8]
    ext = _NOT_D_CHAR.sub("_", ext.upper())[:3]
    return "%s.%s" % (base, ext) if ext else base


def iso_key(identifier: str) -> str:
    """Compare ISO9660 identifiers the way a reader does: no ';1', no trailing '.', any case."""
    return _VERSION_RE.sub("", identifier).rstrip(".").upper()


def _iso_display(identifier: str) -> str:
    """How Linux shows a plain ISO9660 name (map=normal): no ';1', no trailing '.', lower case."""
    return _VERSION_RE.sub("", identifier).rstrip(".").lower()


# --------------------------------------------------------------------------------------
# Reading
#
# The read side is a small ISO9660 reader of its own (Ecma-119, Joliet, SUSP / Rock Ridge),
# not pycdlib: it runs at every boot, where importing and opening pycdlib cost about a third
# of the whole run's time budget, and it has to stay bounded on a hostile disc (upstream
# pycdlib loops forever on directory trees that loop). It reads only what a context ISO needs:
# names, directories and single-extent files.

_SECTOR = 2048  # volume descriptors are one sector each; no directory record crosses one
_ROOT_RECORD = slice(156, 190)  # the root directory record inside a volume descriptor
_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")  # UCS-2 levels 1, 2 and 3
_RRIP_IDS = (b"RRIP_1991A", b"IEEE_P1282", b"IEEE_1282")  # ER identifiers of Rock Ridge
_NM_CONTINUE = 0x01  # Rock Ridge NM flag: the name goes on in the next NM entry


def _open_source(path: str) -> BinaryIO:
    """Open an image file or block device for reading, refusing anything else.

    O_NONBLOCK (as blkid does) so that a FIFO cannot hang us and a CD-ROM drive without a
    disc opens instead of blocking; reads then fail, and are reported, like any other.
    """
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise SourceError(
            "cannot open context ISO %s: %s" % (path, exc.strerror or exc),
            hint="check the path and that the disc or image is present and readable",
        ) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a file or block device"
            raise SourceError(
                "cannot read context ISO %s: it is %s" % (path, kind),
                hint="give the path of an ISO image file or of the CD-ROM device",
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class _RockRidge:
    """What contextd uses of one record's Rock Ridge entries."""

    __slots__ = ("child_link", "name", "relocated", "symlink")

    def __init__(self) -> None:
        self.name = b""         # NM: the POSIX name; empty when there is none
        self.symlink = False    # SL: a symbolic link, refused when read
        self.relocated = False  # RE: a deep directory moved to rr_moved, shown at its CL
        self.child_link: Optional[int] = None  # CL: extent of the directory this stands for


class _Record:
    """One directory record: the fields lookups and reads use."""

    __slots__ = ("children", "extent", "flags", "ident", "interleaved", "rock_ridge", "size")

    def __init__(self, raw: bytes):
        self.ident = raw[33:33 + raw[32]]
        # Where the data starts: an extended attribute record, when there is one, comes first
        # in the extent (its length in blocks is byte 1).
        self.extent = struct.unpack_from("<I", raw, 2)[0] + raw[1]
        self.size = struct.unpack_from("<I", raw, 10)[0]
        self.flags = raw[25]
        self.interleaved = bool(raw[26] or raw[27])  # file unit size, interleave gap
        self.rock_ridge: Optional[_RockRidge] = None  # ISO9660 tree of a Rock Ridge image
        self.children: Sequence[_Record] = ()  # a directory's records, '.' and '..' left out


def _system_use(raw: bytes) -> bytes:
    """A directory record's System Use area: after the identifier and its padding byte."""
    length = raw[32]
    return raw[33 + length + (1 - length % 2):]


class _Entry:
    """One directory entry in one name set: its name and its directory record."""

    __slots__ = ("is_dir", "name", "record")

    def __init__(self, name: str, record: _Record, is_dir: bool):
        self.name = name
        self.record = record
        self.is_dir = is_dir


class IsoImage:
    """A context ISO opened read-only, without mounting, on an image file or block device.

    Use as a context manager. Lookups take '/'-separated relative paths and try the Rock
    Ridge names (case-sensitive), then Joliet, then plain ISO9660 (case-insensitive,
    ignoring ';1' and the usual name mangling). Not thread-safe.

    Opening reads the volume descriptors and every directory (bounded: see _read_tree),
    so lookups never touch the disc again; only file data is read later, on demand.
    """

    def __init__(self, path: str):
        self.path = path
        self.label = ""
        self._fp: Optional[BinaryIO] = None
        self._size = 0
        self._block = 2048
        self._roots: List[Tuple[str, _Record]] = []
        self._rr_skip: Optional[int] = None  # SUSP len_skp when the image has Rock Ridge
        self._directories: Dict[int, _Record] = {}  # ISO9660 tree: extent -> directory
        self._dir_bytes_left = 0
        self._ce_left = LIMITS.iso_ce_areas
        fp = _open_source(path)
        try:
            try:
                self._size = fp.seek(0, os.SEEK_END)
                fp.seek(0)
            except Exception as exc:  # pylint: disable=broad-except
                raise self._failure(exc) from exc
            if self._size == 0:
                raise self._broken("it is empty (no disc in the drive?)")
            if self._size < _MIN_ISO_BYTES:
                raise self._broken("it is only %d bytes, less than the smallest ISO9660 "
                                   "image" % self._size)
            self._fp = fp
            try:
                self._load()
            except SourceError:
                raise
            except Exception as exc:  # pylint: disable=broad-except
                raise self._failure(exc) from exc
        except BaseException:
            self._fp = None
            fp.close()
            raise

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> IsoImage:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        fp, self._fp = self._fp, None
        if fp is not None:
            try:  # noqa: SIM105 - boot path: no contextlib import for this
                fp.close()
            except OSError:
                pass

    # -- public lookups --------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        """Whether `rel` (a file or directory) is on the image."""
        return self._resolve(rel) is not None

    def listdir(self, rel: str = "") -> List[str]:
        """Sorted names in directory `rel`, in the best name set the image has."""
        found = self._resolve(rel)
        if found is None:
            raise SourceError("context ISO %s has no directory %s" % (self.path, rel or "/"))
        names, entry = found
        if not entry.is_dir:
            raise SourceError("context ISO %s: %s is a file, not a directory" % (self.path, rel))
        return sorted(child.name for child in self._guard(self._children, names, entry.record))

    def read(self, rel: str, limit: int = LIMITS.iso_file_bytes) -> bytes:
        """The bytes of file `rel`; SourceError if it is missing or larger than `limit`."""
        names, entry = self._file(rel)
        return self._guard(self._read_record, names, rel, entry.record, limit)

    def _file(self, rel: str) -> Tuple[str, _Entry]:
        found = self._resolve(rel)
        if found is None:
            raise SourceError("context ISO %s has no file %s" % (self.path, rel))
        names, entry = found
        if entry.is_dir:
            raise SourceError("context ISO %s: %s is a directory, not a file" % (self.path, rel))
        return names, entry

    def sha256(self, rel: str, limit: int) -> str:
        """The SHA-256 of file `rel`, streamed: memory stays flat whatever its size."""
        names, entry = self._file(rel)
        return self._guard(self._hash_record, names, rel, entry.record, limit)

    # -- internals: errors -----------------------------------------------------------

    def _broken(self, reason: str) -> SourceError:
        return SourceError("context ISO %s is truncated or not ISO9660: %s"
                           % (self.path, reason), hint=_REBUILD_HINT)

    def _failure(self, exc: Exception) -> SourceError:
        if isinstance(exc, OSError) and exc.errno is not None:
            return SourceError(
                "cannot read context ISO %s: %s" % (self.path, exc.strerror or exc),
                hint="check that the disc or image is present and readable",
            )
        return self._broken(short_reason(exc))

    def _guard(self, func, *args):
        """Call into the parsed structures or the device; only SourceError comes out."""
        if self._fp is None:
            raise ValueError("IsoImage %s is closed" % self.path)
        try:
            return func(*args)
        except SourceError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            raise self._failure(exc) from exc

    # -- internals: reading the structures at open -------------------------------------

    def _read_at(self, offset: int, length: int) -> bytes:
        """`length` bytes of metadata at `offset` (callers check they lie in the image)."""
        fp = self._fp
        assert fp is not None, "read while closed"  # _load and _guard run only while open
        fp.seek(offset)
        data = fp.read(length)
        if len(data) != length:
            raise _BadImage("read %d of %d bytes at byte %d" % (len(data), length, offset))
        return data

    def _load(self) -> None:
        pvd, joliet = self._volume_descriptors()
        block = struct.unpack_from("<H", pvd, 128)[0]
        if block not in (512, 1024, 2048):
            raise _BadImage("its logical block size is %d, not 512, 1024 or 2048" % block)
        self._block = block
        # Files and directories are bounds-checked against the image itself; this catches
        # a truncated image early, with a message that says so.
        declared = struct.unpack_from("<I", pvd, 80)[0] * block
        if declared > self._size:
            raise self._broken(
                "its volume descriptor says %d bytes but it has only %d" % (declared, self._size)
            )
        self.label = pvd[40:72].decode("utf-8", "replace").strip(" \x00")
        iso_root = self._read_tree(pvd, iso9660=True)
        roots: List[Tuple[str, _Record]] = []
        if self._rr_skip is not None:
            roots.append((_RR, iso_root))
        if joliet is not None:
            roots.append((_JOLIET, self._read_tree(joliet, iso9660=False)))
        roots.append((_ISO, iso_root))
        self._roots = roots

    def _volume_descriptors(self) -> Tuple[bytes, Optional[bytes]]:
        """The primary and (if any) the Joliet volume descriptor, read from sector 16 on."""
        pvd = joliet = None
        for index in range(LIMITS.iso_volume_descriptors):
            offset = (16 + index) * _SECTOR
            if offset + _SECTOR > self._size:
                break
            vd = self._read_at(offset, _SECTOR)
            if vd[1:6] != b"CD001":
                break
            if vd[0] == 255:  # the set terminator
                if pvd is None:
                    break
                return pvd, joliet
            if vd[0] == 1 and pvd is None:
                pvd = vd
            # Joliet: a supplementary descriptor (type 2) with a UCS-2 escape sequence and
            # flags bit 0 clear (only registered escape sequences).
            elif vd[0] == 2 and joliet is None and not vd[7] & 1 and vd[88:91] in _JOLIET_ESCAPES:
                joliet = vd
        if pvd is None:
            raise _BadImage("it has no ISO9660 primary volume descriptor at sector 16")
        raise _BadImage("its volume descriptors do not end with a set terminator")

    def _read_tree(self, vd: bytes, iso9660: bool) -> _Record:
        """Read the whole directory tree of volume descriptor `vd`; return its root.

        Each directory extent is entered once: a record pointing back at an ancestor (or
        anywhere already read) is a loop and refused, so are more than LIMITS.iso_dir_records
        records or LIMITS.iso_dir_bytes of directories. In the ISO9660 tree (`iso9660`)
        this also finds Rock Ridge, on the root's '.' record, and reads each record's.
        """
        root = _Record(vd[_ROOT_RECORD])
        root.flags |= _DIRECTORY
        pending = [root]
        visited = {root.extent}
        records = 0
        self._dir_bytes_left = LIMITS.iso_dir_bytes
        while pending:
            directory = pending.pop()
            children: List[_Record] = []
            directory.children = children
            for raw in self._directory_records(directory):
                records += 1
                if records > LIMITS.iso_dir_records:
                    raise _BadImage("more than %d directory records" % LIMITS.iso_dir_records)
                record = _Record(raw)
                if record.ident in (b"\x00", b"\x01"):  # '.' and '..'
                    if iso9660 and records == 1 and record.ident == b"\x00":
                        self._detect_rock_ridge(_system_use(raw))
                    continue
                if iso9660 and self._rr_skip is not None:
                    record.rock_ridge = self._rock_ridge(_system_use(raw)[self._rr_skip:])
                children.append(record)
                if record.flags & _DIRECTORY:
                    if record.extent in visited:
                        raise _BadImage("directory records form a loop (extent %d)" % record.extent)
                    visited.add(record.extent)
                    pending.append(record)
                    if iso9660:
                        self._directories[record.extent] = record
        return root

    def _directory_records(self, directory: _Record) -> Iterator[bytes]:
        """The raw records of `directory`, read sector by sector (none crosses a sector)."""
        start = directory.extent * self._block
        end = start + directory.size
        if end > self._size:
            raise _BadImage(
                "a directory at extent %d runs past the end of the image" % directory.extent
            )
        self._dir_bytes_left -= directory.size
        if self._dir_bytes_left < 0:
            raise _BadImage("more than %d bytes of directories" % LIMITS.iso_dir_bytes)
        pos = start
        while pos < end:
            stop = min(end, (pos // _SECTOR + 1) * _SECTOR)
            data = self._read_at(pos, stop - pos)
            offset = 0
            # A zero length byte ends the records in this sector: the rest is padding.
            while offset < len(data) and data[offset]:
                length = data[offset]
                if (length < 34 or offset + length > len(data) or not data[offset + 32]
                        or 33 + data[offset + 32] > length):
                    raise _BadImage(
                        "a directory at extent %d holds a malformed record" % directory.extent
                    )
                yield data[offset:offset + length]
                offset += length
            pos = stop

    def _detect_rock_ridge(self, system_use: bytes) -> None:
        """Set self._rr_skip when the root's '.' record (`system_use`) announces Rock Ridge.

        SUSP puts an SP entry first in that record's System Use area: check bytes BE EF and
        len_skp, the bytes to skip at the start of every other System Use area. SP only
        says SUSP is in use; Rock Ridge is an ER entry with a Rock Ridge identifier (often
        in a continuation area), or, from writers that record no ER, RR, PX or NM entries.
        """
        if system_use[0:2] != b"SP" or len(system_use) < 7 or system_use[4:6] != b"\xbe\xef":
            return
        rock_ridge = False
        for signature, entry in self._susp_entries(system_use):
            if signature == b"ER" and len(entry) >= 8:
                rock_ridge = rock_ridge or entry[8:8 + entry[4]] in _RRIP_IDS
            elif signature in (b"RR", b"PX", b"NM"):
                rock_ridge = True
        if rock_ridge:
            self._rr_skip = system_use[6]

    def _rock_ridge(self, system_use: bytes) -> _RockRidge:
        """The Rock Ridge entries contextd uses from one record's System Use area."""
        info = _RockRidge()
        name: List[bytes] = []
        naming = True  # until an NM entry without CONTINUE ends the name
        for signature, entry in self._susp_entries(system_use):
            if signature == b"NM" and naming and len(entry) >= 5:
                # The CURRENT and PARENT flags name '.' and '..' and carry no bytes: for an
                # entry in a listing they mean nothing, so the ISO9660 name is used then.
                name.append(entry[5:])
                naming = bool(entry[4] & _NM_CONTINUE)
            elif signature == b"SL":
                info.symlink = True
            elif signature == b"RE":
                info.relocated = True
            elif signature == b"CL" and len(entry) >= 8:
                info.child_link = struct.unpack_from("<I", entry, 4)[0]
        info.name = b"".join(name)
        return info

    def _susp_entries(self, area: bytes) -> Iterator[Tuple[bytes, bytes]]:
        """(signature, entry) for each SUSP entry of a System Use area and its continuations.

        Lenient as the Linux kernel is: an entry that does not fit ends the area (what
        follows is padding, never a name). A CE entry chains a continuation area; see
        _continuation for the bounds.
        """
        seen: set = set()
        while True:
            continuation = None
            pos = 0
            while pos + 4 <= len(area):
                signature, length = area[pos:pos + 2], area[pos + 2]
                if length < 4 or pos + length > len(area):
                    break
                entry = area[pos:pos + length]
                pos += length
                if signature == b"ST":  # SUSP terminator: nothing more in this area
                    break
                if signature == b"CE" and length >= 28:
                    if continuation is None:  # one per area; a second is ignored
                        continuation = struct.unpack_from("<I4xI4xI", entry, 4)
                else:
                    yield signature, entry
            if continuation is None:
                return
            area = self._continuation(continuation, seen)

    def _continuation(self, ce: Tuple[int, int, int], seen: set) -> bytes:
        """The continuation area a CE entry points at: (block, offset, length).

        Bounded: at most LIMITS.iso_ce_per_record areas chained from one record, none twice,
        each within one logical block of the image, and LIMITS.iso_ce_areas for the image.
        """
        block, offset, length = ce
        if ce in seen:
            raise _BadImage("Rock Ridge continuation areas form a loop (block %d)" % block)
        if len(seen) >= LIMITS.iso_ce_per_record:
            raise _BadImage(
                "a directory record chains more than %d Rock Ridge continuation areas"
                % LIMITS.iso_ce_per_record
            )
        seen.add(ce)
        self._ce_left -= 1
        if self._ce_left < 0:
            raise _BadImage("more than %d Rock Ridge continuation areas" % LIMITS.iso_ce_areas)
        start = block * self._block + offset
        if offset + length > self._block or start + length > self._size:
            raise _BadImage(
                "a Rock Ridge continuation area (block %d, bytes %d-%d) lies outside its block"
                " or the image" % (block, offset, offset + length)
            )
        return self._read_at(start, length)

    # -- internals: lookups and file data ----------------------------------------------

    def _resolve(self, rel: str) -> Optional[Tuple[str, _Entry]]:
        parts = _split_rel(rel)
        if ".." in parts:
            return None
        for names, root in self._roots:
            entry = self._guard(self._walk, names, root, parts)
            if entry is not None:
                return names, entry
        return None

    def _walk(self, names: str, root: _Record, parts: List[str]) -> Optional[_Entry]:
        entry = _Entry("", root, True)
        for part in parts:
            if not entry.is_dir:
                return None
            children = self._children(names, entry.record)
            found = (_match_iso(children, part) if names == _ISO
                     else next((c for c in children if c.name == part), None))
            if found is None:
                return None
            entry = found
        return entry

    def _children(self, names: str, directory: _Record) -> List[_Entry]:
        """The entries of `directory`, named in name set `names`."""
        result: List[_Entry] = []
        last_ident = None
        for child in directory.children:
            # A file bigger than one extent has several records with the same identifier.
            if child.ident == last_ident:
                continue
            last_ident = child.ident
            is_dir = bool(child.flags & _DIRECTORY)
            target = child
            if names == _JOLIET:
                name = _VERSION_RE.sub("", child.ident.decode("utf-16_be", "replace"))
                result.append(_Entry(name, child, is_dir))
                continue
            name = _iso_display(child.ident.decode("latin-1"))
            rr = child.rock_ridge if names == _RR else None
            if rr is not None:
                if rr.relocated:
                    continue  # shown where its child-link (CL) placeholder is
                if rr.child_link is not None:
                    linked = self._directories.get(rr.child_link)
                    if linked is None:
                        raise _BadImage(
                            "a Rock Ridge child link points at extent %d, where no directory is"
                            % rr.child_link
                        )
                    target, is_dir = linked, True
                if rr.name:
                    name = rr.name.decode("utf-8", "surrogateescape")
            result.append(_Entry(name, target, is_dir))
        return result

    def _extent(self, names: str, rel: str, record: _Record, limit: int) -> Tuple[int, int]:
        """Where file `rel`'s bytes are: (offset, size), checked against `limit` and the image."""
        if names == _RR and record.rock_ridge is not None and record.rock_ridge.symlink:
            raise SourceError(
                "context ISO %s: %s is a symbolic link, which contextd does not follow"
                % (self.path, rel)
            )
        size = record.size
        if size > limit:
            raise SourceError(
                "context ISO %s: %s is %d bytes, over the limit of %d bytes"
                % (self.path, rel, size, limit),
                hint="keep context files small; ship big ones another way",
            )
        if record.flags & _MULTI_EXTENT:
            raise SourceError(
                "context ISO %s: %s is split over several extents, which contextd does not read"
                % (self.path, rel),
                hint=_REBUILD_HINT,
            )
        if record.interleaved:
            raise SourceError(
                "context ISO %s: %s is recorded interleaved, which contextd does not read"
                % (self.path, rel),
                hint=_REBUILD_HINT,
            )
        start = record.extent * self._block
        if size and start + size > self._size:
            raise self._broken("%s lies at bytes %d-%d, past the end of the %d-byte image"
                               % (rel, start, start + size, self._size))
        return start, size

    def _chunks(self, rel: str, start: int, size: int, chunk: int) -> Iterator[bytes]:
        fp = self._fp
        assert fp is not None, "read while closed"  # _guard runs it only while open
        fp.seek(start)
        remaining = size
        while remaining:
            data = fp.read(min(chunk, remaining))
            if not data:
                raise self._broken("%s: read %d of %d bytes" % (rel, size - remaining, size))
            remaining -= len(data)
            yield data

    def _read_record(self, names: str, rel: str, record: _Record, limit: int) -> bytes:
        start, size = self._extent(names, rel, record, limit)
        return b"".join(self._chunks(rel, start, size, max(size, 1)))

    def _hash_record(self, names: str, rel: str, record: _Record, limit: int) -> str:
        start, size = self._extent(names, rel, record, limit)
        digest = hashlib.sha256()
        for data in self._chunks(rel, start, size, _HASH_CHUNK):
            digest.update(data)
        return digest.hexdigest()


def _match_iso(children: List[_Entry], want: str) -> Optional[_Entry]:
    """Find `want` among plain ISO9660 names: exact (any case), then as mangled."""
    for child in children:
        if iso_key(child.name) == iso_key(want):
            return child
    for mangle in (
        lambda name, is_dir: mangle_dir(name) if is_dir else mangle_file(name),
        _mangle_8_3,
    ):
        for child in children:
            if iso_key(child.name) == iso_key(mangle(want, child.is_dir)):
                return child
    return None
