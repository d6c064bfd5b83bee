"""The smallest chip (issue 29): the `m0net` family trains as a job, exports a version-3
bundle, and its C library generated for the least flash (`for_size`) gives the engine's logits
on the host and on the Cortex-M0 (QEMU microbit) within 12 KB of flash and 2 KB of RAM, as
linked. Flash and RAM do not depend on the trained values, so an untrained network's bundle
measures them; the sample's MNIST digits train a small job in seconds."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from scripts.onchip.toolchain import (
    firmware_build,
    host_build,
    host_run,
    linked_library_sizes,
    missing_arm_tools,
    missing_host_tools,
    qemu_run,
)
from shared.bundle import Bundle, read_bundle_file
from shared.cgen import generate_bundle_c
from tests.factories import random_dag_bundle
from tests.onchip.conftest import engine_logits, mnist_test_images
from tests.onchip.test_dag import pixels, reference_logits

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(missing_host_tools() is not None, reason="no host gcc")
KB = 1024


@functools.cache
def m0net_bundle() -> Bundle:
    """An untrained m0net (batch-norm statistics of real digits, folded), uniform 4-bit
    codebooks, calibrated on the sample's digits: what the chip holds, but for the values."""
    from tests.onchip.test_archs import arch_bundle

    return arch_bundle("m0net", mnist_test_images(16).copy())


def test_m0net_is_the_small_graph_the_chip_needs():
    from server.training.models import build_model, graph_of

    model = build_model("m0net", 1, 10, 28)
    graph = graph_of(model, 4)
    ops = [n["op"] for n in graph]
    assert ops == ["conv2d", "maxpool2d"] * 3 + ["global_avgpool", "linear"]
    # every max-pool reads its convolution alone: the C takes it over the accumulators
    for conv, pool in zip(graph[0:6:2], graph[1:6:2], strict=True):
        assert pool["inputs"] == [conv["name"]]
    assert graph[0]["padding"] == 0 and graph[0]["kernel_size"] == 5
    weights = sum(m.weight.numel() for m in model.ops.values() if hasattr(m, "weight"))
    assert 10_000 < weights < 16_000


@pytest.mark.timeout(900)  # builds the bundle (minutes on a loaded machine; then cached)
def test_for_size_stores_codes_and_codebooks_only():
    bundle = m0net_bundle()
    small, fast = generate_bundle_c(bundle, for_size=True), generate_bundle_c(bundle)
    assert {p.fmt for p in small.layers if p.fmt} == {"bits"}
    assert all(p.table_bytes == 2 * 16 for p in small.layers if p.fmt)  # 16 int16 centroids
    table = sum(p.table_bytes for p in fast.layers)
    assert sum(p.table_bytes for p in small.layers) < table // 10
    assert "siq_rows_t4" not in small.files["siq_model.c"]
    assert small.arena_bytes <= 1600  # 12x12x12 + 6x6x24 codes, patch, accumulators


@pytest.mark.parametrize(("activation_bits", "weight_bits"), [(4, 4), (5, 3), (4, 2), (8, 8)])
@pytest.mark.parametrize("seed", range(3))
def test_random_dags_for_size_match_the_reference(tmp_path, seed, activation_bits, weight_bits):
    bundle = random_dag_bundle(seed, activation_bits=activation_bits, weight_bits=weight_bits)
    images = pixels(bundle, 6)
    want = reference_logits(bundle, images)
    exe = host_build(generate_bundle_c(bundle, for_size=True), tmp_path)
    np.testing.assert_array_equal(host_run(exe, images, want.shape[1]), want)


@pytest.mark.timeout(900)
def test_m0net_on_the_m0_within_12_kb_of_flash_and_2_kb_of_ram(tmp_path):
    if missing_arm_tools() is not None:
        pytest.skip(f"Cortex-M toolchain: {missing_arm_tools()}")
    bundle = m0net_bundle()
    images = mnist_test_images(8)
    want = reference_logits(bundle, images)
    assert len({tuple(row) for row in want}) == len(want)  # logits that differ per image
    model = generate_bundle_c(bundle, for_size=True)
    np.testing.assert_array_equal(host_run(host_build(model, tmp_path / "host"), images, 10), want)
    fw = firmware_build(model, tmp_path / "m0", "m0", images[:2], ["-Os"])
    run = qemu_run(fw, 10, timeout=300)
    np.testing.assert_array_equal(run.logits, want[:2])
    linked = linked_library_sizes(fw, ["-Os"])
    # the library as linked takes newlib's and libgcc's routines with it
    assert linked["text"] > fw.library["text"] and linked["rodata"] == fw.library["rodata"]
    flash = linked["text"] + linked["rodata"] + linked["data"]
    ram = linked["data"] + linked["bss"] + run.stack_bytes
    assert flash <= 12 * KB and ram <= 2 * KB, (flash, ram)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_m0net_job_writes_a_bundle_the_m0_runs(tmp_path: Path) -> None:
    """The whole job with `arch: m0net` on the sample's digits (seconds of training): a
    version-3 bundle whose engine accuracy is the job's, and whose C is the engine's."""
    from server.params import JobParams
    from server.training.export import engine_accuracy
    from server.training.pipeline import load_job_dataset, run_pipeline
    from tests.samples import sample_mnist_source

    config = JobParams(
        dataset="mnist", arch="m0net", weight_bits=4, activation_bits=4, epochs=4,
        retrain_epochs=0.2, max_iterations=1, train_limit=3000, test_limit=200,
    )  # fmt: skip
    with sample_mnist_source():
        result = run_pipeline(config, None, tmp_path)
        ds = load_job_dataset(config, None)
    bundle = read_bundle_file(Path(str(result.bundle_path)))
    assert bundle.manifest["format_version"] == 3
    assert bundle.manifest["provenance"]["config"]["arch"] == "m0net"
    assert engine_accuracy(bundle, ds.test_x, ds.test_y) == result.quantized_accuracy
    assert result.quantized_accuracy > 0.3  # learnt something in seconds (chance: 0.1)
    want = engine_logits(bundle, ds.test_x[:50])
    model = generate_bundle_c(bundle, for_size=True)
    host = host_run(host_build(model, tmp_path / "host"), ds.test_x[:50], 10)
    np.testing.assert_array_equal(host, want)
