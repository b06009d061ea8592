"""Fuzz for tests/test_attack_state.py: journal shapes (hypothesis; apart so that the RPM's
%check, whose EL9 buildroot has no hypothesis, leaves it out as it does test_fuzz.py)."""

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import count
from test_attack_state import CVMFS, TOKEN_PATH, Box


# --- fuzz: journal JSON shapes; only typed errors or success, nothing outside the root ------------

FUZZ = settings(max_examples=int(os.environ.get("CONTEXTD_FUZZ_EXAMPLES", "300")),
                deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.function_scoped_fixture])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2, max_value=2 ** 70),
    st.sampled_from([CVMFS, TOKEN_PATH, "/etc/cvmfs", "/etc", "/", "0.bak", "1.bak", "2.bak",
                     "../outside/secret", "/outside/secret", "condor", "sshd", "-x", "",
                     "systemctl", 0o644, 0o4755, 0, 420]),
    st.text(max_size=12))
keys = st.sampled_from(["entries", "undo", "path", "backup", "mode", "uid", "gid",
                        "created_dirs", "disable_unit", "owner", "x"])
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=6)), max_leaves=16)
entries = st.fixed_dictionaries(
    {"path": st.sampled_from([CVMFS, TOKEN_PATH, "/etc/passwd", "/outside/secret"]),
     "backup": st.sampled_from([None, "0.bak", "1.bak", "2.bak", "/outside/secret"]),
     "mode": st.sampled_from([0o644, 0o600, 0o4755, -1, 2 ** 40]),
     "uid": st.sampled_from([0, os.getuid(), 4242, -1]), "gid": st.sampled_from([0, 1]),
     "created_dirs": st.lists(st.sampled_from(["/etc", "/etc/cvmfs", "/etc/condor",
                                               "/etc/condor/tokens.d", "/outside"]),
                              max_size=3)})
journals = st.one_of(
    values,
    st.fixed_dictionaries({"entries": st.lists(entries, max_size=3),
                           "undo": st.lists(st.one_of(
                               st.fixed_dictionaries({"disable_unit": scalars}), values),
                               max_size=2)}))


@FUZZ
@given(journals)
def test_fuzz_journal_shapes_only_typed_errors(doc):
    from contextd.errors import ContextdError
    count("inputs fuzzed")
    with tempfile.TemporaryDirectory() as tmp:
        b = Box(Path(tmp))
        b.file(CVMFS).parent.mkdir(parents=True)
        b.file(CVMFS).write_text("current\n")
        (b.txn / "journal.json").write_text(json.dumps(doc))
        (b.txn / "0.bak").write_text("old\n")
        (b.txn / "1.bak").symlink_to(b.secret)
        try:
            b.recover()
        except ContextdError as exc:  # recovering may refuse; the secret holds either way
            assert exc.stage == "recover" and "\n" not in exc.one_line()  # noqa: PT017
        assert b.secret.read_text() == "TOP-SECRET\n"
        assert sorted(p.name for p in b.outside.iterdir()) == ["secret"]
        assert not b.txn.exists()                    # recovered, or moved aside
