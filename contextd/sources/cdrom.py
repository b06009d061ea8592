"""The `hepix-cdrom` source: find the context CD-ROM through udev, waiting for a late one.

Candidates are block devices udev marks `ID_CDROM=1` with `ID_FS_TYPE=iso9660`, label
`CONTEXT` first. A candidate is the context CD-ROM when its label is `CONTEXT` or it holds
`context.sh` or `contextd/` (the HEPiX scripts checked no label at all). When there is none
yet, `wait` listens to udev for one until `wait_for_source` runs out, telling systemd what it
waits for. Reading the disc is `isosource`'s job (contextd.iso, never mounted).

udev is reached through a small `Udev` interface so tests inject a fake enumerator and
monitor; the real one wraps pyudev, imported only when this source runs.

What this module must never do: mount, execute or open anything but the candidate device
nodes udev names, or wait past the deadline it is given.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from contextd import iso
from contextd.errors import SourceError
from contextd.sources import Context, isosource, sdnotify

KIND = "hepix-cdrom"
PROPERTIES = ("DEVNAME", "ID_CDROM", "ID_FS_TYPE", "ID_FS_LABEL", "ACTION")


class Monitor:
    """udev events for block devices, started before the enumeration it backs up."""

    def poll(self, timeout: float) -> Optional[Mapping[str, str]]:
        """The next event's properties (with ACTION), or None after `timeout` seconds."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Udev:
    """What this source needs from udev: the block devices now, and a monitor."""

    def devices(self) -> List[Mapping[str, str]]:
        raise NotImplementedError

    def monitor(self) -> Monitor:
        raise NotImplementedError


def _import_pyudev() -> Any:
    try:
        import pyudev  # pylint: disable=import-outside-toplevel  (boot-time import cost)
    except ImportError as exc:
        raise SourceError("the hepix-cdrom source needs the pyudev module, which is missing (%s)"
                          % exc, "install python3-pyudev (or pip install pyudev), or remove "
                          "hepix-cdrom from the policy's sources") from None
    return pyudev


def _properties(device: Any) -> Dict[str, str]:
    props = getattr(device, "properties", None)
    if props is None:                      # pyudev before 0.21: the device is the mapping
        props = device
    out = {}
    for key in PROPERTIES:
        try:
            value = props.get(key)
        except Exception:  # noqa: BLE001 - a vanished device raises from its properties
            value = None
        if value is not None:
            out[key] = str(value)
    node = getattr(device, "device_node", None)
    if node:
        out["DEVNAME"] = str(node)
    action = getattr(device, "action", None)
    if action:
        out["ACTION"] = str(action)
    return out


class _PyudevMonitor(Monitor):
    def __init__(self, monitor: Any):
        self._monitor = monitor

    def poll(self, timeout: float) -> Optional[Mapping[str, str]]:
        try:
            device = self._monitor.poll(timeout=max(0.0, timeout))
        except (OSError, ValueError) as exc:
            raise SourceError("udev monitor failed while waiting for the context CD-ROM: %s"
                              % exc) from None
        return None if device is None else _properties(device)


class PyudevUdev(Udev):
    """The real udev, through pyudev (>= 0.22, EL9's python3-pyudev)."""

    def __init__(self) -> None:
        self._pyudev = _import_pyudev()
        try:
            self._context = self._pyudev.Context()
        except Exception as exc:  # noqa: BLE001 - libudev missing or unusable
            raise SourceError("cannot use udev to find the context CD-ROM: %s" % exc,
                              "is libudev installed and /run/udev there?") from None

    def devices(self) -> List[Mapping[str, str]]:
        try:
            return [_properties(d) for d in
                    self._context.list_devices(subsystem="block", ID_CDROM="1")]
        except (OSError, ValueError) as exc:
            raise SourceError("cannot list block devices through udev: %s" % exc) from None

    def monitor(self) -> Monitor:
        try:
            monitor = self._pyudev.Monitor.from_netlink(self._context)
            monitor.filter_by(subsystem="block")
            monitor.start()
        except (OSError, ValueError) as exc:
            raise SourceError("cannot listen to udev for a late context CD-ROM: %s" % exc) from None
        return _PyudevMonitor(monitor)


def default_udev() -> Udev:
    return PyudevUdev()


class Search:
    """One detection's look at the CD-ROMs: notes for the report, and what was seen."""

    def __init__(self) -> None:
        self.notes: List[str] = []
        self.context_disc = False      # a context CD-ROM was there (with or without a bundle)


def is_candidate(props: Mapping[str, str]) -> bool:
    return (props.get("ID_CDROM") == "1" and props.get("ID_FS_TYPE") == "iso9660"
            and bool(props.get("DEVNAME")))


def candidates(devices: Iterable[Mapping[str, str]]) -> List[Mapping[str, str]]:
    """CD-ROMs with ISO9660 media, label CONTEXT first, then by device name."""
    found = [p for p in devices if is_candidate(p)]
    return sorted(found, key=lambda p: (p.get("ID_FS_LABEL", "").upper() != isosource.LABEL,
                                        p["DEVNAME"]))


def try_device(props: Mapping[str, str], search: Search) -> Optional[Context]:
    node = props["DEVNAME"]
    labelled = props.get("ID_FS_LABEL", "").upper() == isosource.LABEL
    try:
        image = iso.IsoImage(node)
    except SourceError as exc:
        if labelled:
            raise
        search.notes.append("%s skipped: %s" % (node, exc.one_line()))
        return None
    with image:
        if not isosource.is_context_disc(image):
            search.notes.append("%s (label %r) holds no context.sh or contextd/"
                                % (node, image.label[:32]))
            return None
        search.context_disc = True
        ctx, why = isosource.from_image(image, node, KIND)
    if ctx is None:
        search.notes.append(why)
    return ctx


def look(udev: Udev, search: Search) -> Optional[Context]:
    """The context on a CD-ROM present now, if any."""
    for props in candidates(udev.devices()):
        ctx = try_device(props, search)
        if ctx is not None:
            return ctx
    return None


def wait(udev: Udev, seconds: float, search: Search,
         notify: Callable[[str], Any] = sdnotify.notify,
         clock: Callable[[], float] = time.monotonic) -> Optional[Context]:
    """Wait up to `seconds` for a context CD-ROM to appear (udev add/change events)."""
    deadline = clock() + seconds
    monitor = udev.monitor()
    try:
        notify("waiting for context CD-ROM (hepix-cdrom source, up to %ds)" % round(seconds))
        ctx = look(udev, search)             # what appeared before the monitor started
        while ctx is None and not search.context_disc:
            remaining = deadline - clock()
            if remaining <= 0:
                search.notes.append("no context CD-ROM appeared within %ds (wait_for_source)"
                                    % round(seconds))
                break
            props = monitor.poll(remaining)
            if props is not None and props.get("ACTION", "add") in ("add", "change") \
                    and is_candidate(props):
                ctx = try_device(props, search)
        notify("context CD-ROM found at %s" % ctx.location if ctx is not None
               else "no context on a CD-ROM")
        return ctx
    finally:
        monitor.close()
