import numpy as np
import pytest

from shared.bundle import decode_bundle
from shared.engine import IntegerNetwork
from shared.engine import numpy_engine as engine
from shared.network import carrier_dtype
from tests.factories import make_random_bundle
from tests.shared.reference import reference_logits


def _random_codes(net: IntegerNetwork, n: int, seed: int) -> np.ndarray:
    top = (1 << net.activation_bits) - 1
    return np.random.default_rng(seed).integers(0, top + 1, size=(n, *net.input_shape))


@pytest.mark.parametrize("arch", ["lenet", "photo", "gray_strided"])
@pytest.mark.parametrize("wbits,abits", [(1, 2), (2, 4), (4, 4), (5, 5), (8, 8)])
@pytest.mark.parametrize("seed", [0, 1])
def test_engine_equals_reference_bit_for_bit(arch, wbits, abits, seed):
    bundle = decode_bundle(
        make_random_bundle(seed, arch=arch, weight_bits=wbits, activation_bits=abits)
    )
    net = IntegerNetwork(bundle)
    q = _random_codes(net, 9, seed)
    got = net.forward_int(q)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, reference_logits(bundle, q))


def test_per_channel_requantisation_equals_reference():
    bundle = decode_bundle(make_random_bundle(3, per_channel=True))
    net = IntegerNetwork(bundle)
    q = _random_codes(net, 5, 3)
    np.testing.assert_array_equal(net.forward_int(q), reference_logits(bundle, q))


def test_random_networks_are_not_degenerate():
    # a test network whose activations all clip to 0 or to the top would prove nothing
    bundle = decode_bundle(make_random_bundle(0))
    net = IntegerNetwork(bundle)
    logits = net.forward_int(_random_codes(net, 32, 0))
    assert len(np.unique(logits.argmax(axis=1))) > 1


def test_wide_codebooks_fall_back_to_exact_carriers():
    # 16-bit codebooks and 8-bit activations push accumulators past 2^24
    bundle = decode_bundle(
        make_random_bundle(5, weight_bits=8, activation_bits=8, codebook_bits=16)
    )
    net = IntegerNetwork(bundle)
    assert any(getattr(layer, "dtype", None) == np.float64 for layer in net._layers)
    q = _random_codes(net, 4, 5)
    np.testing.assert_array_equal(net.forward_int(q), reference_logits(bundle, q))


def test_carrier_dtype_bounds():
    assert carrier_dtype(2**24 - 1) == np.float32
    assert carrier_dtype(2**24) == np.float64
    assert carrier_dtype(2**53) == np.int64


def test_predict_returns_labels_and_probabilities():
    net = IntegerNetwork(decode_bundle(make_random_bundle(0)))
    x = np.random.default_rng(0).random((4, 1, 28, 28))
    labels, probs = net.predict(x)
    assert labels.shape == (4,) and probs.shape == (4, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_array_equal(labels, probs.argmax(axis=1))
    with pytest.raises(ValueError, match="shape"):
        net.quantize_input(np.zeros((1, 3, 28, 28)))


@pytest.mark.parametrize("arch", ["lenet", "photo"])
def test_batch_split_across_threads_gives_the_same_logits(arch):
    bundle = decode_bundle(make_random_bundle(4, arch=arch))
    serial, threaded = IntegerNetwork(bundle), IntegerNetwork(bundle, threads=3)
    q = _random_codes(serial, 50, 4)
    np.testing.assert_array_equal(threaded.forward_int(q), serial.forward_int(q))
    np.testing.assert_array_equal(threaded.forward_int(q), reference_logits(bundle, q))
    x = np.random.default_rng(5).random((40, *serial.input_shape))
    for got, want in zip(threaded.predict(x), serial.predict(x), strict=True):
        np.testing.assert_array_equal(got, want)


def test_float_requantisation_is_used_and_int64_fallback_agrees(monkeypatch):
    bundle = decode_bundle(make_random_bundle(6, weight_bits=4, activation_bits=4))
    fast = IntegerNetwork(bundle)
    weighted = [x for x in fast._layers if getattr(x, "relu", False)]
    assert weighted and all(x.scale is not None for x in weighted)
    # where no float constants can be proved, the engine requantises with the int64 formula
    monkeypatch.setattr(engine, "fit_affine_requant", lambda *args, **kwargs: None)
    slow = IntegerNetwork(bundle)
    assert all(x.scale is None for x in slow._layers if getattr(x, "relu", False))
    q = _random_codes(fast, 12, 6)
    want = reference_logits(bundle, q)
    np.testing.assert_array_equal(fast.forward_int(q), want)
    np.testing.assert_array_equal(slow.forward_int(q), want)


def test_large_batches_run_in_pieces_with_the_same_logits(monkeypatch):
    bundle = decode_bundle(make_random_bundle(7, arch="photo"))
    monkeypatch.setattr(engine, "WORKSPACE_BYTES", 1)  # one image per piece
    net = IntegerNetwork(bundle)
    assert net._chunk == 1
    q = _random_codes(net, 5, 7)
    np.testing.assert_array_equal(net.forward_int(q), reference_logits(bundle, q))


def test_small_batches_of_big_images_are_split_too(monkeypatch):
    bundle = decode_bundle(make_random_bundle(8, arch="photo"))
    net = IntegerNetwork(bundle, threads=2)
    calls: list[int] = []
    forward = net._forward

    def counted(x, quantized):
        calls.append(len(x))
        return forward(x, quantized)

    monkeypatch.setattr(net, "_forward", counted)
    q = _random_codes(net, 4, 8)
    monkeypatch.setattr(engine, "SPLIT_MACS", net._macs * 2)  # two images' worth per thread
    np.testing.assert_array_equal(net.forward_int(q), reference_logits(bundle, q))
    assert calls == [2, 2]
    calls.clear()
    monkeypatch.setattr(engine, "SPLIT_MACS", net._macs * 3)  # too little work to split
    net.forward_int(q)
    assert calls == [4]
