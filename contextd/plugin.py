"""The plugin contract and where plugins come from.

A plugin owns one payload section (`cvmfs`, `htcondor`, ...). It reads its section into
frozen typed settings, reads the site's `allow` and `site_settings` for it, decides what is
allowed, and describes changes as actions. It never touches the system: the only outside
input it gets is `PlanContext.read_file`, which the executor provides. It declares every file
it may write and every unit it may start (`writes`, `units`): the executor writes, and
recover puts back or stops, nothing else.

Built-in plugins and site plugins alike are found through the `contextd.plugins` entry-point
group, and only the plugins a policy or payload names are imported.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence
from typing import Tuple

from contextd.actions import Action, RunCommand
from contextd.errors import PayloadError, PolicyError
from contextd.patterns import Pattern
from contextd.record import field, record
from contextd.schema import glob_match, path_match

GROUP = "contextd.plugins"


@record(frozen=True)
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
        # A section that is a list (files) names its items `[0].path`: `files[0].path`.
        return "%s%s%s" % (self.plugin, "" if self.field.startswith("[") else ".", self.field)

    def as_dict(self) -> Dict[str, str]:
        return {"plugin": self.plugin, "field": self.qualified, "value": self.value,
                "reason": self.reason}


@record(frozen=True)
class Decision:
    settings: Any                    # the settings to plan with, site overrides applied
    denied: Sequence[Finding]
    overridden: Sequence[Finding]


@record(frozen=True)
class PlanContext:
    payload_sha256: str
    vo: str
    serial: int
    hostname: str
    read_file: Callable[[str], Optional[bytes]]  # current content on the target, or None
    # A file the signed payload lists under `files`, read from the carrier, digest checked.
    listed_file: Callable[[str], bytes] = field(default=lambda rel: _not_listed(rel))
    # The run's trusted facts (site, cloud, instance_id, hostname, region, image_id): the
    # platform's and the policy's word, never the payload's. Templates see them.
    facts: Mapping[str, str] = field(default_factory=dict)

    def provenance(self) -> str:
        """`payload sha256 <hex> (VO <vo>, serial <n>)`, checked: it goes into config files."""
        if not (isinstance(self.payload_sha256, str) and _SHA256.fullmatch(self.payload_sha256)):
            raise PayloadError("payload sha256 %s is not a hex digest" % show(self.payload_sha256))
        if not (isinstance(self.vo, str) and _VO.fullmatch(self.vo)):
            raise PayloadError("vo %s cannot be written into a configuration file" % show(self.vo))
        if isinstance(self.serial, bool) or not isinstance(self.serial, int) or self.serial < 0:
            raise PayloadError("serial %s is not a non-negative integer" % show(self.serial))
        return "payload sha256 %s (VO %s, serial %d)" % (self.payload_sha256, self.vo,
                                                          self.serial)

    def file_header(self) -> str:
        """The comment lines that open every file a plugin owns outright."""
        return ("# Written by contextd from %s.\n"
                "# Do not edit: the next contextd run replaces this file.\n" % self.provenance())


_SHA256 = Pattern(r"[0-9a-f]{64}")
_VO = Pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def show(value: Any, limit: int = 80) -> str:
    """A short repr of a (possibly hostile) value for messages and findings."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _not_listed(rel: str) -> bytes:
    raise PayloadError("%r is not a file this payload lists" % rel,
                       "list it under files: with its sha256 and ship it on the context ISO")


class Review:
    """What a plugin's `authorize` finds, collected in one place: the fields the site refused
    (`denied`) and the ones its site settings replaced (`overridden`), each a Finding with
    the rule it names spelled the same way in every plugin. Values are shown through `show`.
    """

    def __init__(self, plugin: str):
        self.plugin = plugin
        self.denied: List[Finding] = []
        self.overridden: List[Finding] = []

    def rule(self, key: str, names: Optional[Sequence[str]]) -> str:
        """`allow.<plugin>.<key> [a, b]`; an absent list allows nothing, and says so."""
        if names is None:
            return "allow.%s.%s (not set: nothing allowed)" % (self.plugin, key)
        return "allow.%s.%s [%s]" % (self.plugin, key, ", ".join(names))

    def deny(self, field: str, value: Any, reason: str) -> None:
        self.denied.append(Finding(self.plugin, field, show(value), reason))

    def override(self, field: str, value: Any, site_key: str) -> None:
        """The payload's `field` is replaced by `site_settings.<plugin>.<site_key>`."""
        self.overridden.append(Finding(self.plugin, field, show(value),
                                       "site_settings.%s.%s wins" % (self.plugin, site_key)))

    def site_wins(self, key: str, value: Any, site_value: Any) -> Tuple[Any, bool]:
        """(the value to plan with, whether the allow rules still check it): a site setting
        replaces the payload's value, which is then not the payload's to ask for."""
        if site_value is None:
            return value, value is not None
        if value is not None:
            self.override(key, value, key)
        return site_value, False

    def globs(self, field: str, value: str, key: str, globs: Optional[Sequence[str]]) -> None:
        """Deny `value` unless it matches one of `allow.<plugin>.<key>`'s globs."""
        if not glob_match(value, globs or ()):
            self.deny(field, value, "not allowed by " + self.rule(key, globs))

    def at_most(self, field: str, value: int, key: str, limit: Optional[int]) -> None:
        """Deny `value` above `allow.<plugin>.<key>`; an unset limit allows nothing."""
        if limit is None:
            self.deny(field, value, "not allowed: allow.%s.%s is not set" % (self.plugin, key))
        elif value > limit:
            self.deny(field, value, "above allow.%s.%s %d" % (self.plugin, key, limit))

    def decision(self, settings: Any) -> Decision:
        return Decision(settings=settings, denied=self.denied, overridden=self.overridden)


