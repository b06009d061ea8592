"""The packages plugin: installs the packages a site lets a VO ask for, from the site's
repositories only, with the image's own package manager.

Payload `packages: {install: [names]}`; policy `allow.packages: {names: [globs], repos: [repo
ids]}`. On EL images (by /etc/os-release) each package is `dnf -y --disablerepo=* --enablerepo=R
... install NAME`, unless `rpm -q` finds it installed; on Debian images `apt-get install` with
the one allowed repository's sources list (`/etc/apt/sources.list.d/R.list`) as its only
source, after an `apt-get update` of that list, unless `dpkg-query` says it is installed. The
installs run first, before any file is written (the files may configure them), and cannot be
undone: a later failure reports them under `not_undone`.

It must never plan a name outside its strict grammar (no option, path, URL, glob, group or
version spec reaches the package manager), never a repository the site did not list, never a
shell, and never touch the system itself.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from contextd.actions import Action, RunCommand
from contextd.errors import PayloadError, PlanError, PolicyError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.plugin import Decision, PlanContext, Plugin, Review, show
from contextd.record import record
from contextd.schema import Reader

NAME = "packages"
NAME_RE = Pattern(r"[A-Za-z0-9_+][A-Za-z0-9._+-]{0,127}\Z")
GLOB_RE = Pattern(r"[A-Za-z0-9._+*?\[\]!-]{1,128}\Z")
REPO_RE = Pattern(r"[A-Za-z0-9_][A-Za-z0-9._:-]{0,99}\Z")
MAX_NAMES = LIMITS.package_names  # contextd/limits.py says why
TIMEOUT = float(LIMITS.package_seconds)
OS_RELEASE = "/etc/os-release"
EL_IDS = frozenset({"rhel", "fedora", "centos", "rocky", "almalinux", "ol", "scientific"})
DEBIAN_IDS = frozenset({"debian", "ubuntu"})
APT_ENV = ("env", "DEBIAN_FRONTEND=noninteractive")


@record(frozen=True)
class Settings:
    install: Tuple[str, ...]
    repos: Tuple[str, ...] = ()          # allow.packages.repos, set by authorize

    def __post_init__(self) -> None:
        # A second line of defence: nothing outside the grammars reaches an argv.
        if not all(isinstance(n, str) and NAME_RE.match(n) for n in self.install) or \
                not all(isinstance(r, str) and REPO_RE.match(r) for r in self.repos):
            raise ValueError("packages settings: invalid name or repository")


@record(frozen=True)
class Allow:
    names: Optional[Tuple[str, ...]] = None
    repos: Tuple[str, ...] = ()


def manager(os_release: Optional[bytes]) -> str:
    """"dnf" or "apt-get", from the image's os-release ID and ID_LIKE; PlanError else."""
    ids: List[str] = []
    for line in (os_release or b"").decode("utf-8", "replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("ID", "ID_LIKE"):
            ids += value.strip().strip("\"'").lower().split()
    if EL_IDS.intersection(ids):
        return "dnf"
    if DEBIAN_IDS.intersection(ids):
        return "apt-get"
    raise PlanError("packages: cannot tell the image's package manager from %s (ID %s)"
                    % (OS_RELEASE, show(" ".join(ids) or "missing")),
                    "contextd installs with dnf on EL and apt-get on Debian images")


def dnf_install(name: str, repos: Tuple[str, ...]) -> RunCommand:
    argv = ("dnf", "-y", "--disablerepo=*", *("--enablerepo=%s" % r for r in repos),
            "install", name)
    return RunCommand(NAME, argv, timeout=TIMEOUT, first=True, reversible=False,
                      unless=("rpm", "-q", "--quiet", name))


def apt_options(repo: str) -> Tuple[str, ...]:
    """apt with the one repository's sources list as its only source."""
    return ("-o", "Dir::Etc::SourceList=/etc/apt/sources.list.d/%s.list" % repo,
            "-o", "Dir::Etc::SourceParts=-")


def apt_commands(names: Tuple[str, ...], repos: Tuple[str, ...]) -> List[RunCommand]:
    if len(repos) != 1:
        raise PlanError("packages: apt-get installs from one repository at a time, and "
                        "allow.packages.repos lists %d" % len(repos),
                        "allow exactly one repository for Debian images")
    options = apt_options(repos[0])
    update = RunCommand(NAME, (*APT_ENV, "apt-get", "-q", *options, "-o",
                               "APT::Get::List-Cleanup=0", "update"),
                        timeout=TIMEOUT, first=True)
    return [update] + [
        RunCommand(NAME, (*APT_ENV, "apt-get", "-y", "-q", *options, "install", name),
                   timeout=TIMEOUT, first=True, reversible=False,
                   unless=("dpkg-query", "-W", "-f=${db:Status-Status}", name),
                   unless_stdout=b"installed")
        for name in names]


class PackagesPlugin(Plugin):
    name = NAME

    def parse_settings(self, data: Any) -> Settings:
        r = Reader(data, NAME, PayloadError)
        r.only(("install",))
        names = r.str_list("install", required=True, pattern=NAME_RE, what="package name")
        assert names is not None
        if not names or len(names) > MAX_NAMES:
            raise r.fail("install", "must list 1 to %d package names" % MAX_NAMES)
        if len(set(names)) != len(names):
            raise r.fail("install", "lists a package twice")
        return Settings(install=tuple(names))

    def parse_allow(self, data: Any) -> Allow:
        r = Reader(data, "allow.packages", PolicyError)
        r.only(("names", "repos"))
        names = r.str_list("names", pattern=GLOB_RE, what="package name glob")
        repos = r.str_list("repos", pattern=REPO_RE, what="repository id")
        return Allow(names=None if names is None else tuple(names), repos=tuple(repos or ()))

    def parse_site(self, data: Any) -> None:
        Reader(data, "site_settings.packages", PolicyError).only(())

    def authorize(self, settings: Settings, allow: Allow, site: Optional[Any]) -> Decision:
        review = Review(NAME)
        for i, name in enumerate(settings.install):
            if not allow.repos:
                review.deny("install[%d]" % i, name, "no repository to install from: "
                            "allow.packages.repos is not set")
            else:
                review.globs("install[%d]" % i, name, "names", allow.names)
        return review.decision(Settings(install=settings.install, repos=allow.repos))

    def plan(self, settings: Settings, ctx: PlanContext) -> List[Action]:
        if manager(ctx.read_file(OS_RELEASE)) == "dnf":
            return [dnf_install(name, settings.repos) for name in settings.install]
        return list(apt_commands(settings.install, settings.repos))

    def describe(self, settings: Settings) -> Dict[str, Any]:
        # One entry per package, so explain gives each its own verdict.
        return {"install[%d]" % i: name for i, name in enumerate(settings.install)}


PLUGIN = PackagesPlugin()
