"""Attacks on "the root is a wall" (issue 12, part 2).

An image given with --root may hold symlinks (absolute or climbing with ".."): whatever
contextd writes, chmods or chowns for that image must land inside it, resolved as chroot
would resolve it. A secret (the condor token) is never written through a symlink at all,
not under --root and not on "/" (where the primitives are driven with real absolute paths).
"""

import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import TOKEN, fake_commands, run_cli
from contextd import apply, filesystem
from contextd.actions import WriteFile
from contextd.plugin import Footprint


def error_lines(err):
    """The error lines of stderr; info lines (as root: "no user condor ...") may stand beside."""
    return [line for line in err.splitlines() if line.startswith("contextd: error:")]


def host_dir(tmp_path, name):
    """A directory outside the image, standing for the host's: it must receive nothing."""
    d = tmp_path / name
    d.mkdir()
    d.chmod(0o755)
    (d / "keep").write_text("host data\n")
    return d


def untouched(d):
    assert sorted(p.name for p in d.iterdir()) == ["keep"], sorted(p.name for p in d.iterdir())
    assert (d / "keep").read_text() == "host data\n"
    assert stat.S_IMODE(d.stat().st_mode) == 0o755


def inside(site, host):
    """Where a symlink to `host` (an absolute path) leads inside the image."""
    return site.root / str(host).lstrip("/")


def run_defaults(site, *extra):
    """`contextd run` with the state, run and spool dirs left at their defaults (under --root)."""
    return run_cli(["run", "--source", "file:%s" % site.bundle(), "--policy",
                    str(site.policy_path), "--root", str(site.root), *extra])


# --- plugin files under --root ------------------------------------------------------------

def test_token_dir_symlinked_to_the_host_receives_nothing(site, tmp_path):
    host = host_dir(tmp_path, "host-tokens")
    (site.root / "etc/condor").mkdir(parents=True)
    os.symlink(str(host), str(site.root / "etc/condor/tokens.d"))
    code, _, err = site.run("file:%s" % site.bundle())
    untouched(host)                               # no token, no chmod 0700 on the host
    assert code == 3, err
    assert "secret" in err and "symbolic link" in err and "Traceback" not in err
    assert len(error_lines(err)) == 1, err
    assert not any(TOKEN in p.read_text() for p in site.root.rglob("*")
                   if p.is_file() and not p.is_symlink())
    assert site.report()["outcome"] == "failed"


def test_cvmfs_dir_symlinked_to_the_host_is_resolved_inside_the_image(site, tmp_path):
    host = host_dir(tmp_path, "host-cvmfs")
    (site.root / "etc").mkdir()
    os.symlink(str(host), str(site.root / "etc/cvmfs"))
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    untouched(host)
    assert b"CVMFS_REPOSITORIES" in (inside(site, host) / "default.local").read_bytes()


def test_dotdot_symlink_never_climbs_above_the_root(site, tmp_path):
    host = host_dir(tmp_path, "host-cvmfs")
    (site.root / "etc").mkdir()
    climb = "../" * (len(site.root.parts) + 3)
    os.symlink(climb + str(host).lstrip("/"), str(site.root / "etc/cvmfs"))
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 0, err
    untouched(host)
    assert (inside(site, host) / "default.local").is_file()


def test_symlink_loop_in_the_image_is_one_clear_error(site):
    (site.root / "etc").mkdir()
    os.symlink("/etc/cvmfs", str(site.root / "etc/cvmfs"))
    code, _, err = site.run("file:%s" % site.bundle())
    assert code == 3, err
    assert "symbolic links" in err and "Traceback" not in err, err
    assert len(error_lines(err)) == 1, err


def test_plugins_read_the_image_not_the_host(site, tmp_path):
    host = host_dir(tmp_path, "host-etc")
    (host / "passwd").write_text("condor:x:4242:4242::/:/sbin/nologin\n")
    (site.root / "etc").mkdir()
    os.symlink(str(host / "passwd"), str(site.root / "etc/passwd"))
    read = filesystem.reader(str(site.root))
    assert read("/etc/passwd") is None           # the image has no such file; the host's is not it
    assert filesystem.user_ids(str(site.root), "condor") is None
    (inside(site, host)).mkdir(parents=True)
    (inside(site, host) / "passwd").write_text("condor:x:64:64::/:/sbin/nologin\n")
    assert filesystem.user_ids(str(site.root), "condor") == (64, 64)


# --- state, run and spool dirs at their defaults under --root ------------------------------

def test_state_dir_symlinked_to_the_host_receives_nothing(site, tmp_path):
    host = host_dir(tmp_path, "host-state")
    (site.root / "var/lib").mkdir(parents=True)
    os.symlink(str(host), str(site.root / "var/lib/contextd"))
    code, _, err = run_defaults(site, "--run-dir", str(site.run_dir))
    assert code == 0, err
    untouched(host)
    assert (inside(site, host) / "applied.json").is_file()


def test_run_dir_symlinked_to_the_host_receives_nothing(site, tmp_path):
    host = host_dir(tmp_path, "host-run")
    os.symlink(str(host), str(site.root / "run"))
    code, _, err = run_defaults(site, "--state-dir", str(site.state_dir))
    assert code == 0, err
    untouched(host)
    report = inside(site, host) / "contextd/report.json"
    assert json.loads(report.read_text())["outcome"] == "applied"
    code, out, err = run_cli(["status", "--root", str(site.root)])   # status finds it there
    assert code == 0 and out.startswith("applied"), (out, err)


