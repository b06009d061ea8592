"""Migration of today's contexts: amiconfig INI user-data and the HEPiX prolog/epilog scripts.

amiconfig (CernVM, `[cernvm] repositories=...`, `[condor] condor_master=...`): unsigned, so
it reaches this module only as the `Verified` value `verify.accept_unsigned_legacy` makes
where the site opted in (`legacy.amiconfig: {as_vo: VO}` and `require_signature: false`).
A few keys are translated into the settings a signed payload of that VO would carry, and
are authorized against that VO's `allow` lists and the site's `site_settings`, as a signed
payload's are; there are no signers, serial, validity or targets to check. Every other
key is ignored and listed in the report (names only: values may be secrets). Short
repository names (`repositories=atlas,grid`, as CernVM users wrote them) take the site's
`site_settings.cvmfs.default_domain` here, before any allow glob sees them. A leading `#!`
script (amiconfig ran it) is cut off unread and reported with its SHA-256; it becomes a
RunScript action only when that SHA-256 is pinned (`legacy.amiconfig.scripts`) and its
interpreter is /bin/sh or /bin/bash.

HEPiX `prolog.sh`/`epilog.sh` from a context CD-ROM: become RunScript actions only when their
SHA-256 equals the site's pin (`legacy.hepix_scripts`); apply runs them (contextd.hepix),
the prolog before the files and the epilog after the services of a successful apply.
Anything else is reported as not run, with the reason.

What this module must never do: read a `Verified` value that is not `unsigned`, pass an
amiconfig key it does not translate, pin a script that does not match its pin, run one
itself (apply is the one executor), or turn an unpinned amiconfig user-data script into an
action.
"""

from __future__ import annotations

import configparser
import datetime
import hashlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from contextd import plugin
from contextd.actions import RunScript
from contextd.authorize import Authorization, authorize_sections
from contextd.errors import PayloadError, PolicyViolation
from contextd.patterns import Pattern
from contextd.payload import Payload
from contextd.plugin import Finding
from contextd.sources.userdata import split_script
from contextd.trust.verify import Verified


SCRIPTS = ("prolog.sh", "epilog.sh")
SCRIPT_TIMEOUT = 300.0                 # seconds for one HEPiX script
# amiconfig plugin -> contextd plugin it becomes; only these sections are translated.
SECTIONS = {"cernvm": "cvmfs", "condor": "htcondor", "puppet": "puppet"}
_SPLIT = Pattern(r"[\s,]+")


# --------------------------------------------------------------------------------------
# amiconfig


def parse_amiconfig(verified: Verified, as_vo: str, now: datetime.datetime,
                    default_domain: Optional[str] = None, pins: Sequence[str] = ()
                    ) -> Tuple[Payload, Dict[str, Any]]:
    """The payload the amiconfig INI amounts to, and what the report says about it.

    `default_domain` (`cvmfs_domain(policy)`) qualifies short repository names; None: the
    cvmfs plugin's default. `pins`: legacy.amiconfig.scripts, for a leading script.
    """
    if not isinstance(verified, Verified) or not verified.unsigned:
        raise TypeError("legacy.parse_amiconfig takes only accept_unsigned_legacy's value")
    script, ini = split_script(verified.data)
    sections = _read_ini(ini)
    info: Dict[str, Any] = {"format": "amiconfig", "as_vo": as_vo}
    enabled = _enabled(sections)
    translated: List[str] = []
    ignored: List[str] = []
    docs: Dict[str, Dict[str, Any]] = {}
    for name in sorted(sections):
        keys = sections[name]
        if name == "amiconfig":
            ignored.extend("amiconfig.%s" % _safe(k) for k in sorted(keys)
                           if k not in ("plugins", "disabled_plugins"))
            continue
        if name not in SECTIONS:
            ignored.extend(["%s.%s" % (_safe(name), _safe(k)) for k in sorted(keys)]
                           or ["[%s]" % _safe(name)])
            continue
        if name not in enabled:
            ignored.extend("%s.%s (plugin not enabled in [amiconfig])" % (name, _safe(k))
                           for k in sorted(keys))
            continue
        doc, used = _translate(name, keys, default_domain or cvmfs_domain(None), info)
        translated.extend("%s.%s -> %s" % (name, k, target) for k, target in used)
        unused = sorted(set(keys) - {k for k, _ in used})
        ignored.extend("%s.%s" % (name, _safe(k)) for k in unused)
        if doc is not None:
            docs[SECTIONS[name]] = doc
    if not docs:
        raise PayloadError("amiconfig user-data holds nothing contextd translates "
                           "(it reads [cernvm] repositories/proxy, [condor] condor_master, "
                           "[puppet] puppet_server; ignored: %s)" % (", ".join(ignored) or "none"),
                           "ask the VO for a signed contextd payload")
    settings: Dict[str, Any] = {}
    for target, doc in docs.items():
        try:
            settings[target] = plugin.load(target).parse_settings(doc)
        except PayloadError as exc:
            raise PayloadError("amiconfig user-data, translated to %s: %s"
                               % (target, exc.message), exc.hint) from None
    payload = Payload(sha256=verified.sha256, vo=as_vo, serial=0, not_before=now, expires=now,
                      targets=(), files=(), sections=settings, report_url=None,
                      report_token=None)
    info.update(translated=translated, ignored=ignored)
    if script:
        info["script"] = _script_report(script, pins)
    return payload, info


