"""SSHSIG interop with the real ssh-keygen, and hostile blobs.

ssh-keygen is required: without it these tests fail, they do not skip.
"""

import base64
import hashlib
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from contextd.trust import sshsig
from contextd.errors import SignatureError, SigningError
from contextd.vo import sshsign

PAYLOAD = b"contextd: payload/v1\nvo: atlas\nserial: 2026112401\n"
KEYGEN_ARGS = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa": ["-t", "ecdsa", "-b", "256"],
    "rsa": ["-t", "rsa", "-b", "3072"],
}
KEY_TYPES = {"ed25519": "ssh-ed25519", "ecdsa": "ecdsa-sha2-nistp256", "rsa": "ssh-rsa"}


def keygen(*args: str, stdin: bytes = b"", check: bool = True) -> subprocess.CompletedProcess:
    tool = shutil.which("ssh-keygen")
    assert tool, "ssh-keygen (OpenSSH >= 8.1) is required for the SSHSIG interop tests"
    return subprocess.run([tool, *args], input=stdin, capture_output=True,
                          check=check)


def dearmor(text: str) -> bytes:
    lines = text.strip().splitlines()
    assert lines[0] == sshsig.BEGIN and lines[-1] == sshsig.END
    return base64.b64decode("".join(lines[1:-1]))


def string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def build(public_key: bytes, signature: bytes, namespace: bytes = b"contextd-payload",
          hash_alg: bytes = b"sha512", reserved: bytes = b"", magic: bytes = b"SSHSIG",
          version: int = 1) -> bytes:
    return (magic + struct.pack(">I", version) + string(public_key) + string(namespace)
            + string(reserved) + string(hash_alg) + string(signature))


class Key(NamedTuple):
    name: str
    path: Path
    private: bytes
    public_line: str

    @property
    def blob(self) -> bytes:
        return sshsig.public_key_blob(self.public_line)


@pytest.fixture(scope="module")
def keyring(tmp_path_factory) -> Callable[[str], Key]:
    """Makes each key type once per module, with ssh-keygen."""
    made: Dict[str, Key] = {}

    def get(name: str) -> Key:
        if name not in made:
            path = tmp_path_factory.mktemp("keys") / ("id_" + name)
            keygen("-q", "-N", "", "-C", "signer@test", *KEYGEN_ARGS[name], "-f", str(path))
            made[name] = Key(name, path, path.read_bytes(),
                             Path(str(path) + ".pub").read_text())
        return made[name]

    return get


@pytest.fixture(scope="module", params=sorted(KEYGEN_ARGS))
def key(request, keyring: Callable[[str], Key]) -> Key:
    return keyring(request.param)


@pytest.fixture(scope="module")
def keygen_blob(key: Key, tmp_path_factory) -> bytes:
    """A valid SSHSIG made by ssh-keygen over PAYLOAD with `key`."""
    return dearmor(keygen_sign(key, tmp_path_factory.mktemp("sig"), PAYLOAD))


def keygen_sign(key: Key, where: Path, payload: bytes, *options: str,
                namespace: str = sshsig.NAMESPACE, key_file: str = "") -> str:
    data = where / "payload.yaml"
    # ssh-keygen asks before overwriting a .sig, and with no answer keeps the old one (exit 0).
    assert not (where / "payload.yaml.sig").exists()
    data.write_bytes(payload)
    keygen("-Y", "sign", "-n", namespace, *options, "-f", key_file or str(key.path), str(data))
    return (where / "payload.yaml.sig").read_text()


def keygen_verify(key: Key, where: Path, armored: str, payload: bytes,
                  namespace: str = sshsig.NAMESPACE) -> subprocess.CompletedProcess:
    signers = where / "allowed_signers"
    signers.write_text('signer namespaces="%s" %s\n' % (sshsig.NAMESPACE, key.public_line.strip()))
    sig = where / "payload.sig"
    sig.write_text(armored)
    return keygen("-Y", "verify", "-f", str(signers), "-I", "signer", "-n", namespace,
                  "-s", str(sig), stdin=payload, check=False)


def check_rejected(blob: bytes, message: bytes = PAYLOAD) -> SignatureError:
    """parse + verify must fail, and only with SignatureError."""
    with pytest.raises(SignatureError) as info:
        sshsig.verify(sshsig.parse(blob), message)
    text = info.value.one_line()
    assert "\n" not in text and text
    return info.value


