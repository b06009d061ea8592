"""Which writes pay for a disk flush: state and spool do, this boot's report does not."""

from __future__ import annotations

import os

from contextd import filesystem, report


def _count_fsyncs(monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


def test_atomic_write_flushes_file_and_directory(tmp_path, monkeypatch):
    calls = _count_fsyncs(monkeypatch)
    filesystem.atomic_write(str(tmp_path / "state.json"), b"{}", 0o600)
    assert len(calls) == 2
    assert (tmp_path / "state.json").read_bytes() == b"{}"


def test_not_durable_write_renames_without_flushing(tmp_path, monkeypatch):
    (tmp_path / "r.json").write_bytes(b"old")
    calls = _count_fsyncs(monkeypatch)
    filesystem.atomic_write(str(tmp_path / "r.json"), b"new", 0o644, durable=False)
    assert calls == []
    assert (tmp_path / "r.json").read_bytes() == b"new"
    assert oct((tmp_path / "r.json").stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]   # no temp file left


def test_report_in_run_dir_is_not_flushed(tmp_path, monkeypatch):
    calls = _count_fsyncs(monkeypatch)
    path = report.write({"schema": "contextd.report/v1", "outcome": "applied"},
                        str(tmp_path / "run"))
    assert calls == []
    assert report.read(str(tmp_path / "run"))["outcome"] == "applied"
    assert path.endswith("report.json")
