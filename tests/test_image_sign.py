"""`contextd image sign` (issue 16, DESIGN section 11): the image factory signs a manifest.

Checked with the real peers: `ssh-keygen -Y verify -n contextd-image` accepts what it signs,
`rpm` builds and reads a real rpm database under the root, dpkg's status file is read as
dpkg writes it.
"""

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path


from conftest import run_cli
from image_fixtures import (MANIFEST, SIGNATURE, make_root, manifest_of,
                            sign_image)


def ssh_verify(root: Path, pub: str, namespace: str = "contextd-image"):
    allowed = root.parent / "allowed_signers"
    allowed.write_text("factory %s\n" % pub)
    with open(root / MANIFEST, "rb") as data:
        return subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "factory",
                               "-n", namespace, "-s", str(root / SIGNATURE)], stdin=data,
                              capture_output=True, text=True)


def test_sign_writes_a_canonical_manifest_that_ssh_keygen_verifies(tmp_path, ikeys):
    root = make_root(tmp_path / "root")
    code, _, err = sign_image(root, ikeys["factory"][0], "--build-id", "ci-77", "--site", "CERN")
    assert code == 0, err
    data = (root / MANIFEST).read_bytes()
    doc = json.loads(data)
    # canonical: sorted keys, no spaces, UTF-8, nothing else
    assert data == json.dumps(doc, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode("utf-8")
    assert doc["schema"] == "contextd.image/v1"
    assert (doc["site"], doc["name"], doc["version"], doc["build_id"]) == (
        "CERN", "atlas-worker", "2026.12.1", "ci-77")
    assert doc["os_release"] == {"ID": "rocky", "VERSION_ID": "9.4", "IMAGE_ID": "atlas-worker",
                                 "IMAGE_VERSION": "2026.12.1"}
    assert doc["built_at"].endswith("Z") and doc["contextd_version"] is None
    for path in (MANIFEST, SIGNATURE):
        assert stat.S_IMODE((root / path).stat().st_mode) == 0o644
    assert sorted(os.listdir(root / "etc/contextd")) == ["image.json", "image.json.sig"]
    done = ssh_verify(root, ikeys["factory"][1])
    assert done.returncode == 0, done.stderr
    assert 'Good "contextd-image" signature' in done.stdout
    # never a payload signature: the namespace is the image's
    assert ssh_verify(root, ikeys["factory"][1], "contextd-payload").returncode != 0


def test_dpkg_package_list_is_sorted_installed_only_and_digested(tmp_path, ikeys):
    root = make_root(tmp_path / "root")
    assert sign_image(root, ikeys["factory"][0])[0] == 0
    expected = "bash\t5.2-2\tamd64\nzlib1g\t1:1.2.13\tamd64\n"
    assert manifest_of(root)["packages"] == {
        "db": "dpkg", "count": 2, "sha256": hashlib.sha256(expected.encode()).hexdigest()}
    # the build id defaults to the image's os-release BUILD_ID
    assert manifest_of(root)["build_id"] == "b42"


def test_same_packages_in_another_order_give_the_same_digest(tmp_path, ikeys):
    one = make_root(tmp_path / "one")
    status = (one / "var/lib/dpkg/status").read_text().split("\n\n")
    two = make_root(tmp_path / "two", dpkg="\n\n".join(reversed(status)))
    for root in (one, two):
        assert sign_image(root, ikeys["factory"][0])[0] == 0
    assert manifest_of(one)["packages"] == manifest_of(two)["packages"]


def test_source_date_epoch_makes_the_manifest_reproducible(tmp_path, ikeys):
    root = make_root(tmp_path / "root")
    env = dict(os.environ, SOURCE_DATE_EPOCH="1764547200")
    out = []
    for _ in range(2):
        assert run_cli(["image", "sign", "--key", str(ikeys["factory"][0]), "--root", str(root),
                        "--name", "n", "--version", "1"], env=env)[0] == 0
        out.append((root / MANIFEST).read_bytes())
    assert out[0] == out[1]
    assert json.loads(out[0])["built_at"] == "2025-12-01T00:00:00Z"


RPM_SPEC = """Name: contextd
Version: 9.9
Release: 1
Summary: a stand-in
License: MIT
BuildArch: noarch
%description
stand-in
%files
"""


def test_rpm_database_is_read_with_rpm_qa_root(tmp_path, ikeys):
    """A real rpm database under the root, filled by rpm itself: the manifest lists it and
    names the image's contextd version."""
    top = tmp_path / "rpmbuild"
    spec = tmp_path / "contextd.spec"
    spec.write_text(RPM_SPEC)
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", "_topdir %s" % top, str(spec)],
                   check=True, capture_output=True)
    (rpm_file,) = list(top.glob("RPMS/noarch/*.rpm"))
    root = make_root(tmp_path / "root", dpkg=None)
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--initdb"],
                   check=True, capture_output=True)
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i", "--justdb",
                    "--nodeps", "--nosignature", str(rpm_file)], check=True, capture_output=True)
    code, _, err = sign_image(root, ikeys["factory"][0])
    assert code == 0, err
    doc = manifest_of(root)
    line = "contextd\t0:9.9-1\tnoarch\n"
    assert doc["packages"] == {"db": "rpm", "count": 1,
                               "sha256": hashlib.sha256(line.encode()).hexdigest()}
    assert doc["contextd_version"] == "9.9-1"


def test_a_root_without_a_package_database_has_no_digest(tmp_path, ikeys):
    root = make_root(tmp_path / "root", dpkg=None)
    assert sign_image(root, ikeys["factory"][0])[0] == 0
    assert manifest_of(root)["packages"] == {"db": None, "count": 0, "sha256": None}


def test_site_comes_from_the_images_own_policy_and_a_foreign_key_is_noted(tmp_path, ikeys):
    root = make_root(tmp_path / "root")
    policy = root / "etc/contextd/policy.yaml"
    policy.parent.mkdir(parents=True)
    policy.write_text("version: 1\nsite: CERN-PROD\nimage:\n  signers:\n"
                      "    - {id: other, ssh_key: \"%s\"}\n" % ikeys["other"][1])
    policy.chmod(0o644)
    code, _, err = sign_image(root, ikeys["factory"][0])
    assert code == 0, err
    assert manifest_of(root)["site"] == "CERN-PROD"
    assert "does not list this key under image.signers" in err


def test_errors_are_one_line_with_their_exit_code(tmp_path, ikeys):
    root = make_root(tmp_path / "root")
    code, _, err = sign_image(tmp_path / "nowhere", ikeys["factory"][0])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "is not a directory" in err
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(locked)],
                   check=True)
    code, _, err = sign_image(root, locked)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "passphrase-protected" in err
    code, _, err = sign_image(root, ikeys["factory"][0], name="bad\nname")
    assert code == 2 and "control characters" in err
    assert not (root / MANIFEST).exists()
    code, _, err = run_cli(["image", "sign", "--root", str(root)])
    assert code == 2 and "required" in err
