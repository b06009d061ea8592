"""The files plugin: configuration files a site lets a VO install, from inline `content`, a
file on the context carrier (`source`, its sha256 checked), or a Jinja2 `template`.

Payload: the absolute-path entries of the top-level `files` list (payload.parse hands them
here; relative ones list carrier files), each `{path, mode, owner, content | source + sha256
| template, vars}`. Policy: `allow.files: {paths: [globs], max_bytes, owners: [users]}`;
`site_settings.files` holds the site's own template variables. A template sees `facts` (the
run's trusted facts), `site_settings` and its entry's `vars`, rendered by contextd.render.

It must never plan a path that is not absolute and normalised, that no allowed glob matches
as a whole path (`*` within one component), or that lies under contextd's own policy, state,
run or spool directories; never a mode with setuid, setgid, sticky or world-write bits; never
more than max_bytes; never an owner the site did not list. Every file it plans refuses a
symlink on the way (WriteFile.no_links), and it never touches the system itself.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from typing import Any, Dict, List, Optional, Tuple

from contextd.actions import Action, WriteFile
from contextd.errors import PayloadError, PlanError, PolicyError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.plugin import Decision, PlanContext, Plugin, Review, show
from contextd.record import record
from contextd.schema import Reader, glob_one, kind, path_match, plain

NAME = "files"
# contextd's own directories (DESIGN section 4): a payload never writes there, and a policy
# may not allow a glob that could reach into them.
RESERVED = ("/etc/contextd", "/var/lib/contextd", "/run/contextd", "/var/spool/contextd")
PATH_RE = Pattern(r"(/[A-Za-z0-9_@+=,:~.-]+)+\Z")
GLOB_RE = Pattern(r"(/[A-Za-z0-9_@+=,:~.*?\[\]!-]+)+\Z")
OWNER_RE = Pattern(r"[a-z_][a-z0-9_-]{0,31}\Z")
VAR_RE = Pattern(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
UNSAFE_MODE = 0o7002             # setuid, setgid, sticky, write for others
KINDS = ("content", "source", "template")
ENTRY_KEYS = ("path", "mode", "owner", "content", "source", "sha256", "template", "vars")
MAX_ENTRIES = LIMITS.file_entries  # contextd/limits.py says why
MAX_FILE = LIMITS.file_bytes  # contextd/limits.py says why
MAX_TEMPLATE = LIMITS.template_bytes  # contextd/limits.py says why


def path_problem(path: str) -> Optional[str]:
    """Why `path` cannot be a target (None: it can): absolute, normalised, plain names."""
    if not PATH_RE.fullmatch(path) or posixpath.normpath(path) != path or "//" in path \
            or any(part in (".", "..") for part in path.split("/")):
        return "is not an absolute, normalised path (no '..', '.', '//' or trailing '/')"
    if reserved(path):
        return "is under contextd's own directories (%s)" % ", ".join(RESERVED)
    return None


def reserved(path: str) -> bool:
    return any(path == d or path.startswith(d + "/") for d in RESERVED)


def glob_problem(glob: str) -> Optional[str]:
    """Why a policy glob is refused (None: fine): absolute and normal like a path, no `**`,
    and no match possible under contextd's own directories."""
    parts = glob.split("/")
    if not GLOB_RE.fullmatch(glob) or "//" in glob or "**" in glob \
            or any(part in (".", "..") for part in parts):
        return "is not an absolute, normalised path glob (no '..', '.', '//', '**')"
    for directory in RESERVED:
        own = directory.split("/")
        if len(parts) > len(own) and all(glob_one(d, g)
                                         for d, g in zip(own, parts)):
            return "could match files under contextd's own %s" % directory
    return None


@record(frozen=True)
class Entry:
    index: int                   # its place in the payload's `files` list, for messages
    path: str
    mode: int = 0o644
    owner: Optional[str] = None
    content: Optional[str] = None
    source: Optional[str] = None
    sha256: Optional[str] = None
    template: Optional[str] = None
    variables: str = "{}"        # the entry's `vars`, as canonical JSON (frozen)

    @property
    def where(self) -> str:
        return "[%d]" % self.index

    @property
    def kind(self) -> str:
        return "content" if self.content is not None else (
            "source" if self.source is not None else "template")


@record(frozen=True)
class Settings:
    entries: Tuple[Entry, ...]
    site_variables: str = "{}"   # site_settings.files, canonical JSON (authorize sets it)
    max_bytes: int = 0           # allow.files.max_bytes capped by LIMITS (authorize sets it)


@record(frozen=True)
class Allow:
    paths: Optional[Tuple[str, ...]] = None
    max_bytes: Optional[int] = None
    owners: Tuple[str, ...] = ()


@record(frozen=True)
class Site:
    variables: str = "{}"


def _variables(data: Any, where: str, err: Any) -> str:
    """Template variables (names -> JSON-like values) as canonical JSON, bounded."""
    if not isinstance(data, dict):
        raise err("%s must be a mapping of names to values, not %s" % (where, kind(data)))
    for name in data:
        if not isinstance(name, str) or not VAR_RE.fullmatch(name):
            raise err("%s key %s is not a variable name" % (where, show(name)))
    try:
        text = json.dumps(data, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise err("%s holds a value that is not a string, number, boolean, list or mapping "
                  "(%s)" % (where, exc)) from None
    if len(text) > MAX_TEMPLATE:
        raise err("%s is %d bytes as JSON, more than %d" % (where, len(text), MAX_TEMPLATE))
    return text


def _mode(r: Reader) -> int:
    value = r.raw("mode", 0o644)
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3,4}", value):
        value = int(value, 8)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise r.fail("mode", "%s is not a file mode" % show(value),
                     "an octal mode such as 0644, quoted or as a YAML octal")
    return value


