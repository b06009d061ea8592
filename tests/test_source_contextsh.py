"""context.sh read as data: OpenNebula quoting old and new, HEPiX files, hostile content."""

import base64
import subprocess

import pytest

from contextd.errors import SourceError
from contextd.sources import contextsh

from fakes_sources import one_context_sh


def parse(text: str):
    return contextsh.parse(text.encode())


def test_opennebula_new_quoting_matches_the_shell(tmp_path):
    values = {
        "PLAIN": "vm-01",
        "QUOTE": "it's a 'quoted' word",
        "MULTI": "ssh-ed25519 AAAA one\nssh-ed25519 BBBB two\n",
        "SHELLISH": "$(touch {m}) `touch {m}` ${{HOME}} \\ \" ;|&<>".format(m=tmp_path / "x"),
        "EMPTY": "",
        "UNICODE": "Zürich \u2013 ✓",  # an en dash
    }
    data = one_context_sh(values)
    assert contextsh.parse(data) == values
    # The shell reads the same file the same way (this *sources* it, in a test, on purpose:
    # the values are what OpenNebula would make of them).
    script = ". %s; %s" % (tmp_path / "context.sh", "; ".join(
        "printf '%%s\\0' \"$%s\"" % k for k in values))
    (tmp_path / "context.sh").write_bytes(data)
    out = subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout
    assert out.decode().split("\0")[:-1] == list(values.values())
    assert not (tmp_path / "x").exists()


def test_old_double_quoted_form_and_escapes():
    got = parse('HOSTNAME="vm1"\nMSG="say \\"hi\\" for \\$5 and \\`x\\` \\\\ \\n"\n'
                'CONT="a\\\nb"\nSPAN="line1\nline2"\n')
    assert got == {"HOSTNAME": "vm1", "MSG": 'say "hi" for $5 and `x` \\ \\n',
                   "CONT": "ab", "SPAN": "line1\nline2"}


def test_hepix_style_export_comments_blank_lines_and_bare_words():
    got = parse("# HEPiX site context\n\n   export CONTEXT_DIR=/var/lib/hepix/context\n"
                "SITE=CERN-PROD   # trailing comment\n\tTCP_IN_PORTS='22 80'\n"
                "A=x'y'\"z\"\\'w\n")
    assert got == {"CONTEXT_DIR": "/var/lib/hepix/context", "SITE": "CERN-PROD",
                   "TCP_IN_PORTS": "22 80", "A": "xyz'w"}


def test_later_assignment_wins_and_crlf_is_accepted():
    assert parse("A='1'\r\nA='2'\r\n") == {"A": "2"}


def test_hostile_substitutions_in_quotes_stay_text(tmp_path):
    marker = tmp_path / "pwned"
    got = parse('X="$(touch %s)"\nY=\'`touch %s`\'\nZ="`touch %s`"\n' % (marker, marker, marker))
    assert got["X"] == "$(touch %s)" % marker
    assert got["Y"] == got["Z"] == "`touch %s`" % marker
    assert not marker.exists()


@pytest.mark.parametrize(("text", "line", "what"), [
    ("A='1'\nB=$(reboot)\n", 2, "unquoted '$'"),
    ("A='1'\n\nB=`id`\n", 3, "unquoted '`'"),
    ("A='1'; rm -rf /\n", 1, "unquoted ';'"),
    ("A='1' B='2'\n", 1, "unexpected"),
    ("echo hello\n", 1, "expected KEY='value'"),
    ("A='1'\nB='never closed\nC=3\n", 2, "single quote never closed"),
    ('A="open\n', 1, "double quote never closed"),
    ("1A='x'\n", 1, "expected KEY='value'"),
    ("A=x\\\ny\n", 1, "line continuation"),
    ("A='1'\nB='x'\n$(id)\n", 3, "expected KEY='value'"),
    ("A=*\n", 1, "unquoted '*'"),
    ("A='x'\x00\n", 1, "NUL"),
    ("A='multi\nline'junk;\n", 2, "unquoted ';'"),
])
def test_malformed_lines_name_the_line(text, line, what):
    with pytest.raises(SourceError) as err:
        contextsh.parse(text.encode(), what="context.sh on /dev/sr0")
    message = err.value.one_line()
    assert "context.sh on /dev/sr0 line %d:" % line in message, message
    assert what in message, message
    assert "\n" not in message


def test_user_data_variables():
    bundle = b"#contextd-signed-v1\n..."
    enc = base64.b64encode(bundle).decode()
    wrapped = "\n".join(enc[i:i + 10] for i in range(0, len(enc), 10))
    assert contextsh.user_data({"EC2_USER_DATA": wrapped}) == ("EC2_USER_DATA", bundle)
    assert contextsh.user_data({"USER_DATA": enc, "USERDATA_ENCODING": "base64"}) == \
        ("USER_DATA", bundle)
    assert contextsh.user_data({"USERDATA": enc, "USER_DATA_ENCODING": "BASE64"}) == \
        ("USERDATA", bundle)
    assert contextsh.user_data({"USER_DATA": bundle.decode()}) == ("USER_DATA", bundle)
    assert contextsh.user_data({"EC2_USER_DATA": "", "USER_DATA": " ", "OTHER": "x"}) is None
    # EC2_USER_DATA (HEPiX) first
    assert contextsh.user_data({"USER_DATA": "b", "EC2_USER_DATA": enc})[0] == "EC2_USER_DATA"
    with pytest.raises(SourceError, match="EC2_USER_DATA is not valid base64"):
        contextsh.user_data({"EC2_USER_DATA": "not*base64"})
    with pytest.raises(SourceError, match="USERDATA_ENCODING 'gzip' is not known"):
        contextsh.user_data({"USERDATA": "x", "USERDATA_ENCODING": "gzip"})


def test_facts_only_from_an_opennebula_file():
    data = one_context_sh({"VMID": "4711", "ETH0_IP": "10.0.0.5"})
    assert contextsh.facts(contextsh.parse(data), data) == {"cloud": "opennebula",
                                                             "instance_id": "4711"}
    data = one_context_sh({"VMID": "$(id)"})
    assert contextsh.facts(contextsh.parse(data), data) == {"cloud": "opennebula"}
    hand = b"# my site\nVMID='12'\n"
    assert contextsh.facts(contextsh.parse(hand), hand) == {}


def test_not_utf8_survives_without_failing():
    got = contextsh.parse(b"A='caf\xe9'\nB='ok'\n")
    assert got["B"] == "ok"
    assert got["A"].encode("utf-8", "surrogateescape") == b"caf\xe9"


def test_big_file_is_fast():
    data = b"".join(b"VAR_%d='%s'\n" % (i, b"x" * 200) for i in range(4000))
    assert len(contextsh.parse(data)) == 4000
