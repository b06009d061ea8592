"""The plugin contract and where plugins come from.

A plugin owns one payload section (`cvmfs`, `htcondor`, ...). It reads its section into
frozen typed settings, reads the site's `allow` and `site_settings` for it, decides what is
allowed, and describes changes as actions. It never touches the system: the only outside
input it gets is `PlanContext.read_file`, which the executor provides.

Built-in plugins and site plugins alike are found through the `contextd.plugins` entry-point
group, and only the plugins a policy or payload names are imported.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from contextd.actions import Action
from contextd.errors import PayloadError, PolicyError

GROUP = "contextd.plugins"


@dataclass(frozen=True)
class Finding:
    """One field the site refused or replaced, with why. `value` is already safe to show.

    `field` is relative to the plugin's section (`repositories[1]`); `qualified` names it
    in the whole payload (`cvmfs.repositories[1]`).
    """

    plugin: str
    field: str
    value: str
    reason: str

    @property
    def qualified(self) -> str:
        return "%s.%s" % (self.plugin, self.field)

    def as_dict(self) -> Dict[str, str]:
        return {"plugin": self.plugin, "field": self.qualified, "value": self.value,
                "reason": self.reason}


@dataclass(frozen=True)
class Decision:
    settings: Any                    # the settings to plan with, site overrides applied
    denied: Sequence[Finding]
    overridden: Sequence[Finding]


@dataclass(frozen=True)
class PlanContext:
    payload_sha256: str
    vo: str
    serial: int
    hostname: str
    read_file: Callable[[str], Optional[bytes]]  # current content on the target, or None
    # A file the signed payload lists under `files`, read from the carrier, digest checked.
    listed_file: Callable[[str], bytes] = field(default=lambda rel: _not_listed(rel))


def _not_listed(rel: str) -> bytes:
    raise PayloadError("%r is not a file this payload lists" % rel,
                       "list it under files: with its sha256 and ship it on the context ISO")


class Plugin:
    """Base for plugins; subclasses set `name` and implement the five methods."""

    name = ""
    secret_fields: frozenset = frozenset()   # payload keys never shown anywhere

    def parse_settings(self, data: Any) -> Any:
        """The payload section -> frozen settings; raise PayloadError naming the field."""
        raise NotImplementedError

    def parse_allow(self, data: Any) -> Any:
        """`trust.<vo>.allow.<name>` -> frozen allow rules; raise PolicyError."""
        raise NotImplementedError

    def parse_site(self, data: Any) -> Any:
        """`site_settings.<name>` -> frozen site settings; raise PolicyError."""
        raise NotImplementedError

    def authorize(self, settings: Any, allow: Any, site: Optional[Any]) -> Decision:
        """Apply site settings over the payload's, then check the rest against allow."""
        raise NotImplementedError

    def plan(self, settings: Any, ctx: PlanContext) -> List[Action]:
        raise NotImplementedError

    def describe(self, settings: Any) -> Dict[str, Any]:
        """The settings as shown in explain and reports, secrets replaced."""
        raise NotImplementedError


_loaded: Dict[str, Plugin] = {}


def _entry_points() -> Dict[str, Any]:
    from importlib import metadata

    eps = metadata.entry_points()
    if hasattr(eps, "select"):          # Python 3.10+
        found = eps.select(group=GROUP)
    else:                               # Python 3.9: a dict of groups
        found = eps.get(GROUP, [])
    return {ep.name: ep for ep in found}


_available: Optional[Dict[str, Any]] = None


def available() -> List[str]:
    global _available
    if _available is None:
        _available = _entry_points()
    return sorted(_available)


def load(name: str, for_policy: bool = False) -> Plugin:
    """The plugin for section `name`; a missing one is an error of whoever named it."""
    if name in _loaded:
        return _loaded[name]
    available()
    assert _available is not None
    ep = _available.get(name)
    if ep is None:
        err = PolicyError if for_policy else PayloadError
        raise err(
            "no contextd plugin handles section %r" % name,
            "installed plugins: %s" % (", ".join(available()) or "none"),
        )
    plugin = ep.load()
    if not isinstance(plugin, Plugin) or plugin.name != name:
        raise PolicyError("entry point %r in group %s is not a contextd plugin" % (name, GROUP))
    _loaded[name] = plugin
    return plugin
