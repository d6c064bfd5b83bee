"""The graph contract: window counts in floor mode, output shapes, the ReLU-chain rule and the
codebook size of a bit width, checked against torch where torch defines them."""

from __future__ import annotations

import pytest

from shared.network import (
    bits_of_codebook,
    carries_relu,
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
