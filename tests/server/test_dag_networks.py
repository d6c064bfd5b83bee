"""The batch-norm networks (mobilenet, resnet, dsnet) from float to bundle: batch norm folds
into the convolution without changing the float network, and the quantised forward pass
SIQ retrains through is the integer network the bundle holds, node for node (depthwise and
pointwise convolutions, relu6's clamp, residual adds of accumulators and codes, global
average pooling): run in float64, its logits rounded to accumulator units equal the
contract's reference interpreter's and the numpy engine's integers on every image."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from server.data import Dataset
from server.data.dataset import DIGIT_CLASSES
from server.params import JobParams
from server.recipes import RECIPES
from server.training.batchnorm import fold_batchnorm
from server.training.export import encode_quantized, engine_accuracy
from server.training.models import GraphNet, build_model
from server.training.pipeline import load_job_dataset, run_pipeline
from server.training.quantsim import QuantSimNet, calibrate
from server.training.siq import SIQSettings, quantize_layers
from server.training.train import to_float, train_model
from shared.bundle import decode_bundle, read_bundle_file
from shared.engine import IntegerNetwork
from shared.engine.reference import run_reference

SIZE = 32  # small maps keep the test in seconds; every op and stride still occurs


def _images(n: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth random images (uint8, N x C x SIZE x SIZE): blurred noise, so that pools and
    convolutions see structure rather than white noise, each channel with its own gain."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random((n, channels, SIZE // 4, SIZE // 4)))
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear")
    gain = rng.uniform(0.3, 1.0, (n, channels, 1, 1))
    return (x.numpy() * gain * 255).round().astype(np.uint8)


def _with_statistics(model: GraphNet, x: np.ndarray) -> GraphNet:
    """The model with batch-norm statistics and affines that are not the identity."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in model.norms.values():
            bn.weight.copy_(0.5 + torch.rand(bn.weight.shape, generator=gen))
            bn.bias.copy_(0.2 * torch.randn(bn.bias.shape, generator=gen))
        model.train()
        for _ in range(3):
            model(to_float(x))
    return model.eval()


@pytest.mark.parametrize("arch", ["mobilenet", "resnet", "dsnet", "m0net"])
def test_folded_network_is_the_unfolded_one_in_eval_mode(arch: str) -> None:
    torch.manual_seed(0)
    channels = 1 if arch in ("dsnet", "m0net") else 3
    x = _images(16, channels)
    model = _with_statistics(build_model(arch, channels, 10, SIZE), x)
    assert len(model.norms) > 0
    folded = fold_batchnorm(model)
    assert len(folded.norms) == 0 and len(model.norms) > 0  # a copy; the original keeps them
    with torch.no_grad():
        want, got = model(to_float(x)), folded(to_float(x))
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
    with pytest.raises(ValueError, match="fold"):
        QuantSimNet(model, {}, 4)


def _quantised(arch: str, x: np.ndarray, y: np.ndarray) -> QuantSimNet:
    """Fold, k-means codebooks, calibrate, a few retraining steps through the quantised
    forward pass (gradients through every rounding, add and pool), calibrate again."""
    channels = x.shape[1]
    model = _with_statistics(build_model(arch, channels, 10, SIZE), x)
    train_model(model, x, y, epochs=10, lr=1e-2, batch_size=8)  # seconds: a net that has learnt
    model = fold_batchnorm(model)
    settings = SIQSettings(
        weight_bits=4, activation_bits=4, method="optimal", max_iterations=1, tolerance=0.0,
        codebook_tolerance=None, retrain_epochs=0.0, retrain_lr=0.0, batch_size=16,
        augment_shift=0, augment=None, seed=0,
    )  # fmt: skip
    sim = QuantSimNet(model, quantize_layers(model, settings), 4)
    calibrate(sim, x)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_model(sim, x, y, epochs=2 * 16 / len(y), lr=1e-3, batch_size=16)
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(moved) == len(before)  # every weight and bias got a gradient
    calibrate(sim, x)
    return sim


@pytest.mark.parametrize("arch", ["mobilenet", "resnet"])
def test_quantised_forward_pass_is_the_bundles_integer_network(arch: str) -> None:
    torch.manual_seed(0)
    x = _images(40, 3, seed=2)
    y = x.astype(np.float64).mean((2, 3)).argmax(1)  # the brightest channel: 3 classes
    sim = _quantised(arch, x, y)
    ds = Dataset("t", x, y, x, y, DIGIT_CLASSES, {"kind": "photo", "resize": SIZE, "crop": SIZE},
                 arch, RECIPES["imagefolder"])  # fmt: skip
    bundle = decode_bundle(encode_quantized(sim, ds, weight_bits=4))
    m = bundle.manifest
    assert m["format_version"] == 3
    ops = {g["op"] for g in m["graph"]}
    assert {"conv2d", "global_avgpool", "linear"} <= ops
    assert ("add" in ops) == (arch == "resnet")
    if arch == "mobilenet":
        dw = [g for g in m["graph"] if g["op"] == "conv2d" and g["groups"] > 1]
        assert dw and all(g["groups"] == g["in_channels"] == g["out_channels"] for g in dw)
        assert all(1 <= g["clamp_max"] <= 15 for g in m["graph"] if g.get("activation") == "relu6")
    net = IntegerNetwork(bundle)
    codes = net.quantize_input(x.astype(np.float64) / 255.0)
    reference = run_reference(m, bundle.tensors, codes)  # (N, 10) int64
    np.testing.assert_array_equal(net.forward_int(codes), reference)
    sim64 = copy.deepcopy(sim).double()
    with torch.no_grad():
        units = sim64(torch.from_numpy(x.astype(np.float64) / 255.0)).numpy() / m["logit_scale"]
    assert np.abs(units - reference).max() < 1e-6 * max(1, np.abs(reference).max())
    np.testing.assert_array_equal(np.floor(units + 0.5).astype(np.int64), reference)
    np.testing.assert_array_equal(units.argmax(1), reference.argmax(1))
    assert len(np.unique(reference.argmax(1))) > 1  # not a constant network


def test_a_dsnet_job_writes_a_version_3_bundle_the_engine_scores(tmp_path: Path) -> None:
    """The whole job with `arch`: float training with batch norm, folding, SIQ, a v3 bundle
    whose engine accuracy is the job's (digits, seconds)."""
    config = JobParams(
        dataset="digits", arch="dsnet", weight_bits=4, activation_bits=4, epochs=10,
        retrain_epochs=0.3, max_iterations=1, train_limit=400, test_limit=100,
    )  # fmt: skip
    result = run_pipeline(config, None, tmp_path)
    bundle = read_bundle_file(Path(str(result.bundle_path)))
    assert bundle.manifest["format_version"] == 3
    assert bundle.manifest["provenance"]["config"]["arch"] == "dsnet"
    assert not any("norm" in name for name in bundle.tensors)
    ds = load_job_dataset(config, None)
    assert engine_accuracy(bundle, ds.test_x, ds.test_y) == result.quantized_accuracy
    assert result.quantized_accuracy > 0.3  # learnt something in seconds (chance: 0.1)
