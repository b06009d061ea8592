"""What a plan is made of: descriptions of changes, never the changes themselves.

Plugins return these values; `apply` is the one executor that performs them. Paths are
absolute paths on the target system; the executor puts them under `--root`.
"""

from __future__ import annotations

from typing import FrozenSet, Optional, Tuple, Union

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
    undo: Optional[Tuple[str, ...]] = None  # argv that reverts it on rollback, if any
    reversible: bool = True                  # False: a Puppet run cannot be undone
    stdin: Optional[bytes] = field(default=None, repr=False)   # fed to the command, never logged

    @property
    def kind(self) -> str:
        return "service" if self.service else "command"

    @property
    def target(self) -> str:
        return " ".join(self.argv)


Action = Union[WriteFile, RunCommand]
