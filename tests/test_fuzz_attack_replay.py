"""Fuzz for tests/test_attack_replay.py: applied.json shapes (hypothesis; apart so that the
RPM's %check, whose EL9 buildroot has no hypothesis, leaves it out as it does test_fuzz.py)."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextd import history
from contextd.errors import StateError


DIGEST = "ab" * 32
INSTANCE = "machine:0123456789abcdef"
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                         st.sampled_from([DIGEST, INSTANCE, "atlas", "2026-11-24T00:00:00Z",
                                          "htcondor", -1, 2 ** 70]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["instance", "payload_sha256", "serial", "vo", "applied_at",
                                     "sections", "serials", "atlas", "x"]), inner, max_size=8)),
    max_leaves=16)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=json_values)
def test_fuzz_state_shapes_give_a_history_or_a_state_error(tmp_path, doc):
    (tmp_path / "applied.json").write_text(json.dumps(doc))
    try:
        past = history.load(str(tmp_path), INSTANCE)
    except StateError as exc:
        assert str(tmp_path / "applied.json") in exc.one_line()  # noqa: PT017 - either is valid
        return
    assert past.instance in (None, INSTANCE)
    assert isinstance(past.unchanged(DIGEST), bool)
    assert past.rollback("atlas", 0, DIGEST) is None or "serial 0" in past.rollback(
        "atlas", 0, DIGEST)
