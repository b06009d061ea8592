"""The cvmfs plugin: which CernVM-FS repositories a VM lists, its cache quota, its proxies.

It writes `/etc/cvmfs/default.local`, a file that `/bin/sh` sources, and then asks for
`cvmfs_config setup`. Every value that reaches that file is checked against a strict grammar
when the payload or the policy is read (and again when the settings value is built), and is
written single-quoted.

It must never write a value that has not passed those checks, never set any key but
CVMFS_REPOSITORIES, CVMFS_HTTP_PROXY and CVMFS_QUOTA_LIMIT (in particular never
CVMFS_IGNORE_SIGNATURE or key locations), and never touch the system itself: it only
describes the file and the command.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from contextd.actions import Action, RunCommand, WriteFile
from contextd.errors import PayloadError, PolicyError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.plugin import Decision, PlanContext, Plugin, Review, show
from contextd.record import record
from contextd.schema import Reader, glob_match, hostname_ok, plain

NAME = "cvmfs"
PATH = "/etc/cvmfs/default.local"
DEFAULT_DOMAIN = "cern.ch"     # CVMFS_DEFAULT_DOMAIN in the CERN config (50-cern.conf)

# CVMFS's own rule (is_valid_repo_name): at most 60 characters, starts with a letter or
# digit, only letters, digits, '_', '.', '-'. contextd also wants it fully qualified.
REPO_RE = Pattern(r"(?=[A-Za-z0-9_.-]{1,60}\Z)[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)+\Z")
# One proxy in CVMFS_HTTP_PROXY: DIRECT, auto, or http://host[:port] with an optional '/'.
_PROXY_RE = Pattern(r"http://(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?/?\Z")
MAX_PROXY_LEN = LIMITS.cvmfs_proxy_chars  # contextd/limits.py says why
# Globs over repository names, and over proxies (which may spell out a whole proxy list).
GLOB_RE = Pattern(r"[A-Za-z0-9_.*?\[\]!-]+\Z")
PROXY_GLOB_RE = Pattern(r"[A-Za-z0-9_.*?\[\]!:/|;-]+\Z")
PROXY_HINT = ("groups separated by ';', proxies in a group by '|', each DIRECT, auto or "
              "http://host[:port]; no spaces")
_SEP = Pattern(r"([;|])")



def proxy_ok(value: Any) -> bool:
    """True for a CVMFS proxy list in the strict grammar contextd writes."""
    if not isinstance(value, str) or not value or len(value) > MAX_PROXY_LEN:
        return False
    for group in value.split(";"):
        for proxy in group.split("|"):
            if proxy in ("DIRECT", "auto"):
                continue
            m = _PROXY_RE.match(proxy)
            if m is None or not hostname_ok(m.group("host")):
                return False
            port = m.group("port")
            if port is not None and not 1 <= int(port) <= 65535:
                return False
    return True


def proxy_allowed(value: str, globs: Sequence[str]) -> bool:
    """Whether a proxy list is covered by the allow globs.

    Plain fnmatch over the whole list would let `*` swallow a separator
    (`http://*.cern.ch:3128` would match `http://evil.org:80|http://a.cern.ch:3128`), so:
    a glob without `;`/`|` names single proxies, and the list is allowed when each of its
    proxies matches such a glob; a glob that spells out a list matches a list of the same
    shape, piece by piece.
    """
    pieces = _SEP.split(value)
    proxies = pieces[0::2]
    single = [g for g in globs if not _SEP.search(g)]
    if all(glob_match(p, single) for p in proxies):
        return True
    for g in globs:
        gp = _SEP.split(g)
        if len(gp) == len(pieces) and gp[1::2] == pieces[1::2] and all(
                glob_match(p, [q]) for p, q in zip(proxies, gp[0::2])):
            return True
    return False


@record(frozen=True)
class Settings:
    repositories: Tuple[str, ...]
    quota_limit_mb: Optional[int] = None
    http_proxy: Optional[str] = None

    def __post_init__(self) -> None:
        # A second line of defence: no settings value can hold what the file cannot.
        if not self.repositories or not all(
                isinstance(r, str) and REPO_RE.match(r) for r in self.repositories):
            raise ValueError("cvmfs settings: invalid repositories")
        _check_quota(self.quota_limit_mb)
        if self.http_proxy is not None and not proxy_ok(self.http_proxy):
            raise ValueError("cvmfs settings: invalid http_proxy")


@record(frozen=True)
class Allow:
    repositories: Optional[Tuple[str, ...]] = None   # None: not set, nothing allowed
    max_quota_mb: Optional[int] = None               # None: the payload may not set a quota
    http_proxies: Optional[Tuple[str, ...]] = None   # None: the payload may not set a proxy


@record(frozen=True)
class Site:
    http_proxy: Optional[str] = None
    quota_limit_mb: Optional[int] = None
    # CVMFS_DEFAULT_DOMAIN as the CERN config sets it: what legacy amiconfig's short names
    # (`repositories=atlas,grid`) mean. Signed payloads never use it: they name full names.
    default_domain: str = DEFAULT_DOMAIN

    def __post_init__(self) -> None:
        _check_quota(self.quota_limit_mb)
        if self.http_proxy is not None and not proxy_ok(self.http_proxy):
            raise ValueError("cvmfs site settings: invalid http_proxy")
        if not domain_ok(self.default_domain):
            raise ValueError("cvmfs site settings: invalid default_domain")


def domain_ok(value: Any) -> bool:
    """A domain a short repository name can take: a hostname, with room for a name in front
    within CVMFS's 60 characters."""
    return isinstance(value, str) and hostname_ok(value) and bool(REPO_RE.match("x." + value))


