"""The smallest chip (issue 29): MNIST on a Cortex-M0 in at most 12 KB of flash and 2 KB of RAM.

    python -m bench.bench_onchip --m0net      # trains m0net, quantises, measures, renders

Trains the `m0net` family (server/training/models.py) with its MNIST recipe, quantises it in
each `--m0net-bits` configuration (k-means codebooks, 4-bit activations, per-layer widths like
`W4:conv3=3`), generates the C library for the least flash (`generate_bundle_c(for_size=True)`:
codes at their own width, 2^b-entry codebooks, one small row kernel) and measures it:
accuracy of the host build on every MNIST test image (its logits must equal shared.engine's),
then, per optimisation flag set, the Cortex-M0 firmware on QEMU's microbit (nRF51: 256 KB
flash, 16 KB SRAM): logits equal to the engine's on the first `--m0-images` images, flash and
RAM of the library as linked (`linked_library_sizes`: siq_model.o with the C library and
libgcc routines it pulls in), the deepest stack of `siq_predict`, instructions per inference
(QEMU -icount, deterministic).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.onchip_rows import engine_logits, library_fields
from scripts.onchip.toolchain import (
    firmware_build,
    host_build,
    host_run,
    linked_library_sizes,
    qemu_run,
)
from shared.bundle import Bundle, read_bundle_file
from shared.cgen import generate_bundle_c
from shared.network import weight_shape

__all__ = ["ARCH", "BUDGET", "M0_BITS", "M0_FLAGS", "parse_bits", "measure_m0", "run_m0"]

ARCH = "m0net"
KB = 1024
# the budget: flash (code, weights, tables, constants) and RAM (data + bss + stack)
BUDGET = {"flash_bytes": 12 * KB, "ram_bytes": 2 * KB, "stretch_flash_bytes": 8 * KB}
M0_BITS = ("W4", "W4:conv3=3")  # the default configurations
M0_FLAGS = (("-Os",), ("-O2",))  # the first is the one the goals are judged by


def parse_bits(spec: str) -> tuple[int, dict[str, int] | None]:
    """'W4' -> (4, None); 'W4:conv3=3,fc=2' -> (4, {'conv3': 3, 'fc': 2})."""
    head, sep, rest = spec.partition(":")
    if not (head[:1] in ("W", "w") and head[1:].isdigit()) or (sep and not rest):
        raise ValueError(f"bits config {spec!r} is not like W4 or W4:conv3=3")
    layers: dict[str, int] = {}
    for item in rest.split(",") if rest else []:
        name, eq, bits = item.partition("=")
        if not (name and eq and bits.isdigit()):
            raise ValueError(f"bits config {spec!r}: {item!r} is not like conv3=3")
        layers[name] = int(bits)
    return int(head[1:]), layers or None


def measure_m0(
    bundle: Bundle, images: np.ndarray, labels: np.ndarray, chip_images: int, work: Path
) -> dict[str, Any]:
    """One bundle's row: the host check on every image, then per flag set the M0's."""
    cmodel = generate_bundle_c(bundle, for_size=True)
    want = engine_logits(bundle, images)
    classes = want.shape[1]
    host = host_run(host_build(cmodel, work / "host"), images, classes, timeout=3600)
    layer_bits = {
        layer["name"]: int(layer["weight_bits"])
        for layer in bundle.manifest["graph"]
        if "weight_bits" in layer
    }
    row: dict[str, Any] = {
        "bundle_id": bundle.id,
        "weight_bits": int(bundle.manifest["weight_bits"]),
        "activation_bits": int(bundle.manifest["activation_bits"]),
        "layer_bits": layer_bits,
        "weights": sum(
            int(np.prod(weight_shape(layer)))
            for layer in bundle.manifest["graph"]
            if "weight_bits" in layer
        ),
        **library_fields(cmodel, host, want, labels),
        "arena_bytes": cmodel.arena_bytes,
        "builds": [],
    }
    for flags in M0_FLAGS:
        opt = list(flags)
        fw = firmware_build(cmodel, work / f"m0{opt[0]}", "m0", images[:chip_images], opt)
        run = qemu_run(fw, classes, timeout=1200)
        linked = linked_library_sizes(fw, opt)
        instructions = run.instructions
        row["builds"].append(
            {
                "flags": " ".join(flags),
                "images": chip_images,
                "equal": bool(np.array_equal(run.logits, want[:chip_images])),
                "flash_bytes": linked["text"] + linked["rodata"] + linked["data"],
                "ram_bytes": linked["data"] + linked["bss"] + run.stack_bytes,
                "linked": linked,
                "object": fw.library,
                "stack_bytes": run.stack_bytes,
                "instructions_median": float(np.median(instructions)),
                "instructions_per_mac": float(np.median(instructions)) / row["macs"],
            }
        )
    return row


def run_m0(args: Any, log: Any, save: Any = None) -> dict[str, Any]:
    """Train (or reuse `--m0-float-cache`), quantise every `--m0net-bits` config, measure;
    `save(res)` after each config's row (`res["complete"]` is False until the last)."""
    import torch

    from server.data import load_dataset
    from server.params import JobParams
    from server.training.pipeline import quantize_model, train_float

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    ds = load_dataset("mnist", args.data_dir, train_limit=args.train_limit).with_arch(ARCH)
    base: dict[str, Any] = dict(
        dataset="mnist",
        arch=ARCH,
        epochs=args.m0_epochs,
        retrain_epochs=args.m0_retrain_epochs,
        max_iterations=args.m0_max_iterations,
        train_limit=args.train_limit,
    )
    res: dict[str, Any] = {"arch": ARCH, "rows": [], "budget": BUDGET, "complete": False}
    cache = args.m0_float_cache
    if cache is not None and cache.exists():
        fm = torch.load(cache, weights_only=False)
        res["float_cache"] = str(cache)
        log(f"m0net float model from {cache} ({fm.float_accuracy:.4f})")
    else:
        log(f"m0net float training ({len(ds.train_y)} images)")
        fm = train_float(ds, JobParams(**base))
        if cache is not None:
            torch.save(fm, cache)
    res["float_accuracy"] = fm.float_accuracy
    res["float_seconds"] = fm.seconds
    res["parameters"] = sum(p.numel() for p in fm.model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        keep = args.keep_bundles or work / "bundles"
        for i, spec in enumerate(args.m0net_bits or M0_BITS):
            bits, layers = parse_bits(spec)
            cfg = JobParams(**base, weight_bits=bits, activation_bits=4, bits_per_layer=layers)
            r = quantize_model(fm, ds, cfg, keep)
            log(f"m0net {spec}: engine accuracy {r.quantized_accuracy:.4f}")
            bundle = read_bundle_file(r.bundle_path or "")
            row = measure_m0(bundle, ds.test_x, ds.test_y, args.m0_images, work / f"c{i}")
            row["config"] = spec
            row["bundle_bytes"] = r.bundle_bytes
            row["iterations"] = len(r.iterations)
            res["rows"].append(row)
            b = row["builds"][0]
            log(f"  {b['flags']}: equal={b['equal']} flash={b['flash_bytes']} ram={b['ram_bytes']}")
            res["seconds"] = time.perf_counter() - started
            if save is not None:
                save(res)
    res["complete"] = True
    return res
