"""`contextd sign` and the bundle format, interoperating both ways with the real ssh-keygen."""

import base64
import gzip
import subprocess

import pytest

from contextd import bundle
from contextd.errors import BundleError
from contextd.vo import armor

NS = "contextd-payload"


def allowed_signers(site, key="atlas"):
    path = site.tmp / "allowed_signers"
    path.write_text('signer namespaces="%s" %s\n' % (NS, site.keys[key][1]))
    return path


def split(bundle_path):
    parsed = bundle.decode(bundle_path.read_bytes())
    return parsed.payload, "".join(armor.armor_signatures(parsed.ssh_signatures))


@pytest.mark.parametrize("key", ["atlas", "atlas2"])    # ed25519, ecdsa p-256
def test_contextd_signature_passes_ssh_keygen_verify(site, key):
    b = site.bundle(key=key)
    payload, sigs = split(b)
    assert payload == (site.tmp / "payload.yaml").read_bytes()
    sig = site.tmp / "sig"
    sig.write_text(sigs)
    ok = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed_signers(site, key)),
                         "-I", "signer", "-n", NS, "-s", str(sig)], input=payload,
                        capture_output=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed_signers(site, key)),
                          "-I", "signer", "-n", NS, "-s", str(sig)], input=payload + b"#",
                         capture_output=True)
    assert bad.returncode != 0


def test_rsa_key_signs_and_verifies_both_ways(site, tmp_path):
    from conftest import keygen

    key, pub = keygen(tmp_path, "rsa-signer", "rsa")
    site.policy["trust"]["atlas"]["signers"].append({"id": "atlas-rsa", "ssh_key": pub})
    site.write_policy()
    payload = site.payload_file()
    b = tmp_path / "rsa.bundle"
    assert site.cli("sign", "--key", str(key), str(payload), "-o", str(b))[0] == 0
    code, _, err = site.run("file:%s" % b)
    assert code == 0, err
    assert site.report()["payload"]["signers"] == ["atlas-rsa"]
    _, sigs = split(b)
    (tmp_path / "s").write_text(sigs)
    (tmp_path / "a").write_text('signer namespaces="%s" %s\n' % (NS, pub))
    ok = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "a"), "-I",
                         "signer", "-n", NS, "-s", str(tmp_path / "s")],
                        input=payload.read_bytes(), capture_output=True)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("hashalg", ["sha512", "sha256"])
@pytest.mark.parametrize("key", ["atlas", "atlas2"])
def test_hand_made_bundle_with_ssh_keygen_base64_and_cat(site, key, hashalg):
    payload = site.payload_file()
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", NS, "-O", "hashalg=" + hashalg,
                    "-f", str(site.keys[key][0]), str(payload)], check=True)
    script = ("{ echo '#contextd-signed-v1'; echo '-----BEGIN CONTEXTD PAYLOAD-----'; "
              "base64 -w 76 payload.yaml; echo '-----END CONTEXTD PAYLOAD-----'; "
              "cat payload.yaml.sig; } > hand.bundle")
    subprocess.run(["sh", "-c", script], cwd=site.tmp, check=True)
    code, _, err = site.run("file:%s" % (site.tmp / "hand.bundle"))
    assert code == 0, err


def test_second_signer_appends_and_threshold_two(site, tmp_path):
    site.policy["trust"]["atlas"]["threshold"] = 2
    site.write_policy()
    payload = site.payload_file()
    b = tmp_path / "b"
    site.sign(payload, "atlas", b)
    code, _, err = site.run("file:%s" % b)
    assert code == 1 and "needs 2 distinct trusted signers, payload has 1" in err
    site.sign(payload, "atlas2", b)              # -o exists: appended
    assert len(bundle.decode(b.read_bytes()).ssh_signatures) == 2
    code, _, err = site.run("file:%s" % b)
    assert code == 0, err
    assert site.report()["payload"]["signers"] == ["atlas-ctx", "atlas-ctx-2"]


def test_same_signer_twice_does_not_count_twice(site, tmp_path):
    site.policy["trust"]["atlas"]["threshold"] = 2
    site.write_policy()
    payload = site.payload_file()
    b = tmp_path / "b"
    site.sign(payload, "atlas", b)
    code, _, err = site.cli("sign", "--key", str(site.keys["atlas"][0]), str(payload), "-o",
                            str(b))
    assert code == 1 and "already signed by this key" in err
    # forge it by hand: the same signature block twice still counts once
    text = b.read_text()
    sig = text[text.index("-----BEGIN SSH SIGNATURE-----"):]
    b.write_text(text + sig)
    code, _, err = site.run("file:%s" % b)
    assert code == 1 and "payload has 1" in err