def _check_quota(value: Optional[int]) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ValueError("cvmfs settings: invalid quota_limit_mb")


def _read_proxy(r: Reader) -> Optional[str]:
    value = r.str("http_proxy")
    if value is not None and not proxy_ok(value):
        raise r.fail("http_proxy", "%s is not a valid CVMFS proxy list" % show(value),
                     PROXY_HINT)
    return value


def _quoted(value: str) -> str:
    """A single-quoted /bin/sh word; the grammars above never let a quote through."""
    if "'" in value or "\n" in value or "\\" in value:
        raise ValueError("refusing to quote %r" % value)
    return "'%s'" % value


class CvmfsPlugin(Plugin):
    name = NAME
    secret_fields: frozenset = frozenset()

    def writes(self, site: Optional[Site]) -> Tuple[str, ...]:
        return (PATH,)

    def parse_settings(self, data: Any) -> Settings:
        r = Reader(data, NAME, PayloadError)
        r.only(("repositories", "quota_limit_mb", "http_proxy"))
        repos = r.str_list("repositories", required=True, pattern=REPO_RE,
                           what="repository name")
        assert repos is not None
        if not repos:
            raise r.fail("repositories", "must not be empty",
                         "list fully qualified names such as atlas.cern.ch")
        seen = set()
        for i, repo in enumerate(repos):
            if repo in seen:
                raise r.fail("repositories[%d]" % i, "%r is listed twice" % repo)
            seen.add(repo)
        return Settings(
            repositories=tuple(repos),
            quota_limit_mb=r.int("quota_limit_mb", minimum=1),
            http_proxy=_read_proxy(r),
        )

    def parse_allow(self, data: Any) -> Allow:
        r = Reader(data, "allow.cvmfs", PolicyError)
        r.only(("repositories", "max_quota_mb", "http_proxies"))
        repos = r.str_list("repositories", pattern=GLOB_RE, what="repository glob")
        proxies = r.str_list("http_proxies", pattern=PROXY_GLOB_RE, what="proxy glob")
        return Allow(
            repositories=None if repos is None else tuple(repos),
            max_quota_mb=r.int("max_quota_mb", minimum=1),
            http_proxies=None if proxies is None else tuple(proxies),
        )

    def parse_site(self, data: Any) -> Site:
        r = Reader(data, "site_settings.cvmfs", PolicyError)
        r.only(("http_proxy", "quota_limit_mb", "default_domain"))
        domain = r.str("default_domain", default=DEFAULT_DOMAIN)
        if not domain_ok(domain):
            raise r.fail("default_domain", "%s is not a domain a repository name can end in"
                         % show(domain), "a domain such as cern.ch or egi.eu")
        assert domain is not None
        return Site(http_proxy=_read_proxy(r), quota_limit_mb=r.int("quota_limit_mb", minimum=1),
                    default_domain=domain)

    def authorize(self, settings: Settings, allow: Allow, site: Optional[Site]) -> Decision:
        review = Review(NAME)
        site = site or Site()
        # Site settings first: what the site sets is not the payload's to ask for.
        proxy, check_proxy = review.site_wins("http_proxy", settings.http_proxy, site.http_proxy)
        quota, check_quota = review.site_wins("quota_limit_mb", settings.quota_limit_mb,
                                              site.quota_limit_mb)
        for i, repo in enumerate(settings.repositories):
            review.globs("repositories[%d]" % i, repo, "repositories", allow.repositories)
        if check_quota:
            review.at_most("quota_limit_mb", quota, "max_quota_mb", allow.max_quota_mb)
        if check_proxy and not proxy_allowed(proxy, allow.http_proxies or ()):
            review.deny("http_proxy", proxy,
                        "not allowed by " + review.rule("http_proxies", allow.http_proxies))
        return review.decision(
            Settings(settings.repositories, quota_limit_mb=quota, http_proxy=proxy))

    def plan(self, settings: Settings, ctx: PlanContext) -> List[Action]:
        lines = [ctx.file_header(),
                 "CVMFS_REPOSITORIES=%s\n" % _quoted(",".join(settings.repositories))]
        if settings.http_proxy is not None:
            lines.append("CVMFS_HTTP_PROXY=%s\n" % _quoted(settings.http_proxy))
        if settings.quota_limit_mb is not None:
            lines.append("CVMFS_QUOTA_LIMIT=%s\n" % _quoted(str(settings.quota_limit_mb)))
        return [
            WriteFile(NAME, PATH, "".join(lines).encode("ascii"), mode=0o644),
            RunCommand(NAME, ("cvmfs_config", "setup")),
        ]

    def describe(self, settings: Settings) -> Dict[str, Any]:
        return plain({
            "repositories": list(settings.repositories),
            "quota_limit_mb": settings.quota_limit_mb,
            "http_proxy": settings.http_proxy,
        })


PLUGIN = CvmfsPlugin()
