"""Compression benchmark (issue 13): MNIST accuracy against bundle bytes with pruning,
per-layer bits under a byte budget and version-2 (entropy-coded, sparse) bundles.
Writes bench/results/compression.json, and compression.md and compression_pareto.png
(bench/compression_report.py).

    python -m bench.bench_compression                        # everything below
    python -m bench.bench_compression --budgets 22482 --no-baselines   # only the headline

One float LeNet is trained once; every point is quantised from it with `quantize_model`, so
a point's "job seconds" is that float training plus its own SIQ, export and evaluation (what
`python -m server quantize` would take). SIQ runs the job's defaults: at most 5 iterations
of the MNIST recipe's 1.0 retraining epochs (`--max-iterations 5 --retrain-epochs 1.0`;
pruning ramps over the first 3); the dense baselines 2 iterations of 0.5 epochs
(`--baseline-retrain-epochs`). Points:
- budgets: `size_budget_bytes` of 1/50 and 1/80 of the float32 parameter bytes (the issue's
  target and stretch) and 10/20/40/80 KB, weight_bits 4 (the widest a layer may get), A4;
- baselines: every layer at W2/W3/W4 without pruning, k-means (SIQ) and the uniform grid,
  stored as version 2 (their version-1 size is listed too);
- Deep Compression's published LeNet-5 point (Han et al. 2016, table 1: 39x, 0.74 % error,
  float activations), plotted by its compression ratio since it is another network.
It also measures the coder on the headline bundle's layers: canonical Huffman (what the
bundle uses) against order-0 entropy and, when installed, constriction's ANS coder; the
relative-index layout against a Huffman-coded bitmap; and the bundle's decode time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.compression_report import KB, RATIO_STRETCH, RATIO_TARGET, plot, render
from bench.report import default_data_dir, run_environment, utc_now
from server.data import load_dataset
from server.params import JobParams
from server.training.pipeline import quantize_model, train_float
from shared.bundle import decode_bundle, encode_bundle, entropy
from shared.bundle import v2 as bundle_v2
from shared.bundle.bitpack import unpack_codes
from shared.network import weight_shape

__all__ = ["main", "coder_comparison", "layout_comparison"]

RESULTS = Path(__file__).resolve().parent / "results"
JOB_FILE = "compression_job.json"  # --time-job's measurement, read by --render-only


def _ints(s: str) -> list[int]:
    return [] if s == "none" else [int(v) for v in s.split(",") if v]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.bench_compression", description=__doc__)
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument(
        "--budgets",
        type=_ints,
        default=None,
        help="bytes, or none (default: 1/50, 1/80, 10/20/40/80 KB)",
    )
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--max-iterations", type=int, default=5, help="the job default")
    p.add_argument("--retrain-epochs", type=float, default=1.0, help="per SIQ iteration")
    p.add_argument("--baseline-retrain-epochs", type=float, default=0.5)
    p.add_argument("--baseline-iterations", type=int, default=2)
    p.add_argument("--baseline-bits", type=_ints, default=[2, 3, 4])
    p.add_argument("--baseline-quantizers", default="kmeans,uniform")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--float-cache",
        type=Path,
        default=None,
        help="reuse the float model (and its measured training time) saved here, or save it",
    )
    p.add_argument(
        "--time-job",
        type=int,
        default=None,
        metavar="BUDGET",
        help="only time the whole job (`python -m server quantize`, float training included) "
        f"at this budget, into --out's {JOB_FILE} (--render-only shows it); run it under the "
        "quiet lock",
    )
    p.add_argument(
        "--job-timeout", type=float, default=840.0, help="--time-job: stop the job after this"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json")
    p.add_argument(
        "--variants",
        type=Path,
        nargs="*",
        default=None,
        help="with --render-only: bench/compression_variants.py's exp_NAME.json files, "
        "shown as the 1/50 variants",
    )
    p.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=None,
        help="with --render-only: the results of runs split across processes (same float "
        "model, --float-cache), combined into --out",
    )
    return p


def _log(msg: str) -> None:
    print(f"[bench_compression {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _point(r: Any, kind: str, bundle: bytes, **extra: Any) -> dict[str, Any]:
    d = r.to_dict()
    d.pop("bundle_path", None)
    d.update(kind=kind, ratio=d["float_bytes"] / d["bundle_bytes"], **extra)
    b = decode_bundle(bundle)
    d["v1_bytes"] = len(_as_v1(b))
    return d


def _as_v1(bundle: Any) -> bytes:
    """The same network written as format version 1 (no `storage` entry)."""
    manifest = {k: v for k, v in bundle.manifest.items() if k != "storage"}
    return encode_bundle(dict(manifest, format_version=1), bundle.tensors)


def _huffman_bits(symbols: np.ndarray, alphabet: int) -> int:
    lengths = entropy.code_lengths(np.bincount(symbols, minlength=alphabet))
    return entropy.encoded_bits(symbols, lengths) + 4 * alphabet  # + the length table


def _entropy_bits(symbols: np.ndarray, alphabet: int) -> float:
    p = np.bincount(symbols, minlength=alphabet) / max(1, len(symbols))
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum() * len(symbols))


def _layer_codes(bundle: Any) -> dict[str, tuple[np.ndarray, int, dict]]:
    out = {}
    for layer in bundle.manifest["graph"]:
        if layer["op"] in ("conv2d", "linear"):
            name, bits = layer["name"], layer["weight_bits"]
            count = int(np.prod(weight_shape(layer)))
            codes = unpack_codes(bundle.tensors[f"{name}.codes"], bits, count).astype(np.int64)
            out[name] = (codes, bits, bundle.manifest["storage"][name])
    return out


def layout_comparison(bundle: Any) -> list[dict[str, Any]]:
    """Bytes of each sparse layer's positions: relative indices (the chosen width) against a
    bitmap of the layer whose bytes are Huffman coded (256 symbols)."""
    rows = []
    for name, (codes, _bits, entry) in _layer_codes(bundle).items():
        if entry["layout"] != "sparse":
            continue
        gaps, _ = bundle_v2.sparse_symbols(codes, entry["fill"], entry["index_bits"])
        bitmap = np.packbits(codes != entry["fill"]).astype(np.int64)
        best_bitmap = min(_huffman_bits(bitmap, 256), 8 * len(bitmap))
        rows.append(
            {
                "layer": name,
                "weights": int(codes.size),
                "stored": int((codes != entry["fill"]).sum()),
                "index_bits": entry["index_bits"],
                "relative_index_bytes": _huffman_bits(gaps, 1 << entry["index_bits"]) / 8,
                "bitmap_bytes": best_bitmap / 8,
                "bitmap_raw_bytes": len(bitmap),
            }
        )
    return rows


def coder_comparison(bundle: Any) -> dict[str, Any]:
    """Size of every entropy-coded stream of the bundle under Huffman, order-0 entropy and
    (if installed) constriction's ANS coder; decode time of each."""
    streams = []  # (symbols, alphabet)
    for name, (codes, bits, entry) in _layer_codes(bundle).items():
        k = 1 << bits
        if entry["layout"] == "sparse":
            gaps, stored = bundle_v2.sparse_symbols(codes, entry["fill"], entry["index_bits"])
            streams += [(gaps, 1 << entry["index_bits"]), (stored, k)]
        elif entry["layout"] == "block":  # the kept rows x kept columns
            rows = len(bundle.tensors[f"{name}.bias"])
            keep_r, keep_c = bundle_v2.block_masks(codes, rows, entry["fill"])
            streams.append((codes.reshape(rows, -1)[np.ix_(keep_r, keep_c)].ravel(), k))
        else:
            streams.append((codes, k))
    out: dict[str, Any] = {
        "symbols": int(sum(len(s) for s, _ in streams)),
        "huffman_bytes": sum(_huffman_bits(s, k) for s, k in streams) / 8,
        "entropy_bytes": sum(_entropy_bits(s, k) for s, k in streams) / 8,
    }
    encoded = []
    for s, k in streams:
        lengths = entropy.code_lengths(np.bincount(s, minlength=k))
        encoded.append((entropy.encode_symbols(s, lengths), lengths, len(s)))
    out["huffman_decode_ms"] = _median_ms(
        lambda: [entropy.decode_symbols(e, lengths, n) for e, lengths, n in encoded]
    )
    try:
        import constriction
    except ImportError:
        out["constriction"] = None
        return out
    coded = []
    for s, k in streams:
        counts = np.bincount(s, minlength=k).astype(np.float64)
        model = constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(s.astype(np.int32), model)
        coded.append((coder.get_compressed(), model, len(s), k))

    def ans_decode() -> None:
        for data, model, n, _ in coded:
            constriction.stream.stack.AnsCoder(data).decode(model, n)

    out["constriction"] = {
        "version": metadata.version("constriction"),
        # + the model: each stream's probabilities, 16 bits per symbol as a writer would store
        "ans_bytes": sum(int(d.nbytes) + 2 * k for d, _, _, k in coded),
        "decode_ms": _median_ms(ans_decode),
    }
    return out


