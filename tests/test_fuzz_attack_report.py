"""Fuzz for tests/test_attack_report.py: URLs (hypothesis; apart so that the RPM's %check,
whose EL9 buildroot has no hypothesis, leaves it out as it does test_fuzz.py)."""

import contextlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextd.errors import PolicyError


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDzZ8YvZtg1eIfmxVo9sB4kXnf3VB9Yb3Ud2lC1wYo5N k"


FUZZ = settings(max_examples=int(os.environ.get("CONTEXTD_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
url_text = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(["http", "https", "://", "*", "?", "[", "]", ":", "::1", "@", "#",
                              "/", ".", "..", "%2e", "%", "example.org", "\u00fc", "xn--",
                              "8080", "99999", "-", "\\", " ", "\x00", "a" * 70]),
             max_size=14).map("".join))


@FUZZ
@given(glob=url_text, url=url_text)
def test_fuzz_url_matcher_gives_only_typed_answers(glob, url):
    from contextd import urls
    try:
        pattern = urls.parse_glob(glob)
    except ValueError:
        pattern = None
    try:
        canonical = urls.canonical(url)
    except ValueError:
        canonical = None
    if pattern is not None and canonical is not None:
        assert pattern.matches(canonical) in (True, False)
        if pattern.matches(canonical):
            assert not set("@#\\ ") & set(canonical.split("/")[2])


@FUZZ
@given(text=url_text)
def test_fuzz_url_fields_of_the_policy_give_only_policy_errors(text):
    from contextd import policy
    base = {"version": 1, "site": "S", "sources": ["ec2"]}
    for doc in (dict(base, ec2={"url": text}), dict(base, report={"urls": [text]}),
                dict(base, trust={"atlas": {"signers": [{"id": "k", "ssh_key": KEY}],
                                            "allow": {"report": {"urls": [text]}}}})):
        with contextlib.suppress(PolicyError):
            policy.parse(doc)
