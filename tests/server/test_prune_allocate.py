import numpy as np
import pytest

from server.training.allocate import LayerOption, allocate
from server.training.prune import magnitude_mask, pruned_codebook, ramp_sparsity, unit_mask


def _fit_quantiles(w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.quantile(w, (np.arange(k) + 0.5) / k)
    return c, np.zeros(len(w), dtype=np.int64)


def test_magnitude_mask_drops_the_smallest_and_only_ever_more():
    w = np.array([[0.5, -0.1, 0.02], [-0.9, 0.3, -0.05]])
    first = magnitude_mask(w, 0.5)
    assert first.tolist() == [[True, False, False], [True, True, False]]
    # a weight pruned before stays pruned even if it has grown since
    w2 = w.copy()
    w2[0, 2] = 5.0
    second = magnitude_mask(w2, 2 / 3, keep=first)
    assert not second[0, 2] and second.sum() == 2 and second[1, 0] and second[0, 0]
    assert magnitude_mask(w, 0.0).all()
    with pytest.raises(ValueError):
        magnitude_mask(w, 1.0)


def test_unit_mask_drops_whole_units_of_least_norm_and_only_ever_more():
    w = np.array([[0.5, -0.1, 0.0], [0.05, 0.05, 0.05], [-0.9, 0.3, 0.2], [0.1, 0.2, 0.0]])
    first = unit_mask(w, 0.5)
    assert first.tolist() == [[True] * 3, [False] * 3, [True] * 3, [False] * 3]
    # a unit pruned before stays pruned even if it has grown since; weights pruned one by
    # one in `keep` stay pruned in the units kept
    w2 = w.copy()
    w2[1] = 5.0
    keep = first.copy()
    keep[2, 1] = False
    second = unit_mask(w2, 0.75, keep=keep)
    assert second.any(axis=1).tolist() == [False, False, True, False]
    assert second[2].tolist() == [True, False, True]
    conv = np.random.default_rng(0).normal(size=(8, 2, 3, 3))
    mask = unit_mask(conv, 0.25)
    assert mask.shape == conv.shape and mask.reshape(8, -1).all(axis=1).sum() == 6
    with pytest.raises(ValueError):
        unit_mask(w, 1.0)


def test_ramp_reaches_the_target_and_never_decreases():
    values = [ramp_sparsity(0.9, t, 3) for t in range(0, 6)]
    assert values[0] == 0.0 and values[3] == pytest.approx(0.9) and values[5] == pytest.approx(0.9)
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))


def test_pruned_codebook_keeps_an_exact_zero_for_pruned_weights():
    rng = np.random.default_rng(0)
    w = rng.normal(size=1000)
    mask = magnitude_mask(w, 0.8)
    centroids, codes = pruned_codebook(w, mask, 4, _fit_quantiles)
    assert len(centroids) == 4 and (centroids == 0.0).sum() == 1
    zero = int(np.flatnonzero(centroids == 0.0)[0])
    assert (codes[~mask] == zero).all()
    assert (centroids[codes[mask]] != 0).mean() > 0.9  # kept weights mostly keep a value


def _opt(bits, sparsity, size, loss):
    return LayerOption(bits=bits, sparsity=sparsity, bytes=size, nonzero=0, loss=loss)


def test_allocation_is_the_best_combination_within_budget():
    options = {
        "a": [_opt(4, 0, 100, 0.0), _opt(2, 0, 50, 0.3), _opt(2, 0.9, 10, 1.0)],
        "b": [_opt(4, 0, 400, 0.0), _opt(3, 0.5, 150, 0.1), _opt(2, 0.9, 40, 0.5)],
    }
    # brute force over all combinations
    for budget in (50, 60, 150, 200, 250, 260, 500):
        fits = [
            (oa.loss + ob.loss, oa.bytes + ob.bytes, oa, ob)
            for oa in options["a"]
            for ob in options["b"]
            if oa.bytes + ob.bytes <= budget
        ]
        got = allocate(options, budget)
        if not fits:
            assert got is None
            continue
        best = min(f[0] for f in fits)
        assert got is not None
        assert got["a"].loss + got["b"].loss == pytest.approx(best)
        assert got["a"].bytes + got["b"].bytes <= budget


def test_allocation_with_coarse_units_never_exceeds_the_budget():
    rng = np.random.default_rng(1)
    options = {
        f"l{i}": [
            _opt(4, 0, int(s), float(loss))
            for s, loss in zip(rng.integers(1000, 100_000, 20), rng.random(20), strict=True)
        ]
        for i in range(5)
    }
    got = allocate(options, 200_000, max_units=64)
    assert got is not None and sum(o.bytes for o in got.values()) <= 200_000


def test_prune_to_fit_shrinks_the_largest_pruned_layer() -> None:
    """No training: a random LeNet, pruned and quantised, exported; asking for ~2 KB less
    prunes fc1 (the largest) further and the re-encoded bundle is that much smaller."""
    import torch

    from server.data.dataset import DIGIT_CLASSES, Dataset
    from server.params import JobParams
    from server.recipes import RECIPES
    from server.training.compress import allocation_report, prune_to_fit
    from server.training.export import encode_quantized
    from server.training.models import build_model
    from server.training.quantsim import QuantSimNet, calibrate
    from server.training.siq import SIQSettings, prune_weights, quantize_layers
    from shared.bundle import decode_bundle

    torch.manual_seed(0)
    images = np.random.default_rng(0).integers(0, 256, (32, 1, 28, 28), dtype=np.uint8)
    labels = np.zeros(32, dtype=np.int64)
    ds = Dataset("t", images, labels, images, labels, DIGIT_CLASSES, {"kind": "digit"}, "lenet",
                 RECIPES["digits"])  # fmt: skip
    model = build_model("lenet", 1, 10, 28)
    config = JobParams(dataset="t", weight_bits=3)
    settings = SIQSettings.for_job(config, RECIPES["digits"])
    settings.sparsity, settings.prune_steps = {"fc1": 0.9, "conv2": 0.5}, 1
    masks = prune_weights(model, settings, 1, {})
    sim = QuantSimNet(model, quantize_layers(model, settings, masks), 4)
    calibrate(sim, images)
    before = decode_bundle(encode_quantized(sim, ds, weight_bits=3))
    assert prune_to_fit(sim, before, 2000)
    after = decode_bundle(encode_quantized(sim, ds, weight_bits=3))
    a, b = allocation_report(before), allocation_report(after)
    assert b["fc1"]["nonzero"] < a["fc1"]["nonzero"] and b["conv2"] == a["conv2"]
    assert before.size - after.size >= 2000
    assert b["fc1"]["layout"] == "sparse" and b["fc1"]["sparsity"] > 0.9
