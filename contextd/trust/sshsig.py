"""OpenSSH signatures (SSHSIG, openssh-portable PROTOCOL.sshsig), with `cryptography` only.

This is how contextd checks a payload signed with `ssh-keygen -Y sign -n contextd-payload`
(boot side: verify only). It parses a signature blob, verifies it against the exact payload
bytes, and turns public-key lines into the wire blobs the policy compares. Making such
signatures without OpenSSH is `contextd.vo.sshsign`, which the boot path never imports.

What it must never do:
- take the hash, padding or signature scheme from the input beyond the fixed allow-list
  below (SSHSIG hash sha256/sha512; Ed25519; ECDSA P-256/384/521 with the curve's own hash;
  RSA PKCS#1 v1.5 with rsa-sha2-256/512 only, never SHA-1 "ssh-rsa");
- accept a signature made for another namespace (a VO key's `git` or `file` signatures must
  not be replayable as contextd payloads);
- let anything but SignatureError out of `parse`/`verify` on hostile input: every length is
  bounds-checked and trailing bytes are an error;
- decide trust: it says "this key signed these bytes", the policy says whether the key counts;
- run a subprocess, touch files or talk to ssh-agent;
- load a private key or make a signature: that is the VO side's (`contextd.vo.sshsign`).

SSH certificates (`ssh-keygen -Y sign -f key-cert.pub` embeds the user certificate as the
signature's public key) are parsed with cryptography's SSHCertificate API, which needs
cryptography >= 41.0.2 (40 introduced it; 41.0.2 fixed critical-option parsing,
CVE-2023-38325). On older versions a certificate signature is a SignatureError naming both
versions, never an AttributeError. `verify` checks the CA's signature over the certificate;
`certificate_problem` checks type, principals, validity and critical options against values
the caller takes from the policy; whether the CA is trusted is the caller's decision.

Long because the wire reader, the key allow-list, the signature schemes and the certificate
checks are one verifier sharing private helpers (the VO side's `contextd.vo.sshsign` reuses
them too); the SSH certificate part (~200 lines) is the seam to split at, once the wire
reader becomes a public module of its own.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import struct
from typing import TYPE_CHECKING, Dict, Iterable, NoReturn, Optional, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from contextd.errors import SignatureError, SigningError
from contextd.limits import LIMITS
from contextd.record import field, record

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.hashes import HashAlgorithm

NAMESPACE = "contextd-payload"

MAGIC = b"SSHSIG"
VERSION = 1
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
BAD_SIGNATURE = "signature does not match the payload (payload modified or wrong key)"

# The SSHSIG message hash: the only two PROTOCOL.sshsig allows.
_MESSAGE_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}

ED25519 = "ssh-ed25519"
RSA = "ssh-rsa"
# Classes are named, not imported: a boot checking an Ed25519 signature (the usual case) then
# imports only cryptography's ed25519 module, not the EC, RSA and serialization machinery.
# key type -> (SSH curve name, cryptography curve class, hash class); the signature type
# must equal the key type.
_ECDSA: Dict[str, Tuple[str, str, str]] = {
    "ecdsa-sha2-nistp256": ("nistp256", "SECP256R1", "SHA256"),
    "ecdsa-sha2-nistp384": ("nistp384", "SECP384R1", "SHA384"),
    "ecdsa-sha2-nistp521": ("nistp521", "SECP521R1", "SHA512"),
}
# RSA signature type -> hash; "ssh-rsa" (SHA-1) is deliberately absent.
_RSA_SIG_HASHES: Dict[str, str] = {
    "rsa-sha2-256": "SHA256",
    "rsa-sha2-512": "SHA512",
}
SUPPORTED_KEY_TYPES = (ED25519, *sorted(_ECDSA), RSA)
# OpenSSH caps RSA at 16384 bits; below 2048 bits a key is too weak to trust with root.
RSA_MIN_BITS = 2048

_CERT_SUFFIX = "-cert-v01@openssh.com"
# cryptography's SSHCertificate API: added in 40.0, critical options parsed correctly since
# 41.0.2 (CVE-2023-38325). Below that, certificate signatures are refused with this message.
CERT_MIN_CRYPTOGRAPHY = (41, 0, 2)
# Critical options OpenSSH defines (PROTOCOL.certkeys). They restrict SSH logins, which do not
# apply to a payload signature; any other critical option makes the certificate unusable, as
# OpenSSH itself refuses certificates with critical options it does not know.
KNOWN_CRITICAL_OPTIONS = ("force-command", "source-address", "verify-required")
_FOREVER = 0xFFFFFFFFFFFFFFFF
_SHOW_MAX = 64


@record(frozen=True)
class SshSig:
    """A parsed SSHSIG blob: structure and allow-lists checked, signature not yet (`verify`)."""

    public_key: bytes  # the signer's public key in SSH wire format
    key_type: str  # "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", ...
    namespace: str
    hash_alg: str  # "sha256" | "sha512"
    signature: bytes  # the inner signature blob: string sig-type + string sig
    # For `ssh-keygen -Y sign -f key-cert.pub`: the embedded certificate (public_key is then
    # the certificate blob and key_type its type, e.g. "ssh-ed25519-cert-v01@openssh.com").
    certificate: Optional[SshCertificate] = None

    @property
    def signing_key(self) -> bytes:
        """The wire blob of the plain key that made the signature (the certified key)."""
        return self.certificate.key_blob if self.certificate else self.public_key


@record(frozen=True)
class SshCertificate:
    """An OpenSSH user/host certificate, parsed; its CA signature is checked by `verify`."""

    blob: bytes = field(repr=False)      # the whole certificate, SSH wire format
    key_blob: bytes = field(repr=False)  # the certified public key, wire format (canonical)
    key_type: str                        # the certified key's plain type, e.g. "ssh-ed25519"
    ca_blob: bytes = field(repr=False)   # the CA's public key, wire format (canonical)
    ca_signature_type: str       # e.g. "ssh-ed25519", "rsa-sha2-512"
    serial: int
    cert_type: str               # "user" | "host"
    key_id: str
    principals: Tuple[str, ...]
    valid_after: int             # seconds since the epoch
    valid_before: int            # seconds since the epoch; 2**64-1 means forever
    critical_options: Tuple[str, ...]
    extensions: Tuple[str, ...]
    _parsed: object = field(default=None, repr=False, compare=False)  # cryptography's object

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key_blob)

    @property
    def ca_fingerprint(self) -> str:
        return fingerprint(self.ca_blob)


# --- SSH wire format ---------------------------------------------------------------------


class _Malformed(Exception):
    """Internal: the wire data is not what it should be. Callers turn it into their error."""


class _WireReader:
    """A strict, bounds-checked reader of SSH wire data (RFC 4251 section 5)."""

    def __init__(self, data: bytes, what: str):
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    def _fail(self, problem: str) -> NoReturn:
        raise _Malformed("%s: %s" % (self._what, problem) if self._what else problem)

    def _take(self, n: int, field: str) -> bytes:
        left = len(self._data) - self._pos
        if n > left:
            self._fail("%s is truncated (needs %d bytes, %d left)" % (field, n, left))
        chunk = self._data[self._pos:self._pos + n]
        self._pos += n
        return chunk

    def raw(self, n: int, field: str) -> bytes:
        return self._take(n, field)

    def uint32(self, field: str) -> int:
        return int(struct.unpack(">I", self._take(4, field))[0])

    def string(self, field: str) -> bytes:
        return self._take(self.uint32(field + " length"), field)

    def text(self, field: str) -> str:
        value = self.string(field)
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            self._fail("%s is not valid UTF-8" % field)

    def mpint(self, field: str) -> int:
        """A non-negative, minimally encoded mpint (as OpenSSH writes them)."""
        value = self.string(field)
        if value and value[0] & 0x80:
            self._fail("%s is negative" % field)
        if len(value) > 1 and value[0] == 0 and not value[1] & 0x80:
            self._fail("%s has a superfluous leading zero" % field)
        return int.from_bytes(value, "big")

    def end(self) -> None:
        left = len(self._data) - self._pos
        if left:
            self._fail("%d unexpected trailing byte%s" % (left, "" if left == 1 else "s"))


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _mpint(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative mpint")  # cannot happen for ECDSA r and s
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    if raw and raw[0] & 0x80:
        raw = b"\x00" + raw
    return _string(raw)


def _show(text: str) -> str:
    """A hostile string, quoted and cut short, fit for a one-line message."""
    if len(text) > _SHOW_MAX:
        text = text[:_SHOW_MAX] + "..."
    return repr(text)


# --- public keys -------------------------------------------------------------------------


def _key_type_problem(key_type: str) -> Optional[Tuple[str, str]]:
    """Why a key type cannot be used, as (message, hint), or None if it can."""
    if key_type in SUPPORTED_KEY_TYPES:
        return None
    if key_type.endswith(_CERT_SUFFIX):
        return ("SSH certificate signatures are not supported yet",
                "sign with the plain key ('-f key', not '-f key-cert.pub')")
    if key_type.startswith("sk-"):
        return ("security-key signatures are not supported (key type %s)" % _show(key_type),
                "sign with an Ed25519, ECDSA or RSA key")
    return ("key type %s is not supported" % _show(key_type),
            "use one of " + ", ".join(SUPPORTED_KEY_TYPES))


def _wire_key_type(blob: bytes) -> str:
    """The type name at the start of a public key blob (raises _Malformed)."""
    return _WireReader(blob, "public key").text("key type")


def _hash(name: str) -> HashAlgorithm:
    """An instance of cryptography's hash class `name` ("SHA256")."""
    from cryptography.hazmat.primitives import hashes

    return getattr(hashes, name)()


