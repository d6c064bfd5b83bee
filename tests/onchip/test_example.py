"""The example program that ships with the generated library (siq_example.c) compiles with the
host's gcc under the strict flags, classifies a pixel file exactly as shared.engine does, and
its opening comment gives the build line and a preprocessing recipe that runs as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts.onchip.toolchain import STRICT_FLAGS, missing_host_tools
from shared.bundle import decode_bundle
from shared.cgen import EXAMPLE_FILE, HOST_BUILD, example_program, generate_bundle_c, write_sources
from shared.image import preprocess_bytes
from tests.factories import make_random_bundle
from tests.onchip.conftest import engine_logits
from tests.samples import SAMPLE_DIR, mnist_test_digits

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(missing_host_tools() is not None, reason="no host gcc")


def build_example(out: Path) -> Path:
    """HOST_BUILD, as the comment gives it, with the strict flags added."""
    command = shlex.split(HOST_BUILD)
    assert command[0] == "cc" and f"{HOST_BUILD}" in (out / EXAMPLE_FILE).read_text()
    subprocess.run(["gcc", *STRICT_FLAGS, *command[1:]], cwd=out, check=True, timeout=300)
    return out / "siq_example"


def run_example(exe: Path, pixels: bytes) -> tuple[str, list[int]]:
    done = subprocess.run([str(exe), "-"], input=pixels, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    label_line, logits_line = done.stdout.decode().splitlines()
    return label_line, [int(v) for v in logits_line.split(":")[1].split()]


def reference_pixels(comment: str, image: Path) -> bytes:
    """The comment's `python3 -c ...` recipe, run as written on `image` by the Python that
    has SIQ installed (this one)."""
    line = next(x.strip() for x in comment.splitlines() if x.strip().startswith("python3 -c"))
    command = shlex.split(line.split(" > ")[0].replace("photo.jpg", str(image)))
    done = subprocess.run(
        [sys.executable, *command[1:]],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(("arch", "draft"), [("lenet", False), ("photo", False), ("photo", True)])
def test_the_example_classifies_as_the_engine_does(tmp_path: Path, arch: str, draft: bool) -> None:
    bundle = decode_bundle(make_random_bundle(5, arch=arch, weight_bits=4, per_channel=True))
    if draft:  # what new photo bundles say: JPEGs decoded at a reduced DCT scale
        bundle.manifest["input"]["preprocess"]["draft"] = True
    model = generate_bundle_c(bundle)
    write_sources(model, tmp_path)
    exe = build_example(tmp_path)
    spec = bundle.manifest["input"]["preprocess"]
    if spec["kind"] == "digit":
        image = tmp_path / "digit.png"
        Image.fromarray(255 - mnist_test_digits(1)[0]).save(image)
    else:
        image = sorted((SAMPLE_DIR / "office10" / "test" / "cup").iterdir())[0]
    pixels = reference_pixels(model.example[EXAMPLE_FILE], image)
    want = np.rint(preprocess_bytes(image.read_bytes(), spec) * 255).astype(np.uint8)
    assert pixels == want.tobytes()
    label_line, logits = run_example(exe, pixels)
    expected = engine_logits(bundle, want[None])[0]
    assert logits == expected.tolist()
    best = int(np.argmax(expected))
    assert label_line == f"label: {bundle.class_names[best]} (class {best})"


def test_class_names_are_c_strings_and_a_short_file_is_refused(tmp_path: Path) -> None:
    bundle = decode_bundle(make_random_bundle(6, arch="lenet"))
    names = ['say "hi"', "back\\slash", "caf\u00e9 */", "\u6570\u5b57", *map(str, range(6))]
    manifest = {**bundle.manifest, "input": {**bundle.manifest["input"], "class_names": names}}
    model = generate_bundle_c(bundle)
    model.example = {EXAMPLE_FILE: example_program(manifest, bundle.id)}
    write_sources(model, tmp_path)
    exe = build_example(tmp_path)
    size = int(np.prod([bundle.manifest["input"][k] for k in ("channels", "height", "width")]))
    pixels = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
    label_line, logits = run_example(exe, pixels.tobytes())
    best = int(np.argmax(logits))
    assert label_line == f"label: {names[best]} (class {best})"
    short = subprocess.run([str(exe), "-"], input=b"\0" * 7, capture_output=True, timeout=60)
    assert short.returncode == 2 and f"7 bytes, expected {size}" in short.stderr.decode()


def test_the_recipe_is_in_the_comment() -> None:
    digit = example_program(decode_bundle(make_random_bundle(1, arch="lenet")).manifest)
    photo = example_program(decode_bundle(make_random_bundle(1, arch="photo")).manifest)
    assert "centre of mass is at pixel (14, 14)" in digit and "28 x 28 bytes" in digit
    assert re.search(r"shorter side is \d+ pixels", photo) and "C x H x W" in photo
    for text in (digit, photo):
        comment = text.split("*/", 1)[0]
        assert HOST_BUILD in comment and "-mcpu=cortex-m4" in comment
        assert "*/" not in comment[2:] and "#include" in text.split("*/", 1)[1]