# The interpreters a pinned amiconfig script may name on its `#!` line; contextd runs it with
# that very program, and refuses any other (an `env` lookup, a path it cannot vouch for).
INTERPRETERS = ("/bin/sh", "/bin/bash")


def _script_report(script: bytes, pins: Sequence[str]) -> Dict[str, Any]:
    """The report's entry for a leading `#!` script, and whether it may run: only when its
    SHA-256 is pinned in legacy.amiconfig.scripts and its interpreter is /bin/sh or /bin/bash.

    amiconfig ran it before its plugins (`#!/bin/sh before`) or after them; so does apply
    (its pre or post phase), as for a pinned HEPiX prolog/epilog.
    """
    shebang = script.split(b"\n", 1)[0].strip()
    words = shebang[2:].decode("utf-8", "replace").split()
    interpreter = words[0] if words else ""
    digest = hashlib.sha256(script).hexdigest()
    when = "before" if shebang.endswith(b"before") else "after"
    entry: Dict[str, Any] = {"sha256": digest, "bytes": len(script), "when": when,
                             "status": "not run"}
    if "sha256:" + digest not in pins:
        entry["reason"] = ("%s; contextd never runs an unpinned amiconfig script" % (
            "its sha256 does not match any pin in legacy.amiconfig.scripts" if pins
            else "not pinned in the policy's legacy.amiconfig.scripts"))
    elif interpreter not in INTERPRETERS:
        entry["reason"] = ("interpreter %s not supported: a pinned amiconfig script runs only "
                           "with #!/bin/sh or #!/bin/bash" % (_safe(interpreter) or "(none)"))
    else:
        entry.update(pinned=True, interpreter=interpreter,
                     reason="the run ended before %s" % (
                         "apply" if when == "before" else "a successful apply"))
    return entry


def amiconfig_script(verified: Optional[Verified], info: Optional[Mapping[str, Any]],
                     timeout: float = SCRIPT_TIMEOUT) -> Tuple[RunScript, ...]:
    """The leading script `parse_amiconfig` found pinned, as apply's action: its pre phase
    for `before`, its post phase otherwise. The bytes are cut from the same user-data again,
    and hepix.run checks them against the pinned digest before it runs them."""
    entry = (info or {}).get("script")
    if verified is None or not entry or not entry.get("pinned"):
        return ()
    script, _ = split_script(verified.data)
    return (RunScript(plugin="amiconfig", name="script", data=script, sha256=entry["sha256"],
                      phase="pre" if entry["when"] == "before" else "post", timeout=timeout,
                      interpreter=entry["interpreter"], args=()),)


# What apply's result for the script makes of the report's legacy.script status.
_STATUS = {"ok": "ran", "failed": "failed", "timeout": "failed", "skipped": "not run"}