def _load_public_key(blob: bytes) -> Tuple[str, object]:
    """(key type, cryptography key) of a wire-format public key; raises _Malformed.

    The blob is read field by field (RFC 4253 6.6, RFC 5656 3.1) with no slack: fixed sizes,
    minimal mpints, an uncompressed EC point, no trailing bytes. So one key has exactly one
    encoding, the one OpenSSH writes, and comparing blobs compares keys. cryptography then
    checks the values themselves (point on the curve, RSA modulus and exponent).
    """
    reader = _WireReader(blob, "public key")
    key_type = reader.text("key type")
    problem = _key_type_problem(key_type)
    if problem:
        raise _Malformed(problem[0])
    try:
        if key_type == ED25519:
            raw = reader.string("Ed25519 key")
            reader.end()
            if len(raw) != 32:
                raise _Malformed("Ed25519 public key is %d bytes, not 32" % len(raw))
            return key_type, ed25519.Ed25519PublicKey.from_public_bytes(raw)
        if key_type == RSA:
            from cryptography.hazmat.primitives.asymmetric import rsa

            exponent = reader.mpint("RSA exponent")
            modulus = reader.mpint("RSA modulus")
            reader.end()
            _check_rsa_size(modulus.bit_length())
            return key_type, rsa.RSAPublicNumbers(exponent, modulus).public_key()
        from cryptography.hazmat.primitives.asymmetric import ec

        curve_name, curve, _ = _ECDSA[key_type]
        if reader.text("curve name") != curve_name:
            raise _Malformed("public key curve does not match its type %s" % _show(key_type))
        point = reader.string("EC point")
        reader.end()
        if point[:1] != b"\x04":
            raise _Malformed("EC public key is not an uncompressed point")
        return key_type, ec.EllipticCurvePublicKey.from_encoded_point(getattr(ec, curve)(),
                                                                      point)
    except _Malformed:
        raise
    # Hostile values reach a third-party parser whose exception types vary by version
    # (ValueError for a point off the curve or a bad RSA exponent, ...).
    except Exception as exc:  # noqa: BLE001 - any failure here means "invalid key"
        raise _Malformed("public key %s is invalid (%s)" % (_show(key_type), exc)) from None


