"""HTTPS delivery: the certificate is verified against the policy's report.ca_bundle; a server
the bundle does not vouch for gets nothing, and the report waits in the spool."""

import datetime
import ipaddress
import json
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import REPORT_TOKEN
from test_report_delivery import (Receiver, check_site_copy, check_vo_copy, flush,
                                  reporting_site, scan_for_secrets, spool_files)


def make_ca(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_server_cert(ca_key, ca_cert, tmp, name):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = tmp / ("%s.crt" % name), tmp / ("%s.key" % name)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_path), str(key_path))
    return context


@pytest.fixture
def test_ca(site):
    """The site's report CA, installed in the scratch root where the policy names it."""
    ca_key, ca_cert = make_ca("contextd test report CA")
    bundle = site.root / "etc/contextd/report-ca.pem"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return ca_key, ca_cert


def tls_site(site, payload_doc, receiver):
    bundle = reporting_site(site, payload_doc, receiver)
    site.policy["trust"]["atlas"]["allow"]["report"] = {"urls": ["https://127.0.0.1:*/vo"]}
    site.policy["report"]["ca_bundle"] = "/etc/contextd/report-ca.pem"
    site.write_policy()
    return bundle


def test_https_with_the_sites_ca_bundle_is_delivered(site, payload_doc, test_ca, tmp_path):
    receiver = Receiver(make_server_cert(*test_ca, tmp_path, "good")).start()
    try:
        bundle = tls_site(site, payload_doc, receiver)
        code, _, err = site.run("file:%s" % bundle)
        assert code == 0, err
        check_vo_copy(receiver.acknowledged("/vo")[0])
        check_site_copy(receiver.acknowledged("/site")[0], signed=False)
        assert spool_files(site) == []
    finally:
        receiver.stop()


def test_untrusted_certificate_is_refused_and_spooled(site, payload_doc, test_ca, tmp_path):
    other_key, other_ca = make_ca("somebody else's CA")
    receiver = Receiver(make_server_cert(other_key, other_ca, tmp_path, "bad")).start()
    try:
        bundle = tls_site(site, payload_doc, receiver)
        code, out, err = site.cli(
            "-v", "run", "--source", "file:%s" % bundle, "--policy", str(site.policy_path),
            "--root", str(site.root), "--run-dir", str(site.run_dir), "--state-dir",
            str(site.state_dir), "--spool-dir", str(site.spool_dir))
        assert code == 0, err
        assert receiver.requests == []                  # nothing reached the impostor
        assert "TLS certificate verification failed" in err and "report.ca_bundle" in err
        assert "Traceback" not in err
        files = spool_files(site)
        assert len(files) == 2
        for path in files:
            entry = json.loads(path.read_text())
            assert entry["ca_bundle"].endswith("/etc/contextd/report-ca.pem")
            assert "certificate verify" in entry["last_error"] or \
                "verification failed" in entry["last_error"]
        code, out, err = flush(site)
        assert code == 1 and "TLS certificate verification failed" in out
        scan_for_secrets([out, err], site)
        assert REPORT_TOKEN not in "".join(p.read_text() for p in files)
    finally:
        receiver.stop()
