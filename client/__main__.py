"""`python -m client` starts the recognition client; `python -m client sign-bundle FILE`
writes the detached signature a bundle file needs while SIQ_BUNDLE_HMAC_KEY is set;
`python -m client export-onnx BUNDLE --out FILE` writes a bundle as an ONNX model."""

from __future__ import annotations

import os
import sys

# Requests run in a thread pool, each with its own batch; a multi-threaded BLAS under several
# concurrent callers oversubscribes the cores. One BLAS thread per request is the default
# (SIQ_BLAS_THREADS changes it); it must be set before numpy is first imported.
_BLAS_THREADS = os.environ.get("SIQ_BLAS_THREADS", "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _BLAS_THREADS)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sign-bundle"]:
        from client.sign_bundle import sign_main

        return sign_main(argv[1:])
    if argv[:1] == ["export-c"]:  # the bundle's C library (client/export_c.py)
        from client.export_c import main as export_c

        return export_c(argv[1:])
    if argv[:1] == ["export-onnx"]:  # python -m client export-onnx BUNDLE --out FILE
        from client.export_onnx import main as export_main

        return export_main(argv[1:])
    from client.app import serve_main

    return serve_main(argv)


if __name__ == "__main__":
    sys.exit(main())
