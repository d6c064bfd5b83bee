import numpy as np
import pytest

from shared.bundle.bitpack import pack_codes, packed_size, unpack_codes


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 13, 1000, 1001])
def test_round_trip_every_width_and_odd_lengths(bits, count):
    rng = np.random.default_rng(bits * 1000 + count)
    codes = rng.integers(0, 1 << bits, size=count).astype(np.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.size == packed_size(count, bits) == (count * bits + 7) // 8
    np.testing.assert_array_equal(unpack_codes(packed, bits, count), codes)


def test_layout_is_lsb_first():
    assert pack_codes(np.array([1, 2]), 4).tolist() == [0x21]
    assert pack_codes(np.array([1, 0, 1]), 1).tolist() == [0b101]
    assert pack_codes(np.array([3, 1, 2]), 3).tolist() == [3 | 1 << 3 | (2 & 3) << 6, 2 >> 2]


def test_rejects_out_of_range_codes_and_bad_widths():
    with pytest.raises(ValueError, match="lie in"):
        pack_codes(np.array([4]), 2)
    with pytest.raises(ValueError, match="bits"):
        pack_codes(np.array([0]), 9)
    with pytest.raises(ValueError, match="bytes"):
        unpack_codes(np.zeros(3, np.uint8), 4, 4)


def test_rejects_non_zero_padding():
    packed = pack_codes(np.array([1, 2, 3]), 3)
    packed[-1] |= 0x80
    with pytest.raises(ValueError, match="padding"):
        unpack_codes(packed, 3, 3)
