"""One bounded HTTP client for every network source (EC2, OpenStack, GCE, a URL).

A `Session` talks to one `scheme://host[:port]` within one total time budget: each attempt
gets a short timeout, each request a few attempts (connection errors, timeouts, 5xx, 429),
and when the budget runs out the error says at which request it stopped. Nothing answering
at all is `NoService` (detection moves on); a service that answered and then failed is a
`SourceError`. Bodies are read only for 200, and never past their size bound.

What this module must never do: go through a proxy, follow a redirect, wait past the
budget (a server that trickles bytes is cut off at the attempt's deadline by a watchdog
that shuts the socket), read a response without a size bound, or skip TLS verification.

Why `http.client` and not `requests`: the metadata service is plain HTTP on a link-local
address, one short request at a time. `http.client` (what `urllib` itself is built on)
uses no proxy settings from the environment and follows no redirects, with nothing to turn
off, and hands us the socket, so a watchdog can cut a trickling response off at the
deadline; `requests` needs `trust_env=False`, `allow_redirects=False` and streamed raw reads
for the same, gives no handle on the socket, and costs its import time at every boot.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from contextd.errors import NoService, SourceError, UsageError

PER_ATTEMPT = 2.0          # seconds, at most, for one attempt of one request
ATTEMPTS = 3               # attempts per request (connection errors, timeouts, 5xx, 429)
RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))


def check_base(url: str, kind: str, example: str) -> str:
    """`--source KIND:URL`'s metadata URL, canonical `scheme://host[:port]`."""
    from contextd import urls

    try:
        return urls.metadata_base(url)      # the policy's URLs passed this same check
    except ValueError as exc:
        raise UsageError("%s metadata URL %s" % (kind, exc),
                         "scheme://host[:port], for example %s:%s" % (kind, example)) from None


class _Transport(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Session:
    """Requests to one base URL (already checked, canonical) before one deadline.

    `name` starts every message ("EC2 metadata"); `absent_hint` is the fix when nothing
    answered, `slow_hint` when the service answered and then ran out of time or failed.
    """

    def __init__(self, base: str, budget: float, name: str, absent_hint: str,
                 slow_hint: str, per_attempt: float = PER_ATTEMPT, attempts: int = ATTEMPTS,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, cafile: Optional[str] = None):
        from contextd import urls

        parts = urls.split(base)
        self.url = base
        self.name = name
        self._https = parts.scheme == "https"
        self._host = parts.host
        self._port = parts.port
        self._cafile = cafile
        self.budget = budget
        self.per_attempt = per_attempt
        self.attempts = attempts
        self._clock = clock
        self._sleep = sleep
        self._hints = (absent_hint, slow_hint)
        self.deadline = clock() + budget
        self._connected = False              # did any TCP connection succeed?
        self.done: List[str] = []            # requests answered, for "where it stopped"
        self.headers: Dict[str, str] = {}    # the last answer's headers, names lower case

    def request(self, method: str, path: str, headers: Mapping[str, str],
                limit: int) -> Tuple[int, bytes]:
        """(status, body) of the first answer that is not a retryable failure."""
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
            self.done.append("%s %s" % (method, _shown(path)))
            return status, body

    def fetch(self, path: str, limit: int,
              headers: Optional[Mapping[str, str]] = None) -> Optional[bytes]:
        """The body of GET `path`; None for 404 (not there); any other status is an error
        (a redirect too: it is never followed)."""
        status, body = self.request("GET", path, headers or {}, limit)
        if status == 404:
            return None
        if status != 200:
            raise SourceError("%s %s answered HTTP %d on GET %s"
                              % (self.name, self.url, status, _shown(path)),
                              "contextd follows no redirects" if 300 <= status < 400 else None)
        return body

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
            return NoService("no %s service answered at %s: %s at %s %s (%s)"
                             % (self.name, self.url, how, method, _shown(path), detail),
                             self._hints[0])
        done = ", ".join(self.done) or "nothing"
        return SourceError("%s %s: %s at %s %s (%s; answered before: %s)"
                           % (self.name, self.url, how, method, _shown(path), detail, done),
                           self._hints[1])

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            import ssl  # pylint: disable=import-outside-toplevel  (rare; import cost)

            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout,
                context=ssl.create_default_context(cafile=self._cafile))
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _resolve(self, timeout: float) -> Tuple[str, int]:
        """The host's first address, looked up within `timeout`: getaddrinfo cannot be
        interrupted, and a resolver with no network (GCE's metadata.google.internal off
        GCE) would otherwise hold the boot for its own timeouts. An IP literal needs none."""
        if ":" in self._host or self._host.replace(".", "").isdigit():
            return self._host, self._port
        answers: List[Any] = []

        def lookup() -> None:
            try:
                answers.append(socket.getaddrinfo(self._host, self._port,
                                                  type=socket.SOCK_STREAM))
            except OSError as exc:  # socket.gaierror
                answers.append(exc)

        worker = threading.Thread(target=lookup, daemon=True)
        worker.start()
        worker.join(timeout)
        if not answers:
            raise _Transport("cannot resolve %s within %.1fs" % (self._host, timeout))
        if isinstance(answers[0], OSError):
            raise _Transport("cannot resolve %s: %s" % (self._host, _reason(answers[0])))
        if not answers[0]:
            raise _Transport("cannot resolve %s: no address" % self._host)
        ip, port = answers[0][0][4][:2]
        return str(ip), int(port)

    def _once(self, method: str, path: str, headers: Mapping[str, str], limit: int,
              timeout: float) -> Tuple[int, bytes]:
        """One attempt, over within `timeout` seconds whatever the server does."""
        started = self._clock()
        address = self._resolve(timeout)
        timeout = max(0.05, timeout - (self._clock() - started))
        conn = self._connection(timeout)
        # connect to the address resolved within the bound; Host and TLS keep the name
        conn._create_connection = (  # type: ignore[attr-defined]
            lambda _addr, t=None, src=None: socket.create_connection(address, t, src))
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
                self.headers = {k.lower(): v for k, v in resp.getheaders()}
                body = self._read(resp, limit, method, path) if status == 200 else b""
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

    def _read(self, resp: http.client.HTTPResponse, limit: int, method: str,
              path: str) -> bytes:
        length = resp.getheader("Content-Length")
        if length and length.strip().isdigit() and int(length) > limit:
            raise SourceError("%s %s: %s %s is %s bytes, over the limit of %d"
                              % (self.name, self.url, method, _shown(path), length.strip(),
                                 limit))
        chunks: List[bytes] = []
        size = 0
        while True:
            chunk = resp.read(min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise SourceError("%s %s: %s %s is over the limit of %d bytes"
                                  % (self.name, self.url, method, _shown(path), limit))
        return b"".join(chunks)


def _shown(path: str) -> str:
    """A path as messages show it: without its query, which may hold a token."""
    return path.split("?", 1)[0]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    return text[:120]