# --- ssh-keygen -> contextd --------------------------------------------------------------


def test_keygen_signature_verifies(key: Key, keygen_blob: bytes) -> None:
    sig = sshsig.parse(keygen_blob)
    assert sig.key_type == KEY_TYPES[key.name]
    assert sig.namespace == sshsig.NAMESPACE
    assert sig.hash_alg == "sha512"
    assert sig.public_key == key.blob
    sshsig.verify(sig, PAYLOAD)


@pytest.mark.parametrize("tampered", [PAYLOAD + b"\n", PAYLOAD[:-1], b"", b"x" + PAYLOAD[1:]])
def test_tampered_payload_fails(keygen_blob: bytes, tampered: bytes) -> None:
    err = check_rejected(keygen_blob, tampered)
    assert err.message == sshsig.BAD_SIGNATURE


def test_keygen_wrong_namespace_rejected(key: Key, tmp_path: Path) -> None:
    blob = dearmor(keygen_sign(key, tmp_path, PAYLOAD, namespace="git"))
    sig = sshsig.parse(blob)
    with pytest.raises(SignatureError) as info:
        sshsig.verify(sig, PAYLOAD)
    assert info.value.message == "signature is for namespace 'git', expected 'contextd-payload'"
    sshsig.verify(sig, PAYLOAD, namespace="git")  # it is a good signature, just not ours


def test_keygen_sha256_verifies(key: Key, tmp_path: Path) -> None:
    blob = dearmor(keygen_sign(key, tmp_path, PAYLOAD, "-O", "hashalg=sha256"))
    sig = sshsig.parse(blob)
    assert sig.hash_alg == "sha256"
    sshsig.verify(sig, PAYLOAD)
    with pytest.raises(SignatureError):
        sshsig.verify(sig, PAYLOAD + b" ")


CERTS_SUPPORTED = sshsig.certificate_support_problem() is None


def test_keygen_certificate_signature(tmp_path: Path, key: Key) -> None:
    """`-f key-cert.pub` embeds the certificate: parsed and verified with cryptography >=
    41.0.2, a clear version message below (never an AttributeError)."""
    ca = tmp_path / "ca"
    keygen("-q", "-N", "", "-t", "ed25519", "-f", str(ca))
    pub = tmp_path / "key.pub"
    pub.write_text(key.public_line)
    (tmp_path / "key").write_bytes(key.private)
    (tmp_path / "key").chmod(0o600)
    keygen("-q", "-s", str(ca), "-I", "id1", "-n", "signer", "-z", "7", str(pub))
    armored = keygen_sign(key, tmp_path, PAYLOAD, key_file=str(tmp_path / "key-cert.pub"))
    if not CERTS_SUPPORTED:
        with pytest.raises(SignatureError) as info:
            sshsig.parse(dearmor(armored))
        assert "need python cryptography >= 41.0.2" in info.value.message
        assert sshsig.cryptography_version() in info.value.message
        return
    sig = sshsig.parse(dearmor(armored))
    cert = sig.certificate
    assert cert is not None and sig.key_type == KEY_TYPES[key.name] + "-cert-v01@openssh.com"
    assert (cert.key_id, cert.serial, cert.principals, cert.cert_type) == (
        "id1", 7, ("signer",), "user")
    assert sig.signing_key == key.blob and cert.key_blob == key.blob
    assert cert.ca_blob == sshsig.public_key_blob(Path(str(ca) + ".pub").read_text())
    sshsig.verify(sig, PAYLOAD)
    check_rejected(dearmor(armored), PAYLOAD + b"x")