class Plugin:
    """Base for plugins; subclasses set `name` and implement the five methods."""

    name = ""
    secret_fields: frozenset = frozenset()   # payload keys never shown anywhere
    units: Tuple[str, ...] = ()              # systemd units plan() may start as a service

    def writes(self, site: Optional[Any]) -> Tuple[str, ...]:
        """Every absolute target path plan() may write, given `site` (parse_site's value, or
        None). A file not listed here is never written, nor restored from a journal."""
        return ()

    def write_globs(self, allow: Any) -> Tuple[str, ...]:
        """Path globs plan() may write under one VO's allow rules (parse_allow's value), for
        a plugin whose paths are the payload's (files); matched by schema.path_match."""
        return ()

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

    def hold(self) -> List[Action]:
        """Commands keeping `units` from starting on this boot. contextd.service runs
        Before= them, so they have not started yet; a runtime mask vanishes at the next boot,
        where contextd decides again. --now stops one already running (a run by hand),
        --no-block because a job waiting for contextd's own start must not be waited for."""
        return [RunCommand(self.name, ("systemctl", "mask", "--runtime", "--now", "--no-block",
                                       service_name(unit))) for unit in self.units]


def service_name(unit: str) -> str:
    """A unit as systemd names it ("condor" -> "condor.service"): the name the report shows."""
    return unit if "." in unit else unit + ".service"


@record(frozen=True)
class Footprint:
    """What a set of plugins may touch on the target: absolute paths and systemd units."""

    paths: FrozenSet[str] = frozenset()
    units: FrozenSet[str] = frozenset()
    globs: FrozenSet[str] = frozenset()      # whole-path globs (write_globs)

    def declares(self, path: str) -> bool:
        return path in self.paths or any(path_match(path, g) for g in self.globs)


def footprint(names: Iterable[str], site_settings: Mapping[str, Any],
              allows: Optional[Mapping[str, Sequence[Any]]] = None) -> Footprint:
    """The union of what the named plugins declare, with the site's settings for each and,
    in `allows`, every VO's allow rules for it."""
    paths: set = set()
    units: set = set()
    globs: set = set()
    for name in names:
        section = load(name)
        paths.update(section.writes(site_settings.get(name)))
        units.update(section.units)
        for allow in (allows or {}).get(name, ()):
            globs.update(section.write_globs(allow))
    return Footprint(frozenset(paths), frozenset(units), frozenset(globs))


# The built-in plugins are imported by name: scanning every installed distribution's
# entry points costs ~20 ms of a ~250 ms boot run. Site plugins (other names) still come from
# the entry-point group, and cannot shadow a built-in section.
BUILTIN = {"cvmfs": "contextd_plugins.cvmfs", "htcondor": "contextd_plugins.htcondor",
           "puppet": "contextd_plugins.puppet", "packages": "contextd_plugins.packages",
           "files": "contextd_plugins.files"}

_loaded: Dict[str, Plugin] = {}
_entry_points_found: Optional[Dict[str, Any]] = None


def _entry_points() -> Dict[str, Any]:
    global _entry_points_found
    if _entry_points_found is None:
        from importlib import metadata

        eps = metadata.entry_points()
        # Python 3.10+ selects a group; 3.9 returns a dict of groups.
        found = eps.select(group=GROUP) if hasattr(eps, "select") else eps.get(GROUP, [])
        _entry_points_found = {ep.name: ep for ep in found if ep.name not in BUILTIN}
    return _entry_points_found


def available() -> List[str]:
    return sorted(set(BUILTIN) | set(_entry_points()))


def load(name: str, for_policy: bool = False) -> Plugin:
    """The plugin for section `name`; a missing one is an error of whoever named it."""
    if name in _loaded:
        return _loaded[name]
    if name in BUILTIN:
        import importlib

        plugin = getattr(importlib.import_module(BUILTIN[name]), "PLUGIN", None)
    else:
        ep = _entry_points().get(name)
        if ep is None:
            err = PolicyError if for_policy else PayloadError
            raise err(
                "no contextd plugin handles section %r" % name,
                "installed plugins: %s" % ", ".join(available()),
            )
        plugin = ep.load()
    if not isinstance(plugin, Plugin) or plugin.name != name:
        raise PolicyError("plugin %r (group %s) is not a contextd plugin" % (name, GROUP))
    _loaded[name] = plugin
    return plugin
