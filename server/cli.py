"""`python -m server quantize ...`: the pipeline once, without HTTP.

Progress goes to stderr; the last line on stdout is one JSON object of results (float_accuracy,
quantized_accuracy, bundle_path, bundle_bytes, float_bytes, iterations, seconds, ...).
`--network FILE.onnx` quantises a float ONNX model instead of training a network family, and
`--dataset` may be an image folder's path. Exit status 0 on success, 2 on a bad parameter,
data set or network, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import typing
from pathlib import Path
from typing import Any

from server.params import JobParams
from server.progress import ProgressEvent, ProgressFn, Throttle
from shared.errors import SIQError

__all__ = ["build_parser", "quantize_main"]


def _flag_type(annotation: Any) -> Any:
    """int / float / str for a field's annotation (Optional and Literal unwrapped); a
    `name=value,...` parser for a mapping such as bits_per_layer."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return type(args[0])
    if typing.get_origin(annotation) is dict:
        return _mapping(_flag_type(args[1]))
    if args:
        return _flag_type(args[0])
    return annotation


def _mapping(value_type: type) -> Any:
    def parse(text: str) -> dict[str, Any]:
        try:
            pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
            return {k.strip(): value_type(v) for k, v in pairs}
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected name=value,... with {value_type.__name__} values, got {text!r}"
            ) from None

    parse.__name__ = "name=value list"
    return parse


def build_parser() -> argparse.ArgumentParser:
    """One flag per job parameter (`--weight-bits` for `weight_bits`, with its help), then
    the CLI's own. Values are checked by the parameter model, not by argparse, so a bad one
    is the same ConfigError an HTTP caller would see as a 422."""
    p = argparse.ArgumentParser(
        prog="python -m server quantize",
        description="Train, quantise with SIQ and write a bundle; prints one JSON line.",
    )
    for name, info in JobParams.model_fields.items():
        if name == "network":  # a file here, not a name on a server: --network below
            continue
        help_text = info.description or ""
        annotation = info.annotation
        if not info.is_required() and info.default is not None:
            help_text += f" (default {info.default})"
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_flag_type(annotation),
            required=info.is_required(),
            default=None,
            help=help_text,
        )
    p.add_argument(
        "--network",
        type=Path,
        default=None,
        help="a float ONNX model to quantise instead of training a family (--epochs then "
        "fine-tunes it, default 0); its input must be the data set's images",
    )
    p.add_argument("--out", required=True, type=Path, help="directory for <id>.siq")
    p.add_argument(
        "--data-dir", type=Path, default=None, help="data directory (default: $SIQ_DATA_DIR)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def _printer(started: float) -> ProgressFn:
    throttle = Throttle(2.0)

    def progress(event: ProgressEvent) -> None:
        if not throttle.passes(event):
            return
        now = time.monotonic()
        it = event.get("iteration")
        line = f"[{now - started:7.1f}s {event['fraction'] * 100:5.1f}%] {event['stage']}: "
        line += event["message"]
        if it is not None:
            change = it.get("codebook_change")
            line += (
                f" | val after k-means {it['accuracy_after_kmeans']:.4f}, after retraining "
                f"{it['accuracy_after_retrain']:.4f}, codebook change "
                + ("-" if change is None else f"{change:.4f}")
            )
        print(line, file=sys.stderr, flush=True)

    return progress


def _network(path: Path, values: dict[str, Any]) -> tuple[JobParams, bytes]:
    """The job's parameters and the stored form of the ONNX model at `path` (checked as
    POST /networks checks an upload, without its size limits)."""
    from server.networks import NetworkError, encode_network, import_onnx

    if not path.is_file():
        raise NetworkError(f"--network {path}: no such file")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).lstrip("._-")[:64] or "network"
    config = JobParams.from_dict({**values, "network": name})
    return config, encode_network(import_onnx(path, max_nodes=1_000_000), {})


def quantize_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    data_dir = args.data_dir
    if data_dir is None and os.environ.get("SIQ_DATA_DIR"):
        data_dir = Path(os.environ["SIQ_DATA_DIR"])
    try:
        import torch

        from server.training.imported import run_network_pipeline
        from server.training.pipeline import run_pipeline

        if args.threads:
            torch.set_num_threads(args.threads)
        folder = Path(args.dataset)  # a data set's name, or an image folder's path
        named = folder.name == args.dataset and data_dir is not None
        if folder.is_dir() and not (named and (data_dir / args.dataset).is_dir()):
            data_dir, args.dataset = folder.resolve().parent, folder.resolve().name
        values = {k: getattr(args, k) for k in JobParams.model_fields if k != "network"}
        progress = _printer(time.monotonic())
        if args.network is None:
            config = JobParams.from_dict(values)
            result = run_pipeline(config, data_dir, args.out, progress=progress)
        else:
            config, network = _network(args.network, values)
            result = run_network_pipeline(config, data_dir, args.out, network, progress=progress)
    except SIQError as exc:
        print(f"error ({exc.code}): {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    d = result.to_dict()
    keys = [
        "float_accuracy",
        "quantized_accuracy",
        "bundle_path",
        "bundle_bytes",
        "float_bytes",
        "iterations",
        "seconds",
        "float_seconds",
        "siq_seconds",
        "bundle_id",
        "converged",
    ]
    out = {k: d[k] for k in keys} | {k: v for k, v in d.items() if k not in keys}
    print(json.dumps(out), flush=True)
    return 0