def _check_rsa_size(bits: int) -> None:
    if bits < RSA_MIN_BITS:
        raise _Malformed("RSA key of %d bits is too small (minimum %d)" % (bits, RSA_MIN_BITS))
    if bits > LIMITS.rsa_bits:
        raise _Malformed("RSA key of %d bits is too large (maximum %d)"
                         % (bits, LIMITS.rsa_bits))


def public_key_blob(line: str) -> bytes:
    """The wire blob of the key in an authorized_keys-style line "TYPE BASE64 [COMMENT]".

    Raises ValueError with a one-line explanation of what is wrong.
    """
    fields = line.split() if isinstance(line, str) else []
    if len(fields) < 2:
        raise ValueError("expected one line 'KEYTYPE BASE64 [COMMENT]' as in a .pub file")
    key_type, b64 = fields[0], fields[1]
    if key_type.endswith(_CERT_SUFFIX):
        raise ValueError("this is an SSH certificate, not a public key; give the plain key "
                         "(for a CA, the CA's own .pub line)")
    if key_type.startswith("sk-"):
        raise ValueError("security-key (%s) keys are not supported" % key_type)
    problem = _key_type_problem(key_type)
    if problem:
        raise ValueError("%s (%s)" % problem)
    try:
        blob = base64.b64decode(b64.encode("ascii"), validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("the key data after %s is not valid base64" % key_type) from None
    try:
        inner_type, _ = _load_public_key(blob)
    except _Malformed as exc:
        raise ValueError(str(exc)) from None
    if inner_type != key_type:
        raise ValueError("the line says %s but the key data is %s"
                         % (_show(key_type), _show(inner_type)))
    return blob


def fingerprint(blob: bytes) -> str:
    """The key's fingerprint as `ssh-keygen -l` prints it: SHA256:<unpadded base64>."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


# --- certificates ------------------------------------------------------------------------


def cryptography_version() -> str:
    import cryptography

    return str(getattr(cryptography, "__version__", "unknown"))


def version_tuple(version: str) -> Tuple[int, ...]:
    """(41, 0, 2) from "41.0.2" (or "41.0.2.dev1"); unparsable parts count as 0."""
    out = []
    for part in version.split(".")[:3]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        out.append(int(digits or 0))
    return tuple(out)


def _show_version(version: Tuple[int, ...]) -> str:
    return ".".join(str(n) for n in version)


def certificate_support_problem() -> Optional[Tuple[str, str]]:
    """(message, hint) when this cryptography cannot handle SSH certificates, else None."""
    from cryptography.hazmat.primitives import serialization

    installed = cryptography_version()
    if (version_tuple(installed) >= CERT_MIN_CRYPTOGRAPHY
            and hasattr(serialization, "load_ssh_public_identity")):
        return None
    return ("SSH certificate signatures need python cryptography >= %s, but %s is installed"
            % (_show_version(CERT_MIN_CRYPTOGRAPHY), installed),
            "install a newer python3-cryptography, or sign with the plain key "
            "('ssh-keygen -Y sign -f KEY') for a site that pins it as an ssh_key signer")


def _skip_key_fields(reader: _WireReader, key_type: str) -> None:
    """Step over the certified key's fields in a certificate (PROTOCOL.certkeys)."""
    if key_type == ED25519:
        reader.string("certified key")
    elif key_type == RSA:
        reader.string("certified key e")
        reader.string("certified key n")
    else:
        reader.string("certified key curve")
        reader.string("certified key point")


def _certificate_signature_type(blob: bytes, key_type: str) -> str:
    """The CA signature's type, from our own strict walk over the certificate; _Malformed.

    cryptography accepts a CA signature made with SHA-1 ("ssh-rsa"); OpenSSH no longer does,
    and neither do we, so we need the type it does not expose.
    """
    reader = _WireReader(blob, "SSH certificate")
    reader.text("certificate type")
    reader.string("nonce")
    _skip_key_fields(reader, key_type)
    reader.raw(8, "serial")
    reader.uint32("certificate kind")
    reader.string("key id")
    reader.string("principals")
    reader.raw(16, "validity")
    reader.string("critical options")
    reader.string("extensions")
    reader.string("reserved")
    reader.string("signature key")
    signature = reader.string("signature")
    reader.end()
    return _WireReader(signature, "CA signature").text("signature type")


def _names(values: Iterable[bytes], what: str) -> Tuple[str, ...]:
    out = []
    for value in values:
        try:
            out.append(bytes(value).decode("utf-8"))
        except UnicodeDecodeError:
            raise _Malformed("certificate %s is not valid UTF-8" % what) from None
    return tuple(out)


def _parse_certificate(blob: bytes, cert_type_name: str) -> SshCertificate:
    """A certificate from its wire blob. SignatureError if unsupported; _Malformed if bad."""
    key_type = cert_type_name[:-len(_CERT_SUFFIX)]
    if key_type not in SUPPORTED_KEY_TYPES:
        raise SignatureError("SSH certificates for key type %s are not supported"
                             % _show(key_type), "use an Ed25519, ECDSA or RSA key")
    problem = certificate_support_problem()
    if problem:
        raise SignatureError(*problem)
    from cryptography.hazmat.primitives.serialization import (
        SSHCertificate, SSHCertificateType, load_ssh_public_identity)

    ca_signature_type = _certificate_signature_type(blob, key_type)
    line = cert_type_name.encode("ascii") + b" " + base64.b64encode(blob)
    try:
        cert = load_ssh_public_identity(line)
    # Hostile input reaches a third-party parser; whatever it raises means "invalid".
    except Exception as exc:  # noqa: BLE001 - any failure here means "invalid certificate"
        raise _Malformed("SSH certificate is invalid (%s)" % exc) from None
    if not isinstance(cert, SSHCertificate):
        raise _Malformed("public key says it is a certificate but is not one")
    try:
        key_blob = _wire_blob(cert.public_key())
        ca_blob = _wire_blob(cert.signature_key())
        fields = (cert.type, cert.key_id, cert.serial, cert.valid_principals, cert.valid_after,
                  cert.valid_before, cert.critical_options, cert.extensions)
    # Some parts are parsed lazily, on first access: same hostile input, same rule.
    except Exception as exc:  # noqa: BLE001 - any failure here means "invalid certificate"
        raise _Malformed("SSH certificate is invalid (%s)" % exc) from None
    cert_kind, raw_key_id, serial, principals, valid_after, valid_before, options, exts = fields
    inner_type, _ = _load_public_key(key_blob)
    if inner_type != key_type:
        raise _Malformed("certificate type %s holds a %s key" % (_show(cert_type_name),
                                                                 inner_type))
    ca_type, _ = _load_public_key(ca_blob)
    if ca_type == RSA:
        if ca_signature_type == "ssh-rsa":
            raise SignatureError("SSH certificate is signed by its CA with SHA-1 ('ssh-rsa'), "
                                 "which is not accepted",
                                 "re-issue it with a current 'ssh-keygen -s' (rsa-sha2-512)")
        if ca_signature_type not in _RSA_SIG_HASHES:
            raise _Malformed("CA signature type %s does not fit an RSA CA key"
                             % _show(ca_signature_type))
    elif ca_signature_type != ca_type:
        raise _Malformed("CA signature type %s does not fit the %s CA key"
                         % (_show(ca_signature_type), ca_type))
    kind = {SSHCertificateType.USER: "user", SSHCertificateType.HOST: "host"}.get(cert_kind)
    if kind is None:
        raise _Malformed("unknown certificate type %r" % cert_kind)
    try:
        key_id = bytes(raw_key_id).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("certificate key id is not valid UTF-8") from None
    return SshCertificate(
        blob=bytes(blob), key_blob=key_blob, key_type=key_type, ca_blob=ca_blob,
        ca_signature_type=ca_signature_type, serial=int(serial), cert_type=kind,
        key_id=key_id, principals=_names(principals, "principal"),
        valid_after=int(valid_after), valid_before=int(valid_before),
        critical_options=_names(sorted(options), "critical option"),
        extensions=_names(sorted(exts), "extension"), _parsed=cert)


def _wire_blob(key: object) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    line = key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)  # type: ignore[attr-defined]
    return base64.b64decode(line.split(b" ")[1])


