"""Pruning in the SIQ loop, per-layer bits and the byte budget, on small digits runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from server.cli import quantize_main
from server.data import load_dataset
from server.params import JobParams
from server.recipes import RECIPES
from server.training.compress import prune_to_fit
from server.training.export import engine_predictions
from server.training.models import build_model, weighted_layers
from server.training.pipeline import run_pipeline
from server.training.quantsim import QuantSimNet
from server.training.siq import (
    BUDGET_RETRAIN_FACTOR,
    SIQSettings,
    prune_weights,
    quantize_layers,
    run_siq,
)
from shared.bundle import read_bundle_file
from shared.errors import ConfigError

SMALL = {"epochs": 2, "retrain_epochs": 0.3, "train_limit": 300, "test_limit": 100, "seed": 2}


def test_pruned_weights_stay_zero_through_retraining() -> None:
    torch.manual_seed(0)
    ds = load_dataset("digits", None, train_limit=300, test_limit=10)
    model = build_model("lenet", 1, 10, 28)
    config = JobParams(dataset="digits", weight_bits=3, max_iterations=3)
    settings = SIQSettings.for_job(config, RECIPES["digits"].for_job(config))
    settings.retrain_epochs, settings.prune_steps, settings.calibration_images = 0.5, 2, 64
    settings.sparsity = {"fc1": 0.9, "conv2": 0.5}
    data = (ds.train_x, ds.train_y)
    result = run_siq(model, data, data, settings)
    assert [round(it["sparsity"], 3) for it in result.iterations][-1] > 0.8
    assert result.best_iteration >= 2  # the first iteration is not yet at the targets
    sim = result.sim
    for m in weighted_layers(sim.model):
        lq = sim.layers[m.siq_name]
        if lq.mask is None:
            assert m.siq_name in ("conv1", "fc2")
            continue
        assert lq.codebook_int[lq.zero_code] == 0
        assert abs((~lq.mask).mean() - settings.sparsity[m.siq_name]) < 1e-3
        codes = sim.codes_of(m).numpy()
        assert (codes[~lq.mask] == lq.zero_code).all()
        assert (m.weight.detach().numpy()[~lq.mask] == 0).all()  # shadow weights stay zero
        assert (sim.quantized_weight(m).detach().numpy()[~lq.mask] == 0).all()


def test_gradual_pruning_inside_retraining_reaches_the_targets() -> None:
    torch.manual_seed(0)
    ds = load_dataset("digits", None, train_limit=300, test_limit=10)
    model = build_model("lenet", 1, 10, 28)
    config = JobParams(dataset="digits", weight_bits=2, max_iterations=3, tolerance=0.0)
    settings = SIQSettings.for_job(config, RECIPES["digits"].for_job(config))
    settings.retrain_epochs, settings.prune_steps, settings.calibration_images = 1.0, 2, 64
    settings.sparsity, settings.unit_pruned = {"fc1": 0.8, "conv2": 0.5}, ("fc1",)
    settings.prune_within, settings.distill = 0.5, 0.5
    data = (ds.train_x, ds.train_y)
    result = run_siq(model, data, data, settings)
    # the first iteration's retraining already pruned most of its ramp step; by the end of
    # the second the targets are reached, and they hold
    sparsity = [it["sparsity"] for it in result.iterations]
    assert 0.3 < sparsity[0] < sparsity[1] == pytest.approx(sparsity[2])
    sim = result.sim
    fc1 = sim.layers["fc1"].mask
    assert fc1 is not None and (~fc1.any(axis=1)).mean() == pytest.approx(0.8, abs=0.01)
    for m in weighted_layers(sim.model):
        lq = sim.layers[m.siq_name]
        if lq.mask is not None:
            assert (sim.quantized_weight(m).detach().numpy()[~lq.mask] == 0).all()
            assert (sim.codes_of(m).numpy()[~lq.mask] == lq.zero_code).all()


def test_unit_pruning_drops_whole_units_and_the_next_layers_columns() -> None:
    torch.manual_seed(0)
    model = build_model("lenet", 1, 10, 28)
    config = JobParams(dataset="digits", max_iterations=3)
    settings = SIQSettings.for_job(config, RECIPES["digits"].for_job(config))
    settings.sparsity, settings.unit_pruned = {"fc1": 0.75, "conv2": 0.5}, ("fc1",)
    masks: dict[str, np.ndarray] = {}
    for step in (1, 2, 3):
        before = masks.get("fc1")
        masks = prune_weights(model, settings, step, masks)
        if before is not None:
            assert not (masks["fc1"] & ~before).any()  # pruned units stay pruned
    layers = {m.siq_name: m for m in weighted_layers(model)}
    alive = masks["fc1"].any(axis=1)
    assert (masks["fc1"] == alive[:, None]).all()  # whole units, nothing else
    assert alive.mean() == pytest.approx(0.25, abs=1 / len(alive))
    assert (masks["fc2"] == alive[None, :]).all()  # fc2 had no target: only the columns
    assert (layers["fc2"].weight.detach().numpy()[:, ~alive] == 0).all()
    assert (~masks["conv2"]).mean() == pytest.approx(0.5, abs=1e-3)  # single weights there
    assert "conv1" not in masks


def test_a_budget_job_retrains_longer_unless_it_says_otherwise() -> None:
    recipe = RECIPES["mnist"]
    plain = SIQSettings.for_job(JobParams(dataset="mnist"), recipe)
    budget = SIQSettings.for_job(JobParams(dataset="mnist", size_budget_bytes=22482), recipe)
    explicit = SIQSettings.for_job(
        JobParams(dataset="mnist", size_budget_bytes=22482, retrain_epochs=0.5), recipe
    )
    assert plain.retrain_epochs == recipe.retrain_epochs
    assert budget.retrain_epochs == recipe.retrain_epochs * BUDGET_RETRAIN_FACTOR
    assert explicit.retrain_epochs == 0.5


def test_prune_to_fit_drops_whole_units_of_a_block_layer() -> None:
    torch.manual_seed(0)
    model = build_model("lenet", 1, 10, 28)
    config = JobParams(dataset="digits", weight_bits=2, max_iterations=1)
    settings = SIQSettings.for_job(config, RECIPES["digits"].for_job(config))
    settings.sparsity, settings.unit_pruned = {"fc1": 0.5}, ("fc1",)
    masks = prune_weights(model, settings, 1, {})
    sim = QuantSimNet(model, quantize_layers(model, settings, masks), 4)
    storage = {"fc1": {"layout": "block", "bytes": 8000}, "fc2": {"layout": "dense", "bytes": 900}}
    before = sim.layers["fc1"].mask
    assert before is not None
    alive = before.any(axis=1)
    assert prune_to_fit(sim, SimpleNamespace(manifest={"storage": storage}), 800)
    after = sim.layers["fc1"].mask
    assert after is not None and not (after & ~before).any()
    dropped = alive & ~after.any(axis=1)
    assert 10 <= dropped.sum() <= alive.sum() // 4  # ~1.25 x the excess share of the units
    assert (after == after.any(axis=1)[:, None]).all()  # still whole units


def test_budget_run_fits_and_reports_its_allocation(tmp_path: Path, capsys) -> None:
    budget = 16_000
    args = [
        "--dataset",
        "digits",
        "--weight-bits",
        "4",
        "--activation-bits",
        "4",
        "--size-budget-bytes",
        str(budget),
        "--out",
        str(tmp_path),
        "--max-iterations",
        "2",
    ]
    for key, value in SMALL.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    assert quantize_main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bundle_bytes"] <= budget
    bundle = read_bundle_file(result["bundle_path"], expected_id=result["bundle_id"])
    assert bundle.size == result["bundle_bytes"] and bundle.manifest["format_version"] == 2
    allocation = result["allocation"]
    assert allocation == bundle.manifest["metrics"]["allocation"]
    assert set(allocation) == {"conv1", "conv2", "fc1", "fc2"}
    for layer in bundle.manifest["graph"]:
        if layer["op"] in ("conv2d", "linear"):
            assert 2 <= layer["weight_bits"] <= 4
            assert allocation[layer["name"]]["bits"] == layer["weight_bits"]
    assert allocation["fc1"]["sparsity"] > 0.9  # most of the bytes are there
    stored = sum(a["bytes"] for a in allocation.values())
    assert stored < budget
    ds = load_dataset("digits", None, train_limit=300, test_limit=100)
    recomputed = float((engine_predictions(bundle, ds.test_x) == ds.test_y).mean())
    assert recomputed == result["quantized_accuracy"]


def test_explicit_bits_and_sparsity_per_layer(tmp_path: Path) -> None:
    config = JobParams(
        dataset="digits",
        weight_bits=4,
        bits_per_layer={"fc1": 2, "conv1": 5},
        sparsity_per_layer={"fc1": 0.95},
        max_iterations=2,
        **SMALL,
    )
    result = run_pipeline(config, None, tmp_path)
    bundle = read_bundle_file(result.bundle_path)
    bits = {g["name"]: g["weight_bits"] for g in bundle.manifest["graph"] if "weight_bits" in g}
    assert bits == {"conv1": 5, "conv2": 4, "fc1": 2, "fc2": 4}
    assert bundle.manifest["weight_bits"] == 5
    assert result.allocation is not None
    assert result.allocation["fc1"]["sparsity"] >= 0.95
    assert result.allocation["conv2"]["sparsity"] < 0.5
    assert bundle.manifest["storage"]["fc1"]["layout"] == "sparse"


def test_unknown_layer_and_impossible_budget_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bits_per_layer") as info:
        run_pipeline(
            JobParams(dataset="digits", bits_per_layer={"fc9": 2}, **SMALL), None, tmp_path
        )
    assert info.value.field == "bits_per_layer"
    with pytest.raises(ConfigError, match="size_budget_bytes"):
        run_pipeline(
            JobParams(dataset="digits", size_budget_bytes=2500, max_iterations=1, **SMALL),
            None,
            tmp_path,
        )
    with pytest.raises(ConfigError, match="sparsity"):
        JobParams.from_dict({"dataset": "digits", "sparsity_per_layer": {"fc1": 1.0}})
    with pytest.raises(ConfigError, match="size_budget_bytes"):
        JobParams.from_dict({"dataset": "digits", "size_budget_bytes": 100})
    assert not list(tmp_path.glob("*.siq"))


def test_global_sparsity_prunes_that_share(tmp_path: Path) -> None:
    config = JobParams(dataset="digits", weight_bits=3, sparsity=0.9, max_iterations=2, **SMALL)
    result = run_pipeline(config, None, tmp_path)
    assert result.allocation is not None
    total = sum(a["weights"] for a in result.allocation.values())
    zero = sum(a["weights"] - a["nonzero"] for a in result.allocation.values())
    assert zero / total >= 0.9 - 1e-3
    assert np.isfinite(result.quantized_accuracy)
