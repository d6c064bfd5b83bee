"""On-chip benchmark: SIQ bundles as generated C on Cortex-M3 / Cortex-M4 (QEMU), against the
8-bit baseline built by the same generator. Writes bench/results/onchip.md and onchip.json.

    python -m bench.bench_onchip                       # what `make bench` runs
    python -m bench.bench_onchip --render-only         # rewrite onchip.md from onchip.json
    python -m bench.bench_onchip --cmsis-nn DIR        # also against Arm's CMSIS-NN (issue 29)
    python -m bench.bench_onchip --office10-only --office10-arch mobilenet \
        --office10-float-cache F.pt --keep-bundles K --cmsis-nn DIR   # only the office10 part
    python -m bench.bench_onchip --office10-only --measure-bundles K --office10-trace
                                                       # its kept bundles again, per node
    python -m bench.bench_onchip --m0net               # the smallest chip: m0net on the M0

Trains one float LeNet on MNIST and quantises it as W4A4 / W3A4 / W2A4 (SIQ, k-means) and
W8A8 (uniform weights: the TFLite-Micro / CMSIS-NN way), plus mixed-width configs
(`--mixed-bits`, e.g. W2 with fc1 at 1 bit: smaller on the chip than W2A4, whose flash is mostly
fc1's codes); and the office10 network of `--office10-arch` (default the photo recipe's,
e.g. mobilenet: depthwise-separable blocks, global pooling) as W4A5 SIQ and as its 8-bit build
(W8A8 uniform), from one float model (`--office10-float-cache` keeps it between runs).
Per bundle: the C library is checked against shared.engine on the host (every MNIST test
image) and in QEMU (Cortex-M3 and Cortex-M4), and its flash, RAM and instructions per
inference are measured. Instruction counts come from QEMU's -icount (deterministic), so
they need no interleaved rounds; only wall-clock figures would.

With `--cmsis-nn DIR` (a CMSIS-NN source tree; never part of the product) the W4A4 bundle and
the 8-bit baseline are also compared with the same network on CMSIS-NN's int8 and int4-weight
kernels (bench/onchip_peers.py), at each project's own flags, -O2 and -Os, with estimated
cycles from an instruction trace (scripts/onchip/cycles.py) and the Cortex-M0 rows, and so
are the office10 W4A5 bundle and its 8-bit build (CMSIS-NN's depthwise, 1x1, average-pool
and add kernels; traced only with --office10-trace); without it those rows say skipped and
why. `--measure-bundles FOLDER --cmsis-nn DIR` does it for kept
bundles without training.

`--m0net` runs only the smallest chip's part (bench/onchip_m0.py: the m0net family trained,
quantised per `--m0net-bits`, generated for the least flash and measured on the Cortex-M0);
its results go into --out's onchip.json under "m0" (the other rows stay; a full run keeps
them too; a new --out starts from bench/results' onchip.json), which is then rendered.
`--render-only --m0-from RUN/onchip.json` takes such a run's results into --out's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.cmsis_peer import missing_cmsis_nn
from bench.onchip_m0 import M0_BITS, parse_bits, run_m0
from bench.onchip_peers import compare, skipped
from bench.onchip_report import render
from bench.onchip_rows import engine_logits, library_fields
from bench.report import default_data_dir, utc_now
from scripts.onchip.cycles import trace_estimate
from scripts.onchip.toolchain import (
    firmware_build,
    host_build,
    host_run,
    missing_arm_tools,
    missing_host_tools,
    qemu_run,
)
from shared.bundle import Bundle, read_bundle_file
from shared.cgen import generate_bundle_c
from shared.network import cost_report

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results"
# mixed-width MNIST configs: the chip stores every layer densely (a pruned bundle is decoded to
# dense codes), so what shrinks its flash is fewer bits in fc1, which holds 93 % of the weights
MIXED_BITS = ("W2:fc1=1", "W4:fc1=1")


def _log(msg: str) -> None:
    print(f"[bench_onchip {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.bench_onchip", description=__doc__)
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument("--epochs", type=float, default=5.0, help="MNIST float epochs")
    p.add_argument("--retrain-epochs", type=float, default=0.5)
    p.add_argument("--max-iterations", type=int, default=2)
    p.add_argument("--mnist-weight-bits", default="4,3,2", help="SIQ configs at 4-bit activations")
    p.add_argument(
        "--mixed-bits",
        action="append",
        default=None,
        help=f"a k-means config at 4-bit activations with per-layer bits, like W2:fc1=1 "
        f"(repeatable; default {' '.join(MIXED_BITS)}; --mixed-bits none for none)",
    )
    p.add_argument(
        "--office10-arch",
        default=None,
        help="the office10 network (photonet, mobilenet, resnet; default: the photo recipe's)",
    )
    p.add_argument(
        "--office10-epochs",
        type=float,
        default=15.0,
        help="office10 float epochs (a bench budget; the arch's recipe trains longer)",
    )
    p.add_argument(
        "--office10-float-cache",
        type=Path,
        default=None,
        help="the office10 float model (torch.save'd FloatModel of --office10-arch): reused "
        "when the file exists, else trained and saved there",
    )
    p.add_argument(
        "--office10-train-limit", type=int, default=None, help="office10 training photos"
    )
    p.add_argument(
        "--office10-trace",
        action="store_true",
        help="per-node instructions of the office10 builds from an instruction trace (and "
        "the office10 CMSIS-NN builds' estimated cycles): tens of millions of traced "
        "instructions each",
    )
    p.add_argument("--keep-bundles", type=Path, default=None, help="also write the bundles here")
    p.add_argument(
        "--float-cache",
        type=Path,
        default=None,
        help="the MNIST float model (server.training.pipeline.FloatModel, torch.save'd, as "
        "bench_compression --float-cache writes it): reused when the file exists, else trained "
        "and saved there; a reused model's epochs are not --epochs (the bundles' config says "
        "epochs=null)",
    )
    p.add_argument(
        "--measure-bundles",
        type=Path,
        default=None,
        help="train nothing: measure the *.siq bundles of this folder (a --keep-bundles "
        "folder); with --office10-only its office10 bundles only",
    )
    p.add_argument("--no-office10", action="store_true")
    p.add_argument(
        "--office10-only",
        action="store_true",
        help="train and measure only the office10 photonet; its row replaces the one in "
        "--out's onchip.json (the MNIST rows stay), which is then rendered",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the W8A8 8-bit baseline")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=None,
        help="with --render-only: append the MNIST rows of these onchip.json files (runs split "
        "across processes from one --float-cache model) to --out's",
    )
    p.add_argument("--m4-images", type=int, default=100, help="MNIST images run on the Cortex-M4")
    p.add_argument("--m3-images", type=int, default=20)
    p.add_argument("--office10-images", type=int, default=20, help="photos run on the M4")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--render-only", action="store_true")
    p.add_argument(
        "--cmsis-nn",
        type=Path,
        default=None,
        help="a CMSIS-NN source tree (github.com/ARM-software/CMSIS-NN): compare with its int8 "
        "and int4-weight kernels; skipped without it",
    )
    p.add_argument(
        "--cmsis-from",
        type=Path,
        default=None,
        help="with --render-only: take the CMSIS-NN comparison of this onchip.json (another "
        "run, e.g. --measure-bundles of kept bundles) into --out's, labelled with its command",
    )
    p.add_argument(
        "--cmsis-nn-commit", default=None, help="its commit, when DIR is no git checkout"
    )
    p.add_argument(
        "--peer-images", type=int, default=300, help="MNIST images for the peers' accuracy"
    )
    p.add_argument("--peer-chip-images", type=int, default=5, help="images run per peer build")
    p.add_argument(
        "--no-cycles",
        dest="cycles",
        action="store_false",
        help="no instruction traces (per-layer figures and estimated cycles take minutes)",
    )
    p.add_argument(
        "--smallest-from",
        type=Path,
        default=None,
        help="with --render-only: the onchip.json of another run (another float model) whose "
        "rows also compete, labelled, in the 'smallest bundle at 99.2 %%' section",
    )
    m0 = p.add_argument_group("the smallest chip (--m0net)")
    m0.add_argument(
        "--m0net",
        action="store_true",
        help="train m0net on MNIST, quantise, generate for the least flash and measure it on the "
        "Cortex-M0 (QEMU microbit); the result goes into --out's onchip.json",
    )
    m0.add_argument(
        "--m0net-bits",
        action="append",
        default=None,
        help=f"a config at 4-bit activations, like W4 or W4:conv3=3 (repeatable; default "
        f"{' '.join(M0_BITS)})",
    )
    m0.add_argument("--m0-epochs", type=float, default=None, help="float epochs (the recipe's)")
    m0.add_argument("--m0-retrain-epochs", type=float, default=None, help="(the recipe's)")
    m0.add_argument("--m0-max-iterations", type=int, default=3)
    m0.add_argument("--m0-images", type=int, default=10, help="MNIST images run on the M0")
    m0.add_argument(
        "--m0-from",
        type=Path,
        default=None,
        help="with --render-only: take the smallest chip's results of this onchip.json (an "
        "--m0net run's) into --out's",
    )
    m0.add_argument(
        "--m0-float-cache",
        type=Path,
        default=None,
        help="m0net's float model: reused when the file exists, else trained and saved there",
    )
    return p


def parse_mixed(spec: str) -> tuple[int, dict[str, int]]:
    """'W2:fc1=1,conv2=3' -> (2, {'fc1': 1, 'conv2': 3}): the other layers' bits, and the
    named layers' own (JobParams checks the layer names and the ranges)."""
    head, sep, rest = spec.partition(":")
    if not (head[:1] in ("W", "w") and head[1:].isdigit() and sep and rest):
        raise ValueError(f"mixed-bits config {spec!r} is not like W2:fc1=1")
    layers = {}
    for item in rest.split(","):
        name, eq, bits = item.partition("=")
        if not (name and eq and bits.isdigit()):
            raise ValueError(f"mixed-bits config {spec!r}: {item!r} is not like fc1=1")
        layers[name] = int(bits)
    return int(head[1:]), layers