def load_certificate(line: bytes, name: str = "certificate") -> SshCertificate:
    """An SSH certificate from a `KEY-cert.pub` file's content (the VO side); SigningError."""
    fields = bytes(line).split()
    if len(fields) < 2 or not fields[0].endswith(_CERT_SUFFIX.encode()):
        raise SigningError("%s is not an OpenSSH certificate (KEY-cert.pub)" % name,
                           "make one with 'ssh-keygen -s CA -I KEY_ID -n PRINCIPAL KEY.pub'")
    try:
        blob = base64.b64decode(fields[1], validate=True)
        type_name = fields[0].decode("ascii")
        if _wire_key_type(blob) != type_name:
            raise _Malformed("the line says %s but the data is another type" % _show(type_name))
        return _parse_certificate(blob, type_name)
    except (ValueError, binascii.Error, _Malformed) as exc:
        raise SigningError("%s is not a valid OpenSSH certificate: %s" % (name, exc)) from None
    except SignatureError as exc:
        raise SigningError("%s: %s" % (name, exc.message), exc.hint) from None


def _utc(seconds: int) -> str:
    if seconds >= _FOREVER:
        return "forever"
    try:
        when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "forever"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def certificate_problem(cert: SshCertificate, principals: Iterable[str],
                        now: datetime.datetime, clock_skew: int = 0) -> Optional[str]:
    """Why `cert` cannot vouch for a signer accepting `principals` at `now`, or None.

    The same checks as `ssh-keygen -Y verify` with a cert-authority line: a user certificate,
    one of the principals, valid now (give or take `clock_skew` seconds); and, as sshd does,
    no critical option this code does not know. Extensions are ignored.
    """
    name = "SSH certificate %s (serial %d)" % (_show(cert.key_id), cert.serial)
    if cert.cert_type != "user":
        return "%s is a %s certificate; a user certificate is needed" % (name, cert.cert_type)
    wanted = tuple(principals)
    if not cert.principals:
        return "%s lists no principals; it needs one of %s" % (
            name, ", ".join(_show(p) for p in wanted))
    if not set(cert.principals) & set(wanted):
        return "%s is for principals %s, the site accepts %s" % (
            name, ", ".join(_show(p) for p in cert.principals),
            ", ".join(_show(p) for p in wanted))
    unknown = [o for o in cert.critical_options if o not in KNOWN_CRITICAL_OPTIONS]
    if unknown:
        return "%s has unknown critical option%s %s" % (
            name, "" if len(unknown) == 1 else "s", ", ".join(_show(o) for o in unknown))
    at = int(now.timestamp())
    window = "valid %s .. %s, now %s" % (_utc(cert.valid_after), _utc(cert.valid_before),
                                          _utc(at))
    if at + clock_skew < cert.valid_after:
        return "%s is not valid yet (%s; is time synced?)" % (name, window)
    if cert.valid_before != _FOREVER and at - clock_skew >= cert.valid_before:
        return "%s has expired (%s)" % (name, window)
    return None


