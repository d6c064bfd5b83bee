"""The client's logging, set up once per process (`python -m client` and each worker process
that `SIQ_WORKERS` spawns)."""

from __future__ import annotations

import logging

__all__ = ["configure_logging"]


def configure_logging(level: str) -> None:
    """The client's log: its own changes of state (client.bundles), not one line per request
    that httpx makes (its INFO "HTTP Request: GET .../bundles/latest 304" on every poll);
    those show with --log-level debug."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    debugging = level.upper() == "DEBUG"
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.NOTSET if debugging else logging.WARNING)
