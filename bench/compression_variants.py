"""One budget point of the compression benchmark with other job settings, from the cached
float model (`python -m bench.bench_compression --float-cache PATH` writes it): what the
experiments behind bench/results/compression.md's 1/50 point ran (README, "Compression").

    python -m bench.compression_variants NAME '{"bits_per_layer": {"fc1": 3}}' \\
        --float-cache /tmp/comp/float.pt --out /tmp/comp

(`--siq '{"distill": 0.5, "prune_within": 0.5}'` sets SIQSettings fields the job has no
parameter for) writes OUT/exp_NAME.json: integer-engine and simulated test accuracy, bundle bytes, the
allocation and the validation accuracy per iteration (the split the allocation is chosen on).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.report import default_data_dir
from server.data import load_dataset
from server.params import JobParams
from server.training.pipeline import quantize_model

__all__ = ["main"]

_ITERATION = ("iteration", "sparsity", "accuracy_after_kmeans", "accuracy_after_retrain")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compression_variants")
    p.add_argument("name")
    p.add_argument("settings", type=json.loads, help="job fields (JSON) over the defaults")
    p.add_argument(
        "--siq",
        type=json.loads,
        default=None,
        help='SIQSettings fields over the job\'s (JSON), e.g. {"distill": 0.5, "prune_within": 0.5}',
    )
    p.add_argument("--budget", type=int, default=22482)
    p.add_argument("--float-cache", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ds = load_dataset("mnist", args.data_dir)
    fm = torch.load(args.float_cache, weights_only=False)
    cfg = JobParams(
        dataset="mnist",
        weight_bits=4,
        activation_bits=4,
        size_budget_bytes=args.budget,
        **args.settings,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        d = quantize_model(fm, ds, cfg, Path(tmp), siq_overrides=args.siq).to_dict()
    keep = ("quantized_accuracy", "simulated_accuracy", "bundle_bytes", "best_iteration")
    out = {k: d[k] for k in keep} | {
        "allocation": d["allocation"],
        "iterations": [{k: it.get(k) for k in _ITERATION} for it in d["iterations"]],
        "extra": args.settings | ({"siq": args.siq} if args.siq else {}),
        "siq_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"exp_{args.name}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