# --- parsing and verifying ---------------------------------------------------------------


def _signed_data(namespace: str, hash_alg: str, message: bytes) -> bytes:
    """What the key actually signs (PROTOCOL.sshsig): the message is prehashed."""
    digest = _MESSAGE_HASHES[hash_alg](message).digest()
    return (MAGIC + _string(namespace.encode("utf-8")) + _string(b"")
            + _string(hash_alg.encode("ascii")) + _string(digest))


def _check_hash_alg(hash_alg: str) -> None:
    if hash_alg not in _MESSAGE_HASHES:
        raise SignatureError("signature uses message hash %s; only sha256 and sha512 are "
                             "accepted" % _show(hash_alg),
                             "sign with 'ssh-keygen -Y sign' (default sha512)")


def _split_signature(key_type: str, signature: bytes) -> Tuple[str, bytes]:
    """(signature type, raw signature) after checking the type fits the key; _Malformed."""
    reader = _WireReader(signature, "signature blob")
    sig_type = reader.text("signature type")
    raw = reader.string("signature")
    reader.end()
    if key_type == RSA:
        if sig_type == "ssh-rsa":
            raise SignatureError("RSA signature uses SHA-1 ('ssh-rsa'), which is not accepted",
                                 "sign with rsa-sha2-512, as 'ssh-keygen -Y sign' does")
        if sig_type not in _RSA_SIG_HASHES:
            raise _Malformed("signature type %s does not fit an RSA key (expected "
                             "rsa-sha2-256 or rsa-sha2-512)" % _show(sig_type))
    elif sig_type != key_type:
        raise _Malformed("signature type %s does not fit the %s key"
                         % (_show(sig_type), key_type))
    return sig_type, raw


