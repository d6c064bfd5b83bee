"""The recognition client's HTTP app: thin routes over `client.manager` and `client.recognize`.

    POST /recognize   one image (`file`), several (`files`), or a raw image/* body
    GET  /bundle      what is serving: id, data set, bits, class names, loaded_at, source
    GET  /healthz     the process is up;  GET /readyz  200 only while a bundle is loaded
    GET  /metrics     Prometheus

Errors become HTTP in one place (`_error_response`, by shared.errors' mapping): every SIQError a
caller can cause is a 4xx with `{"error": {"code", "message", "field"}}`; nothing a caller sends
produces a 500.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import sys
import time
from collections.abc import AsyncIterator

import anyio
import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from client.fetcher import BundleFetcher
from client.manager import BundleManager
from client.metrics import CONTENT_TYPE_LATEST, ClientMetrics, MetricsMiddleware
from client.recognize import read_uploads, recognize
from client.settings import BundleSource, ClientSettings, load_settings
from shared.errors import ConfigError, NotReadyError, SIQError, error_body

__all__ = ["create_app", "serve_main"]

log = logging.getLogger("client")


def _error_response(exc: SIQError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=exc.http_status)


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

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # at most inference_workers requests decode and run at once, the rest wait in line:
        # more threads than cores only contend for the GIL (16 concurrent requests on 2
        # cores: 40 threads ~510 req/s and p99 60 ms, 2 threads ~630 and 30 ms, measured).
        # Made here, in the serving event loop, which an anyio limiter belongs to.
        app.state.inference = anyio.CapacityLimiter(settings.inference_workers)
        stop = asyncio.Event()
        poller = asyncio.create_task(
            manager.poll(stop, settings.poll_interval_s, settings.retry_interval_s)
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

    app = FastAPI(title="SIQ recognition client", version="0.1.0", lifespan=lifespan)
    app.state.settings, app.state.manager, app.state.metrics = settings, manager, metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(SIQError)
    async def siq_error(request: Request, exc: SIQError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        body = {"error": {"code": "internal", "message": "internal error; see the client log"}}
        return JSONResponse(body, status_code=500)

    @app.post("/recognize")
    async def recognize_route(request: Request) -> JSONResponse:
        start = time.perf_counter()
        loaded = manager.current  # this request's network, whatever swaps happen meanwhile
        if loaded is None:
            raise NotReadyError(f"no bundle is loaded yet ({source.describe()}); try again shortly")
        uploads = await read_uploads(
            request, max_bytes=settings.max_upload_bytes, max_images=settings.max_images
        )
        work = functools.partial(recognize, loaded, uploads, max_pixels=settings.max_pixels)
        # the app's limiter once the lifespan has started it, else anyio's default one
        limiter = getattr(request.app.state, "inference", None)
        answer = await anyio.to_thread.run_sync(work, limiter=limiter)
        metrics.images.inc(len(uploads))
        answer["timings_ms"]["total"] = round((time.perf_counter() - start) * 1e3, 3)
        return JSONResponse(answer)

    @app.get("/bundle")
    def bundle_route() -> JSONResponse:
        loaded = manager.current
        if loaded is None:
            raise NotReadyError(f"no bundle is loaded yet ({source.describe()})")
        return JSONResponse(loaded.describe())

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        loaded = manager.current
        if loaded is None:
            body = {"status": "not ready", "checks": {"bundle": f"none ({source.describe()})"}}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", "checks": {"bundle": loaded.bundle.id}})

    @app.get("/metrics")
    def metrics_route() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def serve_main(argv: list[str]) -> int:
    """`python -m client [--host H] [--port P]`; exit status 2 on an unusable configuration."""
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app = create_app()
    except ConfigError as exc:
        print(f"siq client: refusing to start: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
