"""Sending reports over HTTP(S): one session per send, bounded retries, threads, one budget.

One send: at most 3 tries (urllib3 Retry) for 408/429/5xx answers and dropped connections,
sleeping 0 s then 0.5 s between them; a connection that cannot be made is tried twice, back
to back (the network or the receiver is down: half a second will not change that, the timer
will); TLS errors are not retried. Each try has a 3 s connect and 5 s read timeout, and
everything runs inside a hard wall-clock budget (DNS included): `send_all` starts one thread
per entry and stops waiting when the budget is spent. 2xx: delivered. 3xx and 4xx other than
408/429: refused, never retried. Anything else (connection errors, TLS errors, 408, 429, 5xx,
no answer in time): kept for `contextd report flush`.

What it must never do: follow a redirect (that would hand the report and its signature to a
host the policy did not allow), take anything from the environment but the proxy settings
(no ~/.netrc credentials, no $REQUESTS_CA_BUNDLE), or wait unboundedly. requests is imported
only when a report is sent.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from contextd import filesystem
from contextd.delivery.protocol import headers_for
from contextd.delivery.spool import Entry

TRIES = 3
CONNECT_TRIES = 2
BACKOFF = 0.25
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
RETRY_STATUS = (408, 429, 500, 502, 503, 504)

DELIVERED, KEPT, REFUSED = "delivered", "spooled", "refused"
PENDING = "pending"           # internal: a send still running when the budget ran out


def _session() -> Any:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=TRIES - 1, connect=CONNECT_TRIES - 1, read=TRIES - 1, status=TRIES - 1,
                  other=0, redirect=0, backoff_factor=BACKOFF,
                  status_forcelist=RETRY_STATUS, allowed_methods=frozenset(["POST"]),
                  raise_on_status=False, respect_retry_after_header=False)
    session = requests.Session()
    # Nothing from the environment but the proxy (_post): with trust_env, root's ~/.netrc
    # credentials would go to whatever URL a payload names, and $REQUESTS_CA_BUNDLE would
    # replace the CA the policy chose.
    session.trust_env = False
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _proxies(url: str) -> Dict[str, str]:
    """The environment's proxies for `url` (honouring no_proxy): all trust_env still takes."""
    import requests

    try:
        return requests.utils.get_environ_proxies(url)
    except ValueError:                # an unparsable URL: requests says so itself when sending
        return {}


def _post(entry: Entry) -> Tuple[str, str]:
    """One send with urllib3's retries: (verdict, what happened)."""
    import requests

    try:
        headers = headers_for(entry)
    except OSError as exc:
        return KEPT, str(exc)
    session = _session()
    try:
        response = session.post(entry.url, data=entry.body, headers=headers, stream=True,
                                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), allow_redirects=False,
                                verify=entry.ca_bundle or True,
                                proxies=_proxies(entry.url))
        status, reason = response.status_code, response.reason or ""
        response.close()
    except requests.exceptions.RequestException as exc:
        return KEPT, _describe(exc)
    except OSError as exc:      # requests: an unreadable CA bundle
        return KEPT, "cannot use CA bundle %s: %s" % (entry.ca_bundle, exc)
    finally:
        session.close()
    said = " ".join(("HTTP %d %s" % (status, reason)).split())[:200]
    if 200 <= status < 300:
        return DELIVERED, said
    if status in RETRY_STATUS or status >= 500:
        return KEPT, said
    return REFUSED, said + (" (redirects are not followed)" if 300 <= status < 400 else "")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: List[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 32:
        e = todo.pop(0)
        if any(e is s for s in seen):
            continue
        seen.append(e)
        yield e
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        for attr in ("reason", "__cause__", "__context__"):
            nxt = getattr(e, attr, None)
            if isinstance(nxt, BaseException):
                todo.append(nxt)


# OpenSSL's X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT(_LOCALLY), self-signed, unverifiable leaf


# OpenSSL's X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT(_LOCALLY), self-signed, unverifiable leaf
_UNKNOWN_ISSUER = (2, 18, 19, 20, 21)


def _describe(exc: BaseException) -> str:
    """requests' nested exception text, boiled down to the one reason a human needs."""
    import ssl                          # loaded by requests already; not at contextd's start

    chain = list(_causes(exc))
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            text = "TLS certificate verification failed: %s" % (
                e.verify_message or e.reason or "certificate rejected")
            if e.verify_code in _UNKNOWN_ISSUER:
                text += " (report.ca_bundle in the policy must hold the CA that signed it)"
            return text
    for e in chain:
        if isinstance(e, ssl.SSLError):
            return "TLS error: %s" % (e.reason or e.strerror or e)
    for e in chain:
        if "Timeout" in type(e).__name__ or isinstance(e, TimeoutError):
            return "timed out (%gs to connect, %gs to answer)" % (CONNECT_TIMEOUT, READ_TIMEOUT)
    for e in chain:
        if isinstance(e, OSError) and e.strerror:
            return "connection failed: %s" % e.strerror
    text = " ".join(str(exc).split())
    match = re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", text)
    return "connection failed: %s" % (match.group(1).strip() if match else
                                      type(exc).__name__)


def send_all(entries: Sequence[Entry], budget: float) -> List[Tuple[str, str]]:
    """Send each entry in its own thread; give up waiting after `budget` seconds.

    A worker removes its spool file itself, right after the 2xx. One still running when the
    budget is spent is reported PENDING and its file is left alone (it may yet succeed and
    remove it); the process exits soon after and the next flush sends it again.
    """
    results: List[Optional[Tuple[str, str]]] = [None] * len(entries)
    errors: List[BaseException] = []

    def work(i: int, entry: Entry) -> None:
        try:
            verdict, said = _post(entry)
            if verdict == DELIVERED and entry.path:
                try:
                    filesystem.remove(entry.path)
                except OSError as exc:
                    said += "; could not remove %s (it may be sent again): %s" % (
                        entry.path, exc.strerror or exc)
            results[i] = (verdict, said)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, e), daemon=True,
                                name="contextd-report-%d" % i) for i, e in enumerate(entries)]
    deadline = time.monotonic() + budget
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    return [r if r is not None else (PENDING, "no answer within %gs" % budget) for r in results]
