"""Fuzz for tests/test_attack_parse.py: YAML tags and MIME (hypothesis; apart so that the
RPM's %check, whose EL9 buildroot has no hypothesis, leaves it out as it does test_fuzz.py)."""

import contextlib
import email
import email.policy
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import count
from contextd import payload, strictyaml
from contextd.errors import ContextdError, PolicyError, SourceError
from test_attack_parse import payload_with, signer  # noqa: F401 - signer is a fixture


TAGS = ["!!int", "!!float", "!!bool", "!!null", "!!str", "!!binary", "!!timestamp", "!!map",
        "!!seq", "!!set", "!!omap", "!!pairs", "!!merge", "!!value", "!", "!local",
        "!!python/object", "tag:yaml.org,2002:int"]
SCALARS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["0x", "0b2", "0o9", "1:60", "190:20:30", "-", "+.inf", ".nan", "1e5",
                     "2026-13-45", "2026-02-30T00:00:00Z", "0000-01-01", "9999-12-31 23:59:60",
                     "y", "maybe", "~", "aGk=", "@@@", "[]", "{}", "[1]", "{a: 1}", "x",
                     "1" * 5000, "0x" + "f" * 5000, "1:" * 3000 + "1"]))
FUZZ = settings(max_examples=int(os.environ.get("CONTEXTD_FUZZ_EXAMPLES", "300")),
                deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.function_scoped_fixture])


def tagged_values():
    tagged = st.builds(lambda tag, value: "%s %s" % (tag, value), st.sampled_from(TAGS), SCALARS)
    return st.one_of(tagged, SCALARS,
                     st.lists(tagged, max_size=3).map(lambda v: "[%s]" % ", ".join(v)),
                     tagged.map(lambda v: "{k: %s}" % v))


@FUZZ
@given(tagged_values())
def test_fuzz_tagged_scalars_only_typed_errors(signer, value):  # noqa: F811 - the fixture
    """Payload and policy, on both parsers (libyaml's and PyYAML's): a typed error or a value."""
    count("inputs fuzzed")
    value = value.encode("utf-8", "surrogatepass")
    for libyaml in (True, False):
        with contextlib.suppress(PolicyError):
            strictyaml.load(b"version: 1\nsite: " + value, "policy", PolicyError,
                            libyaml=libyaml)
    with contextlib.suppress(ContextdError):
        payload.parse(signer(b"contextd: payload/v1\nvo: " + value + b"\n"))


def email_leaves(data: bytes):
    """What the email package (and so cloud-init) makes of well-formed MIME."""
    import email
    import email.policy
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    return [(part.get_content_type(), part.get_filename(), part.get_payload(decode=True))
            for part in message.walk() if not part.is_multipart()]


def mime_documents():
    from email.mime.application import MIMEApplication
    from email.mime.message import MIMEMessage
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    text = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF, blacklist_categories=(
        "Cs",)), max_size=60)
    leaf = st.one_of(
        st.builds(lambda body, sub: MIMEText(body, sub), text,
                  st.sampled_from(["plain", "cloud-config", "x-shellscript", "amiconfig"])),
        st.builds(lambda body, name: _named(MIMEApplication(body, "x-contextd"), name),
                  st.binary(max_size=60), st.sampled_from([None, "ctx.gz", "a b.txt", "é.sh"])))

    def container(children):
        outer = MIMEMultipart()
        for child in children:
            outer.attach(child)
        return outer
    tree = st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4).map(container), inner.map(MIMEMessage)),
        max_leaves=8)
    def document(parts, crlf):
        message = container(parts)
        for number, part in enumerate(message.walk()):     # not the random module's
            if part.is_multipart():
                part.set_boundary("=_contextd_%d" % number)
        return message.as_bytes(policy=email.policy.SMTP if crlf else email.policy.compat32)
    return st.builds(document, st.lists(tree, min_size=1, max_size=3), st.booleans())


def _named(part, name):
    if name:
        part.add_header("Content-Disposition", "attachment", filename=name)
    return part


@FUZZ
@given(mime_documents())
def test_mime_parts_are_what_the_email_package_sees(data):
    """On well-formed user-data, the linear parser agrees with the email package."""
    from contextd.sources import mime
    count("inputs fuzzed")
    ours = [(p.content_type, p.filename, p.body) for p in mime.leaves(data, "user-data")]
    assert ours == email_leaves(data)


@FUZZ
@given(st.one_of(mime_documents(), st.binary(max_size=400)), st.data())
def test_mime_mutations_only_typed_errors(data, draw):
    """Mangled MIME (bytes cut, flipped, inserted): a SourceError or parts, nothing else."""
    from contextd.sources import mime
    count("inputs fuzzed")
    for _ in range(draw.draw(st.integers(0, 4))):
        at = draw.draw(st.integers(0, len(data)))
        junk = draw.draw(st.sampled_from([b"", b"\r", b"\n", b";", b'"', b"\\", b"--",
                                          b"\n\n", b":", b" ", b"\xff", b"=", b"*"]))
        data = data[:at] + junk + data[at + draw.draw(st.integers(0, 3)):]
    with contextlib.suppress(SourceError):
        mime.leaves(b"MIME-Version: 1.0\n" + data, "user-data")
