"""Attacks on contextd-collector's ingest: each one is a request a party without the right key
could send, and the collector must refuse it and store nothing (SQLite; the PostgreSQL run of
the same code is tests/test_collector_ingest.py's).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from collector_support import CMS_TOKEN, REPORT_TOKEN, SITE_KEY, config_doc, report, signed
from conftest import keygen
from contextd_collector import config as configuration
from contextd_collector import dbops
from contextd_collector.app import build


@pytest.fixture(scope="module")
def image_keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("image-keys")
    return {"site": keygen(d, "site-image"), "stranger": keygen(d, "stranger-image")}


@pytest.fixture
def client(tmp_path, image_keys):
    url = "sqlite:///%s" % (tmp_path / "c.db")
    cfg = configuration.parse(config_doc(tmp_path, url, image_keys=[image_keys["site"][1]]))
    engine = dbops.open_engine(url)
    dbops.migrate(engine)
    yield TestClient(build(cfg, engine))
    engine.dispose()


def post(client, body, headers):
    return client.post("/v1/reports", content=body, headers=headers)


def stored(client):
    return client.get("/v1/instances").json()["instances"]


def test_forged_signature_is_refused(client):
    body, headers = signed(report(), "not-the-token-but-long-enough")
    assert post(client, body, headers).status_code == 401
    assert stored(client) == []


def test_unsigned_report_is_refused(client):
    body, headers = signed(report(), None)
    assert post(client, body, headers).status_code == 401
    assert stored(client) == []


def test_another_vos_token_cannot_vouch_for_atlas(client):
    """CMS holds a valid token, of CMS: it must not make reports that say they are ATLAS's."""
    body, headers = signed(report(vo="atlas"), CMS_TOKEN)
    answer = post(client, body, headers)
    assert answer.status_code == 401, answer.text
    assert stored(client) == []


def test_a_sites_key_vouches_only_for_its_own_site(client):
    body, headers = signed(report(vo=None, site="OTHER-SITE"), SITE_KEY)
    assert post(client, body, headers).status_code == 401
    assert stored(client) == []


def test_tampered_body_is_refused(client):
    body, headers = signed(report("failed"))
    forged = body.replace(b'"failed"', b'"applied"')
    assert forged != body
    assert post(client, forged, headers).status_code == 401
    assert stored(client) == []


def test_stale_timestamp_is_refused(client):
    import time

    body, headers = signed(report(), now=time.time() - 3600)
    assert post(client, body, headers).status_code == 401
    assert stored(client) == []


def test_header_and_body_report_id_must_agree(client):
    """A MAC made for the header's id over a body that names another id: not a report (a
    receiver deduplicating on one and storing the other would be fooled)."""
    import time

    from contextd.delivery import protocol

    header_id, rep = report()["report_id"], report()
    body = protocol.body_of(rep)
    stamp = str(int(time.time()))
    headers = protocol.static_headers(header_id)
    headers["X-Contextd-Timestamp"] = stamp
    headers["X-Contextd-Signature"] = protocol.signature(
        protocol.report_key(REPORT_TOKEN.encode(), header_id), stamp, body)
    answer = post(client, body, headers)
    assert answer.status_code == 400 and "report_id" in answer.json()["error"]
    assert stored(client) == []


def test_oversized_body_is_413_whatever_the_headers_say(client):
    rep = report(message="x" * (2 * 1024 * 1024))
    body, headers = signed(rep)
    assert post(client, body, headers).status_code == 413

    def chunks():                                  # no Content-Length: chunked encoding
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]
    assert post(client, chunks(), headers).status_code == 413
    assert stored(client) == []


def test_the_page_escapes_what_reports_say(client):
    rep = report("failed", message="<script>alert(1)</script>", instance="<b>i-x</b>")
    assert post(client, *signed(rep)).status_code == 201
    page = client.get("/").text
    assert "<script>alert(1)" not in page and "<b>i-x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def _sign_manifest(key: Path, data: bytes, tmp: Path, namespace: str = "contextd-image") -> str:
    path = tmp / "image.json"
    path.write_bytes(data)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", namespace,
                    str(path)], check=True, capture_output=True)
    return Path(str(path) + ".sig").read_text()


def _image_report(signed_bytes: bytes, signature: str, **image):
    """host.image as contextd reports it: the manifest parsed (an object), its digest, the
    armoured signature, and the VM's own verdict (which the collector ignores)."""
    fields = {"manifest": json.loads(signed_bytes),
              "manifest_sha256": hashlib.sha256(signed_bytes).hexdigest(),
              "signature": signature, "verified": True, "signer": "site-image"}
    fields.update(image)
    rep = report()
    rep["host"]["image"].update(fields)
    return rep


MANIFEST = json.dumps({"schema": "contextd.image/v1", "site": "TEST-SITE", "name": "wn-é",
                       "version": "2026.12"}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def _catalogue(client):
    return {i["manifest_sha256"]: i for i in client.get("/v1/images").json()["images"]}


def test_image_signed_by_the_site_is_verified(client, image_keys, tmp_path):
    sig = _sign_manifest(image_keys["site"][0], MANIFEST, tmp_path)
    assert post(client, *signed(_image_report(MANIFEST, sig))).status_code == 201
    image = _catalogue(client)[hashlib.sha256(MANIFEST).hexdigest()]
    assert image["verified"] is True and image["signer"].startswith("ssh-ed25519 ")
    assert (image["name"], image["version"], image["outcomes"]) == ("wn-é", "2026.12",
                                                                    {"applied": 1})


def test_manifest_as_a_string_is_checked_byte_for_byte(client, image_keys, tmp_path):
    hand = b'{ "name": "hand-signed", "version": "1" }\n'          # not canonical JSON
    sig = _sign_manifest(image_keys["site"][0], hand, tmp_path)
    rep = _image_report(MANIFEST, sig, manifest=hand.decode(),
                        manifest_sha256=hashlib.sha256(hand).hexdigest())
    assert post(client, *signed(rep)).status_code == 201
    assert _catalogue(client)[hashlib.sha256(hand).hexdigest()]["verified"] is True


def test_a_manifest_the_vm_could_not_verify_is_catalogued_unverified(client):
    rep = _image_report(MANIFEST, "", manifest=None, verified=False,
                        reason="signature does not match the manifest")
    assert post(client, *signed(rep)).status_code == 201
    image = _catalogue(client)[hashlib.sha256(MANIFEST).hexdigest()]
    assert image["verified"] is False and "signature does not match" in image["problem"]


@pytest.mark.parametrize("attack", ["stranger key", "tampered manifest", "wrong namespace",
                                    "no signature"])
def test_the_vms_word_on_its_image_is_not_taken(client, image_keys, tmp_path, attack):
    """The VM says verified: true; the collector checks against the site's image_keys."""
    key = image_keys["stranger" if attack == "stranger key" else "site"][0]
    sig = _sign_manifest(key, MANIFEST, tmp_path,
                         "contextd-payload" if attack == "wrong namespace" else "contextd-image")
    manifest = MANIFEST.replace(b"2026.12", b"2026.13") if attack == "tampered manifest" \
        else MANIFEST
    rep = _image_report(manifest, "" if attack == "no signature" else sig)
    assert post(client, *signed(rep)).status_code == 201
    image = _catalogue(client)[hashlib.sha256(manifest).hexdigest()]
    assert image["verified"] is False and image["signer"] is None and image["problem"]