def _quantizer(bundle: Bundle) -> str | None:
    layers: dict[str, dict[str, Any]] = bundle.manifest["layers"]
    return next((entry.get("weight_quantizer") for entry in layers.values()), None)


def measure(
    bundle: Bundle, images: np.ndarray, labels: np.ndarray, chips: dict[str, int], work: Path
) -> dict[str, Any]:
    """Host check on all images, QEMU runs on the first chips[cpu] images of each CPU."""
    cmodel = generate_bundle_c(bundle)
    want = engine_logits(bundle, images)
    classes = want.shape[1]
    # all 10,000 MNIST images on a shared, niced machine can take minutes (not a timing)
    host = host_run(host_build(cmodel, work / "host"), images, classes, timeout=1800)
    row: dict[str, Any] = {
        "bundle_id": bundle.id,
        "weight_bits": bundle.manifest["weight_bits"],
        "activation_bits": bundle.manifest["activation_bits"],
        "quantizer": _quantizer(bundle),
        "layer_bits": {
            layer["name"]: int(layer["weight_bits"])
            for layer in bundle.manifest["graph"]
            if "weight_bits" in layer
        },
        "engine_accuracy_manifest": bundle.manifest["metrics"].get("quantized_accuracy"),
        **library_fields(cmodel, host, want, labels),
        "cost": cost_report(bundle.manifest),
        "chips": {},
    }
    for cpu, count in chips.items():
        fw = firmware_build(cmodel, work / cpu, cpu, images[:count])
        run = qemu_run(fw, classes, timeout=600)
        lib = fw.library
        instructions = run.instructions
        row["chips"][cpu] = {
            "images": count,
            "equal": bool(np.array_equal(run.logits, want[:count])),
            "flash_bytes": lib["text"] + lib["rodata"] + lib["data"],
            "ram_bytes": lib["data"] + lib["bss"] + run.stack_bytes,
            "sections": lib,
            "stack_bytes": run.stack_bytes,
            "firmware_sections": fw.firmware,
            "instructions_median": float(np.median(instructions)),
            "instructions_min": float(np.min(instructions)),
            "instructions_max": float(np.max(instructions)),
            "instructions_per_mac": float(np.median(instructions)) / row["macs"],
            "qemu_seconds": run.seconds,
        }
        _log(
            f"  {cpu}: equal={row['chips'][cpu]['equal']} flash={row['chips'][cpu]['flash_bytes']} "
            f"ram={row['chips'][cpu]['ram_bytes']} instr={np.median(instructions):.0f}"
        )
    return row