def test_every_bit_flip_in_a_certificate_is_a_signature_error(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    keygen("-q", "-N", "", "-t", "ed25519", "-f", str(ca))
    keygen("-q", "-N", "", "-t", "ed25519", "-f", str(tmp_path / "key"))
    keygen("-q", "-s", str(ca), "-I", "id1", "-n", "signer", str(tmp_path / "key.pub"))
    (tmp_path / "payload.yaml").write_bytes(PAYLOAD)
    keygen("-Y", "sign", "-n", sshsig.NAMESPACE, "-f", str(tmp_path / "key-cert.pub"),
           str(tmp_path / "payload.yaml"))
    blob = dearmor((tmp_path / "payload.yaml.sig").read_text())
    if not CERTS_SUPPORTED:
        assert "need python cryptography >= 41.0.2" in check_rejected(blob).message
        return
    sig = sshsig.parse(blob)
    start = blob.index(sig.public_key)
    for i in range(start, start + len(sig.public_key)):
        for bit in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= bit
            check_rejected(bytes(bad))
    for n in range(start, start + len(sig.public_key), 7):
        with pytest.raises(SignatureError):
            sshsig.parse(blob[:n])


# --- contextd -> ssh-keygen --------------------------------------------------------------


@pytest.mark.parametrize("hash_alg", ["sha512", "sha256"])
def test_our_signature_passes_keygen(key: Key, tmp_path: Path, hash_alg: str) -> None:
    blob = sshsign.sign(key.private, PAYLOAD, hash_alg=hash_alg)
    armored = sshsign.armor(blob)
    ok = keygen_verify(key, tmp_path, armored, PAYLOAD)
    assert ok.returncode == 0, ok.stderr.decode()
    assert b"Good" in ok.stdout
    other = keygen_verify(key, tmp_path, armored, PAYLOAD, namespace="git")
    assert other.returncode != 0
    tampered = keygen_verify(key, tmp_path, armored, PAYLOAD + b"!")
    assert tampered.returncode != 0
    sig = sshsig.parse(blob)
    assert (sig.key_type, sig.hash_alg, sig.public_key) == (KEY_TYPES[key.name], hash_alg,
                                                            key.blob)
    sshsig.verify(sig, PAYLOAD)


def test_our_signature_in_other_namespace_fails_keygen(key: Key, tmp_path: Path) -> None:
    armored = sshsign.armor(sshsign.sign(key.private, PAYLOAD, namespace="git"))
    assert keygen_verify(key, tmp_path, armored, PAYLOAD).returncode != 0


@pytest.mark.parametrize("payload", [PAYLOAD, b"", PAYLOAD * 50])
def test_ed25519_output_is_byte_identical_to_keygen(keyring: Callable[[str], Key],
                                                    tmp_path: Path, payload: bytes) -> None:
    key = keyring("ed25519")  # Ed25519 signatures are deterministic, so the bytes must match
    expected = keygen_sign(key, tmp_path, payload)
    assert sshsign.armor(sshsign.sign(key.private, payload)) == expected


def test_rsa_signs_with_rsa_sha2_512(keyring: Callable[[str], Key]) -> None:
    key = keyring("rsa")
    sig = sshsig.parse(sshsign.sign(key.private, PAYLOAD))
    assert sig.signature[4:4 + len(b"rsa-sha2-512")] == b"rsa-sha2-512"


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP521R1()])
def test_other_ecdsa_curves_interoperate(tmp_path: Path, curve: ec.EllipticCurve) -> None:
    private = ec.generate_private_key(curve)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    line = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()
    key = Key("ecdsa-%d" % curve.key_size, tmp_path / "k", pem, line)
    blob = sshsign.sign(pem, PAYLOAD)
    sshsig.verify(sshsig.parse(blob), PAYLOAD)
    assert keygen_verify(key, tmp_path, sshsign.armor(blob), PAYLOAD).returncode == 0
    (tmp_path / "k").write_bytes(pem)
    (tmp_path / "k").chmod(0o600)
    sshsig.verify(sshsig.parse(dearmor(keygen_sign(key, tmp_path, PAYLOAD))), PAYLOAD)


# --- signing errors ----------------------------------------------------------------------


def test_encrypted_private_key_refused(key: Key, tmp_path: Path) -> None:
    copy = tmp_path / "encrypted"
    copy.write_bytes(key.private)
    copy.chmod(0o600)
    keygen("-q", "-p", "-P", "", "-N", "secret", "-f", str(copy))
    with pytest.raises(SigningError) as info:
        sshsign.sign(copy.read_bytes(), PAYLOAD, key_name=str(copy))
    assert "passphrase" in info.value.message
    assert str(copy) in info.value.message  # key_name names the file
    assert "ssh-agent is not supported" in (info.value.hint or "")


