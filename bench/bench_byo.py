"""`python -m bench.bench_byo`: bring your own network (issue 26). A ResNet-style network is
trained on office10 with plain PyTorch code (bench/byo_nets.py: no SIQ module), exported to
ONNX with torch.onnx.export, read by the server's importer exactly as POST /networks reads an
upload, and quantised by SIQ at W4A5 (no fine-tuning: `--finetune-epochs` adds some). Writes
bench/results/byo.json and byo.md: float accuracy (PyTorch's, and the imported network's in
SIQ), integer accuracy by the engine the client runs, the drop, the times and the sizes.

    python -m bench.bench_byo                                    # the full run (idle machine)
    python -m bench.bench_byo --epochs 0.5 --train-limit 60 --max-iterations 1 --out /tmp/byo
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from bench.byo_nets import TinyResNet, accuracy, to_onnx, train_plain
from server.data import load_dataset
from server.networks import encode_network, import_onnx
from server.params import JobParams
from server.training.imported import run_network_pipeline

RESULTS = Path(__file__).resolve().parent / "results"
WIDTHS = (32, 64, 128, 256)  # the full run's network: a stem and a basic block per width


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=os.environ.get("SIQ_DATA_DIR"))
    p.add_argument("--dataset", default="office10")
    p.add_argument("--epochs", type=float, default=60, help="plain PyTorch training epochs")
    p.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    p.add_argument("--finetune-epochs", type=float, default=0)
    p.add_argument("--weight-bits", type=int, default=4)
    p.add_argument("--activation-bits", type=int, default=5)
    p.add_argument("--max-iterations", type=int, default=5)
    p.add_argument("--retrain-epochs", type=float, default=None)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for byo.json / byo.md")
    args = p.parse_args(argv)
    if args.data_dir is None:
        p.error("--data-dir or SIQ_DATA_DIR: where office10/ is")

    ds = load_dataset(args.dataset, Path(args.data_dir), train_limit=args.train_limit)
    torch.manual_seed(args.seed)
    model = TinyResNet(ds.num_classes, tuple(args.widths), ds.input_shape[0])
    started = time.perf_counter()
    train_plain(model, ds.train_x, ds.train_y, epochs=args.epochs, seed=args.seed)
    train_s = time.perf_counter() - started
    torch_accuracy = accuracy(model, ds.test_x, ds.test_y)
    onnx_bytes = to_onnx(model, ds.input_shape)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.onnx"
        path.write_bytes(onnx_bytes)
        network = encode_network(import_onnx(path, max_nodes=100_000), {})
        config = JobParams(
            dataset=args.dataset,
            network="byo",
            weight_bits=args.weight_bits,
            activation_bits=args.activation_bits,
            epochs=args.finetune_epochs,
            max_iterations=args.max_iterations,
            retrain_epochs=args.retrain_epochs,
            train_limit=args.train_limit,
            seed=args.seed,
        )
        started = time.perf_counter()
        result = run_network_pipeline(config, Path(args.data_dir), Path(tmp), network)
        quantise_s = time.perf_counter() - started

    record = {
        "dataset": args.dataset,
        "widths": args.widths,
        "train_epochs": args.epochs,
        "finetune_epochs": args.finetune_epochs,
        "weight_bits": args.weight_bits,
        "activation_bits": args.activation_bits,
        "torch_float_accuracy": torch_accuracy,
        "float_accuracy": result.float_accuracy,  # the imported network, in SIQ
        "quantized_accuracy": result.quantized_accuracy,
        "drop_points": 100 * (result.float_accuracy - result.quantized_accuracy),
        "train_seconds": round(train_s, 1),
        "quantize_seconds": round(quantise_s, 1),
        "onnx_bytes": len(onnx_bytes),
        "float_bytes": result.float_bytes,
        "bundle_bytes": result.bundle_bytes,
        "iterations": len(result.iterations),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": " ".join(
            ["python -m bench.bench_byo", *(sys.argv[1:] if argv is None else argv)]
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "byo.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "byo.md").write_text(report(record))
    print(json.dumps(record))
    return 0


def report(r: dict) -> str:
    pct = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    return f"""# Bring your own network: a PyTorch ResNet on {r["dataset"]}, quantised by SIQ

A ResNet-style network (widths {r["widths"]}) trained for {r["train_epochs"]} epochs with plain
PyTorch code (bench/byo_nets.py), exported with torch.onnx.export, read by the importer of
POST /networks and quantised by SIQ at W{r["weight_bits"]}A{r["activation_bits"]}
({r["finetune_epochs"]} fine-tuning epochs, {r["iterations"]} SIQ iterations). Integer accuracy
is the engine's, the code the client runs. `{r["command"]}`, {r["date"]}, {r["machine"]}.

| | |
|---|---|
| float accuracy (PyTorch) | {pct(r["torch_float_accuracy"])} |
| float accuracy (imported, in SIQ) | {pct(r["float_accuracy"])} |
| integer accuracy W{r["weight_bits"]}A{r["activation_bits"]} | {pct(r["quantized_accuracy"])} |
| drop | {r["drop_points"]:.2f} points |
| training (PyTorch) | {r["train_seconds"]} s |
| quantisation (SIQ, export, evaluation) | {r["quantize_seconds"]} s |
| ONNX model | {r["onnx_bytes"]:,} bytes |
| float32 parameters | {r["float_bytes"]:,} bytes |
| bundle | {r["bundle_bytes"]:,} bytes |
"""


if __name__ == "__main__":
    raise SystemExit(main())