def _tool_versions() -> dict[str, str]:
    out = {}
    for tool in ("gcc", "arm-none-eabi-gcc", "qemu-system-arm"):
        try:
            first = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
            out[tool] = first.splitlines()[0] if first else "?"
        except OSError:
            out[tool] = "absent"
    return out


def _row_order(row: dict[str, Any]) -> tuple[int, int]:
    """_order for a measured row."""
    mixed = len(set(row.get("layer_bits", {}).values())) > 1
    rank = 1 if row["quantizer"] == "uniform" else 2 if mixed else 0
    return rank, -int(row["weight_bits"])


def _order(bundle: Bundle) -> tuple[int, int]:
    """The training run's row order: SIQ at one width (widest first), the 8-bit baseline,
    then the mixed-width rows."""
    bits = {int(v["weight_bits"]) for v in bundle.manifest["graph"] if "weight_bits" in v}
    rank = 1 if _quantizer(bundle) == "uniform" else 2 if len(bits) > 1 else 0
    return rank, -int(bundle.manifest["weight_bits"])


def cmsis_rows(
    args: argparse.Namespace, bundles: list[Bundle], ds: Any, work: Path
) -> dict[str, Any]:
    """The CMSIS-NN comparison (bench/onchip_peers.py) of the uniform-width W4A4 k-means bundle
    and the 8-bit baseline, or why it is skipped."""
    siq: dict[str, Bundle] = {}
    for bundle in bundles:
        bits = {int(v["weight_bits"]) for v in bundle.manifest["graph"] if "weight_bits" in v}
        if (
            bits == {4}
            and _quantizer(bundle) == "kmeans"
            and bundle.manifest["activation_bits"] == 4
        ):
            siq.setdefault("SIQ W4A4", bundle)
        elif bits == {8} and _quantizer(bundle) == "uniform":
            siq.setdefault("SIQ 8-bit baseline", bundle)
    if "SIQ W4A4" not in siq:
        return skipped("no uniform-width W4A4 k-means MNIST bundle in this run")
    siq = {"SIQ W4A4": siq["SIQ W4A4"], **{k: v for k, v in siq.items() if k != "SIQ W4A4"}}
    _log("CMSIS-NN comparison" + (f" ({args.cmsis_nn})" if args.cmsis_nn else ": skipped"))
    calibration = ds.train_x[:200] if len(ds.train_x) else ds.test_x[-200:]
    return compare(args, siq, ds.test_x, ds.test_y, calibration, work)


