"""`python scripts/gpu_check.py`: the MNIST and office10 recipes (W4A4 and W4A5), each on CUDA
and on the CPU, printing float and integer accuracy and the time of each run: for machines
that have a GPU (`device: cuda` must give the accuracy the CPU gives, faster). Without one
it says so and exits 0 after the CPU runs. The data sets are read from SIQ_DATA_DIR.

    python scripts/gpu_check.py                          # the recipes as they are
    python scripts/gpu_check.py --epochs 1 --train-limit 2000 --max-iterations 1   # quick
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

RUNS = (("mnist", 4, 4), ("office10", 4, 5))  # (data set, weight bits, activation bits)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=os.environ.get("SIQ_DATA_DIR"))
    p.add_argument("--datasets", nargs="+", default=[r[0] for r in RUNS])
    p.add_argument("--epochs", type=float, default=None, help="float epochs (recipe's)")
    p.add_argument("--max-iterations", type=int, default=None)
    p.add_argument("--train-limit", type=int, default=None)
    args = p.parse_args(argv)
    import torch

    from server.params import JobParams
    from server.training.pipeline import run_pipeline

    devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    if devices == ["cpu"]:
        print("no CUDA GPU visible to torch: CPU runs only", file=sys.stderr)
    print(f"{'data set':10} {'bits':5} {'device':6} {'float':>7} {'integer':>7} {'seconds':>8}")
    for dataset, wb, ab in RUNS:
        if dataset not in args.datasets:
            continue
        for device in devices:
            knobs = {"epochs": args.epochs, "max_iterations": args.max_iterations}
            config = JobParams.from_dict(
                {
                    "dataset": dataset,
                    "weight_bits": wb,
                    "activation_bits": ab,
                    "train_limit": args.train_limit,
                    "device": device,
                    **knobs,
                }
            )
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as out:
                r = run_pipeline(config, args.data_dir, Path(out))
            seconds = time.perf_counter() - started
            print(
                f"{dataset:10} W{wb}A{ab}  {device:6} {100 * r.float_accuracy:6.2f}% "
                f"{100 * r.quantized_accuracy:6.2f}% {seconds:8.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
