"""`python -m client` starts the recognition client."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from client.app import serve_main

    return serve_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
