"""EC2 instance metadata (IMDS): the platform's facts and the user-data, within one budget.

IMDSv2 first: `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`, then the
token in `X-aws-ec2-metadata-token` on every GET. A service that does not know tokens (HTTP
400/401/404/405 on the PUT) is read with IMDSv1 only when the policy says
`ec2.imdsv1_fallback: true`; a 403 on the PUT is final (the endpoint is disabled), as AWS
documents. One total time budget (`ec2.budget`) bounds the whole source: each attempt gets
a short timeout, each request a few attempts, and when the budget runs out the error says
at which request it stopped. A 404 on user-data means "no context", not an error.

The transport (budget, retries, bounds, no proxy, no redirect) is contextd.sources.metahttp,
shared by every network source.

What this module must never do: put the session token in a message or report, or fall back
to IMDSv1 unless the policy allows it.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Tuple

from contextd.errors import NoService, SourceError, UsageError
from contextd.limits import LIMITS
from contextd.patterns import Pattern
from contextd.sources import Context, userdata
from contextd.sources.metahttp import ATTEMPTS, PER_ATTEMPT, Session

__all__ = ["ATTEMPTS", "PER_ATTEMPT", "Client", "NoService", "look"]

DEFAULT_URL = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
USER_DATA_PATH = "/latest/user-data"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
FACT_PATHS = (("instance_id", "/latest/meta-data/instance-id"),
              ("image_id", "/latest/meta-data/ami-id"),
              ("region", "/latest/meta-data/placement/region"))
MAX_TOKEN = LIMITS.ec2_token_bytes  # contextd/limits.py says why
MAX_FACT = LIMITS.ec2_fact_bytes  # contextd/limits.py says why
_TOKEN_RE = Pattern(r"[\x21-\x7e]{1,%d}\Z" % MAX_TOKEN)
_FACT_RE = Pattern(r"[A-Za-z0-9._:/-]{1,255}\Z")


def check_url(url: str) -> str:
    from contextd import urls

    try:
        return urls.metadata_base(url)      # the policy's ec2.url passed this same check
    except ValueError as exc:
        raise UsageError("ec2 metadata URL %s" % exc,
                         "scheme://host[:port], for example ec2:http://169.254.169.254") from None


class Client(Session):
    """One IMDS session: a token (or IMDSv1), then GETs, all before one deadline."""

    def __init__(self, url: str, budget: float, imdsv1_fallback: bool,
                 per_attempt: float = PER_ATTEMPT, attempts: int = ATTEMPTS,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        super().__init__(check_url(url), budget, "EC2 metadata",
                         "list ec2 in the policy's sources only on clouds that have one",
                         "the metadata service is too slow or failing; raise ec2.budget "
                         "or retry the boot", per_attempt, attempts, clock, sleep)
        self.v1_allowed = imdsv1_fallback
        self.mode: Optional[str] = None      # "v2" | "v1"
        self._token: Optional[str] = None
        self._refreshed = False

    # -- the session --------------------------------------------------------------------

    def start(self) -> None:
        """Get a session token, or settle for IMDSv1 where that is allowed."""
        ttl = int(min(21600, max(60, self.budget + 60)))
        status, body = self.request("PUT", TOKEN_PATH, {TTL_HEADER: str(ttl)}, MAX_TOKEN)
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
        status, body = self.request("GET", path, headers, limit)
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
