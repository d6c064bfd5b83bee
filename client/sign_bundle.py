"""`python -m client sign-bundle FILE [FILE ...]`: write the detached signature `<FILE>.sig`
that a client with SIQ_BUNDLE_HMAC_KEY set needs before it serves a bundle file.

The key comes from SIQ_BUNDLE_HMAC_KEY (never from the command line, where `ps` shows it).
Each file is decoded first, so a corrupt bundle (content checksum, id in its name) is refused
rather than signed. Exit status 0 when every file was signed, 2 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shared.bundle import read_bundle_file, sign, write_signature
from shared.errors import BundleError

__all__ = ["sign_main"]


def sign_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m client sign-bundle",
        description="Write FILE.sig beside each bundle FILE: the signature a client with "
        "SIQ_BUNDLE_HMAC_KEY set needs before it serves the file. The key is read from "
        "SIQ_BUNDLE_HMAC_KEY, never from the command line.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="a .siq bundle file")
    args = parser.parse_args(argv)
    key = os.environ.get("SIQ_BUNDLE_HMAC_KEY", "")
    if not key:
        print("siq sign-bundle: SIQ_BUNDLE_HMAC_KEY is not set", file=sys.stderr)
        return 2
    status = 0
    for path in args.files:
        try:
            read_bundle_file(path)
            written = write_signature(path, sign(path.read_bytes(), key))
        except (BundleError, OSError) as exc:
            print(f"siq sign-bundle: not signed: {exc}", file=sys.stderr)
            status = 2
            continue
        print(written)
    return status