def test_appending_to_a_bundle_of_another_payload_is_refused(site, payload_doc, tmp_path):
    b = tmp_path / "b"
    site.sign(site.payload_file(), "atlas", b)
    payload_doc["serial"] += 1
    other = site.payload_file(payload_doc, name="other.yaml")
    code, _, err = site.cli("sign", "--key", str(site.keys["atlas2"][0]), str(other), "-o",
                            str(b))
    assert code == 1 and "different payload" in err


def test_sign_refuses_what_a_site_would_refuse(site, tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("vo: atlas\n")
    code, _, err = site.cli("sign", "--key", str(site.keys["atlas"][0]), str(p))
    assert code == 1 and "contextd: payload/v1" in err
    p.write_text("contextd: payload/v1\nvo: a\nvo: b\n")
    code, _, err = site.cli("sign", "--key", str(site.keys["atlas"][0]), str(p))
    assert code == 1 and "duplicate key" in err


def test_encrypted_key_is_a_clear_error(site, tmp_path):
    key = tmp_path / "enc"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret-pass", "-f", str(key)],
                   check=True)
    code, _, err = site.cli("sign", "--key", str(key), str(site.payload_file()))
    assert code == 1 and "passphrase" in err and "Traceback" not in err


def test_sign_to_stdout_and_gzip_user_data(site, tmp_path):
    code, out, err = site.cli("sign", "--key", str(site.keys["atlas"][0]),
                              str(site.payload_file()))
    assert code == 0 and out.startswith("#contextd-signed-v1\n")
    b = tmp_path / "b"
    b.write_text(out)
    ud = tmp_path / "user-data"
    code, _, err = site.cli("pack", "user-data", str(b), "-o", str(ud))
    assert code == 0, err
    data = ud.read_bytes()
    assert len(data) <= 16 * 1024
    assert gzip.decompress(data) == b.read_bytes() if data[:2] == b"\x1f\x8b" else data == \
        b.read_bytes()
    assert site.run("file:%s" % ud)[0] == 0


def test_user_data_above_16k_is_refused(site, payload_doc, tmp_path):
    import os
    # Valid (sign checks the payload as a VM would: an attribute holds at most 1024
    # characters), random (gzip cannot shrink it) and above 16 KiB all the same.
    noise = base64.b32encode(os.urandom(24000)).decode().replace("=", "")
    payload_doc["htcondor"]["attributes"] = {
        "Attr%d" % i: noise[i * 1000:(i + 1) * 1000] for i in range(30)}
    b = site.bundle(payload_doc)
    code, _, err = site.cli("pack", "user-data", str(b), "-o", str(tmp_path / "ud"))
    assert code == 1 and "16384" in err
    assert not (tmp_path / "ud").exists()


def test_pack_iso_is_readable_by_isoinfo(site, tmp_path):
    iso = tmp_path / "c.iso"
    assert site.cli("pack", "iso", str(site.bundle()), "-o", str(iso))[0] == 0
    info = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True,
                          check=True).stdout
    assert "Volume id: CONTEXT" in info
    names = subprocess.run(["isoinfo", "-J", "-f", "-i", str(iso)], capture_output=True,
                           text=True, check=True).stdout.split()
    assert "/contextd/payload.yaml" in names and "/contextd/payload.yaml.sig" in names
    extracted = subprocess.run(["isoinfo", "-J", "-x", "/contextd/payload.yaml", "-i",
                                str(iso)], capture_output=True, check=True).stdout
    assert extracted == (site.tmp / "payload.yaml").read_bytes()


@pytest.mark.parametrize(("text", "needle"), [
    (b"", "does not start with"),
    (b"#contextd-signed-v1\n-----BEGIN CONTEXTD PAYLOAD-----\nAAA\n", "no END line"),
    (b"#contextd-signed-v1\nhello\n", "text outside any block"),
    (b"#contextd-signed-v1\n-----BEGIN CONTEXTD PAYLOAD-----\n!!!!\n"
     b"-----END CONTEXTD PAYLOAD-----\n", "not valid base64"),
    (b"\x1f\x8b\x08\x00garbage", "not valid gzip"),
    (b"#contextd-signed-v1\n\xff\n", "not ASCII"),
])
def test_bundle_armour_errors(text, needle):
    with pytest.raises(BundleError) as info:
        bundle.decode(text)
    assert needle in info.value.message


def test_gzip_bomb_is_bounded():
    bomb = gzip.compress(b"#contextd-signed-v1\n" + b" " * (64 * 1024 * 1024))
    with pytest.raises(BundleError) as info:
        bundle.decode(bomb)
    assert "decompresses to more than" in info.value.message


def test_crlf_bundle_is_accepted(site):
    b = site.bundle()
    b.write_bytes(b.read_bytes().replace(b"\n", b"\r\n"))
    code, _, err = site.run("file:%s" % b)
    assert code == 0, err
