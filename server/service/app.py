"""The training server: `create_app(settings)` builds the FastAPI app, `serve_main(argv)` runs
it (`python -m server [--host H] [--port P]`).

The app's lifespan owns the job runner: it takes an exclusive lock on the state directory (one
server per state directory), fails jobs a dead server left `running`, registers bundle files
it does not know yet, starts the runner, and on shutdown stops the worker processes.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

from fastapi import FastAPI

from server.data import dataset_names
from server.service.api import bundles, datasets, jobs, networks, onchip, pages, sweeps, system
from server.service.api.deps import ServerContext
from server.service.api.errors import install_error_handlers
from server.service.bundles import BundleStore
from server.service.datasets import DatasetStore
from server.service.executor import make_runner
from server.service.guard import BodyBound, Guard
from server.service.jobs import JobStore
from server.service.metrics import ServerMetrics
from server.service.networks import NetworkStore
from server.service.openapi import install_openapi
from server.service.settings import ServerSettings, load_settings, prepare_state_dir
from server.service.sweeps import SweepCoordinator, SweepStore
from shared.errors import ConfigError

__all__ = ["create_app", "serve_main"]

log = logging.getLogger("server")

DESCRIPTION = """Trains a CNN, quantises its weights with supervised iterative quantization
(per-layer k-means + retraining) and publishes integer-only bundles for the SIQ client.

Writes need `Authorization: Bearer <SIQ_API_TOKEN>` when the server has a token.
Every error answers `{"error": {"code", "message", "field"}}`."""


def _lock_state_dir(settings: ServerSettings) -> IO[str]:
    lock = open(settings.state_dir / "server.lock", "a+")  # noqa: SIM115 - held for the lifespan
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ConfigError(
            f"another server is using SIQ_STATE_DIR={settings.state_dir}; "
            "stop it or give this one its own state directory"
        ) from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _hold_open(db_path: Path) -> sqlite3.Connection:
    """A connection held for the server's life, so the database's WAL and shared-memory
    files stay in place between requests: SQLite removes them when its last connection
    closes, and a reader that must create them again cannot on a full disk. Held open,
    reads keep working with no space left; writes answer 507 (api/errors.py)."""
    conn = sqlite3.connect(db_path, check_same_thread=False)
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # maps the WAL index
    return conn


def create_app(
    settings: ServerSettings | None = None, *, state_lock: IO[str] | None = None
) -> FastAPI:
    """The app; ConfigError when the settings cannot work (checked now, not at first use).
    `state_lock`: the state directory's lock, already taken (serve_main takes it before
    uvicorn starts, so a second server is one clear line, not a lifespan traceback)."""
    settings = settings or load_settings()
    prepare_state_dir(settings)
    store = JobStore(settings.db_path)
    bundle_store = BundleStore(settings.db_path, settings.bundle_dir)
    try:
        store.init_schema()
        bundle_store.init_schema()
        store.ping()
    except sqlite3.Error as exc:
        raise ConfigError(
            f"{settings.db_path} is not a usable SQLite database ({exc}); move it away (a new "
            "one is made) or restore a backup"
        ) from None
    metrics = ServerMetrics(store)
    runner = make_runner(settings, store, bundle_store, metrics.job_ended)
    sweep_store = SweepStore(settings.db_path, store, settings.checkpoint_dir)
    sweep_store.init_schema()
    coordinator = SweepCoordinator(sweep_store, runner.wake, settings.poll_interval_s)
    dataset_store = DatasetStore(settings)
    network_store = NetworkStore(settings)
    ctx = ServerContext(
        settings, store, bundle_store, runner, metrics, sweep_store, dataset_store, network_store
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lock = state_lock or _lock_state_dir(settings)
        keeper = _hold_open(settings.db_path)
        try:
            dataset_store.clean()
            network_store.clean()
            added = bundle_store.scan(settings.publish_rule)
            if added:
                log.info("registered %d bundle file(s) found in %s", added, settings.bundle_dir)
            runner.start()
            coordinator.start()
            try:
                yield
            finally:
                coordinator.stop()
                runner.stop()
        finally:
            keeper.close()
            lock.close()

    app = FastAPI(
        title="SIQ training server",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    # security declared as this server checks it; the data sets it has at each request
    install_openapi(
        app,
        settings,
        lambda: dataset_names(settings.data_dir, settings.uploads_dir),
        lambda: [n["name"] for n in network_store.listing()],
    )
    install_error_handlers(app)
    app.middleware("http")(metrics.middleware)
    # outermost: refuses a bad token or an oversized body before anything reads the body
    app.add_middleware(
        Guard,
        token=settings.api_token,
        protect_reads=settings.protect_reads,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        large_bodies={
            ("POST", datasets.UPLOAD_PATH): BodyBound(
                settings.dataset_max_upload_bytes,
                settings.dataset_upload_timeout_s,
                "SIQ_DATASET_MAX_UPLOAD_BYTES",
                "SIQ_DATASET_UPLOAD_TIMEOUT_S",
            ),
            ("POST", networks.UPLOAD_PATH): BodyBound(
                settings.network_max_upload_bytes,
                settings.network_upload_timeout_s,
                "SIQ_NETWORK_MAX_UPLOAD_BYTES",
                "SIQ_NETWORK_UPLOAD_TIMEOUT_S",
            ),
        },
    )
    app.include_router(jobs.router)
    app.include_router(bundles.router)
    app.include_router(onchip.router)
    app.include_router(sweeps.router)
    app.include_router(system.router)
    app.include_router(datasets.router)
    app.include_router(networks.router)
    app.include_router(pages.router)  # the dashboard at / (server/service/api/pages.py)
    return app


_DESCRIPTION = textwrap.fill(
    "The SIQ training server: trains networks on a data set and quantises them with supervised "
    "iterative quantization (POST /quantize-jobs), keeps the bundles it wrote (GET /bundles) "
    "and shows both on a dashboard at /. Without a command, it starts serving.",
    width=80,
)


def serve_main(argv: list[str] | None = None, *, epilog: str | None = None) -> int:
    """`python -m server [--host H] [--port P]`; exit 2 with a message on a bad configuration.
    `epilog` ends --help (server/__main__.py lists its commands there)."""
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description=_DESCRIPTION,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="bind address (SIQ_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (SIQ_PORT, default 8000)")
    parser.add_argument(
        "--log-level", default="info", help="debug, info, warning or error (default info)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = load_settings(**overrides)
        prepare_state_dir(settings)
        lock = _lock_state_dir(settings)
        try:
            app = create_app(settings, state_lock=lock)
        except ConfigError:
            lock.close()
            raise
    except ConfigError as exc:
        print(f"siq server: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level)
    return 0
