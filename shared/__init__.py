"""What the server and the client must agree on, numpy only (no torch), a package per idea:

    network  the integer network's definition: its graph (a DAG), its arithmetic, its cost on a chip
    bundle   the bundle file: format versions 1, 2 and 3 (DAGs), bit packing, Huffman, checksum,
             signing
    engine   the integer forward pass: the numpy engine and the ONNX Runtime one, load_engine,
             and run_reference, the reference interpreter every implementation is held to
    onnx     a bundle as an exact ONNX graph (written without the onnx package)
    image    image decoding and the preprocessing recipes (digit, photo)
    cgen     a bundle as C99 for a microcontroller (the generator; its gcc / QEMU test
             harness is dev tooling, in scripts/onchip/)
    api      what both HTTP APIs share: response schemas, the static-page router
    errors   the error classes every layer raises, and their one mapping to HTTP

Each package's __init__ states its public names; a submodule imports its siblings by their
module paths, never through its own package (tests/test_import_cycles.py).
"""