@pytest.mark.parametrize("data", [
    b"",
    b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKvY signer@test\n",
    b"-----BEGIN OPENSSH PRIVATE KEY-----\n!!!!\n-----END OPENSSH PRIVATE KEY-----\n",
    b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
])
def test_not_an_openssh_private_key(data: bytes) -> None:
    with pytest.raises(SigningError) as info:
        sshsign.sign(data, PAYLOAD)
    assert "not an OpenSSH private key" in info.value.message


def test_pem_private_key_refused_with_hint() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(SigningError) as info:
        sshsign.sign(pem, PAYLOAD)
    assert "ssh-keygen -p" in (info.value.hint or "")


def test_dsa_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "dsa"
    keygen("-q", "-N", "", "-t", "dsa", "-f", str(path))
    with pytest.raises(SigningError) as info:
        sshsign.sign(path.read_bytes(), PAYLOAD)
    assert "'ssh-dss' is not supported" in info.value.message


def test_small_rsa_key_refused() -> None:
    small = rsa.generate_private_key(65537, 1024)
    pem = small.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                              serialization.NoEncryption())
    with pytest.raises(SigningError) as info:
        sshsign.sign(pem, PAYLOAD)
    assert "too small" in info.value.message


def test_bad_sign_arguments(key: Key) -> None:
    with pytest.raises(SigningError):
        sshsign.sign(key.private, PAYLOAD, hash_alg="sha1")
    with pytest.raises(SigningError):
        sshsign.sign(key.private, PAYLOAD, namespace="")


# --- keys and fingerprints ---------------------------------------------------------------


def test_fingerprint_matches_keygen(key: Key) -> None:
    printed = keygen("-lf", str(key.path) + ".pub").stdout.decode().split()[1]
    assert printed.startswith("SHA256:")
    assert sshsig.fingerprint(key.blob) == printed


def test_public_key_blob(key: Key) -> None:
    line = key.public_line.strip()
    key_type, b64 = line.split()[:2]
    assert sshsig.public_key_blob(line) == base64.b64decode(b64)
    assert sshsig.public_key_blob("%s %s" % (key_type, b64)) == base64.b64decode(b64)


