"""Logging: structured journal entries through systemd-python's `journal.send`, plain stderr
lines without it, and never a secret in either.

The journal is a stand-in module injected as `systemd.journal`: these machines run no journald
(the real `journal.send` would fail to reach its socket and fall back to stderr, which the
fallback test covers), and the stand-in checks what journald itself would insist on: upper-case
field names and string values. Its signature is systemd-python's (MESSAGE first, fields as
keyword arguments).
"""

import logging
import re
import sys
import types

import pytest

from conftest import REPORT_TOKEN, TOKEN
from contextd import cli, logs
from test_report_delivery import SITE_KEY, Receiver, reporting_site


class FakeJournal(types.ModuleType):
    def __init__(self):
        super().__init__("systemd.journal")
        self.entries = []
        self.fail = False

    def send(self, MESSAGE, MESSAGE_ID=None, CODE_FILE=None, CODE_LINE=None,  # journal.send's names
             CODE_FUNC=None, **fields):
        if self.fail:
            raise OSError(2, "No such file or directory")
        for name, value in fields.items():
            assert re.fullmatch(r"[A-Z0-9_]+", name) and isinstance(value, str), (name, value)
        self.entries.append(dict(fields, MESSAGE=MESSAGE, CODE_FILE=CODE_FILE,
                                 CODE_LINE=CODE_LINE, CODE_FUNC=CODE_FUNC))


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    logs.setup()
    for handler in logs._installed:
        root.removeHandler(handler)
    del logs._installed[:]
    root.handlers[:], root.level = saved[0], saved[1]


@pytest.fixture
def journal(monkeypatch, restore_logging):
    fake = FakeJournal()
    package = types.ModuleType("systemd")
    package.journal = fake
    monkeypatch.setitem(sys.modules, "systemd", package)
    monkeypatch.setitem(sys.modules, "systemd.journal", fake)
    return fake


@pytest.fixture
def no_journal(monkeypatch, restore_logging):
    monkeypatch.setitem(sys.modules, "systemd", None)     # `import systemd` fails


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def run_in_process(site, bundle, *extra):
    return cli.main([*extra, "run", "--source", "file:%s" % bundle, "--policy",
                     str(site.policy_path), "--root", str(site.root), "--run-dir",
                     str(site.run_dir), "--state-dir", str(site.state_dir), "--spool-dir",
                     str(site.spool_dir)])


def assert_no_secrets(*texts):
    blob = "\n".join(texts)
    for secret in (TOKEN, REPORT_TOKEN, SITE_KEY):
        assert secret not in blob


def test_journal_gets_structured_fields(site, payload_doc, receiver, journal, capsys):
    bundle = reporting_site(site, payload_doc, receiver, site_key=True)
    assert run_in_process(site, bundle) == 0
    rep = site.report()
    outcome, = [e for e in journal.entries if "CONTEXTD_OUTCOME" in e]
    assert outcome["CONTEXTD_OUTCOME"] == "applied" and outcome["PRIORITY"] == "6"
    assert outcome["CONTEXTD_PAYLOAD_SHA256"] == rep["payload"]["sha256"]
    assert outcome["CONTEXTD_VO"] == "atlas" and outcome["CONTEXTD_SERIAL"] == "2026112401"
    assert outcome["CONTEXTD_REPORT_ID"] == rep["report_id"]
    assert outcome["CONTEXTD_STAGE"] == "done"
    assert outcome["SYSLOG_IDENTIFIER"] == "contextd"
    assert outcome["CODE_FILE"].endswith("runreport.py")
    sent = [e for e in journal.entries if e.get("CONTEXTD_DELIVERY") == "delivered"]
    assert sorted(e["CONTEXTD_DESTINATION"] for e in sent) == [receiver.url("/site"),
                                                               receiver.url("/vo")]
    captured = capsys.readouterr()
    assert captured.err == ""                      # a terminal sees only what needs a human
    assert_no_secrets(captured.out, captured.err, repr(journal.entries))


def test_rejection_is_a_warning_and_one_line_on_stderr(site, payload_doc, receiver, journal,
                                                       capsys):
    payload_doc["cvmfs"]["repositories"] = ["evil.example.com"]
    assert run_in_process(site, reporting_site(site, payload_doc, receiver)) == 1
    outcome, = [e for e in journal.entries if "CONTEXTD_OUTCOME" in e]
    assert outcome["CONTEXTD_OUTCOME"] == "rejected" and outcome["PRIORITY"] == "4"
    assert outcome["CONTEXTD_STAGE"] == "authorize" and "evil.example.com" in outcome["MESSAGE"]
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("contextd: error:")
    assert_no_secrets(err, repr(journal.entries))


