"""C99 code generation from a bundle: a dependency-free library that runs the bundle's integer
network on a microcontroller, bit-exact with shared.engine (docs/ARCHITECTURE.md, "On chip").

    >>> c = generate_bundle_c(bundle)          # CModel: .files {"siq_model.h", "siq_model.c"}
    >>> write_sources(c, out_dir)              # and .example {"siq_example.c"}: a main using it
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from shared.bundle import Bundle
from shared.cgen.emit import CModel, LayerPlan, generate_c, input_table
from shared.cgen.example import EXAMPLE_FILE, HOST_BUILD, example_program, recipe_in_words
from shared.cgen.model import DenseLayer, DenseModel, dense_model

__all__ = [
    "CModel",
    "LayerPlan",
    "DenseLayer",
    "DenseModel",
    "dense_model",
    "generate_c",
    "generate_bundle_c",
    "input_table",
    "write_sources",
    "sources_tar_gz",
    "EXAMPLE_FILE",
    "HOST_BUILD",
    "example_program",
    "recipe_in_words",
]


def generate_bundle_c(bundle: Bundle, *, for_size: bool = False) -> CModel:
    """The C library of a decoded bundle, with its example program (`for_size`: the least
    flash, see `generate_c`)."""
    model = generate_c(dense_model(bundle.manifest, bundle.tensors), bundle.id, for_size=for_size)
    model.example = {EXAMPLE_FILE: example_program(bundle.manifest, bundle.id)}
    return model


def write_sources(model: CModel, out_dir: str | Path) -> list[Path]:
    """Write the generated files and the example into out_dir (created); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in {**model.files, **model.example}.items():
        path = out / name
        path.write_text(text)
        paths.append(path)
    return paths


def sources_tar_gz(model: CModel, folder: str = "siq_model") -> bytes:
    """The generated files as a .tar.gz with one folder (what GET /bundles/{id}/c serves)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in sorted({**model.files, **model.example}.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