@pytest.mark.parametrize(("line", "words"), [
    ("", "KEYTYPE BASE64"),
    ("ssh-ed25519", "KEYTYPE BASE64"),
    ("ssh-ed25519 !!!notbase64", "not valid base64"),
    ("ssh-ed25519 AAAA", "truncated"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "'ssh-dss' is not supported"),
    ("ssh-ed25519-cert-v01@openssh.com AAAA", "certificate"),
    ("sk-ssh-ed25519@openssh.com AAAA", "security-key"),
    ('from="*" ssh-ed25519 AAAA', "not supported"),
])
def test_public_key_blob_errors(line: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        sshsig.public_key_blob(line)


def test_public_key_blob_type_mismatch(key: Key) -> None:
    b64 = key.public_line.split()[1]
    other = "ssh-rsa" if key.name != "rsa" else "ssh-ed25519"
    with pytest.raises(ValueError, match="says"):
        sshsig.public_key_blob("%s %s" % (other, b64))


def test_armor_wraps_at_70_columns() -> None:
    for size in (0, 1, 51, 52, 53, 300):
        text = sshsign.armor(bytes(size))
        lines = text.splitlines()
        assert text.endswith("\n") and lines[0] == sshsig.BEGIN and lines[-1] == sshsig.END
        assert all(len(line) <= 70 for line in lines[1:-1])
        assert all(len(line) == 70 for line in lines[1:-2])
        assert dearmor(text) == bytes(size)


# --- hostile blobs -----------------------------------------------------------------------


def test_every_truncation_is_a_signature_error(keygen_blob: bytes) -> None:
    for length in range(len(keygen_blob)):
        with pytest.raises(SignatureError):
            sshsig.parse(keygen_blob[:length])


def test_every_bit_flip_is_a_signature_error(key: Key, keygen_blob: bytes) -> None:
    step = 1 if key.name != "rsa" else 3  # RSA blobs are long; every third byte will do
    for offset in range(0, len(keygen_blob), step):
        for bit in range(8):
            mutated = bytearray(keygen_blob)
            mutated[offset] ^= 1 << bit
            check_rejected(bytes(mutated))


@pytest.mark.parametrize("garbage", [b"\x00", b"\x00\x00\x00\x00", b"SSHSIG"])
def test_trailing_garbage(keygen_blob: bytes, garbage: bytes) -> None:
    err = check_rejected(keygen_blob + garbage)
    assert "trailing" in err.message


def test_bad_magic_and_version(keygen_blob: bytes) -> None:
    assert "SSHSIG" in check_rejected(b"SSHSIH" + keygen_blob[6:]).message
    assert "SSHSIG" in check_rejected(b"").message
    for version in (0, 2, 0xFFFFFFFF):
        mutated = keygen_blob[:6] + struct.pack(">I", version) + keygen_blob[10:]
        assert "version" in check_rejected(mutated).message


def fields(blob: bytes, start: int, end: int) -> List[int]:
    """Offsets of the uint32 lengths of the consecutive strings filling blob[start:end]."""
    found, pos = [], start
    while pos < end:
        found.append(pos)
        pos += 4 + struct.unpack(">I", blob[pos:pos + 4])[0]
    assert pos == end
    return found


def length_offsets(blob: bytes) -> List[int]:
    """Offsets of every uint32 length field in a well-formed SSHSIG blob, nested ones too."""
    def inside(at: int) -> List[int]:
        return fields(blob, at + 4, at + 4 + struct.unpack(">I", blob[at:at + 4])[0])

    top = fields(blob, 10, len(blob))
    key, sig = inside(top[0]), inside(top[4])
    nested = inside(sig[1]) if blob[sig[0] + 4:sig[1]].startswith(b"ecdsa") else []
    return top + key + sig + nested


@pytest.mark.parametrize("huge", [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x00FFFFFF])
def test_huge_length_fields(keygen_blob: bytes, huge: int) -> None:
    offsets = length_offsets(keygen_blob)
    assert len(offsets) >= 9
    for at in offsets:
        mutated = keygen_blob[:at] + struct.pack(">I", huge) + keygen_blob[at + 4:]
        check_rejected(mutated)


def test_hash_algorithm_allow_list(key: Key, keygen_blob: bytes) -> None:
    sig = sshsig.parse(keygen_blob)
    for hash_alg in (b"sha1", b"md5", b"SHA512", b"sha384", b"", b"\xff"):
        blob = build(sig.public_key, sig.signature, hash_alg=hash_alg)
        check_rejected(blob)
    forged = sshsig.SshSig(sig.public_key, sig.key_type, sig.namespace, "sha1", sig.signature)
    with pytest.raises(SignatureError):
        sshsig.verify(forged, PAYLOAD)


def test_reserved_field_must_be_empty(keygen_blob: bytes) -> None:
    sig = sshsig.parse(keygen_blob)
    err = check_rejected(build(sig.public_key, sig.signature, reserved=b"x"))
    assert "reserved" in err.message


def test_sig_type_must_fit_key(key: Key, keygen_blob: bytes) -> None:
    sig = sshsig.parse(keygen_blob)
    raw = sig.signature[4 + struct.unpack(">I", sig.signature[:4])[0]:]
    for wrong in (b"ssh-ed25519", b"ecdsa-sha2-nistp256", b"ecdsa-sha2-nistp384",
                  b"rsa-sha2-256", b"rsa-sha2-512", b"ssh-dss", b""):
        if wrong == sig.key_type.encode() or (key.name == "rsa" and wrong.startswith(b"rsa")):
            continue
        check_rejected(build(sig.public_key, string(wrong) + raw))
    # Inconsistent dataclass made by hand: the key decides, not the field.
    lying = sshsig.SshSig(sig.public_key, "ssh-ed25519" if key.name != "ed25519" else "ssh-rsa",
                          sig.namespace, sig.hash_alg, sig.signature)
    with pytest.raises(SignatureError):
        sshsig.verify(lying, PAYLOAD)


def rsa_blob(private: rsa.RSAPrivateKey, sig_type: bytes, algorithm: hashes.HashAlgorithm,
             payload: bytes = PAYLOAD) -> bytes:
    """An SSHSIG made by hand, for signature types our `sign` never produces."""
    public = base64.b64decode(private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1])
    data = (b"SSHSIG" + string(b"contextd-payload") + string(b"") + string(b"sha512")
            + string(hashlib.sha512(payload).digest()))
    raw = private.sign(data, padding.PKCS1v15(), algorithm)
    return build(public, string(sig_type) + string(raw))


