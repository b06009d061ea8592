"""EC2 instance metadata (IMDS): the platform's facts and the user-data, within one budget.

IMDSv2 first: `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`, then the
token in `X-aws-ec2-metadata-token` on every GET. A service that does not know tokens (HTTP
400/401/404/405 on the PUT) is read with IMDSv1 only when the policy says
`ec2.imdsv1_fallback: true`; a 403 on the PUT is final (the endpoint is disabled), as AWS
documents. One total time budget (`ec2.budget`) bounds the whole source: each attempt gets
a short timeout, each request a few attempts, and when the budget runs out the error says
at which request it stopped. A 404 on user-data means "no context", not an error.

What this module must never do: go through a proxy, follow a redirect, wait past the
budget (a server that trickles bytes is cut off at the attempt's deadline), read a response
without a size bound, or put the session token in a message or report.

Why `http.client` and not `requests`: the metadata service is plain HTTP on a link-local
address, one short request at a time. `http.client` (what `urllib` itself is built on)
uses no proxy settings from the environment and follows no redirects, with nothing to turn
off, and hands us the socket, so a watchdog can cut a trickling response off at the
deadline; `requests` needs `trust_env=False`, `allow_redirects=False` and streamed raw reads
for the same, gives no handle on the socket, and costs its import time at every boot.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
import urllib.parse
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from contextd.errors import NoService, SourceError, UsageError
from contextd.limits import LIMITS
from contextd.sources import Context, userdata

DEFAULT_URL = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
USER_DATA_PATH = "/latest/user-data"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
FACT_PATHS = (("instance_id", "/latest/meta-data/instance-id"),
              ("image_id", "/latest/meta-data/ami-id"),
              ("region", "/latest/meta-data/placement/region"))
PER_ATTEMPT = 2.0          # seconds, at most, for one attempt of one request
ATTEMPTS = 3               # attempts per request (connection errors, timeouts, 5xx, 429)
RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))
MAX_TOKEN = LIMITS.ec2_token_bytes  # contextd/limits.py says why
MAX_FACT = LIMITS.ec2_fact_bytes  # contextd/limits.py says why
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,%d}\Z" % MAX_TOKEN)
_FACT_RE = re.compile(r"[A-Za-z0-9._:/-]{1,255}\Z")


class _Transport(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check_url(url: str) -> str:
    from contextd import urls

    try:
        return urls.metadata_base(url)      # the policy's ec2.url passed this same check
    except ValueError as exc:
        raise UsageError("ec2 metadata URL %s" % exc,
                         "scheme://host[:port], for example ec2:http://169.254.169.254") from None


class Client:
    """One IMDS session: a token (or IMDSv1), then GETs, all before one deadline."""

    def __init__(self, url: str, budget: float, imdsv1_fallback: bool,
                 per_attempt: float = PER_ATTEMPT, attempts: int = ATTEMPTS,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.url = check_url(url)
        parts = urllib.parse.urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        try:
            self._port = parts.port
        except ValueError:
            raise UsageError("ec2 metadata URL %r has a bad port" % url) from None
        self.budget = budget
        self.v1_allowed = imdsv1_fallback
        self.per_attempt = per_attempt
        self.attempts = attempts
        self._clock = clock
        self._sleep = sleep
        self.deadline = clock() + budget
        self.mode: Optional[str] = None      # "v2" | "v1"
        self._token: Optional[str] = None
        self._refreshed = False
        self._connected = False              # did any TCP connection succeed?
        self.done: List[str] = []            # requests answered, for "where it stopped"

    # -- the session --------------------------------------------------------------------

    def start(self) -> None:
        """Get a session token, or settle for IMDSv1 where that is allowed."""
        ttl = int(min(21600, max(60, self.budget + 60)))
        status, body = self._request("PUT", TOKEN_PATH, {TTL_HEADER: str(ttl)}, MAX_TOKEN)
        if status == 200:
            token = body.decode("ascii", "replace").strip()
            if not _TOKEN_RE.match(token):
                raise SourceError("EC2 metadata %s returned a malformed session token" % self.url)
            self._token, self.mode = token, "v2"
            return
        where = "HTTP %d on PUT %s" % (status, TOKEN_PATH)
        if status == 403:
            raise SourceError(
                "EC2 metadata %s refused a session token (%s)" % (self.url, where),
                "the metadata endpoint is disabled for this instance or blocked; contextd "
                "never falls back to IMDSv1 after a 403")
        if 400 <= status < 500:
            if self.v1_allowed:
                self.mode = "v1"
                return
            raise SourceError(
                "EC2 metadata %s offers no IMDSv2 session token (%s) and the site policy "
                "does not allow IMDSv1" % (self.url, where),
                "set ec2.imdsv1_fallback: true in the policy if this cloud has only IMDSv1")
        raise SourceError("EC2 metadata %s answered %s" % (self.url, where))

    def get(self, path: str, limit: int) -> Tuple[int, bytes]:
        headers = {TOKEN_HEADER: self._token} if self.mode == "v2" and self._token else {}
        status, body = self._request("GET", path, headers, limit)
        if status == 401 and self.mode == "v2" and not self._refreshed:
            self._refreshed = True            # the token may have expired: one new one
            self.start()
            return self.get(path, limit)
        if status == 401:
            raise SourceError("EC2 metadata %s: HTTP 401 on GET %s%s" % (
                self.url, path, " (the service wants IMDSv2 tokens)" if self.mode == "v1" else ""))
        return status, body

    def facts(self) -> Dict[str, Optional[str]]:
        out: Dict[str, Optional[str]] = {"cloud": "ec2"}
        for name, path in FACT_PATHS:
            status, body = self.get(path, MAX_FACT)
            if status == 404:
                out[name] = None
                continue
            if status != 200:
                raise SourceError("EC2 metadata %s answered HTTP %d on GET %s"
                                  % (self.url, status, path))
            value = body.decode("ascii", "replace").strip()
            if not _FACT_RE.match(value):
                raise SourceError("EC2 metadata %s: %s is not a plain identifier"
                                  % (self.url, path))
            out[name] = value
        return out

    # -- requests -----------------------------------------------------------------------

    def _request(self, method: str, path: str, headers: Mapping[str, str],
                 limit: int) -> Tuple[int, bytes]:
        attempt = 0
        last = ""
        while True:
            remaining = self.deadline - self._clock()
            if remaining <= 0:
                raise self._stopped(method, path, attempt, last, "the time budget of %gs ran out"
                                    % self.budget)
            attempt += 1
            try:
                status, body = self._once(method, path, headers, limit,
                                          min(self.per_attempt, remaining))
            except _Transport as exc:
                last = exc.reason
                if attempt >= self.attempts:
                    raise self._stopped(method, path, attempt, last, "it gave up") from None
                self._pause(attempt)
                continue
            if status in RETRY_STATUSES:
                last = "HTTP %d" % status
                if attempt >= self.attempts:
                    raise self._stopped(method, path, attempt, last, "it gave up")
                self._pause(attempt)
                continue
            self.done.append("%s %s" % (method, path))
            return status, body

    def _pause(self, attempt: int) -> None:
        left = self.deadline - self._clock()
        if left > 0:
            self._sleep(min(0.2 * 2 ** (attempt - 1), left))

    def _stopped(self, method: str, path: str, attempts: int, last: str,
                 how: str) -> SourceError:
        detail = "%d attempt%s" % (attempts, "" if attempts == 1 else "s")
        if last:
            detail += ", last: %s" % last
        if not self._connected:
            return NoService("no EC2 metadata service answered at %s: %s at %s %s (%s)"
                             % (self.url, how, method, path, detail),
                             "list ec2 in the policy's sources only on clouds that have one")
        done = ", ".join(self.done) or "nothing"
        return SourceError("EC2 metadata %s: %s at %s %s (%s; answered before: %s)"
                           % (self.url, how, method, path, detail, done),
                           "the metadata service is too slow or failing; raise ec2.budget "
                           "or retry the boot")

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            import ssl  # pylint: disable=import-outside-toplevel  (rare; import cost)

            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _once(self, method: str, path: str, headers: Mapping[str, str], limit: int,
              timeout: float) -> Tuple[int, bytes]:
        """One attempt, over within `timeout` seconds whatever the server does."""
        conn = self._connection(timeout)
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            sock = conn.sock
            if sock is not None:
                try:  # noqa: SIM105 - boot path: no contextlib import for this
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(timeout, kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            try:
                conn.connect()
            except OSError as exc:
                raise _Transport("cannot connect: %s" % _reason(exc)) from None
            self._connected = True
            try:
                conn.request(method, path, headers=dict(headers))
                resp = conn.getresponse()
                status = resp.status
                body = _read(resp, limit, method, path, self.url) if status == 200 else b""
            except (OSError, http.client.HTTPException) as exc:
                if killed.is_set():
                    raise _Transport("no complete answer within %.1fs" % timeout) from None
                raise _Transport(_reason(exc)) from None
            if killed.is_set():
                raise _Transport("no complete answer within %.1fs" % timeout)
            return status, body
        finally:
            watchdog.cancel()
            conn.close()


def _read(resp: http.client.HTTPResponse, limit: int, method: str, path: str,
          url: str) -> bytes:
    length = resp.getheader("Content-Length")
    if length and length.strip().isdigit() and int(length) > limit:
        raise SourceError("EC2 metadata %s: %s %s is %s bytes, over the limit of %d"
                          % (url, method, path, length.strip(), limit))
    chunks: List[bytes] = []
    size = 0
    while True:
        chunk = resp.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise SourceError("EC2 metadata %s: %s %s is over the limit of %d bytes"
                              % (url, method, path, limit))
    return b"".join(chunks)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    return text[:120]


def look(url: str, budget: float, imdsv1_fallback: bool,
         per_attempt: float = PER_ATTEMPT) -> Tuple[Optional[Context], str]:
    """(context, "") or (None, why there is none). Errors other than "no context" raise."""
    client = Client(url, budget, imdsv1_fallback, per_attempt=per_attempt)
    client.start()
    status, raw = client.get(USER_DATA_PATH, userdata.MAX_USER_DATA)
    if status == 404:
        return None, "EC2 metadata %s has no user-data (HTTP 404)" % client.url
    if status != 200:
        raise SourceError("EC2 metadata %s answered HTTP %d on GET %s"
                          % (client.url, status, USER_DATA_PATH))
    return userdata.context(raw, "ec2", client.url, "EC2 user-data from %s" % client.url,
                            facts=client.facts, details={"imds": client.mode})
