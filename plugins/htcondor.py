"""The htcondor plugin: makes the VM an HTCondor node of the VO's pool.

It writes `/etc/condor/config.d/50-contextd.conf` (the role metaknob, CONDOR_HOST, the
allowed machine attributes and the payload's digest, VO and serial, all published through
STARTD_ATTRS), the pool token to `/etc/condor/tokens.d/contextd.token` (0600, in a 0700
directory, both owned by the condor user) when the payload gives one, and asks for
`systemctl enable --now --no-block condor` as a service action, which the executor runs
last of all. `--no-block` because contextd.service is ordered Before=condor.service: a
blocking start from inside contextd's own start job would wait for contextd to finish,
forever (seen in the VM boot test). It declares condor.service as its service, which `run`
keeps from starting on a boot where the site no longer allows the payload that configured
it.

It must never write a value that has not passed the grammar checks below (HTCondor expands
`$(...)` in configuration values, so `$`, quotes, backslashes and newlines never get through),
never let the payload set a knob contextd sets itself, never show the token (not in errors,
findings, describe() or any repr) and never touch the system itself.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple, Union

from contextd.actions import Action, RunCommand, WriteFile, disable_unit
from contextd.errors import PayloadError, PolicyError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.plugin import Decision, PlanContext, Plugin, Review, show
from contextd.record import field, record
from contextd.schema import Reader, hostname_ok, kind, plain

NAME = "htcondor"
UNIT = "condor"
START_ARGV = ("systemctl", "enable", "--now", "--no-block", UNIT)
STOP_ARGV = disable_unit(UNIT)
CONFIG_PATH = "/etc/condor/config.d/50-contextd.conf"
# HTCondor's packaged default for SEC_TOKEN_SYSTEM_DIRECTORY ($(ETC)/tokens.d, ETC being
# /etc/condor in the RPMs), so the configuration does not need to name it.
TOKEN_DIR = "/etc/condor/tokens.d"
TOKEN_PATH = TOKEN_DIR + "/contextd.token"
# HTCondor (since 8.9.9, PR #124) reads daemon tokens as the condor user (PRIV_CONDOR): a
# root-owned 0600 token is unreadable to it and the node never authenticates. Its packaging
# and CHTC's instructions make tokens.d condor:condor 0700, so the token is condor's too.
TOKEN_OWNER = "condor"
MAX_TOKEN = LIMITS.htcondor_token_bytes  # contextd/limits.py says why
SECRET = "<secret>"

# Spellings accepted for `role` (case, '-' and '_' ignored) -> the ROLE metaknob.
ROLES = {
    "execute": "Execute",
    "submit": "Submit",
    "centralmanager": "CentralManager",
    "personal": "Personal",
}
# ... and back to the spelling contextd shows (findings, describe()).
ROLE_NAMES = {"Execute": "execute", "Submit": "submit", "CentralManager": "central-manager",
              "Personal": "personal"}
ROLE_HINT = "one of execute, submit, central-manager, personal"

ATTR_NAME_RE = Pattern(r"[A-Za-z_][A-Za-z0-9_]{0,99}\Z")
# String attribute values: written as a quoted ClassAd literal, so no '"', '\', '$'
# (macro expansion) or control characters; spaces only inside.
ATTR_STR_RE = Pattern(r"[A-Za-z0-9_.,:;/@+=%~ -]{0,1024}\Z")
ATTR_STR_HINT = "letters, digits, spaces inside and _ . , : ; / @ + = % ~ -, at most 1024"
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1
# Knobs contextd writes itself, and words of the configuration and ClassAd languages.
# HTCondor names are case-insensitive, so these are compared upper-cased.
RESERVED = frozenset((
    "CONDOR_HOST", "STARTD_ATTRS", "DAEMON_LIST",
    "USE", "INCLUDE", "IF", "ELIF", "ELSE", "ENDIF", "ERROR", "WARNING",
    "TRUE", "FALSE", "UNDEFINED", "IS", "ISNT", "MY", "TARGET", "PARENT",
))
RESERVED_PREFIX = "CONTEXTD_"
TOKEN_CHARS = "A-Za-z0-9._-"          # a JWT's characters
TOKEN_RE = Pattern(r"[%s]+\Z" % TOKEN_CHARS)
GLOB_RE = Pattern(r"[A-Za-z0-9_.*?\[\]!:-]+\Z")


Value = Union[str, int, bool]
Attributes = Tuple[Tuple[str, Value], ...]


def central_manager_ok(value: Any) -> bool:
    """A host name with an optional :port."""
    if not isinstance(value, str):
        return False
    host, sep, port = value.partition(":")
    if sep and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        return False
    return hostname_ok(host)


def role_of(value: Any) -> Optional[str]:
    """The metaknob name for a role spelling, or None."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_-]{1,32}", value):
        return None
    return ROLES.get(value.replace("-", "").replace("_", "").lower())