def _entry(index: int, data: Any) -> Entry:
    r = Reader(data, "files[%d]" % index, PayloadError)
    r.only(ENTRY_KEYS)
    path = r.str("path", required=True)
    problem = path_problem(path)
    if problem:
        raise r.fail("path", "%s %s" % (show(path), problem))
    given = [k for k in KINDS if r.has(k)]
    if len(given) != 1:
        raise r.err("files[%d] needs exactly one of content, source, template (it has %s)"
                    % (index, ", ".join(given) or "none"))
    if r.has("sha256") != r.has("source"):
        raise r.fail("sha256", "goes with source, and source with sha256")
    if r.has("vars") and not r.has("template"):
        raise r.fail("vars", "is for a template only")
    text = r.str(given[0], required=True)
    limit = MAX_TEMPLATE if given[0] == "template" else MAX_FILE
    if given[0] != "source" and len(text.encode("utf-8")) > limit:
        raise r.fail(given[0], "is more than %d bytes" % limit)
    return Entry(index=index, path=path, mode=_mode(r),
                 owner=r.str("owner", pattern=OWNER_RE, what="user name"),
                 content=text if given[0] == "content" else None,
                 source=r.str("source"), sha256=r.str("sha256"),
                 template=text if given[0] == "template" else None,
                 variables=_variables({} if r.raw("vars") is None else r.raw("vars"),
                                      r.field("vars"), PayloadError))


class FilesPlugin(Plugin):
    name = NAME

    def write_globs(self, allow: Allow) -> Tuple[str, ...]:
        return allow.paths or ()

    def parse_settings(self, data: Any) -> Settings:
        """`data`: [(index in the payload's files, entry)], as payload.parse collects them."""
        if not isinstance(data, list) or len(data) > MAX_ENTRIES:
            raise PayloadError("files: at most %d files to install" % MAX_ENTRIES)
        entries = [_entry(i, item) for i, item in data]
        seen: Dict[str, int] = {}
        for e in entries:
            if e.path in seen:
                raise PayloadError("files[%d].path %s is also files[%d]'s"
                                   % (e.index, e.path, seen[e.path]))
            seen[e.path] = e.index
        return Settings(entries=tuple(entries))

    def parse_allow(self, data: Any) -> Allow:
        r = Reader(data, "allow.files", PolicyError)
        r.only(("paths", "max_bytes", "owners"))
        globs = r.str_list("paths")
        for i, glob in enumerate(globs or ()):
            problem = glob_problem(glob)
            if problem:
                raise r.fail("paths[%d]" % i, "%s %s" % (show(glob), problem))
        owners = r.str_list("owners", pattern=OWNER_RE, what="user name")
        return Allow(paths=None if globs is None else tuple(globs),
                     max_bytes=r.int("max_bytes", minimum=1, maximum=MAX_FILE),
                     owners=tuple(owners or ()))

    def parse_site(self, data: Any) -> Site:
        return Site(variables=_variables(data, "site_settings.files", PolicyError))

    def authorize(self, settings: Settings, allow: Allow, site: Optional[Site]) -> Decision:
        review = Review(NAME)
        for e in settings.entries:
            if not any(path_match(e.path, g) for g in allow.paths or ()):
                review.deny(e.where + ".path", e.path, "not allowed by %s (whole path; '*' "
                            "never crosses '/')" % review.rule("paths", allow.paths))
            if e.mode & UNSAFE_MODE:
                review.deny(e.where + ".mode", "%04o" % e.mode, "setuid, setgid, sticky and "
                            "world-writable modes are never allowed")
            if e.owner is not None and e.owner not in allow.owners:
                review.deny(e.where + ".owner", e.owner,
                            "not allowed by " + review.rule("owners", list(allow.owners)))
            # Content is measured now; a source or a template's output when planned.
            size = len(e.content.encode("utf-8")) if e.content is not None else 0
            review.at_most("%s.%s" % (e.where, e.kind), size, "max_bytes", allow.max_bytes)
        return review.decision(Settings(
            entries=settings.entries, site_variables=(site or Site()).variables,
            max_bytes=min(allow.max_bytes or 0, MAX_FILE)))

    def plan(self, settings: Settings, ctx: PlanContext) -> List[Action]:
        return [WriteFile(NAME, e.path, _content(e, settings, ctx), mode=e.mode,
                          owner=e.owner, no_links=True) for e in settings.entries]

    def describe(self, settings: Settings) -> Dict[str, Any]:
        return {e.where: plain({
            "path": e.path, "mode": "%04o" % e.mode, "owner": e.owner,
            "from": "content" if e.content is not None else (
                "source %s (sha256 %s)" % (e.source, e.sha256) if e.source is not None
                else "template"),
        }) for e in settings.entries}


def _content(e: Entry, settings: Settings, ctx: PlanContext) -> bytes:
    where = "files%s" % e.where
    if e.content is not None:
        data = e.content.encode("utf-8")
    elif e.source is not None:
        data = ctx.listed_file(e.source)
        if hashlib.sha256(data).hexdigest() != e.sha256:     # listed_file checks; so do we
            raise PlanError("%s.source %s does not match its sha256" % (where, e.source))
    else:
        from contextd import render      # Jinja2 only when there is a template

        assert e.template is not None
        data = render.render(e.template, render.namespace(
            ctx.facts, json.loads(settings.site_variables), json.loads(e.variables)),
            settings.max_bytes, where + ".template")
    if len(data) > settings.max_bytes:
        raise PlanError("%s is %d bytes, above allow.files.max_bytes %d"
                        % (where, len(data), settings.max_bytes))
    return data


PLUGIN = FilesPlugin()