def parse(blob: bytes) -> SshSig:
    """Parse a raw (base64-decoded) SSHSIG blob; raises SignatureError if it is malformed.

    Checks structure, the hash allow-list and that the signature type fits the key type;
    the namespace and the signature itself are checked by `verify`. An embedded SSH
    certificate is parsed too (cryptography >= 41.0.2, else a SignatureError saying so).
    """
    if bytes(blob[:len(MAGIC)]) != MAGIC:
        raise SignatureError("not an SSH signature (it does not start with 'SSHSIG')",
                             "expected the output of 'ssh-keygen -Y sign'")
    try:
        reader = _WireReader(blob, "")
        reader.raw(len(MAGIC), "magic")
        version = reader.uint32("version")
        if version != VERSION:
            raise SignatureError("SSH signature version %d is not supported (only %d)"
                                 % (version, VERSION))
        public_key = reader.string("public key")
        namespace = reader.text("namespace")
        reserved = reader.string("reserved")
        hash_alg = reader.text("hash algorithm")
        signature = reader.string("signature")
        reader.end()
        if reserved:
            raise _Malformed("reserved field is not empty")
        _check_hash_alg(hash_alg)
        key_type = _wire_key_type(public_key)
        certificate = None
        if key_type.endswith(_CERT_SUFFIX):
            certificate = _parse_certificate(public_key, key_type)
            signing_type = certificate.key_type
        else:
            problem = _key_type_problem(key_type)
            if problem:
                raise SignatureError(*problem)
            signing_type = key_type
        _split_signature(signing_type, signature)
    except _Malformed as exc:
        raise SignatureError("malformed SSH signature: %s" % exc,
                             "re-create it with 'ssh-keygen -Y sign'") from None
    return SshSig(public_key=public_key, key_type=key_type, namespace=namespace,
                  hash_alg=hash_alg, signature=signature, certificate=certificate)


