"""The recognition client's app: `create_app` wires the bundle manager, the metrics, the
serving pipeline (client/serving/), the lifespan (bundle polling, the runner's start, its
children warmed with each bundle) and the error handlers, and mounts the routers of
client/api/ (recognize: POST /recognize; system: /bundle, /healthz, /readyz, /metrics;
oip: the Open Inference Protocol v2 under /v2).
`serve_main` is `python -m client`.

Errors become HTTP in one place (`_siq_error`, by shared.errors' mapping): every SIQError a
caller can cause is a 4xx with `{"error": {"code", "message", "field"}}`; nothing a caller sends
produces a 500.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import textwrap
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from client.api import oip, pages, recognize, system
from client.fetcher import BundleFetcher
from client.logs import configure_logging
from client.manager import BundleManager
from client.metrics import ClientMetrics, MetricsMiddleware
from client.serving.pipeline import make_pipeline
from client.settings import BundleSource, ClientSettings, load_settings
from client.workers import serve_workers
from shared.api.head import HeadAsGet
from shared.errors import BodyTimeoutError, ConfigError, SIQError, error_body, error_headers

__all__ = ["create_app", "serve_main"]

log = logging.getLogger("client")

_DESCRIPTION = textwrap.fill(
    "The SIQ recognition client: serves a quantised bundle over HTTP (POST /recognize, the "
    "Open Inference Protocol under /v2, a page at /) with integer arithmetic only. Without a "
    "command, it starts serving.",
    width=80,
)


async def _siq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SIQError)
    headers = error_headers(exc) or {}
    if isinstance(exc, BodyTimeoutError):  # the rest of the body is not worth waiting for
        headers["Connection"] = "close"
    return JSONResponse(error_body(exc), status_code=exc.http_status, headers=headers or None)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own answers (no such route, wrong method) in the one error shape, not
    its `{"detail": ...}`; headers such as 405's Allow are kept."""
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    body = {"error": {"code": code, "message": str(exc.detail), "field": None}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    body = {"error": {"code": "internal", "message": "internal error; see the client log"}}
    return JSONResponse(body, status_code=500)


def create_app(
    settings: ClientSettings | None = None,
    source: BundleSource | None = None,
    *,
    http: httpx.Client | None = None,
) -> FastAPI:
    """The client app. Without arguments it reads the environment (ConfigError if unusable);
    tests pass settings, a source and an httpx client with a MockTransport."""
    if settings is None or source is None:
        settings, source = load_settings()
    metrics = ClientMetrics()
    own_http = http is None and source.kind != "file"
    if own_http:
        token = settings.api_token.get_secret_value() if settings.api_token else ""
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        http = httpx.Client(timeout=settings.fetch_timeout_s, headers=auth)
    fetcher = (
        BundleFetcher(http, settings.server_url, settings.hmac_key)
        if http is not None and settings.server_url
        else None
    )
    manager = BundleManager(source, settings.state_dir, fetcher, metrics, settings.hmac_key)
    manager.load_initial()  # a bad file source fails here, before serving
    pipeline = make_pipeline(settings, manager, metrics)
    runner = pipeline.runner

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner.start()  # on the serving event loop, which its limiters belong to
        stop = asyncio.Event()
        if manager.current is not None:
            runner.warm(manager.current)  # children load the network before a request
        poller = asyncio.create_task(
            manager.poll(stop, settings.poll_interval_s, settings.retry_interval_s, runner.warm)
        )
        try:
            yield
        finally:
            stop.set()
            try:
                await asyncio.wait_for(poller, timeout=settings.fetch_timeout_s + 5)
            except TimeoutError:
                log.warning("bundle polling did not stop in time")
            if own_http and http is not None:
                http.close()
            runner.close()

    app = FastAPI(title="SIQ recognition client", version="0.1.0", lifespan=lifespan)
    app.state.settings, app.state.manager, app.state.metrics = settings, manager, metrics
    app.state.pipeline = pipeline
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(HeadAsGet)  # HEAD on every GET route: GET's headers, no body
    app.add_exception_handler(SIQError, _siq_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.include_router(recognize.router)
    app.include_router(system.router)
    app.include_router(oip.router)
    app.include_router(pages.router)  # the browser page at / (client/api/pages.py)
    return app


def serve_main(argv: list[str], *, epilog: str | None = None) -> int:
    """`python -m client [--host H] [--port P] [--workers N]`; exit status 2 on an unusable
    configuration. `epilog` ends --help (client/__main__.py lists its commands there)."""
    parser = argparse.ArgumentParser(
        prog="python -m client",
        description=_DESCRIPTION,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port (default 8001)")
    parser.add_argument(
        "--log-level", default="info", help="debug, info, warning or error (default info)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="server processes (default: SIQ_WORKERS, 1)"
    )
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        if args.workers is not None:
            if not 1 <= args.workers <= 64:
                raise ConfigError(f"--workers {args.workers}: must be 1..64")
            os.environ["SIQ_WORKERS"] = str(args.workers)  # the worker processes read it
        app = create_app()  # with workers: only to refuse a bad configuration here, once
    except ConfigError as exc:
        print(f"siq client: refusing to start: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    workers = app.state.settings.workers
    if workers == 1:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    else:  # each worker process builds its own app, on a socket of its own
        del app
        return serve_workers(workers, args.host, args.port, args.log_level)
    return 0
