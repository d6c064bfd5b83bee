"""The client's page in a real browser with a DAG bundle (format version 3: a depthwise-
separable block whose accumulators add to its input, pools, a linear head) of photo shape:
the bundle panel says what network and engine serve, and a chosen photo gets the label the
reference interpreter gives it. `python -m client` runs as a real process; nothing is
trained (the bundle is tests/client/test_dag_bundle.py's)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.bundle import decode_bundle
from shared.engine.reference import run_reference
from shared.image import preprocess_bytes
from shared.network import quantize_input
from tests.browser.conftest import DESKTOP, serve
from tests.client.test_dag_bundle import dag_network
from tests.conftest import ServiceProcess


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dag") / "dag.siq"
    path.write_bytes(dag_network())
    return path


@pytest.fixture(scope="module")
def client(bundle_path: Path, data_dir: Path, tmp_path_factory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("dag-client")
    yield from serve("client", data_dir, root, SIQ_BUNDLE=str(bundle_path))


def test_a_dag_bundle_answers_a_photo(browser, client, bundle_path: Path, tmp_path: Path) -> None:
    pixels = np.random.default_rng(5).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    photo = tmp_path / "photo.png"
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    photo.write_bytes(buffer.getvalue())
    bundle = decode_bundle(bundle_path.read_bytes())
    m = bundle.manifest
    x = preprocess_bytes(photo.read_bytes(), m["input"]["preprocess"])[None]
    q = quantize_input(x, float(m["input"]["scale"]), int(m["activation_bits"]))
    expected = bundle.class_names[int(run_reference(m, bundle.tensors, q).argmax())]
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    try:
        page.goto(client.url + "/")
        panel = page.locator('[data-testid="bundle"][data-state="ready"]')
        panel.wait_for(timeout=15000)
        text = panel.inner_text()
        assert f"{len(m['graph'])} nodes" in text and "onnxruntime" in text, text
        page.get_by_test_id("upload").set_input_files(str(photo))
        prediction = page.locator('[data-testid="prediction"][data-state="done"]')
        prediction.wait_for(timeout=15000)
        assert prediction.inner_text().startswith(expected)
    finally:
        context.close()
