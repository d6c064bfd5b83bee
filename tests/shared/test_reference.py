"""The reference interpreter, op by op, on small cases computed by hand: avgpool's rounding,
add's saturation, depthwise convolutions, stride 2 with padding at the borders, relu6's
clamp, the requantisation's rounding; and whole graphs through `run_reference`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.bundle import bundle_id, decode_bundle
from shared.engine.reference import run_node, run_reference
from shared.network import as_dag, quantize_input
from tests.factories import GraphBuilder, make_random_bundle, random_codes, random_dag_bundle
from tests.shared.reference import reference_logits


def _weighted(tensors: dict, name: str, weights, bias, multiplier=None, shift=None) -> None:
    """Tensors of a weighted node whose integer weights are given (codebook = the values)."""
    from shared.bundle.bitpack import pack_codes

    w = np.asarray(weights)
    values, codes = np.unique(w, return_inverse=True)
    codebook = np.concatenate([values, np.zeros(16 - len(values), np.int64)])
    tensors[f"{name}.codes"] = pack_codes(codes.ravel(), 4)
    tensors[f"{name}.codebook"] = codebook.astype(np.int32)
    tensors[f"{name}.bias"] = np.asarray(bias, np.int32)
    if multiplier is not None:
        tensors[f"{name}.multiplier"] = np.asarray(multiplier, np.int32)
        tensors[f"{name}.shift"] = np.asarray(shift, np.int32)


def _conv(c_in, c_out, k, stride=1, padding=0, groups=1, activation="none", **extra) -> dict:
    return {
        "op": "conv2d",
        "name": "c",
        "inputs": ["input"],
        "in_channels": c_in,
        "out_channels": c_out,
        "kernel_size": k,
        "stride": stride,
        "padding": padding,
        "groups": groups,
        "weight_bits": 4,
        "activation": activation,
        **extra,
    }


def test_avgpool_rounds_the_mean_half_up() -> None:
    x = np.array([[1, 1, 3, 4, 2, 2, 1, 0], [0, 0, 1, 1, 1, 1, 0, 0]]).reshape(1, 1, 2, 8)
    node = {"op": "avgpool2d", "name": "p", "inputs": ["input"], "kernel_size": 2, "stride": 2}
    # window sums 2, 9, 6, 1 over n = 4: means 0.5, 2.25, 1.5, 0.25
    assert run_node(node, [x], {}, 4).tolist() == [[[[1, 2, 2, 0]]]]


def test_avgpool_overlapping_windows_in_floor_mode() -> None:
    x = np.arange(10).reshape(1, 1, 2, 5)  # [[0..4], [5..9]]
    node = {"op": "avgpool2d", "name": "p", "inputs": ["input"], "kernel_size": 2, "stride": 2}
    # windows at columns 0-1 and 2-3; column 4 is a partial window, dropped
    assert run_node(node, [x], {}, 4).tolist() == [
        [[[(0 + 1 + 5 + 6 + 2) // 4, (2 + 3 + 7 + 8 + 2) // 4]]]
    ]


def test_global_avgpool_rounds_half_up_per_channel() -> None:
    x = np.array([[[1, 0, 2], [0, 0, 0]], [[1, 1, 0], [0, 0, 0]]]).reshape(1, 2, 2, 3)
    node = {"op": "global_avgpool", "name": "g", "inputs": ["input"]}
    # n = 6: 3/6 = 0.5 -> 1, 2/6 -> 0
    assert run_node(node, [x], {}, 4).tolist() == [[1, 0]]


def test_maxpool_floor_mode() -> None:
    x = np.array([[1, 7, 2], [3, 0, 9], [8, 8, 8]]).reshape(1, 1, 3, 3)
    node = {"op": "maxpool2d", "name": "m", "inputs": ["input"], "kernel_size": 2, "stride": 2}
    assert run_node(node, [x], {}, 4).tolist() == [[[[7]]]]


def test_flatten_is_c_order() -> None:
    x = np.arange(12).reshape(1, 3, 2, 2)
    node = {"op": "flatten", "name": "f", "inputs": ["input"]}
    assert run_node(node, [x], {}, 4).tolist() == [list(range(12))]


def test_add_brings_both_inputs_to_one_scale_and_rounds_half_up() -> None:
    tensors = {
        "a.multiplier": np.array([2**30, 2**30], np.int32),
        "a.shift": np.array([31], np.int32),
    }
    node = {"op": "add", "name": "a", "inputs": ["x", "y"], "activation": "relu"}
    x, y = np.array([[10, 2, 0]]), np.array([[15, 1, 0]])
    # (x + y) / 2: 12.5 -> 13, 1.5 -> 2, 0 -> 0
    assert run_node(node, [x, y], tensors, 4).tolist() == [[13, 2, 0]]


def test_add_saturates_at_its_top() -> None:
    tensors = {
        "a.multiplier": np.array([2**30, 2**30], np.int32),
        "a.shift": np.array([30], np.int32),
    }
    x, y = np.array([[10, 2]]), np.array([[15, 1]])
    relu = {"op": "add", "name": "a", "inputs": ["x", "y"], "activation": "relu"}
    assert run_node(relu, [x, y], tensors, 4).tolist() == [[15, 3]]  # 25 clips at A = 15
    relu6 = {**relu, "activation": "relu6", "clamp_max": 7}
    assert run_node(relu6, [x, y], tensors, 4).tolist() == [[7, 3]]


def test_add_of_accumulators_and_codes() -> None:
    # x accumulators / 4 + y codes / 2: -10 + 7.5 = -2.5 -> 0 (the ReLU); 41/4 = 10.25 -> 10
    tensors = {
        "a.multiplier": np.array([2**29, 2**30], np.int32),
        "a.shift": np.array([31], np.int32),
    }
    node = {"op": "add", "name": "a", "inputs": ["x", "y"], "activation": "relu"}
    x, y = np.array([[-40, 41]]), np.array([[15, 0]])
    assert run_node(node, [x, y], tensors, 4).tolist() == [[0, 10]]


def test_depthwise_convolution_with_one_channel_and_padding() -> None:
    x = np.arange(1, 10).reshape(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
    tensors: dict = {}
    _weighted(tensors, "c", [[[[0, 1, 0], [1, 1, 1], [0, 1, 0]]]], [1])
    node = _conv(1, 1, 3, padding=1, groups=1)
    got = run_node(node, [x], tensors, 4)
    # a plus-shaped sum over zero-padded codes, + bias 1
    want = [
        [1 + 2 + 4, 1 + 2 + 3 + 5, 2 + 3 + 6],
        [1 + 4 + 5 + 7, 2 + 4 + 5 + 6 + 8, 3 + 5 + 6 + 9],
        [4 + 7 + 8, 5 + 7 + 8 + 9, 6 + 8 + 9],
    ]
    assert got.tolist() == [[(np.array(want) + 1).tolist()]]


def test_depthwise_convolution_keeps_channels_apart() -> None:
    x = np.stack([np.full((2, 2), 1), np.full((2, 2), 2)])[None]  # (1, 2, 2, 2)
    tensors: dict = {}
    _weighted(tensors, "c", np.array([1, 3]).reshape(2, 1, 1, 1), [0, 0])
    got = run_node(_conv(2, 2, 1, groups=2), [x], tensors, 4)
    assert got[0, 0].tolist() == [[1, 1], [1, 1]] and got[0, 1].tolist() == [[6, 6], [6, 6]]


def test_grouped_convolution_sums_within_its_group() -> None:
    x = np.array([1, 2, 4, 8]).reshape(1, 4, 1, 1)
    tensors: dict = {}
    # out 0 sees channels 0, 1 (weights 1, 1); out 1 sees channels 2, 3 (weights 1, 2)
    _weighted(tensors, "c", np.array([[1, 1], [1, 2]]).reshape(2, 2, 1, 1), [0, 0])
    got = run_node(_conv(4, 2, 1, groups=2), [x], tensors, 4)
    assert got.ravel().tolist() == [1 + 2, 4 + 16]


def test_stride_two_with_padding_at_the_borders() -> None:
    x = np.arange(16).reshape(1, 1, 4, 4)
    tensors: dict = {}
    _weighted(tensors, "c", np.ones((1, 1, 3, 3), np.int64), [0])
    got = run_node(_conv(1, 1, 3, stride=2, padding=1), [x], tensors, 4)
    # windows centred on (0,0), (0,2), (2,0), (2,2); the padding adds zeros
    assert got.tolist() == [
        [[[0 + 1 + 4 + 5, 1 + 2 + 3 + 5 + 6 + 7], [4 + 5 + 8 + 9 + 12 + 13, 90]]]
    ]


def test_requantisation_rounds_half_up_and_clips() -> None:
    tensors: dict = {}
    # acc = 2x - 5 times 1/2: x = 0 -> -2.5 -> -2 -> 0; x = 3 -> 0.5 -> 1; x = 4 -> 1.5 -> 2
    _weighted(tensors, "c", [[[[2]]]], [-5], [2**30], [31])
    x = np.array([0, 3, 4, 31]).reshape(1, 1, 1, 4)
    got = run_node(_conv(1, 1, 1, activation="relu"), [x], tensors, 5)
    assert got.ravel().tolist() == [0, 1, 2, 29]  # 57/2 = 28.5 -> 29 < A = 31


def test_relu6_clamps_at_clamp_max() -> None:
    tensors: dict = {}
    _weighted(tensors, "c", [[[[1]]]], [0], [2**30], [30])  # factor 1
    x = np.array([3, 6, 9, 31]).reshape(1, 1, 1, 4)
    relu6 = _conv(1, 1, 1, activation="relu6", clamp_max=6)
    assert run_node(relu6, [x], tensors, 5).ravel().tolist() == [3, 6, 6, 6]
    relu = _conv(1, 1, 1, activation="relu")
    assert run_node(relu, [x], tensors, 5).ravel().tolist() == [3, 6, 9, 31]


def test_per_channel_requantisation_of_a_linear_node() -> None:
    tensors: dict = {}
    _weighted(tensors, "l", [[1, 1], [1, 1]], [0, 0], [2**30, 2**30], [30, 31])
    node = {
        "op": "linear", "name": "l", "inputs": ["input"], "in_features": 2, "out_features": 2,
        "weight_bits": 4, "activation": "relu",
    }  # fmt: skip
    assert run_node(node, [np.array([[2, 3]])], tensors, 4).tolist() == [[5, 3]]  # 5, 2.5 -> 3


def test_a_residual_graph_equals_its_nodes_composed() -> None:
    b = GraphBuilder(3, (2, 5, 5))
    c1 = b.conv("input", 3, 3, padding=1, activation="relu6")
    c2 = b.conv(c1, 3, 3, padding=1, activation="none")
    a = b.add(c2, c1)
    out = b.linear(b.global_avgpool(a), 4, activation="none")
    bundle = b.bundle(out)
    q = random_codes(bundle, 3, 1)
    values = {"input": q}
    for node in as_dag(bundle.manifest["graph"]):
        values[node["name"]] = run_node(
            node, [values[x] for x in node["inputs"]], bundle.tensors, 4
        )
    np.testing.assert_array_equal(run_reference(bundle.manifest, bundle.tensors, q), values[out])
    assert values[out].shape == (3, 4) and values[out].dtype == np.int64


def test_a_chain_bundle_runs_as_its_dag() -> None:
    bundle = decode_bundle(make_random_bundle(0, arch="photo"))
    q = random_codes(bundle, 4)
    manifest = {**bundle.manifest, "graph": as_dag(bundle.manifest["graph"])}
    np.testing.assert_array_equal(
        run_reference(manifest, bundle.tensors, q), reference_logits(bundle, q)
    )


@pytest.mark.parametrize("seed", range(5))
def test_random_dags_are_deterministic_per_seed(seed: int) -> None:
    one, two = random_dag_bundle(seed), random_dag_bundle(seed)
    assert one.id == two.id
    assert random_dag_bundle(seed + 100).id != one.id


def test_the_committed_version_one_bundle_gives_its_committed_logits() -> None:
    data = Path(__file__).parent / "data"
    raw = (data / "v1_lenet_w3.siq").read_bytes()
    bundle = decode_bundle(raw, expected_id=bundle_id(raw))  # written before checksums
    x = np.load(data / "v1_lenet_w3_inputs.npy").astype(np.float64)
    codes = quantize_input(x, bundle.manifest["input"]["scale"], bundle.manifest["activation_bits"])
    np.testing.assert_array_equal(
        run_reference(bundle.manifest, bundle.tensors, codes),
        np.load(data / "v1_lenet_w3_logits.npy"),
    )
