"""The daemon's one HTTP server: /metrics, /healthz, /readyz, and (http.api) the job API and web page.

An ASGI app (FastAPI, for the API's validation and OpenAPI description) served by uvicorn on a
daemon thread with its own event loop. The socket is bound on the main thread first, so that an
address in use is a clear error at start rather than a dying thread. Handlers run on the server's
threads: they read the job folders and ask the main loop (JobControl.call, observe.py) for
anything that changes a job. /metrics, /healthz and /readyz are plain routes made from what the
metrics hook returns: bytes, and (ok, message).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response as StarletteResponse

from .config import Config
from .hooks import Hooks
from .observe import JobControl, Snapshot, Started
from .spool.store import JobStore

if TYPE_CHECKING:
    from .metrics import MetricsHooks

log = logging.getLogger("ocr_watcher.http")
TEXT = "text/plain; charset=utf-8"
START_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Response:
    """What a plain route (metrics, health) returns; kept free of any web framework."""

    status: int
    body: bytes
    content_type: str = TEXT


def text(status: int, message: str) -> Response:
    return Response(status, message.encode("utf-8") + b"\n")


Route = Callable[[], Response]


def status_route(check: Callable[[], tuple[bool, str]]) -> Route:
    """A health check as a route: 200 when it passes, 503 when not, its message as the body."""

    def route() -> Response:
        ok, message = check()
        return text(200 if ok else 503, message)

    route.__name__ = getattr(check, "__name__", "status_route")  # for the log line of a failure
    return route


def metrics_routes(metrics: MetricsHooks) -> dict[str, Route]:
    def metrics_page() -> Response:
        return Response(200, metrics.exposition(), CONTENT_TYPE_LATEST)

    return {
        "/metrics": metrics_page,
        "/healthz": status_route(metrics.healthz),
        "/readyz": status_route(metrics.readyz),
    }


def _endpoint(route: Route) -> Callable[[Request], StarletteResponse]:
    # A plain function: Starlette runs it on its thread pool, off the event loop.
    def endpoint(_request: Request) -> StarletteResponse:
        try:
            response = route()
        except Exception:
            log.exception("%s failed", getattr(route, "__name__", route))
            response = text(500, "internal error (see the daemon's log)")
        return StarletteResponse(
            response.body, response.status, media_type=response.content_type, headers={"Cache-Control": "no-store"}
        )

    return endpoint


class AllowEveryMethod:
    """ASGI middleware: a 405's `Allow` lists every method of the resource (RFC 9110 15.5.6).
    Starlette fills it from the first route whose path matches, so for /jobs/{id} (GET on one route,
    DELETE on another) it would say only GET."""

    def __init__(self, app: Callable, router_routes: Callable[[], list]) -> None:
        self.app = app
        self.router_routes = router_routes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_allow(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = sorted(self._methods_for(scope["path"]))
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", ", ".join(allowed).encode())]}
            await send(message)

        await self.app(scope, receive, send_with_allow)

    def _methods_for(self, path: str) -> set[str]:
        """The methods of the resource at `path`. A literal path (/jobs/create) is its own resource,
        as in OpenAPI, even where a template (/jobs/{job_id}) would match it too."""
        matching = [
            route
            for route in _flatten(self.router_routes())
            if getattr(route, "methods", None) and getattr(route, "path_regex", None) and route.path_regex.match(path)
        ]
        literal = [route for route in matching if getattr(route, "path", None) == path]
        return {method for route in literal or matching for method in route.methods}


def _flatten(routes: list) -> list:
    """Routes, with those of included routers (our API router has no prefix, so their own paths hold).
    Newer FastAPI keeps an included router whole (`original_router`); older copies its routes."""
    flat: list = []
    for route in routes:
        included = getattr(route, "original_router", None)
        flat.extend(_flatten(included.routes) if included is not None else [route])
    return flat


def build_app(routes: Mapping[str, Route], add_api: Callable[[FastAPI], None] | None = None) -> FastAPI:
    """The ASGI app: the plain routes, plus whatever `add_api` mounts (the job API)."""
    from . import __version__

    app = FastAPI(
        title="ocr-watcher",
        version=__version__,
        description="Jobs of the ocr-watcher daemon: the same jobs as its inbox and outbox folders.",
        docs_url="/docs" if add_api else None,
        redoc_url=None,
        openapi_url="/openapi.json" if add_api else None,
    )
    for path, route in routes.items():
        app.add_api_route(path, _endpoint(route), methods=["GET", "HEAD"], include_in_schema=False)
    if add_api is not None:
        add_api(app)
    app.add_middleware(AllowEveryMethod, router_routes=lambda: app.router.routes)
    return app


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelt out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it a response written in two parts waits for the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(512)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


class HttpServer:
    """Serves `app` on host:port (port 0 picks a free port) from a daemon thread."""

    def __init__(self, host: str, port: int, app: FastAPI) -> None:
        self.host = host
        self.port = port
        self.app = app
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (raising OSError if the address is taken) and serve on a daemon thread."""
        self._socket = _bind(self.host, self.port)
        config = uvicorn.Config(
            self.app,
            log_config=None,  # our logging setup stays as it is
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _serve(self) -> None:
        assert self._server is not None and self._socket is not None
        asyncio.run(self._server.serve(sockets=[self._socket]))

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        assert self._socket is not None, "not started"
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def base_url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None


class HttpHooks(Hooks):
    """Starts the HTTP server with the daemon and stops it with the daemon."""

    def __init__(self, config: Config, metrics: MetricsHooks) -> None:
        self.config = config
        self.metrics = metrics
        self.server: HttpServer | None = None

    def on_start(self, started: Started) -> None:
        http = self.config.http
        api = self._api_for(started.store, started.control) if http.api else None
        app = build_app(metrics_routes(self.metrics), api)
        server = HttpServer(http.host, http.port, app)
        try:
            server.start()
        except OSError as exc:
            log.error(
                "cannot serve HTTP on %s:%d: %s (set http.port to a free port, or http.enabled: false)",
                http.host,
                http.port,
                exc,
            )
            return
        self.server = server
        log.info("metrics on %s/metrics (also /healthz, /readyz)", server.base_url)
        if http.api:
            tokens = "bearer token required" if http.api_tokens else "no token required"
            log.info("job API and web page on %s/ (%s)", server.base_url, tokens)

    def _api_for(self, store: JobStore, control: JobControl) -> Callable[[FastAPI], None]:
        from .api.app import add_api
        from .api.context import ApiContext

        context = ApiContext(
            config=lambda: control.config,
            store=store,
            control=control,
            main_loop_ok=lambda: self.metrics.healthz()[0],
            engine_ready=lambda: self.metrics.readyz()[0],
            on_upload=self.metrics.on_upload,
        )
        return lambda app: add_api(app, context)

    def on_exit(self, snapshot: Snapshot) -> None:
        # Not on_stop: /metrics and /health keep answering while the pages in flight drain (the API
        # meanwhile refuses new work with 503: Service.call raises NotServing).
        if self.server is not None:
            self.server.stop()
            self.server = None
