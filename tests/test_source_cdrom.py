"""The hepix-cdrom source: context ISOs made by the real genisoimage and xorriso with the
context.sh variants in use (HEPiX, OpenNebula old and new quoting, EC2_USER_DATA, USER_DATA,
hostile content), device detection with a fake udev, waiting, sd_notify, and detection order."""

import json
import socket
import sys
import time
import types
from pathlib import Path

import pytest

from contextd import run as runner, settings
from contextd.errors import SourceError
from contextd.sources import cdrom, detect, isosource, sdnotify

from fakes_sources import FakeUdev, Imds, b64, cdrom as cd, make_iso, one_context_sh

TOOLS = ["genisoimage", "xorriso"]
FAKE_BUNDLE = (b"#contextd-signed-v1\n-----BEGIN CONTEXTD PAYLOAD-----\nY29udGV4dGQ=\n"
               b"-----END CONTEXTD PAYLOAD-----\n-----BEGIN SSH SIGNATURE-----\nc2ln\n"
               b"-----END SSH SIGNATURE-----\n")


class Pol:
    """The policy fields detection reads."""

    def __init__(self, sources, wait=0, ec2_url="http://127.0.0.1:9", file_source=None):
        self.sources = tuple(sources)
        self.wait_for_source = wait
        self.ec2 = settings.Ec2Settings(url=ec2_url, imdsv1_fallback=False, budget=2)
        self.file_source = file_source
        self.legacy = settings.LegacySettings()


def variants(bundle: bytes, marker: Path):
    """context.sh files as they are found on context CD-ROMs, each carrying `bundle`."""
    hostile = "$(touch %s) `touch %s`" % (marker, marker)
    return {
        "opennebula": one_context_sh({
            "DISK_ID": "1", "ETH0_IP": "10.0.0.5", "NOTE": "it's " + hostile,
            "SSH_PUBLIC_KEY": "ssh-ed25519 AAAA one\nssh-ed25519 BBBB two",
            "USER_DATA": b64(bundle), "USERDATA_ENCODING": "base64", "VMID": "4711"}),
        "opennebula-plain-user-data": one_context_sh({"USER_DATA": bundle.decode()}),
        "opennebula-old": ('HOSTNAME="vm1"\nNOTE="%s"\nEC2_USER_DATA="%s"\n'
                           % (hostile.replace("`", "\\`"), b64(bundle))).encode(),
        "hepix": ("#!/bin/sh\n# site context, written by hand\n\nexport SITE=CERN-PROD\n"
                  "export EC2_USER_DATA=%s   # the VO's user-data\nNOTE='%s'\n"
                  % (b64(bundle), hostile)).encode(),
    }


EXPECTED = {    # facts only from OpenNebula's own header; which variable carried the bundle
    "opennebula": ({"cloud": "opennebula", "instance_id": "4711"}, {"variable": "USER_DATA"}),
    "opennebula-plain-user-data": ({"cloud": "opennebula"}, {"variable": "USER_DATA"}),
    "opennebula-old": ({}, {"variable": "EC2_USER_DATA"}),
    "hepix": ({}, {"variable": "EC2_USER_DATA"}),
}


@pytest.mark.parametrize("tool", TOOLS)
def test_context_sh_variants_on_real_isos(tmp_path, tool):
    marker = tmp_path / "pwned"
    for name, text in variants(FAKE_BUNDLE, marker).items():
        iso = make_iso(tool, {"context.sh": text, "prolog.sh": b"echo hi\n"},
                       tmp_path / ("%s.iso" % name))
        ctx = isosource.read(str(iso))
        assert ctx.payload == b"contextd" and ctx.signatures == (b"sig",), name
        assert ctx.scripts == {"prolog.sh": b"echo hi\n"}
        assert (ctx.facts, ctx.details) == EXPECTED[name], name
    assert not marker.exists()


def test_directory_carrier_wins_and_context_sh_still_gives_facts(tmp_path):
    iso = make_iso("genisoimage", {
        "contextd/payload.yaml": b"contextd: payload/v1\n",
        "contextd/payload.yaml.sig": FAKE_BUNDLE[FAKE_BUNDLE.index(b"-----BEGIN SSH"):],
        "context.sh": one_context_sh({"VMID": "7", "EC2_USER_DATA": b64(b"ignored")}),
    }, tmp_path / "both.iso")
    ctx = isosource.read(str(iso))
    assert ctx.payload == b"contextd: payload/v1\n"
    assert ctx.facts == {"cloud": "opennebula", "instance_id": "7"}