def _ecdsa_signature(raw: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    reader = _WireReader(raw, "ECDSA signature")
    r = reader.mpint("r")
    s = reader.mpint("s")
    reader.end()
    return encode_dss_signature(r, s)


def _verify_with(key_type: str, key: object, sig_type: str, raw: bytes, data: bytes) -> None:
    """Verify `raw` over `data`; raises InvalidSignature or _Malformed. Schemes are fixed here."""
    if key_type == ED25519:
        if len(raw) != 64:
            raise _Malformed("Ed25519 signature is %d bytes, not 64" % len(raw))
        key.verify(raw, data)  # type: ignore[attr-defined]
    elif key_type == RSA:
        from cryptography.hazmat.primitives.asymmetric import padding

        size = (key.key_size + 7) // 8  # type: ignore[attr-defined]
        # OpenSSH would left-pad a short signature; every SSHSIG signer writes full length.
        if len(raw) != size:
            raise _Malformed("RSA signature is %d bytes, the key needs %d" % (len(raw), size))
        key.verify(raw, data, padding.PKCS1v15(),  # type: ignore[attr-defined]
                   _hash(_RSA_SIG_HASHES[sig_type]))
    else:
        from cryptography.hazmat.primitives.asymmetric import ec

        der = _ecdsa_signature(raw)
        key.verify(der, data, ec.ECDSA(_hash(_ECDSA[key_type][2])))  # type: ignore[attr-defined]


def _verify_certificate(cert: SshCertificate) -> None:
    """The CA's signature over the certificate; SignatureError if it does not hold."""
    if cert._parsed is None:
        raise _Malformed("certificate was not parsed")
    try:
        cert._parsed.verify_cert_signature()  # type: ignore[attr-defined]
    except InvalidSignature:
        raise SignatureError("SSH certificate %s: the CA's signature over it does not hold "
                             "(certificate modified?)" % _show(cert.key_id)) from None
    # Whatever else a third-party verifier raises on hostile input means "invalid".
    except Exception as exc:  # noqa: BLE001 - any failure here means "invalid certificate"
        raise _Malformed("SSH certificate %s cannot be checked (%s)"
                         % (_show(cert.key_id), exc)) from None


def verify(sig: SshSig, message: bytes, namespace: str = NAMESPACE) -> None:
    """Check that `sig` is a valid signature over `message` in `namespace`.

    Returns None on success and raises SignatureError otherwise. It says nothing about
    whether the key is trusted: compare `sig.public_key` with the policy for that. With an
    embedded certificate the certified key must have signed `message` and the certificate's
    own CA signature must hold; whether that CA is trusted, and `certificate_problem`, are
    the caller's business.
    """
    if sig.namespace != namespace:
        raise SignatureError("signature is for namespace %s, expected %s"
                             % (_show(sig.namespace), _show(namespace)),
                             "sign with 'ssh-keygen -Y sign -n %s'" % namespace)
    _check_hash_alg(sig.hash_alg)
    try:
        key_type, key = _load_public_key(sig.signing_key)
        expected = sig.certificate.key_type if sig.certificate else sig.key_type
        if key_type != expected:
            raise _Malformed("key type %s does not match the public key (%s)"
                             % (_show(sig.key_type), key_type))
        if sig.certificate is not None:
            _verify_certificate(sig.certificate)
        sig_type, raw = _split_signature(key_type, sig.signature)
        data = _signed_data(namespace, sig.hash_alg, bytes(message))
        _verify_with(key_type, key, sig_type, raw, data)
    except _Malformed as exc:
        raise SignatureError("malformed SSH signature: %s" % exc,
                             "re-create it with 'ssh-keygen -Y sign'") from None
    except InvalidSignature:
        raise SignatureError(BAD_SIGNATURE) from None
