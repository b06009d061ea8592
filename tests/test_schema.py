"""Typed readers and the strict YAML loader."""

import re

import pytest

from contextd import schema, strictyaml
from contextd.errors import PayloadError, PolicyError


def test_patterns_match_the_whole_value_not_before_a_newline():
    r = schema.Reader({"site": "CERN-PROD\n", "hosts": ["a.b\n"]}, "", PolicyError)
    with pytest.raises(PolicyError):
        r.str("site", pattern=re.compile(r"^[A-Za-z0-9-]+$"))
    with pytest.raises(PolicyError):
        r.str_list("hosts", pattern=schema.HOSTNAME_RE)
    assert not schema.hostname_ok("a.b\n") and schema.hostname_ok("a.b")


def test_reader_never_coerces():
    r = schema.Reader({"n": True, "s": 5, "l": "x"}, "sec", PayloadError)
    for call in (lambda: r.int("n"), lambda: r.str("s"), lambda: r.str_list("l"),
                 lambda: r.bool("s")):
        with pytest.raises(PayloadError) as info:
            call()
        assert info.value.message.startswith("sec.")


def test_unknown_keys_are_named_with_the_allowed_ones():
    r = schema.Reader({"a": 1, "zz": 2}, "policy.x", PolicyError)
    with pytest.raises(PolicyError) as info:
        r.only(["a", "b"])
    assert "'zz'" in info.value.message and "a, b" in info.value.hint


@pytest.mark.parametrize(("text", "needle"), [
    (b"a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3 (first at line 1)"),
    (b"a: &x [1]\nb: *x\n", "anchor"),
    (b"base: {a: 1}\nc:\n  <<: {a: 2}\n", "merge key"),
    (b"a: !!python/object:os.system x\n", "not valid YAML"),
    (b"[" * 100 + b"]" * 100, "nesting deeper than 64 levels"),
])
def test_strict_yaml_refuses(text, needle):
    with pytest.raises(PayloadError) as info:
        strictyaml.load(text, "payload", PayloadError)
    assert needle in info.value.one_line()


def test_timestamps_stay_strings():
    doc = strictyaml.load(b"t: 2026-11-24T00:00:00Z\nd: 2026-11-24\n", "x", PayloadError)
    assert doc == {"t": "2026-11-24T00:00:00Z", "d": "2026-11-24"}


SAMPLES = [
    b"a: 1\nb: [x, 'y', \"z\", 2026-11-24T00:00:00Z]\nc: {d: null, e: yes, f: 0x10}\n",
    b"a: 1\na: 2\n", b"a: &x 1\nb: *x\n", b"a: [\n", b"<<: {a: 1}\n", b"[" * 70 + b"]" * 70,
    b"a: !!binary aGk=\n", b"- |\n  multi\n  line\n", b"\xef\xbb\xbfa: 1\n", b"a: '\\x'\n",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_libyaml_and_pure_python_loaders_agree(text):
    import yaml
    if not yaml.__with_libyaml__:
        pytest.fail("PyYAML without libyaml: the fast path is not tested here")

    def outcome(libyaml):
        try:
            loader = strictyaml._loader_class(libyaml)(text)
            try:
                return ("ok", loader.get_single_data())
            finally:
                loader.dispose()
        except Exception as exc:  # noqa: BLE001 - comparing what each raises
            return ("error", type(exc).__name__ in ("_Refused",), str(exc).split(" at ")[0][:30])
    c, py = outcome(True), outcome(False)
    assert c[0] == py[0] and c[:2] == py[:2], (c, py)
    if c[0] == "ok":
        assert c == py