@pytest.mark.parametrize(("files", "message"), [
    ({"context.sh": one_context_sh({"ETH0_IP": "10.0.0.5"})},
     "sets none of EC2_USER_DATA, USER_DATA, USERDATA"),
    ({"context.sh": b"A='1'\nB=$(reboot)\n"}, "context.sh on .* line 2: B: unquoted '\\$'"),
    ({"context.sh": one_context_sh({"EC2_USER_DATA": b64(b"#cloud-config\n")})},
     "is not a contextd bundle"),
    ({"readme.txt": b"hi"}, "has no contextd/payload.yaml"),
])
def test_iso_without_a_usable_context(tmp_path, files, message):
    iso = make_iso("xorriso", files, tmp_path / "c.iso")
    with pytest.raises(SourceError, match=message):
        isosource.read(str(iso))


def test_hepix_iso_through_contextd_run(site, tmp_path):
    """The signed bundle in EC2_USER_DATA of an OpenNebula context.sh, applied end to end."""
    bundle = site.bundle().read_bytes()
    iso = make_iso("genisoimage", {"context.sh": variants(bundle, tmp_path / "m")["opennebula"]},
                   tmp_path / "one.iso")
    code, _, err = site.run("iso:%s" % iso)
    assert code == 0, err
    rep = site.report()
    assert rep["outcome"] == "applied"
    assert rep["source"] == {"kind": "iso", "location": str(iso), "variable": "USER_DATA"}
    assert rep["host"]["instance_id"] == "4711"
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------------------
# Finding the device


@pytest.fixture
def discs(tmp_path):
    """Images standing in for device nodes: IsoImage reads files and block devices alike."""
    out = {}
    out["context"] = make_iso("genisoimage", {"context.sh": one_context_sh(
        {"EC2_USER_DATA": b64(FAKE_BUNDLE), "VMID": "12"})}, tmp_path / "sr0.iso")
    out["unlabelled"] = make_iso("xorriso", {"context.sh": one_context_sh(
        {"EC2_USER_DATA": b64(FAKE_BUNDLE)})}, tmp_path / "sr1.iso", label="DATA")
    out["other"] = make_iso("xorriso", {"README": b"install media"}, tmp_path / "sr2.iso",
                            label="INSTALL")
    out["empty-context"] = make_iso("genisoimage", {"context.sh": one_context_sh(
        {"ETH0_IP": "10.0.0.5"})}, tmp_path / "sr3.iso")
    return {k: str(v) for k, v in out.items()}


def test_candidates_label_context_first_and_only_iso9660_cdroms():
    devices = [cd("/dev/sr1", "DATA"), cd("/dev/sr0", "CONTEXT"), cd("/dev/sr2", fs="udf"),
               dict(cd("/dev/vdb"), ID_CDROM="0"), {"DEVNAME": "/dev/sr3", "ID_CDROM": "1"}]
    assert [p["DEVNAME"] for p in cdrom.candidates(devices)] == ["/dev/sr0", "/dev/sr1"]


def test_present_context_cdrom_is_found_without_waiting(discs):
    udev = FakeUdev([cd(discs["other"], "INSTALL"), cd(discs["context"])])
    found = detect(Pol(["hepix-cdrom"], wait=30), udev=udev)
    assert found.context.kind == "hepix-cdrom" and found.context.location == discs["context"]
    assert found.context.facts == {"cloud": "opennebula", "instance_id": "12"}
    assert udev.calls == ["devices"]                 # no monitor: nothing to wait for


def test_any_label_with_context_sh_counts_and_others_are_noted(discs):
    udev = FakeUdev([cd(discs["other"], "INSTALL"), cd(discs["unlabelled"], "DATA")])
    found = detect(Pol(["hepix-cdrom"]), udev=udev)
    assert found.context.location == discs["unlabelled"]
    found = detect(Pol(["hepix-cdrom"]), udev=FakeUdev([cd(discs["other"], "INSTALL")]))
    assert found.context is None
    assert found.notes == ("hepix-cdrom: %s (label 'INSTALL') holds no context.sh or contextd/"
                           % discs["other"],)


