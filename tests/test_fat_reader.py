"""contextd.fat, the vfat reader for config drives and NoCloud seeds: FAT12/16/32 written by
the real mkfs.vfat and mcopy, long names, nested directories; hostile discs (a looping chain,
a lying size, truncation, random corruption) end in one SourceError, in bounded time."""

import random
import struct
import time

import pytest

from contextd import fat
from contextd.errors import SourceError

from fakes_clouds import vfat_image

FILES = {"openstack/latest/meta_data.json": b'{"uuid": "u-1"}',
         "openstack/latest/user_data": b"#contextd-signed-v1\n" + b"x" * 20000,
         "meta-data": b"instance-id: i-1\n", "empty": b""}


@pytest.mark.parametrize(("bits", "mib"), [(12, 2), (16, 64), (32, 64)])
def test_reads_what_mcopy_wrote(tmp_path, bits, mib):
    disc = vfat_image(tmp_path, "config-2", FILES, size_mib=mib, fat_bits=bits)
    with fat.FatImage(str(disc)) as image:
        assert image._bits == bits
        assert image.label.lower() == "config-2"
        for rel, data in FILES.items():
            assert image.read(rel) == data
        assert image.exists("OpenStack/LATEST/User_Data")
        assert image.exists("openstack/latest") and not image.exists("openstack/nope")
        assert not image.exists("meta-data/x")
        with pytest.raises(SourceError, match="is not a file"):
            image.read("openstack")
        with pytest.raises(SourceError, match="over the limit of 100"):
            image.read("openstack/latest/user_data", limit=100)


def _first_cluster(image, rel):
    return image._find(rel)[1]


def test_a_looping_chain_ends(tmp_path):
    disc = vfat_image(tmp_path, "cidata", FILES, size_mib=64, fat_bits=16)
    with fat.FatImage(str(disc)) as image:
        cluster = _first_cluster(image, "openstack/latest/user_data")
        fat_at = image._fat_at
    with open(disc, "r+b") as f:              # the first cluster's successor: itself
        f.seek(fat_at + cluster * 2)
        f.write(struct.pack("<H", cluster))
    with fat.FatImage(str(disc)) as image, pytest.raises(SourceError, match="loops"):
        image.read("openstack/latest/user_data")


def test_a_lying_size_and_truncation(tmp_path):
    disc = vfat_image(tmp_path, "cidata", FILES)
    data = bytearray(disc.read_bytes())
    at = data.find(b"META-D~1") if b"META-D~1" in data else data.find(b"META-DAT")
    assert at > 0
    struct.pack_into("<I", data, at + 28, 3 * 1024 * 1024)     # says 3 MiB
    disc.write_bytes(bytes(data))
    with fat.FatImage(str(disc)) as image:
        with pytest.raises(SourceError, match="over the limit"):
            image.read("meta-data", limit=1024 * 1024)
        with pytest.raises(SourceError):
            image.read("meta-data", limit=8 * 1024 * 1024)
    disc.write_bytes(bytes(data[:4096]))
    with pytest.raises(SourceError, match="vfat disc"):
        fat.FatImage(str(disc)).read("meta-data")


def test_random_corruption_is_a_source_error_and_fast(tmp_path):
    disc = vfat_image(tmp_path, "config-2", FILES)
    pristine = disc.read_bytes()
    rng = random.Random(14)
    started = time.monotonic()
    for _ in range(300):
        data = bytearray(pristine)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(0, 64 * 1024)          # boot sector, FATs, root, first data
            data[at] = rng.randrange(256)
        disc.write_bytes(bytes(data))
        try:
            with fat.FatImage(str(disc)) as image:
                for rel in FILES:
                    if image.exists(rel):
                        image.read(rel, limit=1024 * 1024)
        except SourceError:
            pass
    assert time.monotonic() - started < 30


def test_not_fat():
    assert not fat.is_fat(b"\0" * 512)
