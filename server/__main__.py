"""`python -m server`: the training server, and `python -m server quantize`, the pipeline once
without HTTP (docs/ARCHITECTURE.md, "Names that other people's scripts rely on")."""

from __future__ import annotations

import sys

EPILOG = """commands:
  quantize     train and quantise once, without HTTP: writes a bundle, prints one JSON line

`python -m server quantize --help` shows its options.
Settings come from SIQ_* environment variables (SIQ_STATE_DIR, SIQ_DATA_DIR, SIQ_API_TOKEN, ...)."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "quantize":
        from server.cli import quantize_main

        return quantize_main(argv[1:])
    from server.service.app import serve_main

    return serve_main(argv, epilog=EPILOG)


if __name__ == "__main__":
    sys.exit(main())