def _median_ms(fn: Any, rounds: int = 7) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def run(args: argparse.Namespace, save: Any = lambda out: None) -> dict[str, Any]:
    """All points; `save(out)` after each one, so a long run leaves its results so far."""
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    ds = load_dataset("mnist", args.data_dir)
    base = JobParams(dataset="mnist", weight_bits=4, activation_bits=4)
    if args.float_cache is not None and args.float_cache.exists():
        fm = torch.load(args.float_cache, weights_only=False)
        _log(f"float model from {args.float_cache} (trained in {fm.seconds:.1f}s)")
    else:
        _log(f"float training ({len(ds.train_y)} train, {len(ds.test_y)} test images)")
        fm = train_float(ds, base)
        if args.float_cache is not None:
            torch.save(fm, args.float_cache)
    _log(f"float accuracy {fm.float_accuracy:.4f}, trained in {fm.seconds:.1f}s")
    from server.training.models import float_param_bytes

    float_bytes = float_param_bytes(fm.model)
    budgets = (
        args.budgets
        if args.budgets is not None
        else [
            float_bytes // RATIO_TARGET,
            float_bytes // RATIO_STRETCH,
            10 * KB,
            20 * KB,
            40 * KB,
            80 * KB,
        ]
    )
    out: dict[str, Any] = {
        "float_accuracy": fm.float_accuracy,
        "float_seconds": fm.seconds,
        "float_bytes": float_bytes,
        "test_images": len(ds.test_y),
        "points": [],
        "siq": {
            "max_iterations": args.max_iterations,
            "retrain_epochs": args.retrain_epochs,
            "baseline_iterations": args.baseline_iterations,
            "baseline_retrain_epochs": args.baseline_retrain_epochs,
        },
    }
    for budget in budgets:
        cfg = base.model_copy(
            update={
                "size_budget_bytes": budget,
                "max_iterations": args.max_iterations,
                "retrain_epochs": args.retrain_epochs,
            }
        )
        r, data = _quantize(fm, ds, cfg)
        siq = {"max_iterations": args.max_iterations, "retrain_epochs": args.retrain_epochs}
        out["points"].append(_point(r, "budget", data, budget=budget, siq=siq))
        _log(f"budget {budget}: {r.quantized_accuracy:.4f}, {r.bundle_bytes} B, {r.seconds:.0f}s")
        out["seconds"] = time.perf_counter() - started
        if budget == float_bytes // RATIO_TARGET:
            bundle = decode_bundle(data)
            out["layouts"] = layout_comparison(bundle)
            out["coder"] = coder_comparison(bundle)
            out["decode_ms"] = {
                "v2": _median_ms(lambda data=data: decode_bundle(data)),
                "v1_same_network": _median_ms(lambda v1=_as_v1(bundle): decode_bundle(v1)),
                "timed": "decode_bundle only",
            }
        save(out)
    if not args.no_baselines:
        for quantizer in args.baseline_quantizers.split(","):
            for bits in args.baseline_bits:
                cfg = base.model_copy(
                    update={
                        "weight_bits": bits,
                        "weight_quantizer": quantizer,
                        "max_iterations": args.baseline_iterations,
                        "retrain_epochs": args.baseline_retrain_epochs,
                    }
                )
                r, data = _quantize(fm, ds, cfg)
                siq = {
                    "max_iterations": args.baseline_iterations,
                    "retrain_epochs": args.baseline_retrain_epochs,
                }
                out["points"].append(_point(r, quantizer, data, siq=siq))
                _log(f"{quantizer} W{bits}: {r.quantized_accuracy:.4f}, {r.bundle_bytes} B")
                out["seconds"] = time.perf_counter() - started
                save(out)
    out["seconds"] = time.perf_counter() - started
    return out


