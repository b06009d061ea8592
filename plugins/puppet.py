"""The puppet plugin: points the Puppet agent at a server and environment, then runs it once.

It sets `server`, `environment` and `certname` in the `[agent]` section of puppet.conf and
keeps every other byte of the file as it was (other keys, sections, comments, line endings;
a key of the same name in `[main]` stays untouched). When the file already has a
`server_list` the agent reads ([main] or [agent]), Puppet would use it and ignore `server`,
so `server_list` in [agent] is set to the same server. When the payload asks for it
(`run: agent-once`, the default), it then runs `puppet agent --onetime --no-daemonize
--detailed-exitcodes`, where exit 0 and 2 are success; a Puppet run cannot be undone.

A certname is an identity at the Puppet server: one the payload names must match the
site's `allow.puppet.certnames` (none allowed when that is absent or empty).

It must never write a value that has not passed the grammar checks below, never rewrite
lines it does not own, and never touch the system itself: the current puppet.conf comes in
through `PlanContext.read_file`, the new one goes out as a WriteFile.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from contextd.actions import Action, RunCommand, WriteFile
from contextd.errors import PayloadError, PolicyError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.plugin import Decision, PlanContext, Plugin, Review, show
from contextd.record import record
from contextd.schema import Reader, hostname_ok, plain

NAME = "puppet"
DEFAULT_CONFIG = "/etc/puppetlabs/puppet/puppet.conf"
RUNS = ("agent-once", "apply", "none")
APPLY_ARGV = ("puppet", "apply", "--detailed-exitcodes")
# A manifest shipped on the carrier: a relative path the payload lists under `files`.
MANIFEST_RE = Pattern(r"(?!/)(?!.*(?:^|/)\.\.?(?:/|\Z))[A-Za-z0-9._/-]{1,255}\Z")
AGENT_ARGV = ("puppet", "agent", "--onetime", "--no-daemonize", "--detailed-exitcodes")
TIMEOUT = 1800.0

# Puppet's own rule for environment names.
ENVIRONMENT_RE = Pattern(r"[a-z0-9_]{1,255}\Z")
# Certificate names: lower case, host-name-like.
CERTNAME_RE = Pattern(r"[a-z0-9][a-z0-9._-]{0,254}\Z")
CONFIG_RE = Pattern(r"(?:/[A-Za-z0-9_.-]+)+\Z")
GLOB_RE = Pattern(r"[A-Za-z0-9_.*?\[\]!-]+\Z")
MAX_WAITFORCERT = LIMITS.puppet_waitforcert_seconds  # contextd/limits.py says why


# puppet.conf lines, as Puppet's own ini writer (Puppet::Settings::IniFile) reads them.
_SECTION_RE = Pattern(r"(\s*)\[(\w+)\](\s*)\Z", re.ASCII)
_SETTING_RE = Pattern(r"(\s*)(\w+)(\s*=\s*)(.*?)(\s*)\Z", re.ASCII)
MARKER = "# contextd:"


def config_ok(value: Any) -> bool:
    return (isinstance(value, str) and len(value) <= 4096 and CONFIG_RE.match(value) is not None
            and not any(part in (".", "..") for part in value.split("/")))


@record(frozen=True)
class Settings:
    server: Optional[str] = None
    environment: Optional[str] = None
    run: str = "agent-once"
    certname: Optional[str] = None        # None: the host name, lower-cased, at plan time
    waitforcert: Optional[int] = None
    config: str = DEFAULT_CONFIG           # set by the site only
    manifest: Optional[str] = None         # run: apply only; a file the payload lists

    def __post_init__(self) -> None:
        # A second line of defence: no settings value can hold what the file cannot.
        if self.server is not None and not hostname_ok(self.server):
            raise ValueError("puppet settings: invalid server")
        if self.environment is not None and not ENVIRONMENT_RE.match(self.environment):
            raise ValueError("puppet settings: invalid environment")
        if self.run not in RUNS:
            raise ValueError("puppet settings: invalid run")
        if self.certname is not None and not CERTNAME_RE.match(self.certname):
            raise ValueError("puppet settings: invalid certname")
        if self.waitforcert is not None and (
                isinstance(self.waitforcert, bool) or not isinstance(self.waitforcert, int)
                or not 0 <= self.waitforcert <= MAX_WAITFORCERT):
            raise ValueError("puppet settings: invalid waitforcert")
        if not config_ok(self.config):
            raise ValueError("puppet settings: invalid config")
        if self.manifest is not None and not MANIFEST_RE.match(self.manifest):
            raise ValueError("puppet settings: invalid manifest")


@record(frozen=True)
class Allow:
    servers: Optional[Tuple[str, ...]] = None
    environments: Optional[Tuple[str, ...]] = None
    max_waitforcert: int = 0               # 0: the payload may not ask to wait
    masterless: bool = False               # may the payload `puppet apply` its own manifest?
    # A certname is an identity at the Puppet server (another node's catalog, its secrets):
    # a payload's certname is denied unless it matches one of these.
    certnames: Optional[Tuple[str, ...]] = None


@record(frozen=True)
class Site:
    server: Optional[str] = None
    environment: Optional[str] = None
    config: Optional[str] = None

    def __post_init__(self) -> None:
        Settings(server=self.server, environment=self.environment,
                 config=self.config or DEFAULT_CONFIG)


def _read_server(r: Reader) -> Optional[str]:
    value = r.str("server")
    if value is None or hostname_ok(value):
        return value
    if ":" in value and hostname_ok(value.split(":", 1)[0]):
        raise r.fail("server", "%s must be a host name without a port" % show(value),
                     "Puppet takes the port from its own serverport setting")
    raise r.fail("server", "%s is not a valid host name" % show(value))


def _read_environment(r: Reader) -> Optional[str]:
    value = r.str("environment")
    if value is not None and not ENVIRONMENT_RE.match(value):
        raise r.fail("environment", "%s is not a valid Puppet environment name" % show(value),
                     "lower-case letters, digits and '_'")
    return value


def _marker(ctx: PlanContext, keys: Sequence[str]) -> str:
    return ("%s %s in [agent] written by contextd from %s; the next contextd run sets them "
            "again" % (MARKER, ", ".join(keys), ctx.provenance()))


def _split_lines(text: str) -> List[Tuple[str, str]]:
    """(body, line ending) pairs; only '\\n' ends a line, a '\\r' before it is kept."""
    out = []
    for chunk in re.findall(r"[^\n]*\n|[^\n]+\Z", text):
        if chunk.endswith("\r\n"):
            out.append((chunk[:-2], "\r\n"))
        elif chunk.endswith("\n"):
            out.append((chunk[:-1], "\n"))
        else:
            out.append((chunk, ""))
    return out


def _entries(current: Optional[bytes]) -> List[List[str]]:
    """puppet.conf as [body, line ending, kind, section] per line; kind is header, setting,
    marker (ours, in [agent]) or other; lines before any header are in Puppet's main."""
    text = "" if current is None else current.decode("utf-8", "surrogateescape")
    entries: List[List[str]] = []
    section = "main"
    for body, end in _split_lines(text):
        m = _SECTION_RE.match(body)
        if m:
            section = m.group(2)
            entries.append([body, end, "header", section])
        elif section == "agent" and body.lstrip().startswith(MARKER):
            entries.append([body, end, "marker", section])
        elif _SETTING_RE.match(body):
            entries.append([body, end, "setting", section])
        else:
            entries.append([body, end, "other", section])
    return entries