def attr_name_problem(name: Any) -> Optional[str]:
    if not isinstance(name, str) or not ATTR_NAME_RE.match(name):
        return "is not a valid attribute name (letters, digits, '_'; not starting with a digit)"
    upper = name.upper()
    if upper in RESERVED or upper.startswith(RESERVED_PREFIX):
        return "is set by contextd itself or is a reserved word"
    return None


def attr_value_problem(value: Any) -> Optional[str]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if INT_MIN <= value <= INT_MAX else "is out of the 64-bit integer range"
    if isinstance(value, str):
        if not ATTR_STR_RE.match(value) or value != value.strip(" "):
            return "is not a safe string (%s)" % ATTR_STR_HINT
        return None
    return "must be a string, an integer or a boolean, not %s" % kind(value)


def token_ok(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TOKEN and \
        TOKEN_RE.match(value) is not None


def classad_literal(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if attr_value_problem(value) is not None:
        raise ValueError("refusing to write attribute value %r" % value)
    return '"%s"' % value


def _check_attributes(attributes: Attributes) -> None:
    seen = set()
    for name, value in attributes:
        if attr_name_problem(name) or attr_value_problem(value) or name.upper() in seen:
            raise ValueError("htcondor settings: invalid attribute %r" % (name,))
        seen.add(name.upper())


@record(frozen=True)
class Settings:
    role: str                        # the ROLE metaknob: Execute, Submit, CentralManager, Personal
    central_manager: str             # host[:port]
    attributes: Attributes = ()
    token: Optional[str] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # A second line of defence: no settings value can hold what the files cannot.
        if self.role not in ROLE_NAMES:
            raise ValueError("htcondor settings: invalid role")
        if not central_manager_ok(self.central_manager):
            raise ValueError("htcondor settings: invalid central_manager")
        _check_attributes(self.attributes)
        if self.token is not None and not token_ok(self.token):
            raise ValueError("htcondor settings: invalid token")


@record(frozen=True)
class Allow:
    roles: Tuple[str, ...] = ()                        # metaknob names
    central_managers: Optional[Tuple[str, ...]] = None
    attributes: Tuple[str, ...] = ()                   # names the VO may set


@record(frozen=True)
class Site:
    central_manager: Optional[str] = None
    attributes: Attributes = ()

    def __post_init__(self) -> None:
        if self.central_manager is not None and not central_manager_ok(self.central_manager):
            raise ValueError("htcondor site settings: invalid central_manager")
        _check_attributes(self.attributes)


def _read_cm(r: Reader, required: bool) -> Optional[str]:
    value = r.str("central_manager", required=required)
    if value is not None and not central_manager_ok(value):
        raise r.fail("central_manager", "%s is not a valid host name[:port]" % show(value))
    return value


def _read_attributes(r: Reader) -> Attributes:
    sub = r.mapping("attributes")
    if sub is None:
        return ()
    out = []
    seen: Dict[str, str] = {}
    for name, value in sub.data.items():
        problem = attr_name_problem(name)
        if problem:
            raise sub.err("%s key %s %s" % (sub.where, show(name), problem))
        first = seen.get(name.upper())
        if first is not None:
            raise sub.fail(name, "is the same HTCondor knob as %s (names ignore case)" % first)
        seen[name.upper()] = name
        problem = attr_value_problem(value)
        if problem:
            shown = "" if not isinstance(value, (str, int)) else show(value) + " "
            raise sub.fail(name, shown + problem)
        out.append((name, value))
    return tuple(out)


def _merge_attributes(review: Review, payload: Attributes, site: Attributes
                      ) -> Tuple[Attributes, Attributes]:
    """(the attributes to plan with, the payload's own that the allow rules check): a site
    attribute replaces the payload's of the same name (names ignore case) in its place;
    what only the site sets is just used, in the site's order."""
    site_attrs = {name.upper(): (name, value) for name, value in site}
    attributes = []
    own = []
    for name, value in payload:
        if name.upper() in site_attrs:
            site_name, site_value = site_attrs.pop(name.upper())
            review.override("attributes." + name, value, "attributes." + site_name)
            attributes.append((site_name, site_value))
        else:
            own.append((name, value))
            attributes.append((name, value))
    attributes.extend((n, v) for n, v in site if n.upper() in site_attrs)
    return tuple(attributes), tuple(own)


class HTCondorPlugin(Plugin):
    name = NAME
    secret_fields: frozenset = frozenset({"token"})
    units = (UNIT,)

    def writes(self, site: Optional[Site]) -> Tuple[str, ...]:
        return (CONFIG_PATH, TOKEN_PATH)

    def parse_settings(self, data: Any) -> Settings:
        r = Reader(data, NAME, PayloadError)
        r.only(("role", "central_manager", "attributes", "token"))
        raw_role = r.str("role", required=True)
        role = role_of(raw_role)
        if role is None:
            raise r.fail("role", "%s is not a valid role" % show(raw_role), ROLE_HINT)
        cm = _read_cm(r, required=True)
        assert cm is not None
        # Never echo a secret, not even a malformed one: Reader.secret says only what is wrong.
        token = r.secret("token", TOKEN_CHARS, 1, MAX_TOKEN)
        return Settings(role=role, central_manager=cm, attributes=_read_attributes(r),
                        token=token)

    def parse_allow(self, data: Any) -> Allow:
        r = Reader(data, "allow.htcondor", PolicyError)
        r.only(("roles", "central_managers", "attributes"))
        roles = []
        for i, raw in enumerate(r.str_list("roles") or ()):
            role = role_of(raw)
            if role is None:
                raise r.fail("roles[%d]" % i, "%s is not a valid role" % show(raw), ROLE_HINT)
            roles.append(role)
        cms = r.str_list("central_managers", pattern=GLOB_RE, what="host glob")
        names = r.str_list("attributes", pattern=ATTR_NAME_RE, what="attribute name")
        return Allow(roles=tuple(roles),
                     central_managers=None if cms is None else tuple(cms),
                     attributes=tuple(names or ()))

    def parse_site(self, data: Any) -> Site:
        r = Reader(data, "site_settings.htcondor", PolicyError)
        r.only(("central_manager", "attributes"))
        return Site(central_manager=_read_cm(r, required=False),
                    attributes=_read_attributes(r))

    def authorize(self, settings: Settings, allow: Allow, site: Optional[Site]) -> Decision:
        review = Review(NAME)
        site = site or Site()
        cm, check_cm = review.site_wins("central_manager", settings.central_manager,
                                        site.central_manager)
        attributes, own = _merge_attributes(review, settings.attributes, site.attributes)
        if settings.role not in allow.roles:
            review.deny("role", ROLE_NAMES[settings.role], "not allowed by " + review.rule(
                "roles", [ROLE_NAMES[r] for r in allow.roles]))
        if check_cm:
            review.globs("central_manager", cm, "central_managers", allow.central_managers)
        allowed_names = {n.upper() for n in allow.attributes}
        for name, value in own:
            if name.upper() not in allowed_names:
                review.deny("attributes." + name, value,
                            "not allowed by " + review.rule("attributes", allow.attributes))
        return review.decision(Settings(role=settings.role, central_manager=cm,
                                        attributes=attributes, token=settings.token))

    def plan(self, settings: Settings, ctx: PlanContext) -> List[Action]:
        header = ctx.file_header()
        lines = [header,
                 # The role first: its metaknob sets defaults (ROLE:Personal even sets
                 # CONDOR_HOST) that the explicit lines below must override.
                 "use ROLE : %s\n" % settings.role,
                 "CONDOR_HOST = %s\n" % settings.central_manager]
        for name, value in settings.attributes:
            lines.append("%s = %s\n" % (name, classad_literal(value)))
        lines += [
            'CONTEXTD_PAYLOAD_SHA256 = "%s"\n' % ctx.payload_sha256,
            'CONTEXTD_VO = "%s"\n' % ctx.vo,
            "CONTEXTD_SERIAL = %d\n" % ctx.serial,
            "STARTD_ATTRS = $(STARTD_ATTRS) %s\n" % " ".join(
                [name for name, _ in settings.attributes]
                + ["CONTEXTD_PAYLOAD_SHA256", "CONTEXTD_VO", "CONTEXTD_SERIAL"]),
        ]
        actions: List[Action] = [
            WriteFile(NAME, CONFIG_PATH, "".join(lines).encode("ascii"), mode=0o644),
        ]
        if settings.token is not None:
            actions.append(WriteFile(NAME, TOKEN_PATH, (settings.token + "\n").encode("ascii"),
                                     mode=0o600, secret=True, dir_mode=0o700,
                                     owner=TOKEN_OWNER))
        actions.append(RunCommand(NAME, START_ARGV, service=True, undo=STOP_ARGV))
        return actions

    def describe(self, settings: Settings) -> Dict[str, Any]:
        return plain({
            "role": ROLE_NAMES[settings.role],
            "central_manager": settings.central_manager,
            "attributes": {name: value for name, value in settings.attributes} or None,
            "token": None if settings.token is None else SECRET,
        })


PLUGIN = HTCondorPlugin()