def test_undelivered_report_is_in_the_journal(site, payload_doc, receiver, journal, capsys):
    bundle = reporting_site(site, payload_doc, receiver)
    receiver.stop()
    assert run_in_process(site, bundle) == 0
    spooled = [e for e in journal.entries if e.get("CONTEXTD_DELIVERY") == "spooled"]
    assert len(spooled) == 2 and all(e["PRIORITY"] == "4" for e in spooled)
    assert all(e["CONTEXTD_SPOOL_FILE"].startswith(str(site.spool_dir)) for e in spooled)
    assert_no_secrets(capsys.readouterr().err, repr(journal.entries))


def test_journal_refusing_falls_back_to_stderr(site, payload_doc, journal, capsys):
    journal.fail = True
    payload_doc["cvmfs"]["repositories"] = ["evil.example.com"]
    assert run_in_process(site, site.bundle(payload_doc), "-v") == 1
    err = capsys.readouterr().err
    assert "contextd: run rejected at authorize" in err and "Logging error" not in err
    assert "Traceback" not in err
    assert_no_secrets(err)


def test_without_systemd_python_plain_stderr_lines(site, no_journal, capsys):
    assert run_in_process(site, site.bundle(), "-v") == 0
    err = capsys.readouterr().err
    assert "contextd: run applied" in err
    assert "spooled as" in err                        # the tests' report URL is unreachable
    assert all(line.startswith("contextd: ") for line in err.splitlines())
    assert_no_secrets(err)


def test_without_verbose_terminal_gets_warnings_only(site, no_journal, capsys):
    assert run_in_process(site, site.bundle()) == 0
    err = capsys.readouterr().err
    assert "run applied" not in err and "spooled" not in err


def test_service_without_native_journal_logs_everything_to_stderr(site, no_journal, capsys,
                                                                  monkeypatch):
    monkeypatch.setattr(logs, "_stderr_is_journal", lambda: True)
    assert run_in_process(site, site.bundle()) == 0
    err = capsys.readouterr().err
    assert "contextd: run applied" in err and "spooled as" in err


def test_service_with_native_journal_writes_no_duplicate_lines(site, journal, capsys,
                                                               monkeypatch):
    monkeypatch.setattr(logs, "_stderr_is_journal", lambda: True)
    assert run_in_process(site, site.bundle()) == 0
    assert capsys.readouterr().err == ""
    assert any(e.get("CONTEXTD_OUTCOME") == "applied" for e in journal.entries)


def test_registered_secrets_are_redacted_everywhere(journal, capsys):
    secret = "hunter2-very-secret-value"
    logs.setup(verbose=True)
    logs.add_secret(secret)
    logger = logging.getLogger("contextd.test")
    logs.event(logger, logging.WARNING, "command said %s" % secret, detail="x%sy" % secret)
    try:
        raise ValueError("boom " + secret)
    except ValueError:
        logger.exception("failed with %s", secret)
    text = capsys.readouterr().err + repr(journal.entries)
    assert secret not in text and text.count("[secret]") >= 3
    entry = journal.entries[0]
    assert entry["CONTEXTD_DETAIL"] == "x[secret]y" and entry["PRIORITY"] == "4"


def test_stderr_is_journal_compares_device_and_inode(monkeypatch, tmp_path):
    import os

    path = tmp_path / "stream"
    with open(str(path), "w") as f:
        st = os.fstat(f.fileno())
        monkeypatch.setattr(sys, "stderr", f)
        monkeypatch.setenv("JOURNAL_STREAM", "%d:%d" % (st.st_dev, st.st_ino))
        assert logs._stderr_is_journal()
        monkeypatch.setenv("JOURNAL_STREAM", "%d:%d" % (st.st_dev, st.st_ino + 1))
        assert not logs._stderr_is_journal()
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not logs._stderr_is_journal()


def test_the_payloads_secret_fields_are_registered_by_the_run(site, no_journal, capsys):
    assert run_in_process(site, site.bundle(), "-v") == 0
    logging.getLogger("contextd.apply").warning("puppet said: %s and %s", TOKEN, REPORT_TOKEN)
    err = capsys.readouterr().err
    assert TOKEN not in err and REPORT_TOKEN not in err
    assert "puppet said: [secret] and [secret]" in err
