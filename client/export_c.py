"""`python -m client export-c BUNDLE --out DIR`: write the bundle's C library
(siq_model.h, siq_model.c; docs/ARCHITECTURE.md "On chip") and an example program using it
(siq_example.c: how to build it, and how an image becomes the `pixels` siq_predict takes), and
print one JSON line: the files, the build line, the static arena (SIQ_ARENA_BYTES) and its
parts, the weight bytes."""

from __future__ import annotations

import argparse
import json
import sys

from shared.bundle import read_bundle_file
from shared.cgen import HOST_BUILD, generate_bundle_c, write_sources
from shared.errors import SIQError

__all__ = ["main"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m client export-c",
        description="Write a bundle as a C99 library for microcontrollers (siq_model.h, "
        "siq_model.c: integer-only, no heap) and siq_example.c, a program that uses it; "
        "its opening comment says how to build it and how an image becomes the input.",
    )
    parser.add_argument("bundle", help="path to a .siq bundle file")
    parser.add_argument(
        "--out", required=True, help="directory for siq_model.h, siq_model.c, siq_example.c"
    )
    parser.add_argument(
        "--for-size",
        action="store_true",
        help="the least flash: every layer's codes at their own width with a 2^b-entry "
        "codebook, one small row kernel (for a Cortex-M0 or another part with little flash; "
        "more instructions per multiply-accumulate); build it with -Os",
    )
    args = parser.parse_args(argv)
    try:
        bundle = read_bundle_file(args.bundle)
        model = generate_bundle_c(bundle, for_size=args.for_size)
    except SIQError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = write_sources(model, args.out)
    print(
        json.dumps(
            {
                "bundle_id": bundle.id,
                "files": [str(p) for p in paths],
                "build": HOST_BUILD,
                "arena_bytes": model.arena_bytes,  # SIQ_ARENA_BYTES: the parts below
                "activation_bytes": model.activation_bytes,
                "patch_bytes": model.patch_bytes,
                "accumulator_bytes": model.scratch_bytes,
                "decoded_weight_bytes": model.decoded_bytes,
                "weight_bytes": sum(p.weight_bytes + p.table_bytes for p in model.layers),
            }
        )
    )
    return 0
