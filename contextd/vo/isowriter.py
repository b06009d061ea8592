"""Write context ISO images (VO/site side, with pycdlib): `contextd pack iso`.

A context CD-ROM (HEPiX / OpenNebula convention, label ``CONTEXT``) is ISO9660 with Joliet
and Rock Ridge long names. ``write_iso`` builds one in pure Python with pycdlib (no
genisoimage needed), with the same name mangling the boot-side reader (``contextd.iso``)
matches against.

What this module must never do:

- never be imported on the boot path: pycdlib's import alone costs a good share of a boot
  run, and the VM only ever reads discs (tests/test_boot_imports.py checks it);
- never write a name or label an ISO cannot hold, or a partial image: everything is
  validated before pycdlib is touched, and the image is renamed into place only when whole.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from typing import Dict, List, Mapping, Set, Tuple

from contextd import filesystem
from contextd.errors import SigningError, SourceError, UsageError
from contextd.iso import iso_key, mangle_dir, mangle_file, short_reason

# ISO9660 / Joliet limits we write to (Ecma-119 7.5, 7.6, 6.8.2.1; interchange level 3).
_ISO_DEPTH_MAX = 8     # path components, root excluded (Ecma-119: eight directory levels)
_JOLIET_NAME_MAX = 64  # UCS-2 characters
_LABEL_MAX = 16        # the Joliet volume identifier holds 16 UCS-2 characters
_LABEL_RE = re.compile(r"\A[A-Za-z0-9_.-]{1,%d}\Z" % _LABEL_MAX)
_JOLIET_FORBIDDEN = frozenset('*/:;?\\')


def _import_pycdlib():
    try:
        import pycdlib  # pylint: disable=import-outside-toplevel
    except ImportError as exc:  # pragma: no cover - packaging problem
        raise SourceError(
            "cannot write context ISOs: the pycdlib module is missing (%s)" % exc,
            hint="install python3-pycdlib or pip install pycdlib",
        ) from exc
    return pycdlib


def _check_component(rel: str, part: str) -> None:
    problem = None
    if part in ("", ".", ".."):
        problem = "an empty, '.' or '..' component"
    elif len(part) > _JOLIET_NAME_MAX:
        problem = "a name longer than %d characters (the Joliet limit)" % _JOLIET_NAME_MAX
    else:
        for char in part:
            code = ord(char)
            if code < 0x20 or code == 0x7F:
                problem = "a control character"
            elif char in _JOLIET_FORBIDDEN:
                problem = "the character %r, which Joliet forbids" % char
            elif code > 0xFFFF or 0xD800 <= code <= 0xDFFF:
                problem = "a character outside the Unicode BMP, which Joliet cannot hold"
            if problem:
                break
    if problem:
        raise SigningError(
            "cannot pack %r into a context ISO: its path has %s" % (rel, problem),
            hint="use relative '/'-separated paths of plain names",
        )



def write_iso(files: Mapping[str, bytes], out_path: str, label: str = "CONTEXT") -> None:
    """Write `files` (relative POSIX path -> content) as an ISO9660 image at `out_path`.

    The image has Joliet and Rock Ridge long names (what genisoimage -J -R makes), the
    volume label `label`, and ISO9660 names mangled to level-3 d-characters. The image is
    written to a temporary file next to `out_path` and renamed over it, mode 0644.

    Raises SigningError (the "cannot be packed" error) for a name or label an ISO cannot
    hold, or when the image cannot be written.
    """
    if not isinstance(label, str) or not _LABEL_RE.match(label):
        raise SigningError(
            "cannot use %r as a context ISO label" % (label,),
            hint="use 1-%d characters from A-Z a-z 0-9 _ . -, e.g. CONTEXT" % _LABEL_MAX,
        )

    entries, dirs = _validated(files)
    iso_names, file_names = _iso_names(entries, dirs)

    pycdlib = _import_pycdlib()
    iso = pycdlib.PyCdlib()
    try:
        iso.new(
            interchange_level=3,
            vol_ident=label,
            joliet=3,
            rock_ridge="1.09",
            app_ident_str="contextd",
        )
        for key in sorted(dirs, key=lambda d: (len(d), d)):
            iso.add_directory(
                iso_path=iso_names[key], rr_name=key[-1], joliet_path="/" + "/".join(key)
            )
        for parts, data in sorted(entries, key=lambda e: e[0]):
            key = tuple(parts)
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                iso_path=file_names[key],
                rr_name=key[-1],
                joliet_path="/" + "/".join(key),
            )
        _write_atomically(iso, out_path)
    except SigningError:
        raise
    except pycdlib.pycdlibexception.PyCdlibException as exc:
        raise SigningError(
            "cannot build context ISO %s: %s" % (out_path, short_reason(exc))) from exc
    finally:
        with contextlib.suppress(Exception):  # a failing close must not hide why the build failed
            iso.close()


def _validated(files: Mapping[str, bytes]
               ) -> Tuple[List[Tuple[List[str], bytes]], Set[Tuple[str, ...]]]:
    """Every file as (path parts, content) and every directory they need, or SigningError:
    all is checked before anything is built."""
    entries: List[Tuple[List[str], bytes]] = []
    dirs: Set[Tuple[str, ...]] = set()
    for rel in files:
        if not isinstance(rel, str):
            raise TypeError("write_iso: file names must be str, got %r" % (rel,))
        data = files[rel]
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("write_iso: content of %r must be bytes" % rel)
        if rel.startswith("/"):
            raise SigningError(
                "cannot pack %r into a context ISO: the path is absolute" % rel,
                hint="use paths relative to the ISO root, e.g. contextd/payload.yaml",
            )
        parts = rel.split("/")
        for part in parts:
            _check_component(rel, part)
        if len(parts) > _ISO_DEPTH_MAX:
            raise SigningError(
                "cannot pack %r into a context ISO: it is nested %d deep, ISO9660 allows %d"
                % (rel, len(parts), _ISO_DEPTH_MAX)
            )
        entries.append((parts, bytes(data)))
        for depth in range(1, len(parts)):
            dirs.add(tuple(parts[:depth]))
    for parts, _ in entries:
        if tuple(parts) in dirs:
            raise SigningError(
                "cannot pack %r into a context ISO: it is both a file and a directory"
                % "/".join(parts)
            )

    return entries, dirs


def _iso_names(entries: List[Tuple[List[str], bytes]], dirs: Set[Tuple[str, ...]]
               ) -> Tuple[Dict[Tuple[str, ...], str], Dict[Tuple[str, ...], str]]:
    """Unique ISO9660 paths for the directories and the files, parents first, in a stable
    order (the long names go in Joliet and Rock Ridge)."""
    iso_names: Dict[Tuple[str, ...], str] = {}  # long path -> ISO9660 path
    used: Dict[Tuple[str, ...], set] = {(): set()}
    for key in sorted(dirs, key=lambda d: (len(d), d)):
        parent = key[:-1]
        ident = mangle_dir(key[-1], used[parent])
        used[parent].add(iso_key(ident))
        used[key] = set()
        iso_names[key] = (iso_names[parent] if parent else "") + "/" + ident
    file_names: Dict[Tuple[str, ...], str] = {}
    for parts, _ in sorted(entries, key=lambda e: e[0]):
        key = tuple(parts)
        parent = key[:-1]
        ident = mangle_file(key[-1], used[parent])
        used[parent].add(iso_key(ident))
        file_names[key] = (iso_names[parent] if parent else "") + "/" + ident + ";1"
        if len(file_names[key]) - 1 > 255:  # Ecma-119 6.8.2.1
            raise SigningError(
                "cannot pack %r into a context ISO: its ISO9660 path would be longer than "
                "255 characters" % "/".join(parts),
                hint="use shorter directory names",
            )

    return iso_names, file_names


def _write_atomically(iso, out_path: str) -> None:
    """Stream the image into a 0644 temporary file next to `out_path`, rename it over."""
    try:
        filesystem.atomic_write(os.path.abspath(out_path), iso.write_fp, 0o644)
    except OSError as exc:      # a file the user named that cannot be written: exit 2
        raise UsageError(
            "cannot write context ISO %s: %s" % (out_path, exc.strerror or exc),
            hint="check that the directory exists and is writable",
        ) from exc
