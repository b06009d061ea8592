"""Fakes of the clouds the new sources read: one metadata server (Nova, GCE or a plain web
server) on 127.0.0.1 or ::1, config drives built with genisoimage exactly as Nova builds them,
and NoCloud seeds from the real cloud-localds."""

import http.server
import json
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from fakes_sources import misbehave

UUID = "83679162-1378-4288-a2d4-70e13ec132aa"


class Server:
    """An HTTP server whose answers each test sets: `routes` maps a GET path to
    (status, body[, headers]) or "hang" / "trickle" / "huge"; `headers` go on every answer
    (GCE's Metadata-Flavor). Every PUT gets 404, as Nova answers the IMDSv2 token PUT."""

    def __init__(self, host: str = "127.0.0.1", headers: Optional[Dict[str, str]] = None,
                 tls: Any = None) -> None:
        self.routes: Dict[str, Any] = {}
        self.headers = dict(headers or {})
        self.requests: List[Tuple[str, str, Dict[str, str]]] = []
        self.release = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_PUT(self) -> None:
                fake.requests.append(("PUT", self.path, dict(self.headers.items())))
                self._send(404, b"")

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, dict(self.headers.items())))
                self._answer(fake.routes.get(self.path, (404, b"")))

            def _answer(self, how: Any) -> None:
                if misbehave(self, how, fake.release):
                    return
                if how == "huge":          # no Content-Length: the reader must count
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        for _ in range(3 * 1024):
                            self.wfile.write(b"x" * 1024)
                    except OSError:
                        pass
                    return
                self._send(*how)

            def _send(self, status: int, body: bytes,
                      extra: Optional[Mapping[str, str]] = None) -> None:
                self.send_response(status)
                for name, value in {**fake.headers, **(extra or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server_class = http.server.ThreadingHTTPServer
        if ":" in host:
            server_class = type("V6", (http.server.ThreadingHTTPServer,),
                                {"address_family": socket.AF_INET6})
        self.server = server_class((host, 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        shown = "[%s]" % host if ":" in host else host
        self.url = "%s://%s:%d" % (scheme, shown, self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def paths(self) -> List[str]:
        return ["%s %s" % (m, p) for m, p, _ in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def nova_meta(uuid: str = UUID, zone: str = "cern-geneva-a") -> Dict[str, Any]:
    """meta_data.json in the shape Nova writes it (nova/api/metadata/base.py)."""
    return {
        "uuid": uuid,
        "meta": {"machinefeatures": "https://vcycle.example.org/mjf/m1"},
        "keys": [{"name": "vo-key", "type": "ssh", "data": "ssh-ed25519 AAAAC3Nza vo@host"}],
        "public_keys": {"vo-key": "ssh-ed25519 AAAAC3Nza vo@host"},
        "hostname": "atlas-wn-0001.novalocal",
        "name": "atlas-wn-0001",
        "launch_index": 0,
        "availability_zone": zone,
        "random_seed": "c2VlZA==" * 64,
        "project_id": "5f3ab3a5a6e14dbb8c2ee0e1d8e1ab21",
        "devices": [],
        "dedicated_cpus": [],
    }


def nova_tree(tmp: Path, user_data: Optional[bytes],
              meta: Optional[Dict[str, Any]] = None, raw_meta: Optional[bytes] = None) -> Path:
    """The files Nova's ConfigDriveBuilder writes (a dated version and `latest`, ec2 too)."""
    tree = tmp / "config-drive-tree"
    meta_bytes = raw_meta if raw_meta is not None else json.dumps(meta or nova_meta()).encode()
    for version in ("2018-08-27", "latest"):
        d = tree / "openstack" / version
        d.mkdir(parents=True, exist_ok=True)
        (d / "meta_data.json").write_bytes(meta_bytes)
        (d / "network_data.json").write_text('{"links": [], "networks": [], "services": []}')
        (d / "vendor_data.json").write_text("{}")
        (d / "vendor_data2.json").write_text("{}")
        if user_data is not None:
            (d / "user_data").write_bytes(user_data)
    ec2 = tree / "ec2" / "latest"
    ec2.mkdir(parents=True, exist_ok=True)
    (ec2 / "meta-data.json").write_text('{"ami-id": "ami-00000001"}')
    return tree


def nova_config_drive(tmp: Path, user_data: Optional[bytes],
                      meta: Optional[Dict[str, Any]] = None,
                      raw_meta: Optional[bytes] = None) -> Path:
    """An ISO built with the options of nova/virt/configdrive.py `_make_iso9660`."""
    tree = nova_tree(tmp, user_data, meta, raw_meta)
    out = tmp / "config-drive.iso"
    subprocess.run(["genisoimage", "-o", str(out), "-ldots", "-allow-lowercase",
                    "-allow-multidot", "-l", "-publisher", "OpenStack Compute 27.1.0", "-quiet",
                    "-J", "-r", "-V", "config-2", str(tree)], check=True, timeout=60)
    return out


def vfat_image(tmp: Path, label: str, files: Mapping[str, bytes], size_mib: int = 4,
               fat_bits: Optional[int] = None) -> Path:
    """A vfat disc as Nova's `_make_vfat` (64 MiB, `mkfs -t vfat -n config-2`) or
    `cloud-localds -f vfat` writes it."""
    out = tmp / ("%s.vfat" % label)
    with open(out, "wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    bits = ["-F", str(fat_bits)] if fat_bits else []
    subprocess.run(["mkfs.vfat", *bits, "-n", label, str(out)], check=True,
                   capture_output=True, timeout=60)
    for rel, data in files.items():
        src = tmp / ("vfat-" + rel.replace("/", "_"))
        src.write_bytes(data)
        parts = rel.split("/")
        for i in range(1, len(parts)):
            subprocess.run(["mmd", "-i", str(out), "::" + "/".join(parts[:i])],
                           capture_output=True, timeout=60)
        subprocess.run(["mcopy", "-i", str(out), str(src), "::" + rel], check=True,
                       timeout=60)
    return out


def cloud_localds(tmp: Path, user_data: bytes, meta: bytes,
                  fs: str = "iso9660") -> Path:
    """A NoCloud seed from the real cloud-localds (Debian cloud-image-utils)."""
    ud, md = tmp / "user-data.in", tmp / "meta-data.in"
    ud.write_bytes(user_data)
    md.write_bytes(meta)
    out = tmp / ("seed.%s" % fs)
    subprocess.run(["cloud-localds", "--filesystem=%s" % fs, str(out), str(ud), str(md)],
                   check=True, capture_output=True, timeout=60)
    return out


def by_label(root: Path, label: str, target: Path) -> None:
    """What udev publishes for a labelled block device, under a test root."""
    d = root / "dev" / "disk" / "by-label"
    d.mkdir(parents=True, exist_ok=True)
    (d / label).symlink_to(target)


def dmi(root: Path, **fields: str) -> None:
    d = root / "sys" / "class" / "dmi" / "id"
    d.mkdir(parents=True, exist_ok=True)
    for name, value in fields.items():
        (d / name).write_text(value + "\n")
