"""The JSON Schemas in contextd/schemas/ (issue 15), checked with `jsonschema` against the
examples, the RPM's policy, the test suite's own documents and reports from real runs. The
agent's parsers stay the authority; these tests keep the schemas from drifting from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import jsonschema
import pytest

import inprocess
from conftest import base_payload, dump_payload

from contextd import cli, strictyaml
from contextd.errors import PayloadError


@pytest.fixture(autouse=True)
def _in_process():
    """cli.main in this process leaves no handler or secret behind (tests/inprocess.py)."""
    yield from inprocess.isolated()


REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "contextd" / "schemas"


def schema(name: str) -> Dict[str, Any]:
    return json.loads((SCHEMAS / ("%s.schema.json" % name)).read_text())


def validator(name: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(schema(name))


def yaml_doc(data: bytes) -> Any:
    """As contextd reads it (timestamps stay strings, as an editor's YAML 1.2 sees them)."""
    return strictyaml.load(data, "document", PayloadError)


def problems(name: str, doc: Any):
    return sorted(e.message for e in validator(name).iter_errors(doc))


@pytest.mark.parametrize("name", ["payload", "policy", "report"])
def test_each_schema_is_a_valid_draft7_schema(name):
    jsonschema.Draft7Validator.check_schema(schema(name))


def test_schemas_are_package_data():
    import contextd

    assert (Path(contextd.__file__).parent / "schemas" / "report.schema.json").is_file()


@pytest.mark.parametrize("path", ["examples/policy.yaml", "packaging/policy.yaml"])
def test_policies_validate(path):
    assert problems("policy", yaml_doc((REPO / path).read_bytes())) == []


def test_example_payload_and_the_suites_payload_validate():
    assert problems("payload", yaml_doc((REPO / "examples/payload.yaml").read_bytes())) == []
    assert problems("payload", yaml_doc(dump_payload(base_payload()))) == []


def test_the_suites_policy_validates(site):
    assert problems("policy", yaml_doc(site.policy_path.read_bytes())) == []


def test_the_schemas_catch_what_the_parsers_refuse(site):
    doc = yaml_doc(site.policy_path.read_bytes())
    doc["trust"]["atlas"]["allow"]["cvmfs"]["repositorys"] = ["*"]
    doc["max_validity"] = "31 days"
    assert len(problems("policy", doc)) == 2, problems("policy", doc)
    payload = dict(base_payload(), not_before="2026-11-24T00:00:00", serial="7")
    assert len(problems("payload", payload)) == 2, problems("payload", payload)


def _run(site, *extra: str) -> Dict[str, Any]:
    cli.main(["run", "--policy", str(site.policy_path), "--root", str(site.root), "--run-dir",
              str(site.run_dir), "--state-dir", str(site.state_dir), "--spool-dir",
              str(site.spool_dir), *extra])
    return site.report()


def _disabled(site) -> None:
    (site.root / "etc" / "contextd").mkdir(parents=True, exist_ok=True)
    (site.root / "etc" / "contextd" / "disabled").touch()


@pytest.mark.parametrize("case", ["applied", "unchanged", "rejected", "skipped", "disabled",
                                  "broken-policy", "usage", "failed-apply"])
def test_reports_of_real_runs_validate(site, payload_doc, capsys, case):
    for section in ("htcondor", "puppet", "report"):
        del payload_doc[section]
    extra = ["--source", "file:%s" % site.bundle(payload_doc)]
    if case == "rejected":
        extra = ["--source", "file:%s" % site.bundle(payload_doc, key="stranger")]
    elif case == "skipped":
        extra = []                                  # the policy lists no sources
    elif case == "disabled":
        _disabled(site)
    elif case == "broken-policy":
        site.policy_path.write_text("version: 1\nsite: [\n")
    elif case == "usage":
        extra = ["--source", "ftp:nowhere"]
    elif case == "failed-apply":
        (site.root / "etc" / "cvmfs").mkdir(parents=True)
        (site.root / "etc" / "cvmfs" / "default.local").mkdir()     # a directory: write fails
    if case == "unchanged":
        _run(site, *extra)
    rep = _run(site, *extra)
    capsys.readouterr()
    assert problems("report", rep) == [], rep
    want = {"applied": "applied", "unchanged": "unchanged", "rejected": "rejected",
            "skipped": "skipped", "disabled": "skipped", "broken-policy": "failed",
            "usage": "failed", "failed-apply": "failed"}[case]
    assert rep["outcome"] == want, rep


# The sections issues 14, 16 and 18 added: each document below is accepted by the agent's own
# parser AND the schema; each typo'd key is refused by both (the parser is the authority).
PUB = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFfXs6UDI8K+7BJ2zN/NY5mQDcysr0+2TeAZHE4AUTzh "
       "cern-image-factory")
DIGEST = "ab" * 32


def _new_payload() -> Dict[str, Any]:
    doc = base_payload()
    doc["targets"] = [{"site": "TEST-*", "image": "atlas-*", "image_version": "2026.*"}]
    doc["packages"] = {"install": ["ganglia-gmond", "python3-pyyaml"]}
    doc["files"] = [
        {"path": "extra/motd.txt", "sha256": DIGEST},
        {"path": "/etc/ganglia/gmond.conf", "mode": "0640", "owner": "ganglia",
         "template": "cluster {{ cluster }}\n", "vars": {"cluster": "atlas"}},
        {"path": "/etc/ganglia/extra.conf", "content": "x\n", "mode": 0o600},
        {"path": "/etc/ganglia/big.conf", "source": "extra/big.conf", "sha256": DIGEST}]
    return doc


