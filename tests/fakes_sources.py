"""Fakes of the outside world the sources read: an EC2 metadata service on 127.0.0.1, udev
(an enumerator and a monitor), and context ISOs built by the real genisoimage and xorriso."""

import base64
import http.server
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

TOKEN = "AQAEAFakeSessionToken0123456789abcdef=="

# --------------------------------------------------------------------------------------
# EC2 metadata



def misbehave(handler: Any, how: Any, release: threading.Event) -> bool:
    """Answer `how` the slow ways a metadata service fails: "hang" (no answer until released,
    at most 10 s) or "trickle" (200, a byte every 0.2 s); False for any other answer."""
    if how == "hang":
        release.wait(10)
        return True
    if how != "trickle":
        return False
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(1000):
        if release.wait(0.2):
            break
        try:
            handler.wfile.write(b"x")
            handler.wfile.flush()
        except OSError:
            break
    return True

class Imds:
    """A metadata service on 127.0.0.1 whose behaviour each test sets.

    `token`: how PUT /latest/api/token answers: an HTTP status (200 gives TOKEN), or
    "hang" / "trickle". `routes`: GET path -> (status, body) or "hang" / "trickle".
    `require_token`: GETs without the right token get 401 (IMDSv2-only service).
    """

    def __init__(self) -> None:
        self.token: Any = 200
        self.require_token = True
        self.routes: Dict[str, Any] = {
            "/latest/meta-data/instance-id": (200, b"i-0123456789abcdef0"),
            "/latest/meta-data/ami-id": (200, b"ami-0fedcba9876543210"),
            "/latest/meta-data/placement/region": (200, b"eu-central-1"),
            "/latest/user-data": (404, b""),
        }
        self.requests: List[Tuple[str, str, Dict[str, str]]] = []
        self.release = threading.Event()
        imds = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_PUT(self) -> None:
                imds.requests.append(("PUT", self.path, dict(self.headers.items())))
                if self.path != "/latest/api/token":
                    return self._send(405, b"")
                if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self._send(400, b"missing ttl")
                how = imds.token
                self._answer((200, TOKEN.encode()) if how == 200 else how)

            def do_GET(self) -> None:
                imds.requests.append(("GET", self.path, dict(self.headers.items())))
                if imds.require_token and \
                        self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    return self._send(401, b"")
                self._answer(imds.routes.get(self.path, (404, b"")))

            def _answer(self, how: Any) -> None:
                if isinstance(how, int):
                    how = (how, b"")
                if not misbehave(self, how, imds.release):
                    self._send(*how)

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def user_data(self, body: bytes, status: int = 200) -> None:
        self.routes["/latest/user-data"] = (status, body)

    def paths(self) -> List[str]:
        return ["%s %s" % (m, p) for m, p, _ in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def run_over_ec2(site: Any, user_data: bytes, *extra: str) -> Tuple[int, str, str]:
    """`contextd run` (Site.run) against a fake EC2 metadata service serving `user_data`."""
    imds = Imds()
    try:
        imds.user_data(user_data)
        return site.run("ec2:%s" % imds.url, *extra)
    finally:
        imds.close()


# --------------------------------------------------------------------------------------
# udev


class FakeMonitor:
    """Replays (seconds after the monitor started, props) events."""

    def __init__(self, events: List[Tuple[float, Dict[str, str]]],
                 on_event: Callable[[Dict[str, str]], None]):
        self.events = sorted(events, key=lambda e: e[0])
        self.on_event = on_event
        self.started = time.monotonic()
        self.polls: List[float] = []
        self.closed = False

    def poll(self, timeout: float) -> Optional[Mapping[str, str]]:
        self.polls.append(timeout)
        now = time.monotonic()
        if self.events and self.started + self.events[0][0] <= now + timeout:
            at, props = self.events.pop(0)
            time.sleep(max(0.0, self.started + at - now))
            self.on_event(props)
            return props
        time.sleep(timeout)
        return None

    def close(self) -> None:
        self.closed = True


class FakeUdev:
    """Block devices as udev property dicts; a monitor replaying (delay, props) events.

    An event also adds its device to what `devices()` lists from then on, like udev.
    """

    def __init__(self, devices: Optional[List[Dict[str, str]]] = None,
                 events: Optional[List[Tuple[float, Dict[str, str]]]] = None):
        self._devices = list(devices or [])
        self._events = list(events or [])
        self.monitor_obj: Optional[FakeMonitor] = None
        self.calls: List[str] = []

    def devices(self) -> List[Mapping[str, str]]:
        self.calls.append("devices")
        return list(self._devices)

    def monitor(self) -> FakeMonitor:
        self.calls.append("monitor")
        self.monitor_obj = FakeMonitor(self._events, self._devices.append)
        return self.monitor_obj


def cdrom(node: str, label: str = "CONTEXT", fs: str = "iso9660",
          action: Optional[str] = None) -> Dict[str, str]:
    props = {"DEVNAME": node, "ID_CDROM": "1", "ID_FS_TYPE": fs, "ID_FS_LABEL": label}
    if action:
        props["ACTION"] = action
    return props


# --------------------------------------------------------------------------------------
# ISOs


def make_iso(tool: str, files: Mapping[str, bytes], out: Path, label: str = "CONTEXT") -> Path:
    """An ISO of `files` built by the real `tool` (genisoimage or xorriso), -J -R."""
    tree = out.with_name(out.name + ".tree")
    if tree.exists():
        shutil.rmtree(str(tree))
    for rel, data in files.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if tool == "genisoimage":
        argv = ["genisoimage", "-quiet", "-V", label, "-J", "-R", "-o", str(out), str(tree)]
    else:
        argv = ["xorriso", "-as", "mkisofs", "-quiet", "-V", label, "-J", "-R", "-o", str(out),
                str(tree)]
    subprocess.run(argv, check=True, capture_output=True)
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def one_context_sh(variables: Mapping[str, str]) -> bytes:
    """context.sh as OpenNebula writes it today: header, KEY='value', ' as '\\''."""
    lines = ["# Context variables generated by OpenNebula"]
    for key, value in variables.items():
        lines.append("%s='%s'" % (key, value.replace("'", "'\\''")))
    return ("\n".join(lines) + "\n").encode()


def wait_until(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()
