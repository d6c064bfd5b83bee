import numpy as np
import pytest

from shared.quant import (
    quantize_input,
    quantize_multiplier,
    requantize,
    round_half_up,
)


def test_round_half_up_sends_ties_up():
    np.testing.assert_array_equal(
        round_half_up(np.array([0.5, 1.5, -0.5, -1.5, 2.49])), [1, 2, 0, -1, 2]
    )


def test_quantize_input_clips_to_code_range():
    q = quantize_input(np.array([-0.2, 0.0, 0.5, 1.0, 1.3]), 1 / 15, 4)
    assert q.tolist() == [0, 0, 8, 15, 15]


@pytest.mark.parametrize("real", [1e-9, 3.3e-5, 0.0123, 0.5, 0.99999999, 1.0, 7.25, 12345.6])
def test_quantize_multiplier_is_accurate(real):
    m, s = quantize_multiplier(real)
    assert 1 <= s <= 62 and 1 <= m < 2**31
    assert abs(m / 2**s - real) <= real * 2**-29 + 2**-62


def test_quantize_multiplier_rejects_bad_factors():
    for bad in (0.0, -1.0, float("nan"), 2.0**31):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_requantize_rounds_half_up_and_clips(bits):
    m, s = 1 << 30, 31  # factor 1/2
    acc = np.array([-3, -1, 0, 1, 2, 3, 5, 10**6])
    top = (1 << bits) - 1
    expected = np.clip(np.floor(acc / 2 + 0.5), 0, top)
    np.testing.assert_array_equal(requantize(acc, np.int64(m), np.int64(s), bits), expected)
