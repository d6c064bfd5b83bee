"""Handwritten digits from outside MNIST, as image files a person would send, and their
recognition through the client's own /recognize route (decode, `digit` preprocessing,
integer engine), for bench/bench_handwriting.py.

- UCI digits: scikit-learn's bundled copy of the UCI optdigits test set, 1797 digits by 13
  writers who are not MNIST's (NIST forms, 32x32 bitmaps counted into 8x8 blocks, 0..16).
  Each 8x8 block image is rendered as a scan would give it: gray levels from the counts, a
  2-pixel blank margin, enlarged 4x (bilinear: a smooth low-resolution scan, or nearest:
  blocky), black ink on white paper, saved as PNG. The digits come in writer order, so the
  set is split by position, not at random: the first 900 are the development split (the
  only ones ever looked at while tuning), the last 897 are held out.
- Canvas drawings: the PNGs the browser test's pad sent (bench/data/canvas_digits/, made by
  tests/browser/test_client_page.py: mouse strokes through Chromium's canvas), the label
  in the file name (`NN-digitD.png`).
"""

from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

__all__ = [
    "CANVAS_DIR",
    "DEV_COUNT",
    "canvas_digits",
    "recognise",
    "uci_digits",
]

CANVAS_DIR = Path(__file__).resolve().parent / "data" / "canvas_digits"
DEV_COUNT = 900  # UCI digits [0, 900) tune, [900, 1797) held out
_MARGIN, _ENLARGE = 2, 4


def _png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    return buf.getvalue()


def render_uci(counts: np.ndarray, resample: str = "bilinear") -> bytes:
    """(8, 8) counts 0..16 -> PNG bytes of a 48x48 black-on-white image."""
    ink = np.pad(counts.astype(np.float64) / 16.0, _MARGIN)  # (12, 12) in [0, 1]
    paper = Image.fromarray(np.round(255.0 * (1.0 - ink)).astype(np.uint8), mode="L")
    side = ink.shape[0] * _ENLARGE
    method = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
    return _png(np.asarray(paper.resize((side, side), method[resample])))


def uci_digits(split: str, resample: str = "bilinear") -> tuple[list[bytes], np.ndarray]:
    """PNG files and labels of the UCI digits' `dev` or `heldout` split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    part = slice(0, DEV_COUNT) if split == "dev" else slice(DEV_COUNT, None)
    images, labels = bunch.images[part], bunch.target[part].astype(np.int64)
    return [render_uci(im, resample) for im in images], labels


def canvas_digits(folder: Path = CANVAS_DIR) -> tuple[list[bytes], np.ndarray]:
    files = sorted(folder.glob("*.png"))
    labels = [int(re.search(r"digit(\d)", f.name).group(1)) for f in files]  # type: ignore[union-attr]
    return [f.read_bytes() for f in files], np.array(labels, dtype=np.int64)


def recognise(bundle_path: Path, pngs: list[bytes], batch: int = 64) -> np.ndarray:
    """Labels the client's POST /recognize gives the files (in process, the real app)."""
    from client.app import create_app
    from client.settings import ClientSettings, parse_bundle_source

    with tempfile.TemporaryDirectory() as state:
        settings = ClientSettings(bundle=str(bundle_path), state_dir=Path(state))  # type: ignore[call-arg]
        source = parse_bundle_source(settings.bundle, settings.server_url)
        labels: list[int] = []
        with TestClient(create_app(settings, source)) as http:
            for start in range(0, len(pngs), batch):
                files = [
                    ("files", (f"{start + i}.png", data, "image/png"))
                    for i, data in enumerate(pngs[start : start + batch])
                ]
                answer = http.post("/recognize", files=files)
                answer.raise_for_status()
                labels += [r["label"] for r in answer.json()["results"]]
    return np.array(labels, dtype=np.int64)