def with_amiconfig_result(info: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
                          ) -> Dict[str, Any]:
    """The report's `legacy` section once apply ran (or skipped) its script: a new value,
    `script.status` ran|failed|not run and `script.result` apply's own (ok|failed|timeout|
    skipped), with the exit code, time and reason."""
    out = dict(info)
    for result in results:
        if result.get("plugin") != "amiconfig" or "script" not in out:
            continue
        entry = out["script"] = dict(out["script"])
        entry.pop("reason", None)
        entry.update({k: v for k, v in result.items() if k not in ("plugin", "kind", "target",
                                                                   "status")})
        entry.update(status=_STATUS.get(result["status"], "failed"), result=result["status"])
    return out


def cvmfs_domain(policy: Any) -> str:
    """The domain short repository names take: the site's `site_settings.cvmfs.default_domain`
    (the cvmfs plugin's default, cern.ch, when the policy does not set one)."""
    site = policy.site_settings.get("cvmfs") if policy is not None else None
    if site is None:
        site = plugin.load("cvmfs").parse_site({})
    return str(site.default_domain)


def _read_ini(data: bytes) -> Dict[str, Dict[str, str]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("amiconfig user-data is not UTF-8 text (byte %d)"
                           % exc.start) from None
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=", ":"),
                                       comment_prefixes=("#", ";"), default_section="\0none")
    try:
        parser.read_string(text, source="amiconfig user-data")
    except configparser.Error as exc:
        raise PayloadError("amiconfig user-data: %s" % _ini_problem(exc),
                           "amiconfig user-data is [section] lines and key = value lines") from None
    out: Dict[str, Dict[str, str]] = {}
    for section in parser.sections():
        name = section.strip().lower()
        if name in out:
            raise PayloadError("amiconfig user-data: section [%s] appears twice (in other case)"
                               % _safe(name))
        out[name] = {key: value for key, value in parser.items(section)}
    return out


def _safe(name: str) -> str:
    """A section or key name as the report shows it: printable ASCII, at most 40 characters."""
    text = "".join(c if 0x20 < ord(c) < 0x7F else "?" for c in name)
    return text[:40] + ("..." if len(text) > 40 else "")


def _ini_problem(exc: configparser.Error) -> str:
    """What configparser found, without echoing a line (it may hold a secret)."""
    line = getattr(exc, "lineno", None)
    if isinstance(exc, configparser.ParsingError) and exc.errors:
        line = exc.errors[0][0]
        return "line %s is not 'key = value' or a [section]" % line
    if isinstance(exc, configparser.DuplicateOptionError):
        return "line %s sets %s.%s a second time" % (line, exc.section[:40], exc.option[:40])
    if isinstance(exc, configparser.DuplicateSectionError):
        return "line %s repeats section [%s]" % (line, exc.section[:40])
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return "line %s comes before any [section]" % line
    return type(exc).__name__


def _enabled(sections: Mapping[str, Mapping[str, str]]) -> frozenset:
    """The translatable sections amiconfig would have run: `[amiconfig] plugins`, if given."""
    ami = sections.get("amiconfig", {})
    names = set(SECTIONS)
    if ami.get("plugins", "").strip():
        names &= set(_SPLIT.split(ami["plugins"].strip().lower()))
    if ami.get("disabled_plugins", "").strip():
        names -= set(_SPLIT.split(ami["disabled_plugins"].strip().lower()))
    return frozenset(names)


