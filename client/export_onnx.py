"""`python -m client export-onnx BUNDLE --out FILE`: a bundle file as an ONNX model.

The default graph is integer-only (ConvInteger / MatMulInteger, int32 accumulators, int64
adds): it runs wherever ONNX runs and gives `shared.engine`'s integer logits bit for bit, for
chain bundles (format versions 1 and 2) and DAG bundles (version 3) alike. Input `codes`
(uint8, N x C x H x W) or, with `--inputs images`, `images` (float32 in [0, 1]); output
`logits` (int32). Probabilities are softmax(logits * logit_scale), the scale being in the
model's metadata (`siq_logit_scale`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.bundle import read_bundle_file
from shared.errors import BundleError
from shared.onnx import ExportError, to_onnx

__all__ = ["main"]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m client export-onnx", description=__doc__)
    p.add_argument("bundle", type=Path, help="a .siq bundle file")
    p.add_argument("--out", type=Path, required=True, help="where to write the .onnx model")
    p.add_argument("--inputs", choices=["codes", "images"], default="codes")
    p.add_argument(
        "--carrier",
        choices=["int", "float", "fast"],
        default="int",
        help="int: integer ops only (default); float/fast: float32 convolutions where exact",
    )
    args = p.parse_args(argv)
    try:
        bundle = read_bundle_file(args.bundle)
        model = to_onnx(bundle, carrier=args.carrier, inputs=args.inputs)
    except (BundleError, ExportError, OSError) as exc:
        print(f"export-onnx: {args.bundle}: {exc}", file=sys.stderr)
        return 2
    args.out.write_bytes(model)
    print(json.dumps({"bundle_id": bundle.id, "out": str(args.out), "bytes": len(model)}))
    return 0
