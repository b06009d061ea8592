"""User-data fetched from one URL (`url.location`): for clouds with no contextualization.

The transport is not what is trusted, the bundle's signature is: the URL is the site's
(its policy) or the operator's (`--source url:URL`), the answer is bounded in size and time
by contextd.sources.metahttp (one budget, `url.budget`), TLS is verified (against
`url.ca_bundle` when the site names one, else the system's CAs), no proxy, no redirect.
A 404 is "no context"; anything else that is not 200 is an error.

What this module must never do: follow a redirect, skip certificate checks, or put the URL's
query (it may hold a token) anywhere but the request.
"""

from __future__ import annotations

from typing import Optional, Tuple

from contextd.errors import UsageError
from contextd.sources import Context, userdata
from contextd.sources.metahttp import PER_ATTEMPT, Session


def split(location: str) -> Tuple[str, str]:
    """(scheme://host[:port], path?query) of an http(s) URL; UsageError when it is not one."""
    from contextd import urls

    try:
        parts = urls.split(location)
    except ValueError as exc:
        raise UsageError("user-data URL %s" % exc, "an http:// or https:// URL") from None
    base = urls.Parts(parts.scheme, parts.host, parts.port, "/").url().rstrip("/")
    return base, parts.path + ("?" + parts.query if parts.query else "")


def look(location: str, budget: float, ca_bundle: Optional[str] = None,
         per_attempt: float = PER_ATTEMPT) -> Tuple[Optional[Context], str]:
    """(context, "") or (None, why there is none). Errors other than "no context" raise."""
    base, path = split(location)
    session = Session(base, budget, "user-data URL",
                      "list url in the policy's sources only where that server is reachable",
                      "the server is too slow or failing; raise url.budget or retry the boot",
                      per_attempt=per_attempt, cafile=ca_bundle)
    shown = base + path.split("?", 1)[0]
    raw = session.fetch(path, userdata.MAX_USER_DATA)
    if raw is None:
        return None, "no user-data at %s (HTTP 404)" % shown
    return userdata.context(raw, "url", shown, "user-data from %s" % shown,
                            facts={"cloud": None})
