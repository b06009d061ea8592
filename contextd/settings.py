"""The policy's typed settings sections, `ec2`, `openstack`, `gce`, `url`, `x509`, `legacy`
and `image`: each read from the policy document into a frozen record with every default
spelled out.

What it must never do: let a key it does not know through, or hand a reader a value in a
form it did not check (an absolute path, a pin, a VO name, a metadata URL).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

from contextd import urls
from contextd.patterns import Pattern
from contextd.record import field, record
from contextd.schema import Reader

_DURATION = Pattern(r"^([0-9]+)\s*(s|m|h|d)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
VO = Pattern(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
ABSOLUTE = Pattern(r"/[^\x00-\x1f]*")      # an absolute path, no control characters
_SHA256_PIN = Pattern(r"^sha256:[0-9a-f]{64}$")
SIGNER_ID = Pattern(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")


@record(frozen=True)
class Ec2Settings:
    """The policy's `ec2` section, every default spelled out."""
    url: str = "http://169.254.169.254"
    imdsv1_fallback: bool = False
    budget: int = 20                     # seconds for the whole metadata fetch


@record(frozen=True)
class MetadataSettings:
    """The policy's `openstack` or `gce` section: where the metadata service is, its budget."""
    url: str
    budget: int = 20                     # seconds for the whole metadata fetch


OPENSTACK_URL = "http://169.254.169.254"
GCE_URL = "http://metadata.google.internal"


@record(frozen=True)
class UrlSettings:
    """The policy's `url` section: user-data fetched from `location` (None: no such source)."""
    location: Optional[str] = None
    budget: int = 20
    ca_bundle: Optional[str] = None      # CA file for an https location; None: the system's


@record(frozen=True)
class X509Settings:
    """The policy's `x509` section. `ca_dir` None: the policy has no such section, so X.509
    signatures cannot be checked (the other two keep their defaults)."""
    ca_dir: Optional[str] = None
    crl: str = "if-present"              # "required" | "if-present" | "off"
    crl_max_stale: int = 2 * 86400


@record(frozen=True)
class Amiconfig:
    as_vo: str                           # the VO unsigned amiconfig user-data is read as
    scripts: Tuple[str, ...] = ()        # "sha256:<hex>" pins of leading scripts that may run


@record(frozen=True)
class LegacySettings:
    """The policy's `legacy` section: pinned HEPiX scripts, the amiconfig opt-in."""
    hepix_scripts: Mapping[str, str] = field(default_factory=dict)   # name -> "sha256:<hex>"
    amiconfig: Optional[Amiconfig] = None                            # None: deny