def time_job(args: argparse.Namespace) -> dict[str, Any]:
    """The job as a user runs it, in its own process: the CLI's JSON line and wall time."""
    import subprocess
    import tempfile

    flags = [
        "--dataset", "mnist", "--weight-bits", "4", "--activation-bits", "4",
        "--size-budget-bytes", str(args.time_job), "--max-iterations", str(args.max_iterations),
        "--retrain-epochs", str(args.retrain_epochs), "--threads", str(args.threads),
        "--data-dir", str(args.data_dir),
    ]  # fmt: skip
    command = "python -m server quantize " + " ".join(flags) + " --out DIR"
    info: dict[str, Any] = {
        "command": command,
        "budget": args.time_job,
        "when": utc_now(),
        "load_average_before": list(os.getloadavg()),
        "note": os.environ.get("SIQ_BENCH_NOTE", ""),
    }
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "server", "quantize", *flags, "--out", tmp],
                capture_output=True,
                text=True,
                check=True,
                timeout=args.job_timeout,
            )
        except subprocess.TimeoutExpired as exc:  # longer than the lock may be held
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
            return info | {
                "timed_out": True,
                "wall_seconds": time.perf_counter() - started,
                "last_progress": err.strip().splitlines()[-1:],
                "load_average_after": list(os.getloadavg()),
            }
        wall = time.perf_counter() - started
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    keep = ("quantized_accuracy", "bundle_bytes", "seconds", "float_seconds", "siq_seconds")
    return (
        info
        | {k: result[k] for k in keep}
        | {
            "wall_seconds": wall,
            "load_average_after": list(os.getloadavg()),
        }
    )


