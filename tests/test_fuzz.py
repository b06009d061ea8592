"""Fuzz the parsers of outside input: only the project's typed errors may come out.

Bundle armour, policy, payload (signed for real, so the fuzzed YAML reaches the parser) and
the strict YAML loader. Longer runs: `make fuzz` raises the example counts.
"""

import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import count, one_key_policy
from contextd import bundle, payload, policy, strictyaml
from contextd.trust import sshsig, verify
from contextd.errors import ContextdError, PolicyError
from contextd.vo import sshsign

EXAMPLES = int(os.environ.get("CONTEXTD_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                         st.sampled_from(["atlas", "*.cern.ch", "2026-11-24T00:00:00Z", "5m",
                                          "deny", "http://x:3128", "$(id)", "a\nb", "'", ""]))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["version", "site", "trust", "allow", "signers", "cvmfs",
                                     "repositories", "htcondor", "role", "puppet", "server",
                                     "targets", "serial", "vo", "x"]), inner, max_size=5)),
    max_leaves=12)


def armour_pieces():
    lines = st.sampled_from([
        "#contextd-signed-v1", "-----BEGIN CONTEXTD PAYLOAD-----", "-----END CONTEXTD PAYLOAD-----",
        "-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----",
        "-----BEGIN CONTEXTD X509 SIGNATURE-----", "-----END CONTEXTD X509 SIGNATURE-----",
        "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----", "", "AAAA", "Y29udGV4dGQ=",
        "U1NIU0lHAAAAAQ==", "====", "-----BEGIN", "\x00", "é"])
    return st.lists(lines, max_size=12).map("\n".join)


@FUZZ
@given(st.one_of(st.binary(max_size=400), armour_pieces().map(str.encode)))
def test_bundle_decode_only_typed_errors(data):
    count("inputs fuzzed")
    with contextlib.suppress(ContextdError):
        bundle.decode(data)


@FUZZ
@given(st.binary(max_size=300))
def test_sshsig_parse_only_typed_errors(blob):
    count("inputs fuzzed")
    with contextlib.suppress(ContextdError):
        sshsig.parse(blob)


@FUZZ
@given(yaml_values)
def test_policy_parse_only_typed_errors(doc):
    count("inputs fuzzed")
    with contextlib.suppress(PolicyError):
        policy.parse(doc)


@FUZZ
@given(st.binary(max_size=300))
def test_strict_yaml_only_typed_errors(text):
    count("inputs fuzzed")
    with contextlib.suppress(PolicyError):
        strictyaml.load(text, "fuzz", PolicyError)


@pytest.fixture(scope="module")
def signer(keys):
    key_path, pub = keys["atlas"]
    return key_path.read_bytes(), policy.parse(one_key_policy(pub))


@FUZZ
@given(st.one_of(
    yaml_values.map(lambda v: b"contextd: payload/v1\n" + repr(v).encode()),
    st.dictionaries(st.sampled_from(["vo", "serial", "not_before", "expires", "targets", "cvmfs",
                                     "htcondor", "puppet", "report", "files"]),
                    yaml_values, max_size=6).map(
        lambda d: b"contextd: payload/v1\n" + strictyaml_dump(d))))
def test_payload_parse_only_typed_errors(signer, text):
    key, pol = signer
    count("inputs fuzzed")
    try:
        verified = verify.verify(text, [sshsign.sign(key, text)], pol)
        payload.parse(verified)
    except ContextdError:
        pass


def strictyaml_dump(doc) -> bytes:
    import yaml
    return yaml.safe_dump(doc).encode()
