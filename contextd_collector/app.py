"""The collector's HTTP application (Starlette): the endpoints of DESIGN section 12.

Database work is synchronous SQLAlchemy run in Starlette's thread pool; a POST is answered
2xx only after `store.store` returned, that is after the commit.

What it must never do: answer with a stack trace (every error is a one-line JSON message), read
more than LIMITS.collector_report_bytes of a body, or serve a read endpoint without the
bearer token when readers are configured.
"""

from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from contextd.limits import LIMITS
from contextd_collector import auth, store, views
from contextd_collector.config import Config
from contextd_collector.metrics import Metrics

LOG = logging.getLogger("contextd_collector")
Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request) -> bytes:
    """The body, refused (413) as soon as it passes the limit, whatever Content-Length says."""
    limit = LIMITS.collector_report_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise auth.Refused(413, "the report is larger than %d bytes" % limit)
    chunks: List[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise auth.Refused(413, "the report is larger than %d bytes" % limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _since(value: Optional[str]) -> Optional[float]:
    """`since` as unix seconds or ISO 8601 ("2026-12-01T10:00:00Z")."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        stamp = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise auth.Refused(400, "since must be unix seconds or an ISO 8601 time") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()


def _stamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%SZ")


class Collector:
    """The endpoints, bound to one configuration and one database."""

    def __init__(self, config: Config, engine: Engine):
        self.config = config
        self.engine = engine
        self.metrics = Metrics(engine)
        self._page: Any = None

    async def post_report(self, request: Request) -> Response:
        try:
            body = await _body(request)
            report, who = auth.authenticate(self.config, request.headers, body)
            image = auth.image_of(self.config, report)
            new: bool = await run_in_threadpool(store.store, self.engine, report, who, body, image)
        except auth.Refused as exc:
            self.metrics.posts.labels(str(exc.status)).inc()
            LOG.warning("refused a report (%d): %s", exc.status, exc.message)
            return _error(exc.status, exc.message)
        status = 201 if new else 200
        self.metrics.posts.labels(str(status)).inc()
        return JSONResponse({"report_id": report["report_id"],
                             "stored": "new" if new else "already stored"}, status_code=status)

    async def list_instances(self, request: Request) -> Response:
        q = request.query_params
        rows: List[Dict[str, Any]] = await run_in_threadpool(
            views.instances, self.engine, q.get("site"), q.get("vo"), q.get("outcome"),
            _since(q.get("since")))
        return JSONResponse({"instances": rows})

    async def show_instance(self, request: Request) -> Response:
        rows: List[Dict[str, Any]] = await run_in_threadpool(views.instance, self.engine,
                                       request.path_params["instance_id"])
        if not rows:
            return _error(404, "no reports from this instance")
        return JSONResponse({"instance_id": request.path_params["instance_id"], "reports": rows})

    async def list_images(self, request: Request) -> Response:
        return JSONResponse({"images": await run_in_threadpool(views.catalogue, self.engine)})

    async def metrics_text(self, request: Request) -> Response:
        text: bytes = await run_in_threadpool(self.metrics.render)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def page(self, request: Request) -> Response:
        return HTMLResponse(await run_in_threadpool(self._render_page))

    def _render_page(self) -> str:
        if self._page is None:
            import jinja2

            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                autoescape=True)
            self._page = env.get_template("fleet.html")
        since = time.time() - 86400
        rows = views.instances(self.engine)
        images = views.catalogue(self.engine)
        for row in images:
            row["first_seen_text"] = _stamp(row["first_seen"])
            row["last_seen_text"] = _stamp(row["last_seen"])
        return str(self._page.render(
            outcomes=auth.OUTCOMES, counts=views.counts(self.engine, since), images=images,
            failures=views.failures(self.engine), instances=rows, total=len(rows),
            now=_stamp(time.time())))

    def guarded(self, handler: Handler) -> Handler:
        """A read endpoint: the bearer token of readers_file when there is one."""
        async def check(request: Request) -> Response:
            if self.config.readers and not auth.bearer_ok(
                    list(self.config.readers), request.headers.get("authorization", "")):
                return JSONResponse({"error": "a reader's bearer token is required"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            try:
                return await handler(request)
            except auth.Refused as exc:
                return _error(exc.status, exc.message)
        return check


def build(config: Config, engine: Engine) -> Starlette:
    c = Collector(config, engine)
    routes = [
        Route("/v1/reports", c.post_report, methods=["POST"]),
        Route("/v1/instances", c.guarded(c.list_instances), methods=["GET"]),
        Route("/v1/instances/{instance_id}", c.guarded(c.show_instance), methods=["GET"]),
        Route("/v1/images", c.guarded(c.list_images), methods=["GET"]),
        Route("/metrics", c.guarded(c.metrics_text), methods=["GET"]),
        Route("/", c.guarded(c.page), methods=["GET"]),
    ]

    async def crashed(request: Request, exc: Exception) -> Response:
        LOG.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the collector's log has the details")

    handlers: Dict[Any, Any] = {Exception: crashed}
    return Starlette(routes=routes, exception_handlers=handlers)