class _Ack(BaseHTTPRequestHandler):
    def do_POST(self):   # http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(400)            # refused: the entry is moved to the spool's failed/
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_spool_dir_symlinked_to_the_host_receives_nothing(site, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ack)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        site.policy["report"] = {"urls": ["http://127.0.0.1:%d/r" % server.server_port]}
        site.write_policy()
        host = host_dir(tmp_path, "host-spool")
        (site.root / "var/spool").mkdir(parents=True)
        os.symlink(str(host), str(site.root / "var/spool/contextd"))
        code, _, err = run_defaults(site, "--state-dir", str(site.state_dir),
                                    "--run-dir", str(site.run_dir))
    finally:
        server.shutdown()
    assert code == 0, err
    untouched(host)
    assert list((inside(site, host) / "reports/failed").iterdir())


# --- the primitives on "/": real absolute paths, a planted symlink -------------------------

def _declared(path):
    """What a plugin writing only `path` declares (apply refuses any other file)."""
    return Footprint(paths=frozenset({str(path)}))


def _token(path, **kw):
    return WriteFile("htcondor", str(path), (TOKEN + "\n").encode(), mode=0o600, secret=True,
                     dir_mode=0o700, **kw)


def test_on_slash_a_secret_is_not_written_through_a_symlinked_directory(tmp_path):
    host = host_dir(tmp_path, "x")
    (tmp_path / "etc/condor").mkdir(parents=True)
    os.symlink(str(host), str(tmp_path / "etc/condor/tokens.d"))
    token = tmp_path / "etc/condor/tokens.d/contextd.token"
    with pytest.raises(apply.ApplyFailed) as caught:
        apply.execute([_token(token)], "/", str(tmp_path / "state"), run_commands=False,
                      allowed=_declared(token))
    assert "symbolic link" in caught.value.message
    untouched(host)


def test_on_slash_a_secret_is_not_written_through_a_relative_symlink(tmp_path):
    (tmp_path / "etc/condor/real").mkdir(parents=True)
    os.symlink("real", str(tmp_path / "etc/condor/tokens.d"))
    token = tmp_path / "etc/condor/tokens.d/contextd.token"
    with pytest.raises(apply.ApplyFailed):
        apply.execute([_token(token)], "/", str(tmp_path / "state"), run_commands=False,
                      allowed=_declared(token))
    assert list((tmp_path / "etc/condor/real").iterdir()) == []


def test_on_slash_a_secret_is_not_written_through_a_symlinked_file(tmp_path):
    host = host_dir(tmp_path, "x")
    (tmp_path / "tokens.d").mkdir()
    token = tmp_path / "tokens.d/contextd.token"
    os.symlink(str(host / "keep"), str(token))
    with pytest.raises(apply.ApplyFailed) as caught:
        apply.execute([_token(token)], "/", str(tmp_path / "state"), run_commands=False,
                      allowed=_declared(token))
    assert "symbolic link" in caught.value.message
    untouched(host)
    assert os.path.islink(str(token))


def test_atomic_write_replaces_a_final_symlink_never_writes_through_it(tmp_path):
    host = host_dir(tmp_path, "x")
    target = tmp_path / "report.json"
    os.symlink(str(host / "keep"), str(target))
    filesystem.atomic_write(str(target), b"{}\n", 0o644)
    untouched(host)
    assert not target.is_symlink() and target.read_bytes() == b"{}\n"


def test_atomic_write_under_a_root_stays_inside_it(tmp_path):
    host = host_dir(tmp_path, "x")
    root = tmp_path / "image"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(host), str(root / "etc/condor"))
    (root / str(host).lstrip("/")).mkdir(parents=True)     # where the image's link leads
    # the path a careless caller joined by hand: the root keeps it inside
    filesystem.atomic_write(str(root / "etc/condor/a.conf"), b"a\n", 0o644, root=str(root))
    untouched(host)
    assert (root / str(host).lstrip("/") / "a.conf").read_bytes() == b"a\n"


def test_state_of_refuses_a_final_symlink(tmp_path):
    host = host_dir(tmp_path, "x")
    link = tmp_path / "link"
    os.symlink(str(host / "keep"), str(link))
    with pytest.raises(OSError, match="symbolic link"):
        filesystem.state_of(str(link))


def test_private_dir_under_a_root_never_chmods_the_host(tmp_path):
    host = host_dir(tmp_path, "x")
    root = tmp_path / "image"
    root.mkdir()
    os.symlink(str(host), str(root / "private"))
    filesystem.private_dir(str(root / "private/sub"), root=str(root))
    untouched(host)
    made = root / str(host).lstrip("/") / "sub"
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


def test_a_token_is_still_written_where_nothing_is_a_symlink(tmp_path):
    token = tmp_path / "etc/condor/tokens.d/contextd.token"
    results = apply.execute([_token(token)], "/", str(tmp_path / "state"), run_commands=False,
                      allowed=_declared(token))
    assert results[0]["status"] == "created"
    assert token.read_bytes() == (TOKEN + "\n").encode()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700


def test_rollback_under_root_restores_inside_the_image(site, tmp_path):
    host = host_dir(tmp_path, "host-cvmfs")
    (site.root / "etc").mkdir()
    os.symlink(str(host), str(site.root / "etc/cvmfs"))
    image_cvmfs = inside(site, host)
    image_cvmfs.mkdir(parents=True)
    (image_cvmfs / "default.local").write_text("CVMFS_HTTP_PROXY=DIRECT\n")
    before = site.snapshot()
    env = fake_commands(tmp_path / "bin", tmp_path / "calls", failing="cvmfs_config")
    returncode, _, stderr = site.run("file:%s" % site.bundle(), "--run-commands", env=env)
    assert returncode == 3, stderr
    untouched(host)
    assert site.snapshot() == before
    assert str(image_cvmfs / "default.local") in site.report()["rolled_back"]
