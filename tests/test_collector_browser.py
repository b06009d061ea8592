"""The fleet page in a real browser: Debian's headless Chromium loads it from a served
collector on 127.0.0.1, and the test asserts what a person sees: the tables' text in the DOM
Chromium built, and the outcome colours in its screenshot's pixels."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Dict, Tuple

import pytest

from collector_support import (CMS_TOKEN, SITE_KEY, Served, collector_cli, config_doc, free_port,
                               post, report, signed, write_config)

APPLIED, REJECTED, FAILED = (0xc8, 0xf0, 0xc8), (0xff, 0xe0, 0xa0), (0xff, 0xb0, 0xb0)


def chromium(tmp: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium")
    assert exe, "chromium is not installed (Debian package chromium, in APT_PACKAGES)"
    return subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--user-data-dir=%s" % (tmp / "profile"), "--window-size=1400,1200", *argv],
        capture_output=True, text=True, timeout=90, check=False)


def _unfilter(rows: bytes, width: int, height: int, bpp: int) -> bytes:
    out, prev, stride, pos = bytearray(), bytearray(width * bpp), width * bpp, 0
    for _ in range(height):
        kind, line = rows[pos], bytearray(rows[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return bytes(out)


def colours(png: bytes) -> Dict[Tuple[int, int, int], int]:
    """Pixel counts per RGB colour of an 8-bit, non-interlaced RGB(A) PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, data, header = 8, b"", b""
    while pos < len(png):
        size, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunk = png[pos + 8:pos + 8 + size]
        pos += 12 + size
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            data += chunk
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0
    bpp = 4 if colour_type == 6 else 3
    pixels = _unfilter(zlib.decompress(data), width, height, bpp)
    counts: Dict[Tuple[int, int, int], int] = {}
    for i in range(0, len(pixels), bpp):
        rgb = (pixels[i], pixels[i + 1], pixels[i + 2])
        counts[rgb] = counts.get(rgb, 0) + 1
    return counts


@pytest.fixture
def served(tmp_path):
    port = free_port()
    path = write_config(tmp_path, config_doc(tmp_path, "sqlite:///%s" % (tmp_path / "c.db"),
                                             port=port))
    assert collector_cli("migrate", "--config", str(path)).returncode == 0
    collector = Served(path, port).start()
    url = collector.base + "/v1/reports"
    for rep, secret in ((report("applied", instance="i-good"), None),
                        (report("rejected", instance="i-refused"), None),
                        (report("failed", instance="i-broken", vo="cms"), CMS_TOKEN),
                        (report("rejected", vo=None, instance="i-unsigned"), SITE_KEY)):
        body, headers = signed(rep, secret) if secret else signed(rep)
        assert post(url, body, headers)[0] == 201
    yield collector
    collector.stop()


def test_the_page_as_chromium_shows_it(served, tmp_path):
    dom = chromium(tmp_path, "--dump-dom", served.base + "/")
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    for heading in ("Outcomes per site, VO and payload serial", "Failures",
                    "Instances (latest report)", "Images"):
        assert heading in html
    assert "4 instance(s)" in html
    for instance in ("i-good", "i-refused", "i-broken", "i-unsigned"):
        assert instance in html
    assert 'class="failed"><td>i-broken</td>' in html
    assert "failed at its stage" in html and "rejected at its stage" in html

    shot = tmp_path / "page.png"
    taken = chromium(tmp_path, "--screenshot=%s" % shot, "--hide-scrollbars",
                     served.base + "/")
    assert taken.returncode == 0 and shot.exists(), taken.stderr
    seen = colours(shot.read_bytes())
    # Each outcome's colour covers a visible area (a table row is ~20 px high).
    for name, rgb in (("applied", APPLIED), ("rejected", REJECTED), ("failed", FAILED)):
        assert seen.get(rgb, 0) > 2000, (name, sorted(seen.items(), key=lambda kv: -kv[1])[:8])
