"""The collector's YAML configuration (DESIGN section 12) into one frozen `Config`.

Read with contextd's strict YAML loader (no duplicate keys, no aliases) and schema reader
(unknown keys are errors); every problem is one `CollectorConfigError` line (exit 2). The
secrets it names (VO report tokens, site report keys, reader tokens) are read here, once,
with a size limit.

What it must never do: quote a secret in a message, or accept a key shorter than contextd
accepts (16 bytes).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Dict, List, Mapping, Optional, Tuple

from contextd import filesystem, strictyaml
from contextd.errors import CollectorConfigError
from contextd.limits import LIMITS
from contextd.record import field, record
from contextd.schema import Reader
from contextd.settings import VO, duration

DEFAULT_DATABASE = "sqlite:////var/lib/contextd-collector/collector.db"
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LISTEN = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")
MIN_SECRET = 16


@record(frozen=True)
class Site:
    key: Optional[bytes] = None                         # report.hmac_key_file's content
    image_keys: Tuple[str, ...] = ()                    # "ssh-ed25519 AAAA..." lines


@record(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    database: str = DEFAULT_DATABASE
    vo_tokens: Mapping[str, Tuple[bytes, ...]] = field(default_factory=dict)
    sites: Mapping[str, Site] = field(default_factory=dict)
    readers: Tuple[str, ...] = ()                       # bearer tokens of the read endpoints
    retention: Optional[int] = None                     # seconds; None keeps everything

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _secret_lines(path: str, what: str) -> List[bytes]:
    """The non-empty, non-comment lines of a secrets file, each at least 16 bytes."""
    try:
        data = filesystem.read_limited(path, LIMITS.collector_secret_file_bytes)
    except OSError as exc:
        raise CollectorConfigError("cannot read %s %s: %s" % (what, path, exc)) from None
    if data is None:
        raise CollectorConfigError("%s %s does not exist" % (what, path))
    lines = [line.strip() for line in data.splitlines()]
    lines = [line for line in lines if line and not line.startswith(b"#")]
    short = sum(1 for line in lines if len(line) < MIN_SECRET)
    if short or not lines:
        raise CollectorConfigError(
            "%s %s has %d line(s) shorter than %d bytes and %d usable"
            % (what, path, short, MIN_SECRET, len(lines) - short),
            "one secret per line, at least %d bytes each" % MIN_SECRET)
    return lines


def _key_file(path: str, what: str) -> bytes:
    """The whole file, stripped, as contextd reads report.hmac_key_file."""
    try:
        data = filesystem.read_limited(path, LIMITS.report_key_bytes)
    except OSError as exc:
        raise CollectorConfigError("cannot read %s %s: %s" % (what, path, exc)) from None
    key = (data or b"").strip()
    if len(key) < MIN_SECRET:
        raise CollectorConfigError("%s %s is missing or shorter than %d bytes"
                                   % (what, path, MIN_SECRET))
    return key


def _listen(r: Reader) -> Tuple[str, int]:
    value = r.str("listen", default="127.0.0.1:8080")
    match = _LISTEN.fullmatch(value or "")
    if not match or not 0 < int(match.group(2)) < 65536:
        raise r.fail("listen", "%r is not HOST:PORT" % value,
                     "such as 127.0.0.1:8080 or [::1]:8080 or 0.0.0.0:8080")
    return match.group(1).strip("[]"), int(match.group(2))


def _vos(r: Optional[Reader]) -> Dict[str, Tuple[bytes, ...]]:
    out: Dict[str, Tuple[bytes, ...]] = {}
    for name in (r.data if r else {}):
        if not VO.fullmatch(name):
            raise CollectorConfigError("vos: %r is not a VO name" % name)
        vo = r.mapping(name, required=True) if r else None
        assert vo is not None
        vo.only(["tokens_file"])
        path = vo.str("tokens_file", required=True)
        out[name] = tuple(_secret_lines(path, "vos.%s.tokens_file" % name))
    return out


def _sites(r: Optional[Reader]) -> Dict[str, Site]:
    from contextd.trust import sshsig

    out: Dict[str, Site] = {}
    for name in (r.data if r else {}):
        if not _SITE.fullmatch(name):
            raise CollectorConfigError("sites: %r is not a site name" % name)
        s = r.mapping(name, required=True) if r else None
        assert s is not None
        s.only(["report_key_file", "image_keys"])
        path = s.str("report_key_file")
        key = _key_file(path, s.field("report_key_file")) if path else None
        keys = s.str_list("image_keys") or []
        for i, line in enumerate(keys):
            try:
                sshsig.public_key_blob(line)
            except ValueError as exc:
                raise s.fail("image_keys[%d]" % i, str(exc)) from None
        out[name] = Site(key=key, image_keys=tuple(keys))
    return out


def parse(data: object) -> Config:
    r = Reader(data, "", CollectorConfigError)
    r.only(["listen", "database", "vos", "sites", "readers_file", "retention"])
    host, port = _listen(r)
    readers_file = r.str("readers_file")
    readers = tuple(t.decode("ascii", "replace")
                    for t in _secret_lines(readers_file, "readers_file")) if readers_file else ()
    config = Config(host=host, port=port,
                    database=r.str("database", default=DEFAULT_DATABASE) or DEFAULT_DATABASE,
                    vo_tokens=_vos(r.mapping("vos")), sites=_sites(r.mapping("sites")),
                    readers=readers,
                    retention=duration(r, "retention", 0) or None)
    if not config.loopback and not config.readers:
        raise CollectorConfigError(
            "listen %s is not a loopback address and there is no readers_file" % host,
            "set readers_file (bearer tokens of the read endpoints, one per line), "
            "or listen on 127.0.0.1")
    return config


def load(path: str) -> Config:
    try:
        text = filesystem.read_limited(path, LIMITS.policy_bytes)
    except OSError as exc:
        raise CollectorConfigError("cannot read the configuration %s: %s" % (path, exc)) from None
    if text is None:
        raise CollectorConfigError("the configuration %s does not exist" % path,
                                   "give --config FILE")
    return parse(strictyaml.load(text, "configuration %s" % path, CollectorConfigError))
