"""contextd-collector's configuration and command line: one line on stderr, exit 2, for every
known problem; `migrate` then `serve` on SQLite with the defaults a site gets."""

from __future__ import annotations

import pytest

from collector_support import (collector_cli, config_doc, free_port, get, post, report, signed,
                               write_config, Served)
from contextd.errors import CollectorConfigError
from contextd_collector import config as configuration


def test_defaults(tmp_path):
    cfg = configuration.parse({})
    assert (cfg.host, cfg.port, cfg.database) == ("127.0.0.1", 8080, configuration.DEFAULT_DATABASE)
    assert cfg.loopback and cfg.readers == () and cfg.retention is None


def _broken(tmp_path, change):
    doc = config_doc(tmp_path, "sqlite://")
    change(doc)
    with pytest.raises(CollectorConfigError) as err:
        configuration.parse(doc)
    return err.value.one_line()


@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d.update(colour="blue"), "unknown key 'colour'"),
    (lambda d: d.update(listen="0.0.0.0:8080"), "no readers_file"),
    (lambda d: d.update(listen="[::]:8080"), "no readers_file"),
    (lambda d: d.update(listen="here"), "is not HOST:PORT"),
    (lambda d: d.update(retention="soon"), "is not a duration"),
    (lambda d: d["vos"]["atlas"].update(tokens_file="/nonexistent"), "does not exist"),
    (lambda d: d["vos"].update({"Bad VO": {"tokens_file": "/x"}}), "is not a VO name"),
    (lambda d: d["sites"]["TEST-SITE"].update(image_keys=["ssh-ed25519 !!"]), "image_keys[0]"),
    (lambda d: d["sites"]["TEST-SITE"].update(report_key_file="/nonexistent"),
     "missing or shorter than 16 bytes"),
])
def test_each_problem_is_one_line(tmp_path, change, says):
    line = _broken(tmp_path, change)
    assert says in line and "\n" not in line


def test_short_token_is_refused_without_quoting_it(tmp_path):
    doc = config_doc(tmp_path, "sqlite://")
    (tmp_path / "atlas.tokens").write_text("short-secret\n")
    with pytest.raises(CollectorConfigError) as err:
        configuration.parse(doc)
    assert "shorter than 16" in err.value.message and "short-secret" not in err.value.one_line()


def test_public_listen_with_readers_is_accepted(tmp_path):
    cfg = configuration.parse(config_doc(tmp_path, "sqlite://", host="0.0.0.0", readers=True))
    assert not cfg.loopback and len(cfg.readers) == 1


def test_cli_errors_are_one_line_exit_2(tmp_path):
    missing = collector_cli("serve", "--config", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    dup = tmp_path / "dup.yaml"
    dup.write_text("listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n")
    dupe = collector_cli("migrate", "--config", str(dup))
    assert dupe.returncode == 2 and "duplicate" in dupe.stderr.lower()
    usage = collector_cli("serve")
    assert usage.returncode == 2 and "--config" in usage.stderr


def test_serve_refuses_an_unmigrated_database(tmp_path):
    path = write_config(tmp_path, config_doc(tmp_path, "sqlite:///%s" % (tmp_path / "c.db")))
    served = collector_cli("serve", "--config", str(path))
    assert served.returncode == 2
    assert "run 'contextd-collector migrate --config %s' first" % path in served.stderr


def test_a_taken_port_is_one_line_exit_2(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_config(tmp_path, config_doc(tmp_path, "sqlite:///%s" % (tmp_path / "c.db"),
                                                 port=port))
        assert collector_cli("migrate", "--config", str(path)).returncode == 0
        served = collector_cli("serve", "--config", str(path))
    assert served.returncode == 2 and served.stderr.count("\n") == 1
    assert "cannot listen on 127.0.0.1 port %d" % port in served.stderr


def test_password_is_never_shown(tmp_path):
    path = write_config(tmp_path, config_doc(
        tmp_path, "postgresql+psycopg2://u:hunter2-secret@127.0.0.1:%d/x" % free_port()))
    failed = collector_cli("migrate", "--config", str(path))
    assert failed.returncode == 2 and "hunter2" not in failed.stderr
    assert "***" in failed.stderr and failed.stderr.count("\n") == 1


def test_migrate_then_serve_on_sqlite(tmp_path):
    port = free_port()
    db = tmp_path / "deep" / "dir" / "collector.db"            # created by migrate
    path = write_config(tmp_path, config_doc(tmp_path, "sqlite:///%s" % db, port=port))
    migrated = collector_cli("migrate", "--config", str(path))
    assert migrated.returncode == 0, migrated.stderr
    served = Served(path, port).start()
    try:
        assert post(served.base + "/v1/reports", *signed(report()))[0] == 201
        status, page = get(served.base + "/")
        assert status == 200 and b"i-0001" in page
    finally:
        served.stop()