def agent_reads(current: Optional[bytes], key: str) -> bool:
    """Whether puppet.conf sets `key` where the agent reads it: [main] or [agent]."""
    for body, _, kind, section in _entries(current):
        setting = _SETTING_RE.match(body) if kind == "setting" else None
        if setting and setting.group(2) == key and section in ("main", "agent"):
            return True
    return False


def merge_agent_settings(current: Optional[bytes], values: Sequence[Tuple[str, str]],
                         marker: str) -> bytes:
    """puppet.conf with `values` set in [agent]; every other line kept byte for byte.

    A key already in an [agent] section gets its value replaced in place (indentation,
    spacing and line ending kept, as `puppet config set` does); a missing one goes after
    the last setting of the last [agent] section; with no [agent] section one is added at
    the end. `marker` (a comment saying contextd set these) sits right after the first
    [agent] header, or replaces the marker an earlier run left in [agent].
    """
    entries = _entries(current)
    eol = next((e[1] for e in entries if e[1]), "\n")
    wanted = dict(values)

    found = set()
    for entry in entries:
        if entry[2] == "setting" and entry[3] == "agent":
            s = _SETTING_RE.match(entry[0])
            assert s is not None
            if s.group(2) in wanted:
                entry[0] = s.group(1) + s.group(2) + s.group(3) + wanted[s.group(2)] + s.group(5)
                found.add(s.group(2))
    missing = [(k, v) for k, v in values if k not in found]

    markers = [i for i, e in enumerate(entries) if e[2] == "marker"]
    for i in reversed(markers[1:]):
        del entries[i]               # a second marker of ours is dropped
    if markers:
        entries[markers[0]][0] = marker

    def insert(after: int, new: List[List[str]]) -> None:
        if not new:
            return
        if after >= 0 and not entries[after][1]:
            entries[after][1] = eol  # the line we append after had no line ending
        entries[after + 1:after + 1] = new

    headers = [i for i, e in enumerate(entries) if e[2] == "header" and e[3] == "agent"]
    if not headers:
        new = [["[agent]", eol, "header", "agent"], [marker, eol, "marker", "agent"]]
        if entries and entries[-1][0].strip():
            new.insert(0, ["", eol, "other", "main"])
        insert(len(entries) - 1, new + [["%s = %s" % kv, eol, "setting", "agent"]
                                        for kv in missing])
    else:
        if not markers:
            insert(headers[0], [[marker, eol, "marker", "agent"]])
            headers = [i for i, e in enumerate(entries) if e[2] == "header" and e[3] == "agent"]
        last = headers[-1]
        after = last
        for i in range(last + 1, len(entries)):
            if entries[i][2] == "header":
                break
            if entries[i][2] in ("setting", "marker"):
                after = i
        insert(after, [["%s = %s" % kv, eol, "setting", "agent"] for kv in missing])
    return "".join(e[0] + e[1] for e in entries).encode("utf-8", "surrogateescape")


