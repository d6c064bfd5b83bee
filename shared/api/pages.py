"""Serve a folder of static browser pages from a FastAPI app: `/` is the folder's index.html,
`/static/<name>` its other files. Both services use it for their pages (client/static/,
server/static/); there is no build step, the files are served as they are in the repository.

Only files that exist when the router is made, with a known type, are served, by exact name:
no path in a request ever reaches the file system. The Content-Security-Policy keeps the
pages to their own origin (nothing is fetched from outside at run time, by construction).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response

__all__ = ["MEDIA_TYPES", "PAGE_HEADERS", "pages_router"]

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
PAGE_HEADERS = {
    # blob: and data: for the preview of a photo the user chose (an object URL)
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # the files change with the code, not with the bundle: revalidate, never serve stale
    "Cache-Control": "no-cache",
}


def pages_router(directory: Path) -> APIRouter:
    """GET / (index.html) and GET /static/{name} for the files of `directory`."""
    directory = Path(directory)
    index = directory / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"{index} is missing: the page's files were not installed")
    files = {
        p.name: p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_TYPES
    }
    router = APIRouter(include_in_schema=False)

    def serve(path: Path) -> Response:
        return FileResponse(
            path, media_type=MEDIA_TYPES[path.suffix.lower()], headers=dict(PAGE_HEADERS)
        )

    @router.get("/")
    def page() -> Response:
        return serve(index)

    @router.get("/static/{name}")
    def static_file(name: str) -> Response:
        path = files.get(name)
        if path is None:
            message = f"no static file {name!r} (there are: {', '.join(sorted(files))})"
            return JSONResponse({"error": {"code": "not_found", "message": message}}, 404)
        return serve(path)

    return router
