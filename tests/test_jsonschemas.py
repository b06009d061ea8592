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