def duration(reader: Reader, key: str, default: int) -> int:
    value = reader.raw(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise reader.fail(key, "must be a duration such as 30s, 5m, 2h or 31d")
    match = _DURATION.match(str(value).strip())
    if not match:
        raise reader.fail(key, "%r is not a duration" % value, "write it as 30s, 5m, 2h or 31d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def shown(seconds: int) -> str:
    """A duration as a person writes it in the policy (`90d`, `5m`, `90s`): the largest unit
    that divides it exactly, so reading it back gives the same number of seconds."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return "%d%s" % (seconds // _UNITS[unit], unit)
    return "%ds" % seconds


def ec2(r: Optional[Reader]) -> Ec2Settings:
    if r is None:
        return Ec2Settings()
    r.only(["url", "imdsv1_fallback", "budget"])
    url = r.str("url")
    base = Ec2Settings.url
    if url is not None:
        try:
            base = urls.metadata_base(url)
        except ValueError as exc:         # `run` would meet it at boot: refuse it here
            raise r.fail("url", str(exc), "scheme://host[:port], such as http://169.254.169.254 "
                         "or http://[fd00:ec2::254]") from exc
    return Ec2Settings(url=base, imdsv1_fallback=r.bool("imdsv1_fallback", default=False),
                       budget=duration(r, "budget", 20))


def metadata(r: Optional[Reader], default_url: str) -> MetadataSettings:
    """`openstack` or `gce`: {url, budget}."""
    if r is None:
        return MetadataSettings(url=default_url)
    r.only(["url", "budget"])
    return MetadataSettings(url=_base_url(r, default_url), budget=duration(r, "budget", 20))


def url_source(r: Optional[Reader]) -> UrlSettings:
    """`url`: {location, budget, ca_bundle}; the location is canonical, never with userinfo."""
    if r is None:
        return UrlSettings()
    r.only(["location", "budget", "ca_bundle"])
    location = r.str("location", required=True)
    try:
        location = urls.canonical(location or "")
    except ValueError as exc:
        raise r.fail("location", str(exc), "an http:// or https:// URL") from exc
    return UrlSettings(location=location, budget=duration(r, "budget", 20),
                       ca_bundle=r.str("ca_bundle", pattern=ABSOLUTE, what="absolute path"))


def _base_url(r: Reader, default: str) -> str:
    url = r.str("url")
    if url is None:
        return default
    try:
        return urls.metadata_base(url)
    except ValueError as exc:         # `run` would meet it at boot: refuse it here
        raise r.fail("url", str(exc), "scheme://host[:port], such as http://169.254.169.254 "
                     "or http://[fd00:ec2::254]") from exc


def x509(r: Optional[Reader]) -> X509Settings:
    if r is None:
        return X509Settings()
    r.only(["ca_dir", "crl", "crl_max_stale"])
    crl = r.raw("crl")
    if crl is False:                  # `crl: off`, as documented, is YAML 1.1's false
        crl = "off"
    elif crl is True:
        raise r.fail("crl", "is true (YAML reads on, yes and true so): ambiguous",
                     "write crl: required or crl: if-present")
    else:
        crl = r.str("crl", default="if-present")
    if crl not in ("required", "if-present", "off"):
        raise r.fail("crl", "%r is not one of required, if-present, off" % crl)
    return X509Settings(ca_dir=r.str("ca_dir", default="/etc/grid-security/certificates",
                                     pattern=ABSOLUTE, what="absolute path"),
                        crl=crl, crl_max_stale=duration(r, "crl_max_stale", 2 * 86400))


def legacy(r: Optional[Reader]) -> LegacySettings:
    if r is None:
        return LegacySettings()
    r.only(["hepix_scripts", "amiconfig"])
    pins: Dict[str, str] = {}
    scripts = r.mapping("hepix_scripts")
    if scripts is not None:
        scripts.only(["prolog.sh", "epilog.sh"])
        for name in scripts.data:
            pin = scripts.str(name, required=True, pattern=_SHA256_PIN,
                              what="pin (sha256:<64 hex digits>)")
            assert pin is not None
            pins[name] = pin
    amiconfig = None
    ami = r.raw("amiconfig")
    if ami is not None and ami != "deny":
        ar = r.mapping("amiconfig")
        assert ar is not None
        ar.only(["as_vo", "scripts"])
        as_vo = ar.str("as_vo", required=True, pattern=VO, what="VO name")
        assert as_vo is not None
        pinned = ar.str_list("scripts", pattern=_SHA256_PIN, what="pin (sha256:<64 hex digits>)")
        amiconfig = Amiconfig(as_vo=as_vo, scripts=tuple(pinned or ()))
    return LegacySettings(hepix_scripts=pins, amiconfig=amiconfig)


@record(frozen=True)
class ImageSigner:
    """A key the site's image factory signs manifests with (DESIGN section 11)."""
    id: str
    key_blob: bytes = field(repr=False)  # the public key, SSH wire format


@record(frozen=True)
class ImageSettings:
    """The policy's `image` section. No signers: no manifest can be verified."""
    signers: Tuple[ImageSigner, ...] = ()


def image(r: Optional[Reader]) -> ImageSettings:
    """`image: {signers: [{id, ssh_key}]}`: plain keys only, one id per key."""
    if r is None:
        return ImageSettings()
    from contextd.trust import sshsig

    r.only(["signers"])
    raw = r.raw("signers")
    if not isinstance(raw, list) or not raw:
        raise r.fail("signers", "must be a non-empty list of {id, ssh_key}")
    signers = []
    for i, item in enumerate(raw):
        sr = Reader(item, "%s.signers[%d]" % (r.where, i), r.err)
        sr.only(["id", "ssh_key"])
        sid = sr.str("id", required=True, pattern=SIGNER_ID, what="signer id")
        line = sr.str("ssh_key", required=True)
        try:
            blob = sshsig.public_key_blob(line)
        except ValueError as exc:
            raise sr.fail("ssh_key", "is not an OpenSSH public key: %s" % exc,
                          "paste the one line of the image-signing key's .pub file") from exc
        signers.append(ImageSigner(id=sid, key_blob=blob))
    if len({s.id for s in signers}) != len(signers) or len(
            {s.key_blob for s in signers}) != len(signers):
        raise r.fail("signers", "lists an id or a key twice", "keep one of them")
    return ImageSettings(signers=tuple(signers))
