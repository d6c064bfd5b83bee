"""The graph contract: window counts in floor mode, output shapes, the ReLU-chain rule and the
codebook size of a bit width, checked against torch where torch defines them."""

from __future__ import annotations

import pytest

from shared.network import (
    ACCUMULATORS,
    CODES,
    GraphError,
    as_dag,
    bits_of_codebook,
    carries_relu,
    check_graph,
    codebook_size,
    is_relu_chain,
    output_shape,
    weight_shape,
    windows,
)


def test_windows_are_floor_mode() -> None:
    assert windows(28, 5, 1) == 24
    assert windows(24, 2, 2) == 12
    assert windows(7, 2, 2) == 3  # the partial last window is dropped
    assert windows(5, 5, 3) == 1


def test_output_shapes_of_every_op() -> None:
    conv = {"op": "conv2d", "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1}
    assert output_shape(conv, (3, 9, 9)) == (8, 5, 5)
    assert output_shape({"op": "maxpool2d", "kernel_size": 2, "stride": 2}, (8, 5, 5)) == (8, 2, 2)
    assert output_shape({"op": "flatten"}, (8, 2, 2)) == (32,)
    assert output_shape({"op": "linear", "out_features": 10}, (32,)) == (10,)
    assert weight_shape({**conv, "in_channels": 3}) == (8, 3, 3, 3)
    assert weight_shape({"op": "linear", "in_features": 32, "out_features": 10}) == (10, 32)


def test_relu_chain_rule() -> None:
    assert [carries_relu(i, 3) for i in range(3)] == [True, True, False]
    assert is_relu_chain([True, True, False]) and is_relu_chain([False])
    assert not is_relu_chain([True, True]) and not is_relu_chain([False, False])
    assert not is_relu_chain([])


@pytest.mark.parametrize("bits", range(1, 9))
def test_codebook_size_and_bits_round_trip(bits: int) -> None:
    assert bits_of_codebook(codebook_size(bits)) == bits


@pytest.mark.parametrize("length", [0, 1, 3, 12])
def test_a_codebook_that_is_not_a_power_of_two_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="2\\^b"):
        bits_of_codebook(length)


def test_as_dag_links_a_chain_and_names_its_activations() -> None:
    chain = [
        {"op": "conv2d", "name": "conv1", "relu": True},
        {"op": "maxpool2d", "name": "pool1"},
        {"op": "flatten", "name": "flatten"},
        {"op": "linear", "name": "fc1", "relu": False},
    ]
    dag = as_dag(chain)
    assert [n["inputs"] for n in dag] == [["input"], ["conv1"], ["pool1"], ["flatten"]]
    assert [n.get("activation") for n in dag] == ["relu", None, None, "none"]
    assert all("relu" not in n for n in dag) and "inputs" not in chain[0]  # a copy
    assert as_dag(dag) == dag


def test_output_shapes_of_the_dag_ops() -> None:
    dw = {"op": "conv2d", "out_channels": 6, "in_channels": 6, "groups": 6, "kernel_size": 3,
          "stride": 2, "padding": 1}  # fmt: skip
    assert output_shape(dw, (6, 7, 7)) == (6, 4, 4)
    assert weight_shape(dw) == (6, 1, 3, 3)
    assert output_shape({"op": "avgpool2d", "kernel_size": 3, "stride": 2}, (6, 7, 7)) == (6, 3, 3)
    assert output_shape({"op": "global_avgpool"}, (6, 7, 7)) == (6,)
    assert output_shape({"op": "add"}, (6, 7, 7)) == (6, 7, 7)


def test_check_graph_gives_every_value_its_shape_and_kind() -> None:
    graph = [
        {"op": "conv2d", "name": "c", "inputs": ["input"], "in_channels": 1, "out_channels": 2,
         "kernel_size": 3, "stride": 1, "padding": 1, "weight_bits": 4, "activation": "none"},
        {"op": "conv2d", "name": "s", "inputs": ["input"], "in_channels": 1, "out_channels": 2,
         "kernel_size": 1, "stride": 1, "padding": 0, "weight_bits": 4, "activation": "relu6",
         "clamp_max": 6},
        {"op": "add", "name": "a", "inputs": ["c", "s"], "activation": "relu"},
        {"op": "global_avgpool", "name": "g", "inputs": ["a"]},
        {"op": "linear", "name": "fc", "inputs": ["g"], "in_features": 2, "out_features": 3,
         "weight_bits": 4, "activation": "none"},
    ]  # fmt: skip
    values = check_graph(graph, (1, 5, 5), 4)
    assert {k: (v.shape, v.kind) for k, v in values.items()} == {
        "input": ((1, 5, 5), CODES),
        "c": ((2, 5, 5), ACCUMULATORS),
        "s": ((2, 5, 5), CODES),
        "a": ((2, 5, 5), CODES),
        "g": ((2,), CODES),
        "fc": ((3,), ACCUMULATORS),
    }
    with pytest.raises(GraphError, match="clamp_max"):
        check_graph([{**graph[0]}, {**graph[1], "clamp_max": 16}, *graph[2:]], (1, 5, 5), 4)
