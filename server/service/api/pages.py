"""The server's dashboard at `/` (files in server/static/, served by shared.api.pages): jobs with
live progress, a submit form, a job's SIQ iterations plotted, and the bundles with an
accuracy-against-size chart. The page only calls this server's own API; it asks for the
token when a request answers 401 and keeps it in the tab's sessionStorage."""

from __future__ import annotations

from pathlib import Path

from shared.api import pages_router

__all__ = ["STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
router = pages_router(STATIC_DIR)
