"""Attacks on `threshold`: one signature must never count twice (issue 12, section 4).

A threshold counts distinct keys, each for a distinct signer: the same public key pinned under
two ids, or a key pinned as `ssh_key` plus the VO CA that certified it, or an X.509 robot
whose key is also pinned as an SSH key, is one key. Keys and certificates come from the real
`ssh-keygen` and `openssl`; the runs are `contextd run` in a scratch site.
"""

import copy
import shutil
import subprocess
from pathlib import Path

import pytest

from contextd import bundle, policy
from contextd.trust import sshsig
from contextd.errors import PolicyError
from contextd.policy import Policy, Signer, VoTrust
from contextd.trust.verify import verify
from contextd.vo import sshsign

from conftest import base_policy

CA_PRINCIPAL = "atlas-contextd"
PAYLOAD = b"contextd: payload/v1\nvo: atlas\nserial: 2026112401\n"


def keygen(*args: str, stdin=None) -> subprocess.CompletedProcess:
    tool = shutil.which("ssh-keygen")
    assert tool, "ssh-keygen is required"
    return subprocess.run([tool, *args], input=stdin, capture_output=True, check=True)


def threshold_two(site, signers):
    doc = base_policy(site.keys)
    doc["trust"]["atlas"]["signers"] = signers
    doc["trust"]["atlas"]["threshold"] = 2
    return site.write_policy(doc)


def test_same_key_under_two_ids_is_refused_by_policy_check(site):
    """Attack: pin one key twice and one signature meets threshold 2 (applied, exit 0)."""
    pub = site.keys["atlas"][1]
    path = threshold_two(site, [{"id": "atlas-ctx", "ssh_key": pub},
                                {"id": "atlas-ctx-copy", "ssh_key": pub}])
    code, out, err = site.cli("policy", "check", str(path))
    assert code == 2, (code, out, err)
    assert "atlas-ctx" in err and "atlas-ctx-copy" in err and "same key" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 2, err
    assert "atlas-ctx-copy" in err
    assert not (site.root / "etc" / "cvmfs").exists()


def test_same_key_as_ssh_key_and_ssh_ca_is_refused():
    """A CA key also pinned as a plain key is one key under two ids: refused too."""
    tmp = Path(__import__("tempfile").mkdtemp())
    keygen("-q", "-N", "", "-t", "ed25519", "-f", str(tmp / "k"))
    pub = (tmp / "k.pub").read_text().strip()
    doc = {"version": 1, "site": "S", "trust": {"atlas": {"signers": [
        {"id": "a-key", "ssh_key": pub},
        {"id": "a-ca", "ssh_ca": pub, "principals": ["p"]}], "allow": {}}}}
    with pytest.raises(PolicyError) as info:
        policy.parse(doc)
    assert "'a-key'" in info.value.message and "'a-ca'" in info.value.message


def test_same_x509_signer_under_two_ids_is_refused():
    x = {"subject": "/DC=ch/CN=Robot", "issuer": "/DC=ch/CN=CA"}
    doc = {"version": 1, "site": "S", "x509": {"ca_dir": "/nowhere"},
           "trust": {"atlas": {"signers": [{"id": "r1", "x509": x}, {"id": "r2", "x509": x}],
                               "allow": {}}}}
    with pytest.raises(PolicyError) as info:
        policy.parse(doc)
    assert "'r1'" in info.value.message and "'r2'" in info.value.message


def test_the_same_key_in_two_vos_is_fine():
    """The rule is per VO: a site may trust one key for two VOs."""
    tmp = Path(__import__("tempfile").mkdtemp())
    keygen("-q", "-N", "", "-t", "ed25519", "-f", str(tmp / "k"))
    pub = (tmp / "k.pub").read_text().strip()
    policy.parse({"version": 1, "site": "S", "trust": {
        "atlas": {"signers": [{"id": "a", "ssh_key": pub}], "allow": {}},
        "cms": {"signers": [{"id": "c", "ssh_key": pub}], "allow": {}}}})


def test_a_policy_value_with_one_key_twice_still_counts_once(keys):
    """Defence in depth: even a Policy value built around the check counts the key once."""
    key_path, pub = keys["atlas"]
    pol = policy.parse({"version": 1, "site": "S", "trust": {"atlas": {
        "threshold": 1, "signers": [{"id": "a", "ssh_key": pub}], "allow": {}}}})
    blob = sshsig.public_key_blob(pub)
    trust = pol.trust["atlas"]
    forged = VoTrust(name="atlas", threshold=2, min_serial=0, revoked=trust.revoked,
                     allow={}, signers=(Signer(id="a", kind="ssh_key", key_blob=blob),
                                        Signer(id="b", kind="ssh_key", key_blob=blob)))
    fields = {f: getattr(pol, f) for f in ("path", "sha256", "site", "require_signature",
                                           "sources", "wait_for_source", "clock_skew",
                                           "max_validity", "site_settings", "report_urls",
                                           "report_ca_bundle", "file_source", "ec2", "x509",
                                           "legacy", "document")}
    pol2 = Policy(trust={"atlas": forged}, **fields)
    v = verify(PAYLOAD, [sshsign.sign(key_path.read_bytes(), PAYLOAD)], pol2)
    assert sorted(m.signer.id for m in v.signers["atlas"]) == ["a", "b"]
    assert v.counted("atlas") == 1


@pytest.fixture
def vo_ca(tmp_path):
    """A VO CA key and a user key it certified (principal atlas-contextd)."""
    for name in ("ca", "user"):
        keygen("-q", "-N", "", "-t", "ed25519", "-C", name, "-f", str(tmp_path / name))
    keygen("-q", "-s", str(tmp_path / "ca"), "-I", "atlas-ctx-2026", "-n", CA_PRINCIPAL,
           "-V", "-1h:+1d", str(tmp_path / "user.pub"))
    return tmp_path


