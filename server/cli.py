"""`python -m server quantize ...`: the pipeline once, without HTTP.

Progress goes to stderr; the last line on stdout is one JSON object of results (float_accuracy,
quantized_accuracy, bundle_path, bundle_bytes, float_bytes, iterations, seconds, ...).
Exit status 0 on success, 2 on a bad parameter or data set, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from shared.errors import SIQError

__all__ = ["build_parser", "quantize_main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m server quantize",
        description="Train, quantise with SIQ and write a bundle; prints one JSON line.",
    )
    p.add_argument("--dataset", required=True, help="mnist, digits or an image-folder name")
    p.add_argument("--weight-bits", type=int, default=4)
    p.add_argument("--activation-bits", type=int, default=4)
    p.add_argument("--out", required=True, type=Path, help="directory for <id>.siq")
    p.add_argument("--epochs", type=float, default=None, help="float training epochs")
    p.add_argument("--retrain-epochs", type=float, default=None, help="per SIQ iteration")
    p.add_argument("--max-iterations", type=int, default=5)
    p.add_argument(
        "--tolerance", type=float, default=0.002, help="converged: val accuracy changes less"
    )
    p.add_argument(
        "--codebook-tolerance", type=float, default=None, help="... and the codebooks change less"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kmeans", default="optimal", help="optimal (exact DP) or lloyd")
    p.add_argument("--weight-quantizer", default="kmeans", help="kmeans or uniform")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument(
        "--data-dir", type=Path, default=None, help="data directory (default: $SIQ_DATA_DIR)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def _printer(started: float):
    last: dict[str, Any] = {"stage": None, "t": 0.0}

    def progress(event: dict) -> None:
        now = time.monotonic()
        it = event.get("iteration")
        final = event["fraction"] >= 1.0
        if it is None and not final and event["stage"] == last["stage"] and now - last["t"] < 2.0:
            return
        last.update(stage=event["stage"], t=now)
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


def quantize_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    data_dir = args.data_dir
    if data_dir is None and os.environ.get("SIQ_DATA_DIR"):
        data_dir = Path(os.environ["SIQ_DATA_DIR"])
    try:
        import torch

        from server.pipeline import QuantizeConfig, run_pipeline

        if args.threads:
            torch.set_num_threads(args.threads)
        config = QuantizeConfig(
            dataset=args.dataset,
            weight_bits=args.weight_bits,
            activation_bits=args.activation_bits,
            epochs=args.epochs,
            retrain_epochs=args.retrain_epochs,
            max_iterations=args.max_iterations,
            tolerance=args.tolerance,
            codebook_tolerance=args.codebook_tolerance,
            seed=args.seed,
            kmeans=args.kmeans,
            weight_quantizer=args.weight_quantizer,
            train_limit=args.train_limit,
            test_limit=args.test_limit,
        )
        result = run_pipeline(config, data_dir, args.out, progress=_printer(time.monotonic()))
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
