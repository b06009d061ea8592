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


@pytest.mark.parametrize("text,needle", [
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