def test_rsa_signature_types() -> None:
    private = rsa.generate_private_key(65537, 2048)
    sshsig.verify(sshsig.parse(rsa_blob(private, b"rsa-sha2-256", hashes.SHA256())), PAYLOAD)
    # The type decides the hash: a SHA-256 signature labelled rsa-sha2-512 must fail.
    check_rejected(rsa_blob(private, b"rsa-sha2-512", hashes.SHA256()))
    with pytest.raises(SignatureError) as info:
        sshsig.parse(rsa_blob(private, b"ssh-rsa", hashes.SHA1()))
    assert "SHA-1" in info.value.message
    good = rsa_blob(private, b"rsa-sha2-512", hashes.SHA512())
    sig = sshsig.parse(good)
    raw = sig.signature[4 + len(b"rsa-sha2-512") + 4:]
    for wrong_length in (b"\x00" + raw, raw[1:]):
        err = check_rejected(build(sig.public_key, string(b"rsa-sha2-512") + string(wrong_length)))
        assert "the key needs 256" in err.message
    small = rsa.generate_private_key(65537, 1024)
    assert "too small" in check_rejected(
        rsa_blob(small, b"rsa-sha2-512", hashes.SHA512())).message


def test_sk_and_unknown_key_types(keygen_blob: bytes) -> None:
    sig = sshsig.parse(keygen_blob)
    for key_type, words in ((b"sk-ssh-ed25519@openssh.com", "security-key signatures"),
                            (b"sk-ecdsa-sha2-nistp256@openssh.com", "security-key"),
                            (b"ssh-ed25519-cert-v01@openssh.com", "certificate"),
                            (b"ssh-dss", "not supported"),
                            (b"\xff\xfe", "UTF-8")):
        public = string(key_type) + string(b"\x01" * 32)
        err = check_rejected(build(public, sig.signature))
        assert words in err.message


def test_ecdsa_mpint_encoding_is_strict(keyring: Callable[[str], Key]) -> None:
    sig = sshsig.parse(sshsign.sign(keyring("ecdsa").private, PAYLOAD))
    head = string(b"ecdsa-sha2-nistp256")
    inner = sig.signature[len(head) + 4:]
    r_len = struct.unpack(">I", inner[:4])[0]
    r, s = inner[4:4 + r_len], inner[8 + r_len:]
    variants = [
        string(b"\x00" + r) + string(s),  # superfluous leading zero
        string(r) + string(s) + b"\x00",  # trailing byte inside the signature
        string(b"") + string(s),  # r = 0
        string(b"\x80" + r[1:]) + string(s),  # negative
        string(r),  # s missing
    ]
    for variant in variants:
        check_rejected(build(sig.public_key, head + string(variant)))


def test_public_key_must_be_canonical(key: Key, keygen_blob: bytes) -> None:
    sig = sshsig.parse(keygen_blob)
    check_rejected(build(sig.public_key + b"\x00", sig.signature))
    check_rejected(build(string(b"ssh-ed25519") + string(b"\x00" * 31), sig.signature))


def test_key_encodings_other_than_openssh_own_are_refused() -> None:
    """Public keys are read field by field: a key has exactly the encoding OpenSSH writes."""
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    good = base64.b64decode(ec_key.public_bytes(serialization.Encoding.OpenSSH,
                                                serialization.PublicFormat.OpenSSH).split()[1])
    assert sshsig.public_key_blob("ecdsa-sha2-nistp256 " + base64.b64encode(good).decode()) == good
    compressed = ec_key.public_bytes(serialization.Encoding.X962,
                                     serialization.PublicFormat.CompressedPoint)
    head = string(b"ecdsa-sha2-nistp256")
    for public, words in (
            (head + string(b"nistp256") + string(compressed), "uncompressed"),
            (head + string(b"nistp384") + good[len(head) + 12:], "curve"),
            (head + string(b"nistp256") + string(b"\x04" + b"\x01" * 64), "invalid"),
            (string(b"ssh-rsa") + string(b"\x01\x00\x01") + string(b"\x00\x01"), "leading zero"),
            (string(b"ssh-ed25519") + string(b"\x01" * 33), "not 32"),
            (good + b"\x00", "trailing")):
        key_type = public[4:4 + struct.unpack(">I", public[:4])[0]].decode()
        with pytest.raises(ValueError, match=words):
            sshsig.public_key_blob(key_type + " " + base64.b64encode(public).decode())
