"""Instructions per multiply-accumulate of the generated depthwise and pointwise kernels, per
node, from the QEMU instruction trace of a small MobileNet-shaped graph on the Cortex-M4
(deterministic: instruction counts, not timings).

    python -m bench.dw_kernels [--opt=-O2 --opt=-Os] [--activation-bits 4 8] [--out FILE.json]

The graph: input 3 x 12 x 12, a 1x1 stem to 8 channels, then depthwise 3x3 (stride 1, then 2; padding 1)
and pointwise 1x1 (8 -> 16, 16 -> 16) blocks, global average pool, a linear classifier.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from scripts.onchip.cycles import trace_estimate
from scripts.onchip.toolchain import firmware_build, missing_arm_tools
from shared.cgen import generate_bundle_c
from tests.factories import GraphBuilder

__all__ = ["mobilenet_shaped", "per_node", "main"]

# (depthwise stride, pointwise output channels) per block after the stem
BLOCKS = [(1, 16), (2, 16)]


def mobilenet_shaped(activation_bits: int, seed: int = 0):  # noqa: ANN201
    """(bundle, {node: (kind, MACs)}) of the small MobileNet-shaped graph."""
    b = GraphBuilder(seed, (3, 12, 12), activation_bits=activation_bits)
    macs: dict[str, tuple[str, int]] = {}
    x = b.conv("input", 8, 1, name="stem")
    c, h = 8, 12
    for i, (s, o) in enumerate(BLOCKS):
        x = b.depthwise(x, 3, stride=s, padding=1, name=f"dw{i}")
        h = (h + 2 - 3) // s + 1
        macs[f"dw{i}"] = ("depthwise", c * 9 * h * h)
        x = b.conv(x, o, 1, name=f"pw{i}")
        macs[f"pw{i}"] = ("pointwise", c * o * h * h)
        c = o
    bundle = b.bundle(b.linear(b.global_avgpool(x), 10, activation="none", name="fc"))
    return bundle, macs


def per_node(activation_bits: int, opt: str) -> dict[str, Any]:
    """Traced instructions per node and per MAC on the M4, built with `opt` alone."""
    bundle, macs = mobilenet_shaped(activation_bits)
    images = np.random.default_rng(1).integers(0, 256, size=(1, 3, 24, 24), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        fw = firmware_build(generate_bundle_c(bundle), Path(tmp), "m4", images, [opt])
        est = trace_estimate(fw)
    rows = {}
    for name, (kind, n) in macs.items():
        instr = est.layers.get(name, {}).get("instructions", 0)
        rows[name] = {"kind": kind, "macs": n, "instructions": instr, "per_mac": instr / n}
    total = {k: [r for r in rows.values() if r["kind"] == k] for k in ("depthwise", "pointwise")}
    summary = {
        k: sum(r["instructions"] for r in v) / sum(r["macs"] for r in v) for k, v in total.items()
    }
    return {"opt": opt, "activation_bits": activation_bits, "nodes": rows, "per_mac": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--opt", action="append", help="e.g. --opt=-Os (default -O2 and -Os)")
    ap.add_argument("--activation-bits", nargs="+", type=int, default=[4, 8])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if (why := missing_arm_tools()) is not None:
        print(f"skipped: {why}")
        return 0
    results = []
    for a in args.activation_bits:
        for opt in args.opt or ["-O2", "-Os"]:
            r = per_node(a, opt)
            results.append(r)
            nodes = ", ".join(f"{k} {v['per_mac']:.2f}" for k, v in r["nodes"].items())
            print(
                f"A{a} {opt}: depthwise {r['per_mac']['depthwise']:.2f}, "
                f"pointwise {r['per_mac']['pointwise']:.2f} instr/MAC ({nodes})"
            )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