def test_late_cdrom_is_waited_for_with_sd_notify(discs, tmp_path, monkeypatch):
    sock_path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(sock_path)
    listener.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", sock_path)
    udev = FakeUdev([], events=[(0.1, cd("/dev/sda", fs="ext4", action="add")),
                                (0.3, cd(discs["context"], action="change"))])
    started = time.monotonic()
    found = detect(Pol(["hepix-cdrom"], wait=5), udev=udev)
    assert time.monotonic() - started < 2
    assert found.context.location == discs["context"]
    assert udev.calls == ["devices", "monitor", "devices"]
    assert udev.monitor_obj.closed
    messages = [listener.recv(4096).decode() for _ in range(2)]
    listener.close()
    assert messages[0].startswith("STATUS=waiting for context CD-ROM")
    assert messages[1] == "STATUS=context CD-ROM found at %s" % discs["context"]


def test_wait_ends_at_wait_for_source(discs):
    udev = FakeUdev([cd(discs["other"], "INSTALL")])
    started = time.monotonic()
    found = detect(Pol(["hepix-cdrom"], wait=1), udev=udev, notify=lambda s: None)
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 1.6, elapsed
    assert found.context is None
    assert found.notes[-1] == "hepix-cdrom: no context CD-ROM appeared within 1s (wait_for_source)"


def test_context_cdrom_without_bundle_is_not_waited_on(discs):
    udev = FakeUdev([cd(discs["empty-context"])])
    started = time.monotonic()
    found = detect(Pol(["hepix-cdrom"], wait=30), udev=udev)
    assert time.monotonic() - started < 1
    assert found.context is None and "sets none of" in found.notes[0]


def test_broken_context_labelled_disc_is_an_error(tmp_path):
    bad = tmp_path / "bad.iso"
    bad.write_bytes(b"\0" * 40000)
    with pytest.raises(SourceError, match=r"bad.iso"):
        detect(Pol(["hepix-cdrom"]), udev=FakeUdev([cd(str(bad))]))
    found = detect(Pol(["hepix-cdrom"]), udev=FakeUdev([cd(str(bad), "OTHER")]))
    assert found.context is None and "skipped" in found.notes[0]


def test_order_and_unlisted_sources(discs):
    imds = Imds()
    try:
        imds.user_data(FAKE_BUNDLE)
        udev = FakeUdev([cd(discs["context"])])
        found = detect(Pol(["hepix-cdrom", "ec2"], ec2_url=imds.url), udev=udev)
        assert found.context.kind == "hepix-cdrom" and imds.requests == []
        found = detect(Pol(["ec2", "hepix-cdrom"], ec2_url=imds.url), udev=udev)
        assert found.context.kind == "ec2"
        udev = FakeUdev([cd(discs["context"])])
        found = detect(Pol(["ec2"], ec2_url=imds.url), udev=udev)
        assert found.context.kind == "ec2" and udev.calls == []
        # No CD-ROM yet: ec2 is read at once, the CD-ROM wait does not come first.
        started = time.monotonic()
        found = detect(Pol(["hepix-cdrom", "ec2"], wait=30, ec2_url=imds.url), udev=FakeUdev())
        assert found.context.kind == "ec2" and time.monotonic() - started < 2
        assert found.notes == ("hepix-cdrom: no CD-ROM with ISO9660 media yet",)
    finally:
        imds.close()


def test_nothing_anywhere(tmp_path):
    found = detect(Pol(["hepix-cdrom", "ec2", "file"], wait=0,
                       file_source="/etc/contextd/bundle"), root=str(tmp_path), udev=FakeUdev())
    assert found.context is None
    assert found.notes[0] == "hepix-cdrom: no CD-ROM with ISO9660 media yet"
    assert found.notes[1].startswith("ec2: no EC2 metadata service answered")
    assert found.notes[2] == "file: %s/etc/contextd/bundle does not exist" % tmp_path
    assert detect(Pol([]), udev=FakeUdev()).notes == ()