def _translate(name: str, keys: Mapping[str, str], domain: str, info: Dict[str, Any]
               ) -> Tuple[Optional[Dict[str, Any]], List[Tuple[str, str]]]:
    """(settings document for the contextd plugin, [(amiconfig key, contextd field)]).

    Short repository names are qualified here, before the allow globs ever see them, and
    `info` (the report) says which.
    """
    if name == "cernvm":
        short = [r for r in _SPLIT.split(keys.get("repositories", "").strip()) if r]
        if not short:
            return None, []
        # The CVMFS client's own rule: a name without a dot is in CVMFS_DEFAULT_DOMAIN.
        repos = [r if "." in r else "%s.%s" % (r, domain) for r in short]
        info["default_domain"] = domain
        info["qualified"] = ["%s -> %s" % (_safe(a), b) for a, b in zip(short, repos) if a != b]
        doc: Dict[str, Any] = {"repositories": repos}
        used = [("repositories", "cvmfs.repositories")]
        if keys.get("proxy", "").strip():
            doc["http_proxy"] = keys["proxy"].strip()
            used.append(("proxy", "cvmfs.http_proxy"))
        return doc, used
    if name == "condor":
        master = keys.get("condor_master", "").strip()
        if not master:
            return None, []       # amiconfig made a central manager then: not translated
        return ({"role": "execute", "central_manager": master},
                [("condor_master", "htcondor.central_manager (role execute)")])
    server = keys.get("puppet_server", "").strip()
    if not server:
        return None, []
    return {"server": server}, [("puppet_server", "puppet.server")]


def authorize_unsigned(doc: Payload, verified: Verified, policy: Any) -> Authorization:
    """Translated amiconfig against the VO's allow lists and the site settings only.

    Every violation is collected, and any one rejects the whole, as for signed payloads.
    """
    if not isinstance(verified, Verified) or not verified.unsigned:
        raise TypeError("legacy.authorize_unsigned takes only accept_unsigned_legacy's value")
    trust = policy.trust.get(doc.vo)
    if trust is None:
        raise PolicyViolation(["legacy.amiconfig.as_vo %r is not a VO under the policy's trust"
                               % doc.vo])
    violations: List[str] = []
    denied: List[Finding] = []
    decisions, overridden = authorize_sections(doc, trust, policy, violations, denied)
    violations.extend("%s %s %s" % (f.qualified, f.value, f.reason) for f in denied)
    if violations:
        raise PolicyViolation(violations)
    return Authorization(payload=doc, signers=(), decisions=decisions,
                         overridden=tuple(overridden), report_url=None)


# --------------------------------------------------------------------------------------
# HEPiX prolog.sh / epilog.sh


def check_scripts(scripts: Mapping[str, bytes], policy: Any) -> Dict[str, Dict[str, Any]]:
    """The report's `legacy_scripts`: for each script on the carrier, whether it may run."""
    pins = policy.legacy.hepix_scripts
    out: Dict[str, Dict[str, Any]] = {}
    for name in SCRIPTS:
        if name not in scripts:
            continue
        digest = hashlib.sha256(scripts[name]).hexdigest()
        entry: Dict[str, Any] = {"sha256": digest, "status": "not run"}
        pin = pins.get(name)
        if pin is None:
            entry["reason"] = "not pinned in the policy's legacy.hepix_scripts"
        elif pin != "sha256:" + digest:
            entry["reason"] = "its sha256 does not match the pin in legacy.hepix_scripts"
        else:
            entry["pinned"] = True
            entry["reason"] = "the run ended before %s" % (
                "apply" if name == "prolog.sh" else "a successful apply")
        out[name] = entry
    return out


def pinned_scripts(scripts: Mapping[str, bytes], entries: Optional[Mapping[str, Any]],
                   timeout: float = SCRIPT_TIMEOUT) -> Tuple[RunScript, ...]:
    """The scripts `check_scripts` found pinned, as actions for apply: the prolog in its pre
    phase (before the files), the epilog in its post phase (after the services)."""
    return tuple(RunScript(plugin="hepix", name=name, data=scripts[name],
                           sha256=entries[name]["sha256"],
                           phase="pre" if name == "prolog.sh" else "post", timeout=timeout)
                 for name in SCRIPTS
                 if entries and name in entries and entries[name].get("pinned"))


def with_results(entries: Mapping[str, Mapping[str, Any]],
                 results: Sequence[Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """The report's `legacy_scripts` once apply ran (or skipped) some of them: a new value."""
    out = {name: dict(entry) for name, entry in entries.items()}
    for result in results:
        entry = out.get(result["target"]) if result.get("kind") == "script" else None
        if entry is None:
            continue
        entry.pop("reason", None)
        entry.update({k: v for k, v in result.items() if k not in ("plugin", "kind", "target")})
    return out
