"""verify with injected trust anchors: the run reads the CA directory, verify only uses it."""

from __future__ import annotations


import pytest

from contextd import policy
from contextd.trust import cadir
from contextd.errors import SignatureError
from contextd.trust.verify import Anchors, load_anchors, needs_anchors, verify
from test_x509 import PAYLOAD, X509, Pki, policy_for, robot

needs_x509 = pytest.mark.skipif(not X509, reason="this cryptography cannot check X.509")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def ssh_only():
    return policy.parse({"version": 1, "site": "T", "trust": {"atlas": {
        "signers": [{"id": "k", "ssh_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz5G0c2mDmR"
                     "ZhB3t1wJtVnVwM1l9p8m6Ykd1y4ZQm3W"}], "allow": {}}}})


@pytest.mark.parametrize(("x509_signer", "x509_signature", "needed"), [
    (True, True, True), (True, False, False), (False, True, False), (False, False, False)])
def test_anchors_are_needed_only_for_an_x509_signer_and_signature(
        pki, tmp_path, x509_signer, x509_signature, needed):
    pol = policy_for(tmp_path / "certs", [robot("rsa")]) if x509_signer else ssh_only()
    sigs = [pki.signature("rsa")] if x509_signature else [b"an ssh signature blob"]
    assert needs_anchors(pol, sigs) is needed


@needs_x509
def test_verify_uses_the_anchors_it_is_given_and_reads_no_directory(pki, tmp_path):
    trust = cadir.load_ca_dir(str(pki.ca_dir(tmp_path / "certs")))
    pol = policy_for(tmp_path / "nowhere", [robot("rsa")])      # the policy's dir: absent

    def no_reading(path):
        raise AssertionError("verify read %s itself" % path)
    verified = verify(PAYLOAD, [pki.signature("rsa")], pol, ca_loader=no_reading,
                      anchors=Anchors(trust=trust))
    assert [m.signer.id for m in verified.signers["atlas"]] == ["atlas-robot-rsa"]


@needs_x509
def test_anchors_that_could_not_be_loaded_refuse_each_x509_signature(pki, tmp_path):
    pol = policy_for(tmp_path / "nowhere", [robot("rsa")])
    anchors = load_anchors(pol)
    assert anchors.trust is None and "cannot read the X.509 CA directory" in str(anchors.error)
    with pytest.raises(SignatureError, match=r"cannot read the X.509 CA directory"):
        verify(PAYLOAD, [pki.signature("rsa")], pol, anchors=anchors)


def test_a_policy_without_x509_section_loads_nothing():
    assert load_anchors(ssh_only()) == Anchors()
