import numpy as np
import pytest

from shared.bundle import entropy


@pytest.mark.parametrize("alphabet", [1, 2, 16, 256])
def test_round_trip_and_size_near_entropy(alphabet):
    rng = np.random.default_rng(alphabet)
    p = rng.dirichlet(np.full(alphabet, 0.5))
    symbols = rng.choice(alphabet, size=20_000, p=p)
    lengths = entropy.code_lengths(np.bincount(symbols, minlength=alphabet))
    stream = entropy.encode_symbols(symbols, lengths)
    decoded, end = entropy.decode_symbols(stream, lengths, len(symbols))
    np.testing.assert_array_equal(decoded, symbols)
    assert end == entropy.encoded_bits(symbols, lengths) and len(stream) == (end + 7) // 8
    freq = np.bincount(symbols, minlength=alphabet) / len(symbols)
    h = -(freq[freq > 0] * np.log2(freq[freq > 0])).sum() * len(symbols)
    assert h <= end <= h + len(symbols)  # Huffman: within one bit per symbol of entropy


def test_codes_are_prefix_free_and_canonical():
    lengths = np.array([3, 3, 3, 3, 3, 2, 4, 4, 0])  # RFC 1951's example, plus an unused one
    codes = entropy.canonical_codes(lengths)
    assert codes[:8].tolist() == [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111]


def test_skewed_counts_are_length_limited():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    lengths = entropy.code_lengths(np.array(fib))
    assert lengths.max() <= entropy.MAX_CODE_LENGTH
    symbols = np.arange(30)
    decoded, _ = entropy.decode_symbols(entropy.encode_symbols(symbols, lengths), lengths, 30)
    np.testing.assert_array_equal(decoded, symbols)


def test_truncated_stream_and_unknown_pattern_are_refused():
    lengths = np.array([1, 2, 0, 0])  # codes 0 and 10; 11 is no code
    stream = entropy.encode_symbols(np.array([1, 1, 0, 1]), lengths)  # 10 10 0 10 -> 7 bits
    with pytest.raises(ValueError, match="ends"):
        entropy.decode_symbols(stream, lengths, 6)  # the pad bit reads as a 5th code
    with pytest.raises(ValueError, match="not a code"):
        entropy.decode_symbols(np.array([0b11000000], dtype=np.uint8), lengths, 1)
    with pytest.raises(ValueError, match="over-subscribe"):
        entropy.canonical_codes(np.array([1, 1, 1]))


def test_lengths_pack_into_nibbles():
    lengths = np.array([0, 15, 3, 7, 1])
    packed = entropy.pack_lengths(lengths)
    assert packed.size == 3
    np.testing.assert_array_equal(entropy.unpack_lengths(packed, 5), lengths)
    with pytest.raises(ValueError):
        entropy.unpack_lengths(np.array([0x10, 0x37, 0xF1], dtype=np.uint8), 5)
