"""The strongest claim: the quantised forward pass SIQ retrains through (QuantSimNet) is the
network the bundle holds. A real network is trained on digits (seconds), quantised and
exported; on every test image the simulation and shared.engine must give the same label,
and the same logits up to the float32 rounding bound of docs/ARCHITECTURE.md ("The
simulation and the engine"): where that bound is below half an accumulator unit, the
simulation's logits rounded to accumulator units must equal the engine's integers exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.data import load_dataset
from server.params import JobParams
from server.training.export import encode_quantized
from server.training.pipeline import train_float
from server.training.siq import SIQSettings, run_siq
from server.training.train import to_float
from shared.bundle import decode_bundle, layer_weights
from shared.engine import IntegerNetwork
from shared.network import accumulator_bound

U32 = 2.0**-24  # unit roundoff of float32


def _gamma(n: int) -> float:
    """Higham's gamma_n: the relative error bound of an n-term float32 dot product."""
    return n * U32 / (1 - n * U32)


@pytest.fixture(scope="module")
def trained() -> dict:
    torch.manual_seed(0)
    ds = load_dataset("digits", None, train_limit=500)  # all 359 test images
    config = JobParams(
        dataset="digits", weight_bits=3, activation_bits=4, epochs=4, retrain_epochs=0.5,
        max_iterations=1, seed=0,
    )  # fmt: skip
    fm = train_float(ds, config)
    siq = run_siq(fm.model, fm.train, fm.val, SIQSettings.for_job(config, ds.recipe))
    bundle = decode_bundle(encode_quantized(siq.sim, ds, weight_bits=config.weight_bits))
    net = IntegerNetwork(bundle)
    engine = net.forward_int(net.quantize_input(ds.test_x.astype(np.float64) / 255.0))
    with torch.no_grad():
        sim = siq.sim(to_float(ds.test_x)).double().numpy()  # real logits
    return {"ds": ds, "fm": fm, "bundle": bundle, "engine": engine, "sim": sim}


def test_simulation_and_engine_give_the_same_label_on_every_test_image(trained: dict) -> None:
    ds, engine, sim = trained["ds"], trained["engine"], trained["sim"]
    assert len(engine) == len(ds.test_y) == 359
    assert trained["fm"].float_accuracy > 0.8  # a real network, not a constant one
    np.testing.assert_array_equal(sim.argmax(1), engine.argmax(1))


def test_simulation_logits_are_the_engines_within_float_rounding(trained: dict) -> None:
    bundle, engine, sim = trained["bundle"], trained["engine"], trained["sim"]
    m = bundle.manifest
    last = [g for g in m["graph"] if g["op"] in ("conv2d", "linear")][-1]
    w = layer_weights(last, bundle.tensors)  # (O, K) integers
    bias = bundle.tensors[f"{last['name']}.bias"].astype(np.int64)
    # |fl(sum) - sum| <= gamma_(K+3) * sum|terms|: K products and the bias, plus the float32
    # roundings of the input scale, the weight table and the bias (docs/ARCHITECTURE.md)
    bound = _gamma(w.shape[1] + 3) * accumulator_bound(w, bias, m["activation_bits"])  # (O,)
    units = sim / m["logit_scale"]  # the simulation's logits in accumulator units
    err = np.abs(units - engine)  # (N, O)
    assert (err <= bound).all(), f"worst {err.max():.3g} units against a bound {bound.min():.3g}"
    assert err.max() < 0.5  # measured ~0.01: rounding recovers the engine's integers
    np.testing.assert_array_equal(np.floor(units + 0.5).astype(np.int64), engine)
