"""The site policy: loaded once, checked completely, then an immutable value.

What it must never do: accept a file anyone but root (or, for unprivileged tests, the
invoking user) could have written, warn where it should refuse, or let a key it does not
know through. Everything a site did not allow is denied.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from contextd import plugin, settings, strictyaml, urls
from contextd.patterns import Pattern
from contextd.trust import sshsig
from contextd.errors import PolicyError
from contextd.limits import LIMITS
from contextd.record import field, record
from contextd.schema import Reader
from contextd.settings import (ABSOLUTE, VO, Ec2Settings, ImageSettings, LegacySettings,
                               MetadataSettings, UrlSettings, X509Settings, duration)

DEFAULT_PATH = "/etc/contextd/policy.yaml"
MAX_POLICY_BYTES = LIMITS.policy_bytes  # contextd/limits.py says why
SOURCES = ("hepix-cdrom", "config-drive", "nocloud", "ec2", "openstack", "gce", "url", "file")
CORE_SECTIONS = ("report",)   # payload sections the core handles itself, not a plugin

_SIGNER_ID = settings.SIGNER_ID     # one rule for signer ids, payload and image
@record(frozen=True)
class Signer:
    id: str
    kind: str                            # "ssh_key" | "ssh_ca" | "x509"
    key_blob: Optional[bytes] = None     # ssh_key / ssh_ca: the public key, SSH wire format
    principals: Tuple[str, ...] = ()
    x509_subject: Optional[str] = None
    x509_issuer: Optional[str] = None
    # The CA in x509.ca_dir the chain must end at; None: the issuer itself (no intermediates).
    x509_anchor: Optional[str] = None
    scopes: Optional[Tuple[str, ...]] = None   # None: every section

    @property
    def fingerprint(self) -> Optional[str]:
        return sshsig.fingerprint(self.key_blob) if self.key_blob else None


@record(frozen=True)
class Revoked:
    ssh_fingerprints: Tuple[str, ...] = ()
    ssh_cert_key_ids: Tuple[str, ...] = ()
    serials: Tuple[int, ...] = ()


@record(frozen=True)
class VoTrust:
    name: str
    threshold: int
    min_serial: int
    signers: Tuple[Signer, ...]
    revoked: Revoked
    # section -> the plugin's parsed allow rules; a section absent here is denied.
    allow: Mapping[str, Any]
    report_urls: Tuple[str, ...] = ()    # globs the payload's report.url must match


@record(frozen=True)
class Policy:
    path: str
    sha256: str
    site: str
    require_signature: bool
    sources: Tuple[str, ...]
    wait_for_source: int
    clock_skew: int
    max_validity: int
    trust: Mapping[str, VoTrust]
    site_settings: Mapping[str, Any]
    report_urls: Tuple[str, ...]
    report_ca_bundle: Optional[str]
    file_source: Optional[str]
    ec2: Ec2Settings
    x509: X509Settings
    legacy: LegacySettings
    document: Mapping[str, Any] = field(repr=False)   # the validated document, for printing
    report_hmac_key_file: Optional[str] = None        # the site's key for its report copies
    image: ImageSettings = ImageSettings()            # who signs this site's images (section 11)
    openstack: MetadataSettings = MetadataSettings(url=settings.OPENSTACK_URL)
    gce: MetadataSettings = MetadataSettings(url=settings.GCE_URL)
    url_source: UrlSettings = UrlSettings()


def load(path: str = DEFAULT_PATH, check_owner: bool = True) -> Policy:
    data = _read_safely(path, check_owner)
    doc = strictyaml.load(data, "policy %s" % path, PolicyError)
    try:
        return parse(doc, path=path, sha256=hashlib.sha256(data).hexdigest())
    except PolicyError as exc:      # the admin learns which file, not only which key
        raise PolicyError("policy %s: %s" % (path, exc.message), exc.hint) from None


def _read_safely(path: str, check_owner: bool) -> bytes:
    try:        # O_NONBLOCK: a FIFO there is refused below instead of hanging the boot
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise PolicyError("policy file %s does not exist" % path,
                          "install one (see examples/policy.yaml) or pass --policy FILE"
                          ) from None
    except OSError as exc:
        raise PolicyError("cannot open policy file %s: %s" % (path, exc.strerror or exc),
                          "it must be a regular file, not a symbolic link") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):    # before fdopen, which raises on a directory
        os.close(fd)
        raise PolicyError("policy %s is not a regular file" % path,
                          "name the policy file itself, not a directory, FIFO or device")
    with os.fdopen(fd, "rb") as f:
        if check_owner:
            if st.st_uid not in (0, os.geteuid()):
                raise PolicyError("policy %s is owned by uid %d, not root" % (path, st.st_uid),
                                  "chown root:root %s" % path)
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise PolicyError(
                    "policy %s is writable by group or others (mode %04o)"
                    % (path, stat.S_IMODE(st.st_mode)),
                    "chmod go-w %s" % path)
        data = f.read(MAX_POLICY_BYTES + 1)
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError("policy %s is larger than %d bytes" % (path, MAX_POLICY_BYTES))
    return data


def parse(doc: Any, path: str = "<policy>", sha256: str = "") -> Policy:
    r = Reader(doc, "", PolicyError)
    r.only(["version", "site", "require_signature", "sources", "wait_for_source", "clock_skew",
            "max_validity", "x509", "ec2", "openstack", "gce", "url", "file", "legacy",
            "site_settings", "trust", "report", "image"])
    version = r.int("version", required=True)
    assert version is not None
    if version != 1:
        raise r.fail("version", "is %d; this contextd reads version 1" % version)
    site = r.str("site", required=True, pattern=Pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
                 what="site name")
    assert site is not None
    sources = _sources(r)

    file_source = None
    fr = r.mapping("file")
    if fr is not None:
        fr.only(["path"])
        file_source = fr.str("path", required=True, pattern=ABSOLUTE, what="absolute path")
    if "file" in sources and file_source is None:
        raise r.fail("sources", "lists 'file' but the policy has no file.path")

    ec2 = settings.ec2(r.mapping("ec2"))
    url_source = settings.url_source(r.mapping("url"))
    if "url" in sources and url_source.location is None:
        raise r.fail("sources", "lists 'url' but the policy has no url.location")
    x509 = settings.x509(r.mapping("x509"))
    legacy = settings.legacy(r.mapping("legacy"))
    site_settings = _site_settings(r.mapping("site_settings"))
    trust = _trust(r.mapping("trust"))

    report_urls: Tuple[str, ...] = ()
    ca_bundle = hmac_key_file = None
    rr = r.mapping("report")
    if rr is not None:
        rr.only(["urls", "ca_bundle", "hmac_key_file"])
        report_urls = _urls(rr, "urls", urls.canonical)    # trusted, but never with a password
        ca_bundle = rr.str("ca_bundle", pattern=ABSOLUTE, what="absolute path")
        # the site's own key for signing its copies (the VO's report.token never signs them)
        hmac_key_file = rr.str("hmac_key_file", pattern=ABSOLUTE, what="absolute path")

    return Policy(
        path=path, sha256=sha256, site=site,
        require_signature=r.bool("require_signature", default=True),
        sources=sources,
        wait_for_source=duration(r, "wait_for_source", 60),
        clock_skew=duration(r, "clock_skew", 300),
        max_validity=duration(r, "max_validity", 31 * 86400),
        trust=trust, site_settings=site_settings,
        report_urls=report_urls, report_ca_bundle=ca_bundle,
        report_hmac_key_file=hmac_key_file, file_source=file_source,
        ec2=ec2, x509=x509, legacy=legacy, document=doc, url_source=url_source,
        openstack=settings.metadata(r.mapping("openstack"), settings.OPENSTACK_URL),
        gce=settings.metadata(r.mapping("gce"), settings.GCE_URL),
        image=settings.image(r.mapping("image")),
    )


def _sources(r: Reader) -> Tuple[str, ...]:
    sources = tuple(r.str_list("sources") or ())
    for i, src in enumerate(sources):
        if src not in SOURCES:
            raise r.fail("sources[%d]" % i, "%r is not a known source" % src,
                         "known sources: %s" % ", ".join(SOURCES))
    if len(set(sources)) != len(sources):
        raise r.fail("sources", "lists a source twice")
    return sources


def _site_settings(r: Optional[Reader]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if r is None:
        return out
    for name in r.data:
        section = plugin.load(name, for_policy=True)
        out[name] = section.parse_site(r.data[name])
    return out


def _trust(r: Optional[Reader]) -> Dict[str, VoTrust]:
    out: Dict[str, VoTrust] = {}
    if r is None:
        return out
    for vo in r.data:
        if not VO.fullmatch(vo):
            raise r.fail(vo, "is not a valid VO name (lowercase letters, digits, _ . -)")
        vr = r.mapping(vo, required=True)
        assert vr is not None
        out[vo] = _vo_trust(vo, vr)
    return out


def _vo_trust(vo: str, r: Reader) -> VoTrust:
    r.only(["threshold", "min_serial", "signers", "revoked", "allow"])
    signers_raw = r.raw("signers")
    if not isinstance(signers_raw, list) or not signers_raw:
        raise r.fail("signers", "must be a non-empty list of signers")
    signers = []
    for i, item in enumerate(signers_raw):
        signers.append(_signer(Reader(item, "%s.signers[%d]" % (r.where, i), PolicyError)))
    ids = [s.id for s in signers]
    if len(set(ids)) != len(ids):
        raise r.fail("signers", "has two signers with the same id")
    _one_key_one_id(r, signers)
    threshold = r.int("threshold", default=1, minimum=1)
    assert threshold is not None
    if threshold > len(signers):
        raise r.fail("threshold",
                     "is %d but only %d signers are listed" % (threshold, len(signers)))

    revoked = Revoked()
    rv = r.mapping("revoked")
    if rv is not None:
        rv.only(["ssh_fingerprints", "ssh_cert_key_ids", "serials"])
        serials = rv.raw("serials") or []
        if not isinstance(serials, list) or any(
                isinstance(s, bool) or not isinstance(s, int) for s in serials):
            raise rv.fail("serials", "must be a list of integers")
        revoked = Revoked(
            ssh_fingerprints=tuple(rv.str_list("ssh_fingerprints",
                                               pattern=Pattern(r"^SHA256:[A-Za-z0-9+/]{43}$"),
                                               what="fingerprint (SHA256:...)") or ()),
            ssh_cert_key_ids=tuple(rv.str_list("ssh_cert_key_ids") or ()),
            serials=tuple(serials))

    allow: Dict[str, Any] = {}
    report_urls: Tuple[str, ...] = ()
    ar = r.mapping("allow")
    if ar is not None:
        for section in ar.data:
            rules = ar.data[section]
            if rules == "deny" or rules is None:
                continue
            if section == "report":
                rr = ar.mapping("report", required=True)
                assert rr is not None
                rr.only(["urls"])
                report_urls = _urls(rr, "urls", urls.parse_glob)
                allow["report"] = True
                continue
            with _under(r.where):       # a plugin names its rules allow.NAME
                allow[section] = plugin.load(section, for_policy=True).parse_allow(rules)
    return VoTrust(name=vo, threshold=threshold,
                   min_serial=r.int("min_serial", default=0, minimum=0) or 0,
                   signers=tuple(signers), revoked=revoked, allow=allow,
                   report_urls=report_urls)


class _under:
    """Put `where` (trust.atlas) before a plugin's field path (allow.cvmfs) in its errors,
    so the message names the full key path of the policy."""

    def __init__(self, where: str):
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, PolicyError) and exc.message.startswith("allow."):
            exc.message = "%s.%s" % (self.where, exc.message)
            exc.args = (exc.message,)


def _urls(r: Reader, key: str, parse: Callable[[str], Any]) -> Tuple[str, ...]:
    """A list of URLs (urls.canonical: kept in that form) or URL globs (urls.parse_glob: kept
    as written, they are parsed again where matched); a message never quotes one."""
    out = []
    for i, text in enumerate(r.str_list(key) or ()):
        try:
            parsed = parse(text)
        except ValueError as exc:
            raise r.fail("%s[%d]" % (key, i), str(exc),
                         "scheme://host[:port]/path, no user:password@, no #fragment") from exc
        out.append(parsed if isinstance(parsed, str) else text)
    return tuple(out)


def _one_key_one_id(r: Reader, signers: Any) -> None:
    """A threshold counts keys: one key (or one X.509 identity) under two ids is refused, so
    that no reader of the policy believes two signers are needed where one key suffices."""
    seen: Dict[Any, str] = {}
    for s in signers:
        key = s.key_blob if s.key_blob else (s.x509_subject, s.x509_issuer)
        if key in seen:
            what = "X.509 signer" if s.kind == "x509" else "key"
            raise r.fail("signers", "lists the same %s under two ids, %r and %r; a threshold "
                         "counts keys, so it would count once" % (what, seen[key], s.id),
                         "keep one of them")
        seen[key] = s.id


def _signer(r: Reader) -> Signer:
    r.only(["id", "ssh_key", "ssh_ca", "principals", "x509", "scopes"])
    sid = r.str("id", required=True, pattern=_SIGNER_ID, what="signer id")
    assert sid is not None
    kinds = [k for k in ("ssh_key", "ssh_ca", "x509") if r.has(k)]
    if len(kinds) != 1:
        raise r.err("%s must have exactly one of ssh_key, ssh_ca, x509 (has %s)"
                    % (r.where, ", ".join(kinds) or "none"))
    scopes_list = r.str_list("scopes")
    scopes = tuple(scopes_list) if scopes_list is not None else None
    kind = kinds[0]
    if kind in ("ssh_key", "ssh_ca"):
        line = r.str(kind, required=True)
        assert line is not None
        try:
            blob = sshsig.public_key_blob(line)
        except ValueError as exc:
            raise r.fail(kind, "is not an OpenSSH public key: %s" % exc,
                         "paste the one line of the .pub file") from exc
        principals = tuple(r.str_list("principals") or ())
        if kind == "ssh_ca" and not principals:
            raise r.fail("principals", "is required for an ssh_ca signer")
        if kind == "ssh_key" and principals:
            raise r.fail("principals", "applies only to ssh_ca signers")
        return Signer(id=sid, kind=kind, key_blob=blob, principals=principals, scopes=scopes)
    xr = r.mapping("x509", required=True)
    assert xr is not None
    xr.only(["subject", "issuer", "anchor"])
    # Compared as strings with the certificate's DN in slash form, never parsed: a value may
    # hold '/' (CN=host/foo.cern.ch), so only the leading "/KEY=" is checked.
    dn = Pattern(r"^/[A-Za-z0-9.]+=[^\x00-\x1f\x7f]*$")
    issuer = xr.str("issuer", required=True, pattern=dn, what="DN in /A=B form")
    anchor = xr.str("anchor", pattern=dn, what="DN in /A=B form")
    return Signer(id=sid, kind=kind, scopes=scopes,
                  x509_subject=xr.str("subject", required=True, pattern=dn, what="DN in /A=B form"),
                  x509_issuer=issuer, x509_anchor=None if anchor == issuer else anchor)

