"""The ceiling /recognize is measured against: a bare FastAPI route that only reads an uploaded
file, served by the same uvicorn the client runs (`uvicorn.run(app, ...)`, one worker process,
the same log level).

    python -m bench.bare_upload [--host H] [--port P] [--log-level warning]

`POST /recognize` (the path the load generator sends to) takes a multipart `file` field as a
FastAPI `UploadFile` and answers its size; `GET /healthz` says it is up.
"""

from __future__ import annotations

import argparse
import sys

from fastapi import FastAPI, UploadFile

__all__ = ["app", "main"]

app = FastAPI(title="bare upload route")


@app.post("/recognize")
async def upload(file: UploadFile) -> dict:
    data = await file.read()
    return {"bytes": len(data)}


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_upload")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
