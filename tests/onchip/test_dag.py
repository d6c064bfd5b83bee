"""The generated C of DAG bundles (format version 3), built with the host's gcc, gives the
reference interpreter's integer logits: for each op on its own (grouped, depthwise and
pointwise convolutions, relu6, adds of accumulators and of codes, pools, flatten, linear) and
for random DAGs mixing them all. The arena keeps a residual's identity alive while its branch
runs, and a chain keeps its two regions."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from scripts.onchip.toolchain import host_build, host_run, missing_host_tools
from shared.bundle import Bundle, decode_bundle
from shared.cgen import generate_bundle_c
from shared.cgen.emit import _divide, _plan_arena
from shared.engine.reference import run_reference
from shared.network import quantize_input
from tests.factories import GraphBuilder, make_random_bundle, random_dag_bundle

pytestmark = pytest.mark.skipif(missing_host_tools() is not None, reason="no host gcc")


def pixels(bundle: Bundle, count: int, seed: int = 0) -> np.ndarray:
    """Random 8-bit images (N, C, H, W) for the bundle's input."""
    spec = bundle.manifest["input"]
    shape = (count, spec["channels"], spec["height"], spec["width"])
    return np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.uint8)


def reference_logits(bundle: Bundle, images: np.ndarray) -> np.ndarray:
    """The reference interpreter on the codes the C input table gives these pixels (the
    engine's quantiser on pixel / 255 in float32)."""
    spec = bundle.manifest["input"]
    x = images.astype(np.float32) / np.float32(255.0)
    codes = quantize_input(x, spec["scale"], int(bundle.manifest["activation_bits"]))
    return run_reference(bundle.manifest, bundle.tensors, codes)


def assert_host_matches(bundle: Bundle, work: Path, count: int = 8) -> None:
    images = pixels(bundle, count)
    want = reference_logits(bundle, images)
    exe = host_build(generate_bundle_c(bundle), work)
    np.testing.assert_array_equal(host_run(exe, images, want.shape[1]), want)


# --- one op at a time ----------------------------------------------------------------------
# Each builds a small graph around the op under test and ends in a linear layer (the output).


def _grouped(b: GraphBuilder) -> str:
    x = b.conv("input", 6, 3, padding=1)
    return b.flatten(b.conv(x, 4, 3, stride=2, padding=1, groups=2))


def _grouped_pooled(b: GraphBuilder) -> str:  # a grouped conv's max-pool runs on its codes
    x = b.conv("input", 4, 1)
    return b.flatten(b.maxpool(b.conv(x, 6, 3, padding=1, groups=2), 2))


def _depthwise(b: GraphBuilder) -> str:  # stride 2, padding at every border, relu6
    x = b.conv("input", 5, 3, padding=1)
    return b.flatten(b.depthwise(x, 3, stride=2, padding=1, activation="relu6"))


def _depthwise_from_pixels(b: GraphBuilder) -> str:  # the input quantised into the arena
    return b.global_avgpool(b.depthwise("input", 3, padding=2))


def _depthwise_residual(b: GraphBuilder) -> str:  # accumulators of a depthwise conv into an add
    x = b.conv("input", 4, 3, padding=1)
    return b.global_avgpool(b.add(b.depthwise(x, 3, padding=1, activation="none"), x))


def _depthwise_interior(b: GraphBuilder) -> str:  # even channels: windows inside the map
    x = b.depthwise(b.conv("input", 6, 1), 3, padding=1)  # and at its borders
    return b.flatten(b.depthwise(x, 3, stride=2))  # no padding: every window inside


def _pointwise_in_place(b: GraphBuilder) -> str:  # 8 channels: whole activation words
    x = b.conv("input", 8, 3, padding=1)
    return b.global_avgpool(b.conv(x, 6, 1, activation="relu6"))


def _pointwise_gathered(b: GraphBuilder) -> str:  # 3 channels, and stride 2
    x = b.conv("input", 3, 3)
    return b.flatten(b.conv(x, 5, 1, stride=2))


def _pointwise_pooled(b: GraphBuilder) -> str:  # in place, with the max-pool fused
    x = b.conv("input", 16, 3, padding=1)
    return b.flatten(b.maxpool(b.conv(x, 4, 1), 2))


def _relu6_conv_from_pixels(b: GraphBuilder) -> str:
    return b.flatten(b.conv("input", 4, 3, padding=1, activation="relu6", clamp_max=5))


