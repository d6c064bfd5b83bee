"""Real office photos of any size, posted to the client's /recognize, get exactly the labels
(and probabilities) the server's integer-engine evaluation gives the same files through the
server's image-folder loader. The network is a photonet trained for a few steps: the point
is that both sides preprocess identically, not accuracy."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from server.data.imagefolder import load_imagefolder
from server.params import JobParams
from server.training.pipeline import run_pipeline
from shared.bundle import read_bundle_file
from shared.engine import IntegerNetwork

pytestmark = pytest.mark.slow

CLASSES = ("cup", "lamp", "watch")


@pytest.fixture(
    scope="module", params=["sample", pytest.param("full", marks=pytest.mark.full_data)]
)
def office10(request: pytest.FixtureRequest, office10_dir: Path) -> Path:
    """office10: the committed sample, and the whole data set for the `full_data` run."""
    if request.param == "sample":
        return office10_dir
    return request.getfixturevalue("full_data_dir") / "office10"


@pytest.fixture(scope="module")
def photonet_bundle(office10: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny photonet trained on 40 office10 photos (a few optimiser steps)."""
    torch.set_num_threads(1)
    config = JobParams(
        dataset="office10",
        weight_bits=4,
        activation_bits=5,
        epochs=2,
        retrain_epochs=2,
        max_iterations=1,
        train_limit=40,
        test_limit=8,
        seed=0,
    )
    out = tmp_path_factory.mktemp("bundles")
    result = run_pipeline(config, office10.parent, out)
    return Path(result.bundle_path)


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _odd_variants(src: Path, dest: Path) -> None:
    """The same photo as a large PNG with a transparent border, and as small grayscale JPEG."""
    with Image.open(src) as opened:
        image = opened.convert("RGB")
    big = image.resize((1000, 700), Image.Resampling.BICUBIC).convert("RGBA")
    alpha = np.full((700, 1000), 255, dtype=np.uint8)
    alpha[:80] = 0  # a transparent band: composited on white by the preprocessing
    big.putalpha(Image.fromarray(alpha))
    big.save(dest / "zz_big_alpha.png")
    image.convert("L").resize((37, 90)).save(dest / "zz_small_gray.jpg", quality=80)


@pytest.fixture(scope="module")
def photo_folder(office10: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small image folder of real office10 test photos (plus odd sizes/modes)."""
    root = tmp_path_factory.mktemp("photos") / "office_small"
    for cls in CLASSES:
        files = sorted((office10 / "test" / cls).iterdir())[:3]
        for split in ("train", "test"):
            (root / split / cls).mkdir(parents=True)
            for f in files:
                shutil.copy(f, root / split / cls / f.name)
        _odd_variants(files[0], root / "test" / cls)
    return root


def test_client_labels_equal_server_engine_on_office_photos(
    make_app, photonet_bundle: Path, photo_folder: Path
) -> None:
    bundle = read_bundle_file(photonet_bundle)
    assert bundle.manifest["input"]["preprocess"]["kind"] == "photo"
    net = IntegerNetwork(bundle)

    # server side: the data-set loader (shared.image on the files) + the integer engine
    ds = load_imagefolder(photo_folder, "office_small")
    labels, probs = net.predict(ds.test_x.astype(np.float32) / 255.0)  # (N,), (N, classes)

    # client side: the raw file bytes, in the loader's order (class, then file name)
    files = [
        f for cls in CLASSES for f in sorted((photo_folder / "test" / cls).iterdir()) if f.is_file()
    ]
    assert len(files) == len(labels) == 15
    sizes = {_size(f) for f in files}
    assert len(sizes) >= 4  # photos of several sizes really went through
    http = TestClient(make_app(str(photonet_bundle)))
    uploads = [("files", (f.name, f.read_bytes(), "application/octet-stream")) for f in files]
    answer = http.post("/recognize", files=uploads)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["label"] for r in results] == labels.tolist()
    for r, p in zip(results, probs, strict=True):
        np.testing.assert_allclose(r["probabilities"], p, atol=1e-6)

    # one photo posted as a raw image/jpeg body answers the same as in the batch
    jpg = files[1]
    raw = http.post("/recognize", content=jpg.read_bytes(), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200, raw.text
    assert raw.json()["results"][0]["label"] == int(labels[1])


def test_photo_bytes_round_trip_is_lossless(photo_folder: Path) -> None:
    """uint8 storage of the loader's arrays loses nothing of shared.image.preprocessing's output."""
    from shared.image import decode_image, preprocess

    ds = load_imagefolder(photo_folder)
    f = sorted((photo_folder / "test" / CLASSES[0]).iterdir())[-1]  # the small gray variant
    x = preprocess(decode_image(f.read_bytes()), ds.preprocess)  # (3, S, S)
    np.testing.assert_array_equal(ds.test_x[4].astype(np.float32) / 255.0, x)
