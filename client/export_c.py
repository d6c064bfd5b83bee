"""`python -m client export-c BUNDLE --out DIR`: write the bundle's C library
(siq_model.h, siq_model.c; docs/ARCHITECTURE.md "On chip") and print one JSON line."""

from __future__ import annotations

import argparse
import json
import sys

from shared.bundle import read_bundle_file
from shared.cgen import generate_bundle_c, write_sources
from shared.errors import SIQError

__all__ = ["main"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m client export-c", description="Generate a bundle's C99 library."
    )
    parser.add_argument("bundle", help="path to a .siq bundle file")
    parser.add_argument("--out", required=True, help="directory for siq_model.h and siq_model.c")
    args = parser.parse_args(argv)
    try:
        bundle = read_bundle_file(args.bundle)
        model = generate_bundle_c(bundle)
    except SIQError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = write_sources(model, args.out)
    print(
        json.dumps(
            {
                "bundle_id": bundle.id,
                "files": [str(p) for p in paths],
                "arena_bytes": model.arena_bytes,
                "weight_bytes": sum(p.weight_bytes + p.table_bytes for p in model.layers),
            }
        )
    )
    return 0