def _add_accumulators(b: GraphBuilder) -> str:  # a ResNet block: conv + BN, no ReLU, + identity
    x = b.conv("input", 4, 3, padding=1)
    branch = b.conv(b.conv(x, 4, 3, padding=1), 4, 3, padding=1, activation="none")
    return b.flatten(b.add(branch, x))


def _add_codes_saturating(b: GraphBuilder) -> str:
    x = b.conv("input", 3, 3, padding=1)
    y = b.conv(x, 3, 3, padding=1)
    return b.flatten(b.add(y, x, activation="relu6", gain=8.0))


def _avgpool(b: GraphBuilder) -> str:  # n = 9: no power of two
    x = b.conv("input", 3, 3)
    return b.flatten(b.avgpool(x, 3, 2))


def _avgpool_after_pixels(b: GraphBuilder) -> str:
    return b.flatten(b.avgpool("input", 2, 1))


def _maxpool_alone(b: GraphBuilder) -> str:  # a max-pool of codes no convolution produced
    x = b.conv("input", 3, 3, padding=1)
    return b.flatten(b.maxpool(b.add(b.conv(x, 3, 1, activation="none"), x), 3, 2))


def _global_avgpool(b: GraphBuilder) -> str:  # n = 35
    return b.global_avgpool(b.conv("input", 5, 3, padding=1))


def _flatten_then_add(b: GraphBuilder) -> str:  # the flatten an add reads is in C order
    x = b.flatten(b.conv("input", 2, 3, stride=2))
    return b.add(b.linear(x, b.shapes[x][0], activation="none"), x)


def _input_read_twice(b: GraphBuilder) -> str:  # the image's codes alive across a node
    branch = b.conv("input", 3, 3, padding=1, activation="none")
    return b.flatten(b.add(branch, "input"))


def _linear_chain(b: GraphBuilder) -> str:  # flatten of the pixels, then linear relu6
    return b.linear(b.flatten("input"), 12, activation="relu6")


def _linear_accumulators_add(b: GraphBuilder) -> str:
    x = b.global_avgpool(b.conv("input", 6, 3, padding=1))
    return b.add(b.linear(x, 6, activation="none"), x, activation="relu6")


OPS: dict[str, Callable[[GraphBuilder], str]] = {
    "grouped": _grouped,
    "grouped_pooled": _grouped_pooled,
    "depthwise": _depthwise,
    "depthwise_from_pixels": _depthwise_from_pixels,
    "depthwise_residual": _depthwise_residual,
    "depthwise_interior": _depthwise_interior,
    "pointwise_in_place": _pointwise_in_place,
    "pointwise_gathered": _pointwise_gathered,
    "pointwise_pooled": _pointwise_pooled,
    "relu6_conv_from_pixels": _relu6_conv_from_pixels,
    "add_accumulators": _add_accumulators,
    "add_codes_saturating": _add_codes_saturating,
    "avgpool": _avgpool,
    "avgpool_after_pixels": _avgpool_after_pixels,
    "maxpool_alone": _maxpool_alone,
    "global_avgpool": _global_avgpool,
    "flatten_then_add": _flatten_then_add,
    "input_read_twice": _input_read_twice,
    "linear_chain": _linear_chain,
    "linear_accumulators_add": _linear_accumulators_add,
}


def op_bundle(op: str, activation_bits: int, weight_bits: int, seed: int = 0) -> Bundle:
    """A 3 x 7 x 5 input, the op's graph, then a linear layer whose accumulators are logits."""
    b = GraphBuilder(seed, (3, 7, 5), activation_bits=activation_bits, weight_bits=weight_bits)
    x = OPS[op](b)
    return b.bundle(b.linear(x, 4, activation="none"))


@pytest.mark.parametrize(("activation_bits", "weight_bits"), [(4, 4), (8, 8), (5, 3)])
@pytest.mark.parametrize("op", list(OPS))
def test_each_op_matches_the_reference(tmp_path, op, activation_bits, weight_bits):
    assert_host_matches(op_bundle(op, activation_bits, weight_bits), tmp_path)