def _new_policy(site) -> Dict[str, Any]:
    doc = yaml_doc(site.policy_path.read_bytes())
    doc.update(sources=["config-drive", "nocloud", "openstack", "gce", "url", "file"],
               file={"path": "/var/lib/contextd/context.bundle"},
               openstack={"url": "http://169.254.169.254", "budget": "10s"},
               gce={"url": "http://metadata.google.internal", "budget": 5},
               ec2={"url": "http://[fd00:ec2::254]", "imdsv1_fallback": True},
               url={"location": "https://ctx.example.org/vm", "budget": "20s",
                    "ca_bundle": "/etc/pki/tls/certs/ca-bundle.crt"},
               image={"signers": [{"id": "cern-image-factory", "ssh_key": PUB}]})
    doc.setdefault("site_settings", {}).update(files={"cluster": "atlas", "ports": [8649]},
                                               packages={})
    doc["trust"]["atlas"]["allow"].update(
        packages={"names": ["ganglia-*", "python3-*"], "repos": ["epel", "baseos"]},
        files={"paths": ["/etc/ganglia/*.conf"], "max_bytes": 65536, "owners": ["ganglia"]})
    return doc


def _parses_payload(doc: Dict[str, Any]) -> bool:
    from contextd import payload

    try:
        payload.lint(dump_payload(doc))
    except PayloadError:
        return False
    return True


def _parses_policy(doc: Dict[str, Any]) -> bool:
    from contextd import policy
    from contextd.errors import PolicyError

    try:
        policy.parse(doc)
    except PolicyError:
        return False
    return True


def test_new_payload_sections_validate_as_the_parser_accepts_them():
    doc = _new_payload()
    assert _parses_payload(doc)
    assert problems("payload", doc) == []


PAYLOAD_TYPOS = {
    "packages.instal": lambda d: d.__setitem__("packages", {"instal": ["x"]}),
    "files[1].contnet": lambda d: d["files"][1].__setitem__("contnet", "x"),
    "files[0] listed with a mode": lambda d: d["files"][0].__setitem__("mode", "0644"),
    "targets[0].imagever": lambda d: d["targets"][0].__setitem__("imagever", "1"),
    "files[3] source without sha256": lambda d: d["files"][3].pop("sha256"),
    "files[2] content and template": lambda d: d["files"][2].__setitem__("template", "y"),
}


@pytest.mark.parametrize("typo", sorted(PAYLOAD_TYPOS))
def test_the_payload_schema_rejects_what_the_parser_rejects(typo):
    doc = _new_payload()
    PAYLOAD_TYPOS[typo](doc)
    assert not _parses_payload(doc), typo
    assert problems("payload", doc) != [], typo


def test_new_policy_sections_validate_as_the_parser_accepts_them(site):
    doc = _new_policy(site)
    assert _parses_policy(doc)
    assert problems("policy", doc) == []


POLICY_TYPOS = {
    "allow.files.path": lambda d: d["trust"]["atlas"]["allow"]["files"].__setitem__("path", []),
    "allow.packages.name": lambda d: d["trust"]["atlas"]["allow"]["packages"].__setitem__(
        "name", ["x"]),
    "site_settings.packages.repo": lambda d: d["site_settings"]["packages"].__setitem__(
        "repo", "epel"),
    "image.signer": lambda d: d.__setitem__("image", {"signer": d["image"]["signers"]}),
    "image.signers[0].sshkey": lambda d: d["image"]["signers"][0].__setitem__("sshkey", PUB),
    "openstack.imdsv1_fallback": lambda d: d["openstack"].__setitem__("imdsv1_fallback", True),
    "gce.budegt": lambda d: d["gce"].__setitem__("budegt", "5s"),
    "url.locaton": lambda d: d.__setitem__("url", {"locaton": "https://ctx.example.org/"}),
    "sources config_drive": lambda d: d.__setitem__("sources", ["config_drive"]),
}


@pytest.mark.parametrize("typo", sorted(POLICY_TYPOS))
def test_the_policy_schema_rejects_what_the_parser_rejects(site, typo):
    doc = _new_policy(site)
    POLICY_TYPOS[typo](doc)
    assert not _parses_policy(doc), typo
    assert problems("policy", doc) != [], typo


def test_report_of_a_run_on_a_signed_image_validates(site, tmp_path):
    from conftest import keygen
    from image_fixtures import image_payload, make_root, sign_image, trusting

    key, pub = keygen(tmp_path, "image-factory")
    make_root(site.root)
    code, _, err = sign_image(site.root, key)
    assert code == 0, err
    site.write_policy(trusting(site.policy, pub))
    doc = image_payload(image="atlas-*", image_version="2026.12.*")
    code, _, err = site.run("file:%s" % site.bundle(doc))
    assert code == 0, err
    rep = site.report()
    assert rep["host"]["image"]["verified"] is True, rep["host"]["image"]
    assert problems("report", rep) == [], rep
    # A typo'd key is refused: a manifest reported without `verified` (here `verifed`).
    rep["host"]["image"]["verifed"] = rep["host"]["image"].pop("verified")
    assert problems("report", rep) != []


def test_report_of_a_config_drive_run_validates(site):
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    from fakes_clouds import nova_config_drive

    msg = MIMEMultipart()
    msg.attach(MIMEText("#cloud-config\n{}\n", "cloud-config"))
    msg.attach(MIMEText(site.bundle().read_text(), "x-contextd"))
    code, _, err = site.run("iso:%s" % nova_config_drive(site.tmp, msg.as_bytes()))
    assert code == 0, err
    rep = site.report()
    assert rep["source"]["disc"] == "config-drive" and rep["source"]["ignored_parts"], rep
    assert problems("report", rep) == [], rep
    rep["source"]["kind"] = "config_drive"           # a typo'd value is refused too
    assert problems("report", rep) != []