def test_ssh_key_plus_the_ca_that_certified_it_is_one_key(site, vo_ca):
    """Attack: pin the key and its CA; one certificate signature met threshold 2 (exit 0)."""
    if sshsig.certificate_support_problem():
        pytest.skip("SSH certificates need a newer cryptography")
    user_pub = (vo_ca / "user.pub").read_text().strip()
    threshold_two(site, [{"id": "atlas-ctx", "ssh_key": user_pub},
                         {"id": "atlas-vo-ca", "ssh_ca": (vo_ca / "ca.pub").read_text().strip(),
                          "principals": [CA_PRINCIPAL]}])
    assert site.cli("policy", "check", str(site.policy_path))[0] == 0
    payload = site.payload_file()
    out = site.tmp / "cert.bundle"
    code, _, err = site.cli("sign", "--key", str(vo_ca / "user"), "--cert",
                            str(vo_ca / "user-cert.pub"), str(payload), "-o", str(out))
    assert code == 0, err
    code, _, err = site.run("file:%s" % out)
    assert code == 1, err
    assert "needs 2 distinct trusted signers, payload has 1" in err, err
    assert "atlas-ctx" in err and "atlas-vo-ca" in err
    assert not (site.root / "etc" / "cvmfs").exists()
    # a second, distinct key makes it two
    other = site.keys["atlas2"]
    doc = copy.deepcopy(site.policy)
    doc["trust"]["atlas"]["signers"].append({"id": "atlas-ctx-2", "ssh_key": other[1]})
    site.write_policy(doc)
    site.sign(payload, key="atlas2", out=out)
    code, _, err = site.run("file:%s" % out)
    assert code == 0, err
    assert site.report()["payload"]["signers"] == ["atlas-ctx", "atlas-ctx-2",
                                                   "atlas-vo-ca:atlas-ctx-2026"]


def test_two_signatures_by_one_key_count_once(site):
    """The same signature appended twice is still one key."""
    threshold_two(site, [{"id": "atlas-ctx", "ssh_key": site.keys["atlas"][1]},
                         {"id": "atlas-ctx-2", "ssh_key": site.keys["atlas2"][1]}])
    payload = site.payload_file()
    out = site.sign(payload)
    text = out.read_bytes()
    sig = text[text.index(b"-----BEGIN SSH SIGNATURE-----"):]
    out.write_bytes(text + sig)
    assert len(bundle.decode(out.read_bytes()).signatures) == 2
    code, _, err = site.run("file:%s" % out)
    assert code == 1 and "needs 2 distinct trusted signers, payload has 1" in err, err


def test_distinct_keys_is_a_matching_of_keys_to_signers():
    """Each key counts for one signer and each signer for one key (a bipartite matching)."""
    from contextd.trust.verify import distinct_keys

    assert distinct_keys([(b"k1", "a"), (b"k1", "b")]) == 1          # key pinned + its CA
    assert distinct_keys([(b"k1", "ca"), (b"k2", "ca")]) == 1        # two certs, one CA id
    assert distinct_keys([(b"k1", "a"), (b"k1", "ca"), (b"k2", "ca")]) == 2
    assert distinct_keys([(b"k1", "a"), (b"k2", "a"), (b"k3", "b"), (b"k3", "c")]) == 2
    assert distinct_keys([(b"k1", "a"), (b"k2", "b"), (b"k3", "c")]) == 3
    assert distinct_keys([]) == 0


def test_x509_robot_and_ssh_key_of_the_same_key_pair_count_once(site, tmp_path):
    """A robot key pinned also as an SSH key: its X.509 and SSH signatures are one key."""
    from contextd.trust import x509sig

    if x509sig.support_problem():
        pytest.skip("X.509 chain validation needs cryptography >= 45")
    from test_x509 import GRID_DN, ROBOT_DN, Pki

    pki = Pki(tmp_path / "pki")
    key = pki.dir / "ec.key"
    key.chmod(0o600)
    ssh_pub = keygen("-y", "-f", str(key)).stdout.decode().strip()
    Path(str(key) + ".pub").write_text(ssh_pub + "\n")    # ssh-keygen -Y sign wants it
    doc = base_policy(site.keys)
    doc["x509"] = {"ca_dir": str(pki.ca_dir(tmp_path / "igtf")), "crl": "off"}
    doc["trust"]["atlas"]["signers"] = [
        {"id": "atlas-robot", "x509": {"subject": ROBOT_DN % "ec", "issuer": GRID_DN}},
        {"id": "atlas-robot-ssh", "ssh_key": ssh_pub},
        {"id": "atlas-ctx", "ssh_key": site.keys["atlas"][1]}]
    doc["trust"]["atlas"]["threshold"] = 2
    site.write_policy(doc)
    payload = site.payload_file()
    out = site.tmp / "both.bundle"
    code, _, err = site.cli("sign", "--x509-key", str(key), "--x509-cert", str(pki.cert("ec")),
                            str(payload), "-o", str(out))
    assert code == 0, err
    ssh_sig = keygen("-Y", "sign", "-n", sshsig.NAMESPACE, "-f", str(key),
                     stdin=payload.read_bytes()).stdout
    out.write_bytes(out.read_bytes() + ssh_sig)
    assert len(bundle.decode(out.read_bytes()).signatures) == 2
    code, _, err = site.run("file:%s" % out)
    assert code == 1, err
    assert "needs 2 distinct trusted signers, payload has 1" in err, err
    site.sign(payload, key="atlas", out=out)
    code, _, err = site.run("file:%s" % out)
    assert code == 0, err