def measure_folder(args: argparse.Namespace) -> dict[str, Any]:
    """Rows for the bundles a run kept (--keep-bundles), without training: their float
    figures come from their manifests, which must name one float MNIST model."""
    from server.data import load_dataset

    started = time.perf_counter()
    res: dict[str, Any] = {
        "mnist": [],
        "office10": None,
        "measured_from": str(args.measure_bundles),
    }
    paths = sorted(args.measure_bundles.glob("*.siq"))
    bundles = [(read_bundle_file(p), p.stat().st_size) for p in paths]
    mnist = sorted(
        (b for b in bundles if b[0].manifest["provenance"]["dataset"] == "mnist"),
        key=lambda b: _order(b[0]),
    )
    floats = {
        (b.manifest["metrics"]["float_accuracy"], b.manifest["metrics"]["float_seconds"])
        for b, _ in mnist
    }
    if len(floats) != 1:
        raise ValueError(f"{args.measure_bundles}: MNIST bundles of {len(floats)} float models")
    res["float_accuracy"], res["float_seconds"] = floats.pop()
    ds = load_dataset("mnist", args.data_dir)
    chips = {"m4": args.m4_images, "m3": args.m3_images}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (bundle, size) in enumerate(mnist):
            _log(f"{bundle.id[:12]}: W{bundle.manifest['weight_bits']} {_quantizer(bundle)}")
            row = measure(bundle, ds.test_x, ds.test_y, chips, Path(tmp) / f"mnist{i}")
            row["float_accuracy"] = res["float_accuracy"]
            row["bundle_bytes"] = size
            res["mnist"].append(row)
        res["cmsis"] = cmsis_rows(args, [b for b, _ in mnist], ds, Path(tmp) / "cmsis")
        office = [b for b in bundles if b[0].manifest["provenance"]["dataset"] == "office10"]
        if office and not args.no_office10:
            res["office10"] = office10_kept(args, office, Path(tmp))
    res["seconds"] = time.perf_counter() - started
    return res


