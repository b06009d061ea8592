"""URLs from payloads and policies: one canonical form, and globs matched part by part.

A report URL is matched as scheme, host, port and path apart, never as one string: a host
glob only ever sees a host (lower case, an IDN in its ASCII form, an IPv6 literal in its
compressed form), so the `*` of `https://*.example.org/*` cannot reach into a path, a
query, a fragment or userinfo. The payload's URL is replaced by its canonical form before it
is matched, and that form is what gets delivered to: requests, urllib3 and the resolver
never read another host out of a string that was matched as this one.

What it must never do: accept userinfo (user:password@) or a fragment, a host that does not
normalise, a dot segment in a path, a port out of range; or raise anything but ValueError,
whatever the input. Its messages never quote the URL (userinfo may hold a password): the
caller names the field.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

from contextd.patterns import Pattern
from contextd.record import record
from contextd.schema import glob_one, hostname_ok

DEFAULT_PORTS = {"http": 80, "https": 443}
# Printable ASCII, or anything above it (an IDN host): no spaces, controls or backslash,
# which urlsplit would drop or keep where other parsers do something else.
_CLEAN = Pattern(r"[^\x00-\x20\x7f\\]*")
# host (a bracketed IPv6 literal or anything without brackets, '@' or ':') and a port
_AUTHORITY = Pattern(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]@:]+)(?::([0-9]*))?")
# RFC 3986 path and query characters, %XX escapes checked apart
_PATH = Pattern(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
_QUERY = Pattern(r"[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")
_ESCAPE = Pattern(r"%(?![0-9A-Fa-f]{2})")
_HOST_GLOB = Pattern(r"[a-z0-9.*?\[\]!-]+")
_PATH_GLOB = Pattern(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?\[\]-]*")


@record(frozen=True)
class Parts:
    scheme: str
    host: str              # lower case ASCII; an IPv6 literal without brackets
    port: int              # explicit or the scheme's default
    path: str              # at least "/"
    query: str = ""

    def url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        port = "" if self.port == DEFAULT_PORTS[self.scheme] else ":%d" % self.port
        return "%s://%s%s%s%s" % (self.scheme, host, port, self.path,
                                  "?" + self.query if self.query else "")


def split(url: str) -> Parts:
    """The canonical parts of an http(s) URL; ValueError says what is wrong."""
    import urllib.parse                 # only runs that name a URL pay for it

    if not isinstance(url, str) or not _CLEAN.fullmatch(url):
        raise ValueError("holds spaces, control characters or a backslash")
    if "#" in url:
        raise ValueError("has a fragment ('#'): not allowed")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise ValueError("is not a URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("must start with http:// or https://")
    if "@" in parts.netloc:
        raise ValueError("holds user information (user:password@): not allowed")
    authority = _AUTHORITY.fullmatch(parts.netloc)
    if not authority:
        raise ValueError("has no valid host[:port]")
    host = ascii_host(authority.group(1))
    port = _port(authority.group(2), scheme)
    path = parts.path or "/"
    if not _PATH.fullmatch(path) or _ESCAPE.search(path):
        raise ValueError("has characters a path may not hold")
    # decoded first: a receiver that decodes %2f and %2e would walk out of the matched path
    if any(seg in (".", "..") for seg in urllib.parse.unquote(path).split("/")):
        raise ValueError("has a '.' or '..' segment in its path")
    if not _QUERY.fullmatch(parts.query) or _ESCAPE.search(parts.query):
        raise ValueError("has characters a query may not hold")
    return Parts(scheme, host, port, path, parts.query)


def canonical(url: str) -> str:
    """The one spelling of `url` that is matched and delivered to."""
    return split(url).url()


def ascii_host(host: str) -> str:
    """`host` lower-cased, IDNA-encoded (Python's idna codec), or an IPv6 literal compressed."""
    if host.startswith("["):
        import ipaddress

        if not re.fullmatch(r"\[[0-9A-Fa-f:.]+\]", host):   # no zone id: '%eth0' is local
            raise ValueError("has an IPv6 address that is not valid")
        try:
            return ipaddress.IPv6Address(host[1:-1]).compressed
        except ValueError:
            raise ValueError("has an IPv6 address that is not valid") from None
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError("has a host name that does not normalise (IDNA)") from None
    if not hostname_ok(name):
        raise ValueError("has a host that is not a valid host name")
    return name


def _port(text: Optional[str], scheme: str) -> int:
    if not text:                    # "host" or "host:": the scheme's default
        return DEFAULT_PORTS[scheme]
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 65535:
        raise ValueError("has a port outside 1-65535")
    return int(text)


@record(frozen=True)
class Glob:
    """`allow.report.urls` entry: scheme, host glob, port (None: any) and path glob."""

    scheme: str
    host: str
    port: Optional[int]
    path: str
    literal_host: bool = False      # an IPv6 literal: compared, not globbed ('[' is a class)

    def matches(self, url: str) -> bool:
        try:
            parts = split(url)
        except ValueError:
            return False
        host_ok = parts.host == self.host if self.literal_host else \
            glob_one(parts.host, self.host)
        return (parts.scheme == self.scheme and host_ok
                and (self.port is None or parts.port == self.port)
                and glob_one(parts.path, self.path))


def parse_glob(text: str) -> Glob:
    """`scheme://hostglob[:port|:*][/pathglob]`; no port: the scheme's default; no path: "/"."""
    if not isinstance(text, str) or not _CLEAN.fullmatch(text):
        raise ValueError("holds spaces, control characters or a backslash")
    if "#" in text:
        raise ValueError("has a fragment ('#'): not allowed")
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise ValueError("must start with http:// or https://")
    authority, slash, path = rest.partition("/")
    path = slash + path or "/"
    if "@" in authority:
        raise ValueError("holds user information (user:password@): not allowed")
    host, port_text = _split_authority(authority)
    if port_text == "":
        raise ValueError("has an empty port after ':'")
    port = None if port_text == "*" else _port(port_text, scheme)
    if not _PATH_GLOB.fullmatch(path):
        raise ValueError("has characters a path glob may not hold")
    if host.startswith("["):
        return Glob(scheme, ascii_host(host), port, path, literal_host=True)
    return Glob(scheme, _host_glob(host), port, path)


def _split_authority(authority: str) -> Tuple[str, Optional[str]]:
    if authority.startswith("["):
        host, bracket, port = authority.partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError("has an IPv6 address that is not valid")
        return host + "]", port[1:] if port else None
    host, colon, port = authority.partition(":")
    return host, port if colon else None


def _host_glob(host: str) -> str:
    """Each label lower-cased, a non-ASCII one IDNA-encoded as hosts are."""
    labels = []
    for label in host.split("."):
        try:
            labels.append(label.encode("idna").decode("ascii").lower())
        except UnicodeError:
            raise ValueError("has a host glob that does not normalise (IDNA)") from None
    name = ".".join(labels)
    if not _HOST_GLOB.fullmatch(name):
        raise ValueError("has no valid host glob (letters, digits, '.', '-', * ? [ ] !)")
    return name


def metadata_base(url: str) -> str:
    """A metadata service's `scheme://host[:port]` (no path beyond '/'), canonical."""
    parts = split(url)
    if parts.path != "/" or parts.query:
        raise ValueError("must be scheme://host[:port] with no path")
    return parts.url().rstrip("/")
