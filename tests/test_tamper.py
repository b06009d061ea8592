"""Tamper suite: every single-byte change of a small signed bundle is rejected.

Every position of the bundle text (armour, payload and signature) takes every other byte
value; each variant goes through the real decode and verify. None may be accepted.
"""

import pytest

from conftest import count
from contextd import bundle, policy
from contextd.trust import verify
from contextd.errors import ContextdError
from contextd.vo import armor, sshsign

PAYLOAD = b"contextd: payload/v1\nvo: atlas\nserial: 7\n"


@pytest.fixture(scope="module")
def signed(keys):
    key_path, pub = keys["atlas"]
    pol = policy.parse({"version": 1, "site": "S", "trust": {"atlas": {
        "signers": [{"id": "a", "ssh_key": pub}]}}})
    blob = sshsign.sign(key_path.read_bytes(), PAYLOAD)
    return armor.encode(PAYLOAD, [sshsign.armor(blob)]), pol


def accepted(data: bytes, pol) -> bool:
    try:
        parsed = bundle.decode(data)
        verify.verify(parsed.payload, parsed.ssh_signatures, pol)
    except ContextdError:
        return False
    return True


def test_original_is_accepted(signed):
    data, pol = signed
    assert accepted(data, pol)


def test_every_single_byte_change_is_rejected(signed):
    data, pol = signed
    survivors = []
    tried = 0
    for i in range(len(data)):
        for value in range(256):
            if value == data[i]:
                continue
            variant = data[:i] + bytes([value]) + data[i + 1:]
            tried += 1
            if accepted(variant, pol):
                survivors.append((i, value))
    count("tamperings rejected", tried - len(survivors))
    assert tried == len(data) * 255
    assert not survivors, "accepted %d of %d tamperings, e.g. %r" % (
        len(survivors), tried, [(i, chr(v), data[max(0, i - 5):i + 5]) for i, v in survivors[:5]])
