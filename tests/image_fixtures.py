"""Helpers for the image identity tests (issue 16): an image root, its signing, its policy.

Also the fixtures those tests share (conftest.py registers this module as a plugin): `ikeys`,
the factory's keys, made once per test module, and `signed`, the test's site with its root
signed by the factory key its policy trusts."""

import json
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from conftest import base_payload, keygen, run_cli

OS_RELEASE = ('NAME="Rocky Linux"\nID="rocky"\nVERSION_ID="9.4"\nIMAGE_ID=atlas-worker\n'
              'IMAGE_VERSION=2026.12.1\nBUILD_ID=b42\n')
DPKG_STATUS = """Package: zlib1g
Status: install ok installed
Architecture: amd64
Version: 1:1.2.13
Description: compression library
 a continuation line: Package: not-a-package

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2-2

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""
MANIFEST = "etc/contextd/image.json"
SIGNATURE = MANIFEST + ".sig"


def image_keys(directory: Path) -> Dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    return {"factory": keygen(directory, "image-factory"),
            "other": keygen(directory, "other-factory")}


def make_root(root: Path, os_release: str = OS_RELEASE, dpkg: Optional[str] = DPKG_STATUS
              ) -> Path:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text(os_release)
    if dpkg is not None:
        (root / "var/lib/dpkg").mkdir(parents=True, exist_ok=True)
        (root / "var/lib/dpkg/status").write_text(dpkg)
    return root


def sign_image(root: Path, key: Path, *extra: str, name: str = "atlas-worker",
               version: str = "2026.12.1"):
    return run_cli(["image", "sign", "--key", str(key), "--root", str(root), "--name", name,
                    "--version", version, *extra])


def signed_site(site: Any, factory: Any) -> Any:
    """`site` with its root made and signed by `factory` (key, public line), the policy
    trusting that key."""
    make_root(site.root)
    code, _, err = sign_image(site.root, factory[0])
    assert code == 0, err
    site.write_policy(trusting(site.policy, factory[1]))
    return site


@pytest.fixture(scope="module")
def ikeys(tmp_path_factory: Any) -> Dict[str, Any]:
    return image_keys(tmp_path_factory.mktemp("image-keys"))


@pytest.fixture
def signed(site: Any, ikeys: Dict[str, Any]) -> Any:
    """The site's root, signed by the factory key the policy trusts."""
    return signed_site(site, ikeys["factory"])


def hand_sign(path: Path, key: Path, namespace: str = "contextd-image") -> Path:
    """`ssh-keygen -Y sign` writes PATH.sig: as a site without contextd would sign."""
    sig = Path(str(path) + ".sig")
    if sig.exists():
        sig.unlink()
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", namespace,
                    str(path)], check=True, capture_output=True)
    return sig


def trusting(policy: Dict[str, Any], pub: str, signer_id: str = "cern-image-factory"
             ) -> Dict[str, Any]:
    return dict(policy, image={"signers": [{"id": signer_id, "ssh_key": pub}]})


def image_payload(**target: str) -> Dict[str, Any]:
    doc = base_payload()
    doc["targets"] = [dict({"site": "TEST-SITE"}, **target)]
    return doc


def manifest_of(root: Path) -> Dict[str, Any]:
    return json.loads((root / MANIFEST).read_bytes())
