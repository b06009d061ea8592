"""Plugins: built-ins by name, site plugins through the `contextd.plugins` entry points."""

import subprocess
import sys

from contextd import plugin


def test_builtins_load_without_scanning_entry_points():
    code = ("import sys; from contextd import plugin; plugin.load('cvmfs'); "
            "print('importlib.metadata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_builtins_are_registered_as_entry_points_too():
    from importlib import metadata
    eps = metadata.entry_points()
    group = eps.select(group=plugin.GROUP) if hasattr(eps, "select") else eps[plugin.GROUP]
    assert {ep.name: ep.value for ep in group} == {
        name: module + ":PLUGIN" for name, module in plugin.BUILTIN.items()}


def test_site_plugin_from_an_entry_point(tmp_path, monkeypatch):
    """A site RPM's plugin: a distribution whose entry point names it; found and loaded."""
    pkg = tmp_path / "site_motd.py"
    pkg.write_text(
        "from contextd.plugin import Plugin\n"
        "class Motd(Plugin):\n    name = 'motd'\n"
        "PLUGIN = Motd()\n")
    dist = tmp_path / "site_motd-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: site-motd\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[contextd.plugins]\nmotd = site_motd:PLUGIN\n"
                                           "cvmfs = site_motd:PLUGIN\n")
    code = ("from contextd import plugin; p = plugin.load('motd'); print(p.name); "
            "print(plugin.load('cvmfs').__class__.__module__); print(plugin.available())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(tmp_path)}).stdout.split("\n")
    assert out[0] == "motd"
    assert out[1] == "contextd_plugins.cvmfs"       # a site plugin cannot shadow a built-in
    assert "motd" in out[2] and "cvmfs" in out[2]