def run(args: argparse.Namespace, save: Any = None) -> dict[str, Any]:
    """Train, quantise and measure; `save(res, partial=True)` after the MNIST rows."""
    import torch

    from server.data import load_dataset
    from server.params import JobParams
    from server.training.pipeline import quantize_model, train_float

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    res: dict[str, Any] = {"mnist": [], "office10": None}
    ds = load_dataset("mnist", args.data_dir, train_limit=args.train_limit)
    base = dict(
        dataset="mnist",
        epochs=args.epochs,
        retrain_epochs=args.retrain_epochs,
        max_iterations=args.max_iterations,
        train_limit=args.train_limit,
    )
    if args.float_cache is not None and args.float_cache.exists():
        fm = torch.load(args.float_cache, weights_only=False)
        base["epochs"] = None  # not this run's --epochs
        res["float_cache"] = str(args.float_cache)
        _log(f"MNIST float model from {args.float_cache} ({fm.float_accuracy:.4f})")
    else:
        _log(f"MNIST float training ({len(ds.train_y)} images, {args.epochs or 'default'} epochs)")
        fm = train_float(ds, JobParams(**base))
        if args.float_cache is not None:
            torch.save(fm, args.float_cache)
    res["float_accuracy"] = fm.float_accuracy
    res["float_seconds"] = fm.seconds
    configs: list[tuple[int, int, str, dict[str, int] | None]] = [
        (int(b), 4, "kmeans", None) for b in args.mnist_weight_bits.split(",")
    ]
    if not args.no_baseline:
        configs.append((8, 8, "uniform", None))  # the 8-bit baseline
    mixed = MIXED_BITS if args.mixed_bits is None else [m for m in args.mixed_bits if m != "none"]
    configs += [(b, 4, "kmeans", layers) for b, layers in map(parse_mixed, mixed)]
    chips = {"m4": args.m4_images, "m3": args.m3_images}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        keep = args.keep_bundles or work / "bundles"
        bundles: list[Bundle] = []
        for b, a, wq, layers in configs:
            cfg = JobParams(
                **base, weight_bits=b, activation_bits=a, weight_quantizer=wq, bits_per_layer=layers
            )
            r = quantize_model(fm, ds, cfg, keep)
            tag = f"w{b}a{a}{wq}" + "".join(f"_{k}{v}" for k, v in (layers or {}).items())
            _log(f"{tag}: engine accuracy {r.quantized_accuracy:.4f}")
            bundle = read_bundle_file(r.bundle_path or "")
            row = measure(bundle, ds.test_x, ds.test_y, chips, work / tag)
            row["float_accuracy"] = fm.float_accuracy
            row["bundle_bytes"] = r.bundle_bytes
            res["mnist"].append(row)
            bundles.append(bundle)
        res["cmsis"] = cmsis_rows(args, bundles, ds, work / "cmsis")
        if save is not None:
            save({**res, "seconds": time.perf_counter() - started}, partial=True)
        if not args.no_office10:
            res["office10"] = office10_rows(args, keep, work)
    res["seconds"] = time.perf_counter() - started
    return res


