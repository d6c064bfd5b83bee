"""The service a user would write in thirty lines to recognise digits: FastAPI, Pillow and
ONNX Runtime int8 of the same network, one uvicorn worker. bench_http measures /recognize
against it.

    python -m bench.peer_service --model INT8.onnx --bundle FILE.siq [--host H] [--port P]

The model is the static int8 QDQ model ONNX Runtime's own quantiser makes from the network's
float weights (bench/peers.py `quantize_qdq`): what a user who trained the network would have.
Preprocessing is the bundle manifest's recipe through shared.image, so that both services
answer the same labels; a user would write their own few lines of it. One thread for ONNX
Runtime, as suits batch 1. `POST /recognize` takes a multipart `file` and answers its label.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import onnxruntime as ort
from fastapi import FastAPI, UploadFile
from PIL import Image

from shared.bundle import decode_bundle
from shared.image import preprocess

__all__ = ["make_app", "main"]


def make_app(model: Path, bundle: Path) -> FastAPI:
    spec = decode_bundle(bundle.read_bytes()).manifest["input"]["preprocess"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    app = FastAPI(title="thirty-line recognition service")

    @app.post("/recognize")
    async def recognize(file: UploadFile) -> dict:
        image = Image.open(io.BytesIO(await file.read()))
        logits = session.run(None, {name: preprocess(image, spec)[None]})[0]
        return {"label": int(logits[0].argmax())}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_service")
    parser.add_argument("--model", type=Path, required=True, help="the int8 ONNX model")
    parser.add_argument("--bundle", type=Path, required=True, help="for its preprocessing")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    import uvicorn

    app = make_app(args.model, args.bundle)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