def test_run_detects_the_cdrom_in_process(site, discs, monkeypatch, tmp_path):
    """`contextd run` without --source: the policy's hepix-cdrom, through the fake udev."""
    bundle = site.bundle().read_bytes()
    iso = make_iso("xorriso", {"context.sh": one_context_sh({"EC2_USER_DATA": b64(bundle)})},
                   tmp_path / "sr0.iso")
    monkeypatch.setattr(cdrom, "default_udev", lambda: FakeUdev([cd(str(iso))]))
    site.policy["sources"] = ["hepix-cdrom"]
    site.write_policy()
    opts = runner.Options(policy=str(site.policy_path), root=str(site.root),
                          run_dir=str(site.run_dir), state_dir=str(site.state_dir),
                          **({"spool_dir": str(site.spool_dir)}
                             if hasattr(runner.Options, "spool") else {}))
    result = runner.execute(opts)
    assert result.error is None, result.error
    rep = json.loads((site.run_dir / "report.json").read_text())
    assert rep["outcome"] == "applied"
    assert rep["source"] == {"kind": "hepix-cdrom", "location": str(iso),
                             "variable": "EC2_USER_DATA"}


# --------------------------------------------------------------------------------------
# pyudev and sd_notify


def test_missing_pyudev_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyudev", None)
    with pytest.raises(SourceError) as err:
        cdrom.default_udev()
    assert "python3-pyudev" in err.value.one_line()


def test_pyudev_adapter(monkeypatch):
    """PyudevUdev drives pyudev's API as pyudev 0.22 has it (a stand-in module)."""
    calls = []

    class Device:
        def __init__(self, node, props, action=None):
            self.device_node, self.properties, self.action = node, props, action

    class Context:
        def list_devices(self, **match):
            calls.append(("list_devices", match))
            return [Device("/dev/sr0", {"ID_CDROM": "1", "ID_FS_TYPE": "iso9660",
                                        "ID_FS_LABEL": "CONTEXT"})]

    class Monitor:
        @classmethod
        def from_netlink(cls, context):
            calls.append(("from_netlink",))
            return cls()

        def filter_by(self, **match):
            calls.append(("filter_by", match))

        def start(self):
            calls.append(("start",))

        def poll(self, timeout=None):
            calls.append(("poll", timeout))
            return Device("/dev/sr1", {"ID_CDROM": "1"}, action="add")

    fake = types.ModuleType("pyudev")
    fake.Context, fake.Monitor = Context, Monitor
    monkeypatch.setitem(sys.modules, "pyudev", fake)
    udev = cdrom.default_udev()
    assert udev.devices() == [{"DEVNAME": "/dev/sr0", "ID_CDROM": "1", "ID_FS_TYPE": "iso9660",
                               "ID_FS_LABEL": "CONTEXT"}]
    monitor = udev.monitor()
    assert monitor.poll(1.5) == {"DEVNAME": "/dev/sr1", "ID_CDROM": "1", "ACTION": "add"}
    assert calls == [("list_devices", {"subsystem": "block", "ID_CDROM": "1"}),
                     ("from_netlink",), ("filter_by", {"subsystem": "block"}), ("start",),
                     ("poll", 1.5)]


def test_real_pyudev_enumerates_and_monitors():
    """The real pyudev (an install requirement) through the adapter: block devices with
    ID_CDROM=1 (none in a container), and a monitor that answers a poll within its timeout."""
    udev = cdrom.default_udev()
    devices = udev.devices()
    assert isinstance(devices, list)
    assert all(d.get("ID_CDROM") == "1" and d.get("DEVNAME") for d in devices)
    monitor = udev.monitor()
    started = time.monotonic()
    event = monitor.poll(0.1)
    assert time.monotonic() - started < 1
    assert event is None or "DEVNAME" in event
    monitor.close()


def test_sd_notify(tmp_path):
    path = str(tmp_path / "n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        assert sdnotify.notify("waiting\nfor CD", {"NOTIFY_SOCKET": path})
        assert listener.recv(100) == b"STATUS=waiting for CD"
    name = "contextd-test-%d" % id(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        assert sdnotify.notify("x", {"NOTIFY_SOCKET": "@" + name})
        assert listener.recv(100) == b"STATUS=x"
    assert not sdnotify.notify("x", {})
    assert not sdnotify.notify("x", {"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert not sdnotify.notify("x", {"NOTIFY_SOCKET": "vsock:2:123"})