def _quantize(fm: Any, ds: Any, cfg: JobParams) -> tuple[Any, bytes]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        r = quantize_model(fm, ds, cfg, Path(tmp))
        return r, Path(str(r.bundle_path)).read_bytes()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    command = "python -m bench.bench_compression" + (
        " " + " ".join(sys.argv[1:] if argv is None else argv)
        if (sys.argv[1:] if argv is None else argv)
        else ""
    )
    if args.time_job is not None:  # its own file: the points' runs do not overwrite it
        job = time_job(args)
        _log(f"job: {job}")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / JOB_FILE).write_text(json.dumps(job, indent=1, default=float))
        return 0
    if args.render_only:
        sources = args.merge or [args.out / "compression.json"]
        res = _merged([json.loads(Path(p).read_text()) for p in sources])
        if args.variants:
            res["variants"] = {
                Path(v).stem.removeprefix("exp_"): json.loads(Path(v).read_text())
                for v in args.variants
            }
            (args.out / "compression.json").write_text(json.dumps(res, indent=1, default=float))
        if (args.out / JOB_FILE).exists():
            res["job_timing"] = json.loads((args.out / JOB_FILE).read_text())
        if args.merge:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "compression.json").write_text(json.dumps(res, indent=1, default=float))
        _write(res, args.out, res.get("command", command))
        return 0

    def save(res: dict[str, Any]) -> None:
        res["environment"] = run_environment(args.threads)
        res["command"] = command
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compression.json").write_text(json.dumps(res, indent=1, default=float))
        _write(res, args.out, command)

    save(run(args, save))
    _log(f"wrote {args.out / 'compression.md'}")
    return 0


def _write(res: dict[str, Any], out: Path, command: str) -> None:
    (out / "compression.md").write_text(render(res, command))
    plot(res, out / "compression_pareto.png")


def _merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from runs split across processes: the first's header, every point, the
    coder measurements from whichever made them; the wall time of the longest."""
    res = dict(parts[0])
    res["points"] = [p for part in parts for p in part["points"]]
    for key in ("layouts", "coder", "decode_ms"):
        res[key] = next((part[key] for part in parts if key in part), None)
    res["seconds"] = max(part.get("seconds", 0.0) for part in parts)
    res["processes"] = sum(part.get("processes", 1) for part in parts)  # a merged one: its own
    note = os.environ.get("SIQ_BENCH_NOTE")
    if note:  # said at render time, e.g. that some of the runs did not finish
        res["environment"] = dict(res.get("environment", {}), note=note)
    if len(parts) > 1:
        res["command"] = " ; ".join(part.get("command", "") for part in parts)
    return res


if __name__ == "__main__":
    sys.exit(main())
