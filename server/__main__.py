"""`python -m server` starts the training server; `python -m server quantize ...` runs the
pipeline once without HTTP (see docs/ARCHITECTURE.md, "Names that other people's scripts rely on")."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "quantize":
        from server.cli import quantize_main

        return quantize_main(argv[1:])
    from server.service.app import serve_main

    return serve_main(argv)


if __name__ == "__main__":
    sys.exit(main())
