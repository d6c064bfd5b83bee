"""The client's browser page at `/` (files in client/static/, served by shared.pages): draw a
digit with a mouse, pen or finger, or drop / choose a photo, and see what the bundle in use
recognises. The page only calls this client's own /bundle and /recognize."""

from __future__ import annotations

from pathlib import Path

from shared.api import pages_router

__all__ = ["STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
router = pages_router(STATIC_DIR)