def _office10_float(args: argparse.Namespace, office: Any, cfg: Any) -> tuple[Any, bool]:
    """The office10 float model: from --office10-float-cache when the file exists (it must be
    the arch's network), else trained (and saved there); (model, reused)."""
    import torch

    from server.training.models import build_model
    from server.training.pipeline import train_float

    cache = args.office10_float_cache
    if cache is not None and cache.exists():
        fm = torch.load(cache, weights_only=False)
        c, size, _ = office.input_shape
        want = build_model(office.arch, c, office.num_classes, size).state_dict()
        got = fm.model.state_dict()
        if {k: v.shape for k, v in got.items()} != {k: v.shape for k, v in want.items()}:
            raise ValueError(f"{cache} is not a float {office.arch} for office10 (other weights)")
        _log(f"office10 float {office.arch} from {cache} ({fm.float_accuracy:.4f})")
        return fm, True
    epochs = f"{cfg.epochs} epochs" if cfg.epochs else "the recipe's epochs"
    _log(f"office10 float training ({office.arch}, {epochs})")
    fm = train_float(office, cfg)
    if cache is not None:
        torch.save(fm, cache)
    return fm, False


def _office10_data(args: argparse.Namespace) -> Any:
    """office10 (cut to --office10-train-limit) with --office10-arch's network and recipe."""
    from server.data import load_dataset

    office = load_dataset("office10", args.data_dir, train_limit=args.office10_train_limit)
    return office.with_arch(args.office10_arch)


def office10_rows(args: argparse.Namespace, keep: Path, work: Path) -> dict[str, Any]:
    """The office10 network of `--office10-arch` (default: the photo recipe's), trained once
    (or read from --office10-float-cache), quantised as W4A5 SIQ k-means and as the 8-bit
    build of the same graph (W8A8 uniform), both measured on the host and the Cortex-M4."""
    from server.params import JobParams
    from server.training.pipeline import quantize_model

    office = _office10_data(args)
    base = dict(
        dataset="office10",
        arch=args.office10_arch,
        epochs=args.office10_epochs,
        max_iterations=args.max_iterations,
        train_limit=args.office10_train_limit,
    )
    fm, reused = _office10_float(args, office, JobParams(**base))
    if reused:
        base["epochs"] = None  # not this run's --office10-epochs
    bundles = []
    for bits, acts, quantizer in ((4, 5, "kmeans"), (8, 8, "uniform")):
        cfg = JobParams(**base, weight_bits=bits, activation_bits=acts, weight_quantizer=quantizer)
        r = quantize_model(fm, office, cfg, keep)
        _log(f"office10 W{bits}A{acts} {quantizer}: engine accuracy {r.quantized_accuracy:.4f}")
        bundles.append((read_bundle_file(r.bundle_path or ""), r.bundle_bytes))
    res = office10_measure(args, bundles, office, work)
    res.update(float_accuracy=fm.float_accuracy, float_seconds=fm.seconds)
    if reused:
        res["float_cache"] = str(args.office10_float_cache)
    return res


