"""What a plan is made of: descriptions of changes, never the changes themselves.

Plugins return these values; `apply` is the one executor that performs them. Paths are
absolute paths on the target system; the executor puts them under `--root`.
"""

from __future__ import annotations

from typing import Any, FrozenSet, Optional, Tuple, Union

from contextd.patterns import Pattern
from contextd.record import field, record


@record(frozen=True)
class WriteFile:
    plugin: str
    path: str                       # absolute, e.g. "/etc/cvmfs/default.local"
    content: bytes = field(repr=False)
    mode: int = 0o644
    secret: bool = False            # content never logged or reported
    dir_mode: Optional[int] = None  # mode for the parent directory when the run creates or owns it
    # The user (a name in the target's /etc/passwd) that owns the file, and with dir_mode its
    # directory, with that user's primary group. None: root, or whoever owns it already.
    owner: Optional[str] = None
    # Refuse any symlink on the way, as for a secret: the path is the payload's, not a
    # plugin's fixed one (the files plugin), so the image's links must not redirect it.
    no_links: bool = False

    @property
    def kind(self) -> str:
        return "file"

    @property
    def target(self) -> str:
        return self.path


@record(frozen=True)
class RunCommand:
    plugin: str
    argv: Tuple[str, ...]
    timeout: float = 600.0
    ok_codes: FrozenSet[int] = frozenset({0})
    # A service start runs after every other command, so a failed run never leaves
    # a daemon (HTCondor) accepting work with a half-written configuration.
    service: bool = False
    undo: Optional[Tuple[str, ...]] = None  # disable_unit(...) reverting it on rollback, if any
    reversible: bool = True                  # False: a Puppet run cannot be undone
    stdin: Optional[bytes] = field(default=None, repr=False)   # fed to the command, never logged
    # Runs before any file is written (a package install: the files may configure it).
    first: bool = False
    # When this argv exits 0 (and prints `unless_stdout`, if given) the command is not run
    # and its result is `unchanged` (a package already installed).
    unless: Optional[Tuple[str, ...]] = None
    unless_stdout: Optional[bytes] = None

    @property
    def kind(self) -> str:
        return "service" if self.service else "command"

    @property
    def target(self) -> str:
        return " ".join(self.argv)


@record(frozen=True)
class RunScript:
    """A site-pinned HEPiX script from the carrier, or a pinned amiconfig script (plugin
    `amiconfig`) from the user-data (contextd.legacy pins it, contextd.hepix runs it for
    apply): phase `pre` runs before the files, `post` after the services, both inside apply's
    transaction. A command, never a journal entry."""

    plugin: str
    name: str                       # prolog.sh | epilog.sh | script (amiconfig)
    data: bytes = field(repr=False)
    sha256: str = ""                # the pinned digest: any other bytes are never run
    phase: str = "pre"              # pre | post
    timeout: float = 300.0
    interpreter: str = "/bin/sh"    # /bin/sh or /bin/bash, never the script's own choice
    args: Tuple[str, ...] = ("start",)  # the HEPiX convention; amiconfig passed none

    @property
    def kind(self) -> str:
        return "script"

    @property
    def label(self) -> str:
        """How messages name it: `HEPiX prolog.sh`, `amiconfig script`."""
        return "%s %s" % ("HEPiX" if self.plugin == "hepix" else self.plugin, self.name)

    @property
    def target(self) -> str:
        return self.name


Action = Union[WriteFile, RunCommand]


# A systemd unit name (systemd's own characters), never starting with '-': it goes into an
# argv, where it must not read as an option.
UNIT_RE = Pattern(r"[A-Za-z0-9_.@:][A-Za-z0-9_.@:-]{0,254}\Z")


def disable_unit(unit: str) -> Tuple[str, ...]:
    """The undo of a service start, and the only undo there is: a rollback journal names the
    unit, never an argv, so a journal on disk cannot make recover run anything else."""
    if not unit_ok(unit):
        raise ValueError("not a systemd unit name: %r" % (unit,))
    return ("systemctl", "disable", "--now", "--no-block", unit)


def unit_ok(unit: Any) -> bool:
    return isinstance(unit, str) and UNIT_RE.match(unit) is not None


def unit_disabled_by(argv: Optional[Tuple[str, ...]]) -> Optional[str]:
    """The unit `argv` disables when it is exactly disable_unit(unit), else None."""
    if argv and unit_ok(argv[-1]) and tuple(argv) == disable_unit(argv[-1]):
        return argv[-1]
    return None