# --- random DAGs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("activation_bits", "weight_bits"), [(4, 4), (8, 8), (5, 2), (3, 3), (6, 1)]
)
@pytest.mark.parametrize("seed", range(6))
def test_random_dags_match_the_reference(tmp_path, seed, activation_bits, weight_bits):
    bundle = random_dag_bundle(
        seed, activation_bits=activation_bits, weight_bits=weight_bits, saturate=seed % 2 == 1
    )
    assert_host_matches(bundle, tmp_path)


# --- the arena -----------------------------------------------------------------------------


def test_the_planner_never_overlaps_values_alive_together():
    rng = np.random.default_rng(0)
    for _ in range(200):
        count = int(rng.integers(1, 12))
        births = rng.integers(0, 10, size=count)
        lives = {f"v{i}": (int(b), int(b + rng.integers(0, 4))) for i, b in enumerate(births)}
        sizes = {v: 4 * int(rng.integers(1, 20)) for v in lives}
        offsets, total = _plan_arena(sizes, lives)
        for v in lives:
            assert offsets[v] % 4 == 0 and offsets[v] + sizes[v] <= total
            for u in lives:
                together = lives[u][0] <= lives[v][1] and lives[v][0] <= lives[u][1]
                if u != v and together:
                    apart = (
                        offsets[u] + sizes[u] <= offsets[v] or offsets[v] + sizes[v] <= offsets[u]
                    )
                    assert apart, (u, v)


def test_a_residual_identity_stays_alive_while_its_branch_runs():
    """Two ping-pong regions would put the block's second convolution over its input x
    (x -> conv -> conv -> add(., x)); the planner keeps x apart."""
    bundle = op_bundle("add_accumulators", 4, 4)
    model = generate_bundle_c(bundle)
    source = model.files["siq_model.c"]
    assert "uint8_t *a = (uint8_t *)siq_arena;" in source and "r1" not in source
    maps = {p.name: p.out_bytes for p in model.layers}
    # x, the branch's codes and its accumulators are alive at once when the last conv runs
    assert model.activation_bytes >= maps["conv1"] + maps["conv2"] + maps["conv3"]


def test_a_chain_keeps_its_two_regions():
    """Every value of a chain is read by the next step alone: the regions the steps write in
    turn, as large as their largest value each (the layout and bytes chains have had)."""
    bundle = decode_bundle(make_random_bundle(0, arch="lenet"))
    model = generate_bundle_c(bundle)
    out = [p.out_bytes for p in model.layers if p.out_bytes]
    assert model.activation_bytes == max(out[0::2]) + max(out[1::2])
    assert f"uint8_t *r1 = r0 + {max(out[0::2])};" in model.files["siq_model.c"]


@pytest.mark.parametrize(
    ("n", "bits"), [(4, 4), (9, 4), (9, 8), (35, 4), (49, 8), (3, 8), (2000, 8)]
)
def test_the_average_pools_division_is_exact_on_every_reachable_sum(n, bits):
    """The C expression for (sum + n // 2) // n, evaluated as uint32 on every sum of n codes:
    a multiply-shift where one is exact (no division on a Cortex-M0), else `/`."""
    largest = n * ((1 << bits) - 1)
    expr = _divide(n, largest)
    assert ("/" in expr) == (n == 2000)  # 2000 * 255 sums: no exact 32-bit multiply-shift
    python = re.sub(r"(\d+)u\b", r"\1", expr)
    total = np.arange(largest + 1, dtype=np.uint64)
    got = eval(python.replace("/", "//"), {"sum": total})  # noqa: S307 - our own expression
    assert np.array_equal(got, (total + n // 2) // n)
    multiplier = re.search(r"\* (\d+)u", expr)
    if multiplier:  # the product is uint32 in C: it must not wrap
        assert (largest + n // 2) * int(multiplier.group(1)) < 2**32


def test_node_names_that_would_clash_in_c_are_renamed(tmp_path):
    """Node names are free ([A-Za-z0-9_.]): 'w_fc' would name the same C array as fc's
    weights (siq_w_fc), 'get' the library's siq_get, 'a.b' and 'a_b' one identifier."""
    b = GraphBuilder(0, (3, 7, 5))
    x = b.conv("input", 4, 3, name="get")
    x = b.conv(x, 4, 1, name="a.b")
    x = b.flatten(b.conv(x, 4, 1, name="a_b"), name="w_fc")
    bundle = b.bundle(b.linear(x, 3, activation="none", name="fc"))
    assert_host_matches(bundle, tmp_path)
