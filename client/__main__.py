"""`python -m client`: the recognition client, and the commands on bundle files that
`python -m client --help` lists (COMMANDS)."""

from __future__ import annotations

import importlib
import os
import sys

# Requests run in a thread pool, each with its own batch; a multi-threaded BLAS under several
# concurrent callers oversubscribes the cores. One BLAS thread per request is the default
# (SIQ_BLAS_THREADS changes it); it must be set before numpy is first imported.
_BLAS_THREADS = os.environ.get("SIQ_BLAS_THREADS", "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _BLAS_THREADS)

# name -> (module, function taking the rest of the command line, what it does)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "export-c": (
        "client.export_c",
        "main",
        "write a bundle as a C99 library for microcontrollers, with an example program",
    ),
    "export-onnx": ("client.export_onnx", "main", "write a bundle as an ONNX model"),
    "sign-bundle": (
        "client.sign_bundle",
        "sign_main",
        "write FILE.sig, the signature a client with SIQ_BUNDLE_HMAC_KEY needs",
    ),
}

EPILOG = (
    "commands:\n"
    + "".join(f"  {name:<12} {what}\n" for name, (_, _, what) in COMMANDS.items())
    + "\n`python -m client COMMAND --help` shows a command's options.\n"
    "Settings come from SIQ_* environment variables (SIQ_BUNDLE: which bundle to serve)."
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in COMMANDS:
        module, function, _ = COMMANDS[argv[0]]
        return getattr(importlib.import_module(module), function)(argv[1:])
    from client.app import serve_main

    return serve_main(argv, epilog=EPILOG)


if __name__ == "__main__":
    sys.exit(main())