def _kept_office10(folder: Path) -> list[tuple[Bundle, int]]:
    """The office10 bundles of a --keep-bundles folder, with their sizes."""
    kept = [(read_bundle_file(f), f.stat().st_size) for f in sorted(folder.glob("*.siq"))]
    return [b for b in kept if b[0].manifest["provenance"]["dataset"] == "office10"]


def office10_kept(
    args: argparse.Namespace, bundles: list[tuple[Bundle, int]], work: Path
) -> dict[str, Any]:
    """office10_measure of kept office10 bundles (--measure-bundles), their float accuracy
    from their manifests."""
    from server.data import load_dataset

    res = office10_measure(args, bundles, load_dataset("office10", args.data_dir), work)
    res["float_accuracy"] = bundles[0][0].manifest["metrics"]["float_accuracy"]
    res["bundles_from"] = str(args.measure_bundles)
    return res


def office10_measure(
    args: argparse.Namespace, bundles: list[tuple[Bundle, int]], office: Any, work: Path
) -> dict[str, Any]:
    """Rows of the office10 bundles (SIQ k-means first, then the 8-bit build), each on the
    host (every test photo) and the Cortex-M4 (`--office10-images`), with a per-node
    instruction table when --office10-trace; and the CMSIS-NN comparison of the two."""
    bundles = sorted(bundles, key=lambda b: _order(b[0]))
    count = min(args.office10_images, len(office.test_y))
    config = bundles[0][0].manifest["provenance"].get("config") or {}
    res: dict[str, Any] = {"arch": config.get("arch") or office.arch}
    res["rows"] = []
    for i, (bundle, size) in enumerate(bundles):
        tag = f"office10_{i}"
        row = measure(bundle, office.test_x, office.test_y, {"m4": count}, work / tag)
        row["float_accuracy"] = bundle.manifest["metrics"].get("float_accuracy")
        row["bundle_bytes"] = size
        if args.office10_trace:
            _log(f"  tracing {tag} on the M4 (one photo)")
            fw = firmware_build(
                generate_bundle_c(bundle), work / tag / "trace", "m4", office.test_x[:1]
            )
            row["chips"]["m4"]["trace"] = trace_estimate(fw).as_dict()
        res["rows"].append(row)
    siq = {_build_name(b): b for b, _ in bundles}
    calibration = office.train_x[:100] if len(office.train_x) else office.test_x[-100:]
    if args.cmsis_nn is None:
        res["cmsis"] = skipped(missing_cmsis_nn(None) or "")
    else:
        _log(f"office10 CMSIS-NN comparison ({args.cmsis_nn})")
        res["cmsis"] = compare(
            args,
            siq,
            office.test_x,
            office.test_y,
            calibration,
            work / "office10_cmsis",
            cycles=args.office10_trace,
            m0=False,
        )
    return res