class PuppetPlugin(Plugin):
    name = NAME
    secret_fields: frozenset = frozenset()

    def writes(self, site: Optional[Site]) -> Tuple[str, ...]:
        return ((site and site.config) or DEFAULT_CONFIG,)   # only the site moves puppet.conf

    def parse_settings(self, data: Any) -> Settings:
        r = Reader(data, NAME, PayloadError)
        r.only(("server", "environment", "run", "certname", "waitforcert", "manifest"))
        run = r.str("run", default="agent-once")
        if run not in RUNS:
            raise r.fail("run", "%s is not a valid run" % show(run),
                         "agent-once, apply or none")
        manifest = r.str("manifest", pattern=MANIFEST_RE,
                         what="manifest path (relative, listed under files)")
        if (run == "apply") != (manifest is not None):
            raise r.fail("manifest", "is required with run: apply and only allowed with it")
        certname = r.str("certname")
        if certname is not None and not CERTNAME_RE.match(certname):
            raise r.fail("certname", "%s is not a valid certificate name" % show(certname),
                         "lower-case letters, digits, '.', '_', '-'")
        return Settings(
            server=_read_server(r),
            environment=_read_environment(r),
            run=run,
            certname=certname,
            waitforcert=r.int("waitforcert", minimum=0, maximum=MAX_WAITFORCERT),
            manifest=manifest,
        )

    def parse_allow(self, data: Any) -> Allow:
        r = Reader(data, "allow.puppet", PolicyError)
        r.only(("servers", "environments", "certnames", "max_waitforcert", "masterless"))
        servers = r.str_list("servers", pattern=GLOB_RE, what="host glob")
        envs = r.str_list("environments", pattern=GLOB_RE, what="environment glob")
        certnames = r.str_list("certnames", pattern=GLOB_RE, what="certname glob")
        return Allow(
            servers=None if servers is None else tuple(servers),
            environments=None if envs is None else tuple(envs),
            max_waitforcert=r.int("max_waitforcert", default=0, minimum=0,
                                  maximum=MAX_WAITFORCERT) or 0,
            masterless=r.bool("masterless", default=False),
            certnames=None if certnames is None else tuple(certnames),
        )

    def parse_site(self, data: Any) -> Site:
        r = Reader(data, "site_settings.puppet", PolicyError)
        r.only(("server", "environment", "config"))
        config = r.str("config")
        if config is not None and not config_ok(config):
            raise r.fail("config", "%s is not a valid absolute path" % show(config))
        return Site(server=_read_server(r), environment=_read_environment(r), config=config)

    def authorize(self, settings: Settings, allow: Allow, site: Optional[Site]) -> Decision:
        review = Review(NAME)
        site = site or Site()
        server, check = review.site_wins("server", settings.server, site.server)
        if check:
            review.globs("server", server, "servers", allow.servers)
        environment, check = review.site_wins("environment", settings.environment,
                                              site.environment)
        if check:
            review.globs("environment", environment, "environments", allow.environments)
        # Only a certname the payload asks for is checked: the default, the host name, is
        # the machine's own.
        if settings.certname is not None:
            review.globs("certname", settings.certname, "certnames", allow.certnames)
        wait = settings.waitforcert
        if wait:
            review.at_most("waitforcert", wait, "max_waitforcert", allow.max_waitforcert)
        if settings.run == "apply" and not allow.masterless:
            review.deny("run", settings.run, "not allowed: allow.puppet.masterless is not true")
        return review.decision(
            Settings(server=server, environment=environment, run=settings.run,
                     certname=settings.certname, waitforcert=wait,
                     config=site.config or DEFAULT_CONFIG, manifest=settings.manifest))

    def plan(self, settings: Settings, ctx: PlanContext) -> List[Action]:
        certname = settings.certname
        if certname is None:
            certname = str(ctx.hostname).lower()
            if not CERTNAME_RE.match(certname):
                raise PayloadError("puppet.certname is not set and the host name %s is not a "
                                   "valid certificate name" % show(ctx.hostname),
                                   "set puppet.certname in the payload")
        values = [(k, v) for k, v in (("server", settings.server),
                                      ("environment", settings.environment),
                                      ("certname", certname)) if v is not None]
        actions: List[Action] = []
        if settings.run != "apply" or settings.server or settings.environment:
            current = ctx.read_file(settings.config)
            if settings.server and agent_reads(current, "server_list"):
                values.append(("server_list", settings.server))
            marker = _marker(ctx, [k for k, _ in values])
            content = merge_agent_settings(current, values, marker)
            actions.append(WriteFile(NAME, settings.config, content, mode=0o644))
        if settings.run == "apply":
            assert settings.manifest is not None
            # The manifest goes in on stdin: no copy on disk, and the same argv under any root.
            argv: Tuple[str, ...] = APPLY_ARGV
            if settings.config != DEFAULT_CONFIG:
                argv += ("--config", settings.config)
            actions.append(RunCommand(NAME, argv, timeout=TIMEOUT, ok_codes=frozenset({0, 2}),
                                      reversible=False,
                                      stdin=ctx.listed_file(settings.manifest)))
        if settings.run == "agent-once":
            argv = AGENT_ARGV
            if settings.config != DEFAULT_CONFIG:
                argv += ("--config", settings.config)
            if settings.waitforcert:
                argv += ("--waitforcert", str(settings.waitforcert))
            actions.append(RunCommand(NAME, argv, timeout=TIMEOUT, ok_codes=frozenset({0, 2}),
                                      reversible=False))
        return actions

    def describe(self, settings: Settings) -> Dict[str, Any]:
        return plain({
            "server": settings.server,
            "environment": settings.environment,
            "run": settings.run,
            "certname": settings.certname,
            "waitforcert": settings.waitforcert,
            "manifest": settings.manifest,
            # Only the site can move puppet.conf; shown when it did.
            "config": None if settings.config == DEFAULT_CONFIG else settings.config,
        })


PLUGIN = PuppetPlugin()
