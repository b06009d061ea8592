"""Fuzz for tests/test_attack_x509.py: certificate DER (hypothesis; apart so that the RPM's
%check, whose EL9 buildroot has no hypothesis, leaves it out as it does test_fuzz.py)."""

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import count
from contextd.trust import cadir, x509sig
from contextd.bundle import X509Signature
from contextd.errors import ContextdError
from contextd.trust.verify import verify
from test_attack_x509 import EXAMPLES, pinned, pki, policy_for  # noqa: F401 - pki: a fixture
from test_x509 import PAYLOAD, ROOT_DN


FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


def mutate(der: bytes, edits) -> bytes:
    data = bytearray(der)
    for kind, pos, value in edits:
        if not data:
            break
        pos %= len(data)
        if kind == "flip":
            data[pos] ^= value or 1
        elif kind == "set":
            data[pos] = value
        elif kind == "insert":
            data.insert(pos, value)
        elif kind == "delete":
            del data[pos]
        else:
            del data[pos:]
    return bytes(data)


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                           st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def fuzz_site(pki, tmp_path_factory):  # noqa: F811 - the fixture
    d = pki.ca_dir(tmp_path_factory.mktemp("fuzz") / "certs", crls=("grid", "root"), junk=False)
    return {"rsa": pki.der("rsa"), "ec": pki.der("ec"), "grid": pki.der("grid"),
            "sig_rsa": pki.sign("rsa"), "sig_ec": pki.sign("ec"),
            "pol": policy_for(d, [pinned("rsa"), dict(pinned("ec", anchor=ROOT_DN), id="r2")]),
            "trust": cadir.load_ca_dir(str(d))}


@FUZZ
@given(which=st.sampled_from(["rsa", "ec", "grid"]), edits=EDITS)
def test_mutated_certificate_der_only_typed_errors(fuzz_site, which, edits):
    """Mutate the signer certificate (or the shipped intermediate) and verify: whatever
    cryptography's parser and verifier raise, only ContextdError comes out."""
    count("inputs fuzzed")
    if which == "grid":
        certs = (fuzz_site["ec"], mutate(fuzz_site["grid"], edits))
        sig = fuzz_site["sig_ec"]
    else:
        certs = (mutate(fuzz_site[which], edits),)
        sig = fuzz_site["sig_" + which]
    with contextlib.suppress(ContextdError):
        verify(PAYLOAD, [X509Signature(sig, certs)], fuzz_site["pol"],
               ca_loader=lambda _path: fuzz_site["trust"])
    with contextlib.suppress(ContextdError):
        x509sig.parse(X509Signature(sig, certs))