def _build_name(bundle: Bundle) -> str:
    """'SIQ W4A5' for a k-means bundle, 'SIQ 8-bit baseline' for the uniform W8A8 one."""
    if _quantizer(bundle) == "uniform":
        return "SIQ 8-bit baseline"
    return f"SIQ W{bundle.manifest['weight_bits']}A{bundle.manifest['activation_bits']}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    try:
        for spec in args.mixed_bits or []:
            if spec != "none":
                parse_mixed(spec)
        for spec in args.m0net_bits or []:
            parse_bits(spec)
    except ValueError as exc:
        print(f"[bench_onchip] {exc}", file=sys.stderr)
        return 2
    out_json = args.out / "onchip.json"
    command = " ".join(["python -m bench.bench_onchip", *(argv or [])])  # this run's
    if args.render_only:
        res = json.loads(out_json.read_text())
        for other in args.merge or []:
            part = json.loads(other.read_text())
            if part["float_accuracy"] != res["float_accuracy"]:
                print(f"[bench_onchip] {other}: another float model", file=sys.stderr)
                return 2
            res["mnist"] += part["mnist"]
            res["seconds"] = max(res["seconds"], part["seconds"])
            res["environment"]["command"] += " ; " + part["environment"]["command"]
        if args.cmsis_from:
            other = json.loads(args.cmsis_from.read_text())
            res["cmsis"] = {
                **other["cmsis"],
                "command": other["environment"]["command"],
                "when": other["environment"]["when"],
                "note": other["environment"]["note"],
            }
            out_json.write_text(json.dumps(res, indent=1))
        if args.m0_from:
            res["m0"] = json.loads(args.m0_from.read_text())["m0"]
            out_json.write_text(json.dumps(res, indent=1))
        if args.merge:
            res["mnist"].sort(key=_row_order)
            res["environment"]["command"] += " ; " + command
            out_json.write_text(json.dumps(res, indent=1))
    else:
        for why in (missing_host_tools(), missing_arm_tools()):
            if why:
                print(f"[bench_onchip] cannot run: {why}", file=sys.stderr)
                return 1
        cache = args.office10_float_cache
        if cache is not None and cache.exists() and not (args.no_office10 or args.m0net):
            try:  # before any training: a cache of another network is refused at once
                _office10_float(args, _office10_data(args), None)
            except ValueError as exc:
                print(f"[bench_onchip] {exc}", file=sys.stderr)
                return 2
        args.out.mkdir(parents=True, exist_ok=True)

        def environment() -> dict[str, Any]:
            return {
                "when": utc_now(),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "tools": _tool_versions(),
                "command": command,
                "note": os.environ.get(
                    "SIQ_BENCH_NOTE",
                    "The machine was shared with other engineers' work; that affects only the "
                    "training times, not the instruction counts (QEMU -icount is deterministic).",
                ),
            }

        def save(res: dict[str, Any], partial: bool) -> None:
            res["environment"] = environment()
            if out_json.is_file() and "m0" not in res:  # the smallest chip's run stays
                res["m0"] = json.loads(out_json.read_text()).get("m0")
            # the MNIST rows, kept if the run is stopped in office10 (render with --render-only)
            target = args.out / "onchip.partial.json" if partial else out_json
            target.write_text(json.dumps(res, indent=1))

        if args.m0net:  # into --out's results, else a copy of the committed ones
            res = json.loads(
                (out_json if out_json.is_file() else RESULTS / "onchip.json").read_text()
            )

            def save_m0(m0: dict[str, Any]) -> None:  # after each config: a stopped run keeps it
                res["m0"] = {**m0, "environment": environment()}
                out_json.write_text(json.dumps(res, indent=1))

            save_m0(run_m0(args, _log, save_m0))
        elif args.office10_only:
            res = json.loads(out_json.read_text())
            kept = _kept_office10(args.measure_bundles) if args.measure_bundles else None
            if kept == []:
                print(
                    f"[bench_onchip] no office10 bundle in {args.measure_bundles}", file=sys.stderr
                )
                return 2
            with tempfile.TemporaryDirectory() as tmp:
                if kept:  # a run's kept office10 bundles, not quantised again
                    res["office10"] = office10_kept(args, kept, Path(tmp))
                else:
                    keep = args.keep_bundles or Path(tmp) / "bundles"
                    res["office10"] = office10_rows(args, keep, Path(tmp))
            res["environment"]["command"] += f" ; then the office10 row by {command}"
            res["environment"]["note"] += f" The office10 row was measured again on {utc_now()}."
            out_json.write_text(json.dumps(res, indent=1))
        else:
            res = measure_folder(args) if args.measure_bundles else run(args, save)
            save(res, partial=False)
    mnist = RESULTS / "mnist.json"
    reference = json.loads(mnist.read_text()) if mnist.is_file() else None
    smallest = json.loads(args.smallest_from.read_text()) if args.smallest_from else None
    (args.out / "onchip.md").write_text(render(res, reference, smallest))
    _log(f"wrote {args.out / 'onchip.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
