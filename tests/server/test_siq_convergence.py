"""The SIQ loop's convergence rule and the retraining schedule at very few steps."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from server.params import JobParams
from server.recipes import Recipe
from server.training.models import build_model
from server.training.siq import SIQSettings, run_siq
from server.training.train import train_model


def _tiny_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 40, (n, 1, 28, 28)).astype(np.uint8)
    x[np.arange(n), 0, 2 * y + 3, 4:24] = 255  # a class-dependent bar: learnable in a few steps
    return x, y


@pytest.mark.parametrize("n", [1, 60, 200])
def test_training_with_very_few_steps_runs(n: int) -> None:
    # OneCycleLR cannot plan fewer than a handful of steps; tiny jobs must still train
    torch.manual_seed(0)
    model = build_model("lenet", 1, 10, 28)
    x, y = _tiny_data(n)
    loss = train_model(model, x, y, epochs=0.5, lr=1e-3, batch_size=128)
    assert np.isfinite(loss)


def _siq(**kw: Any) -> Any:
    torch.manual_seed(0)
    model = build_model("lenet", 1, 10, 28)
    x, y = _tiny_data(256)
    train_model(model, x, y, epochs=2, lr=3e-3, batch_size=64)
    config = JobParams(dataset="digits", weight_bits=3, **kw)
    recipe = Recipe(epochs=2, retrain_epochs=0.25, batch_size=64)
    settings = dataclasses.replace(SIQSettings.for_job(config, recipe), calibration_images=64)
    return run_siq(model, (x, y), _tiny_data(128, seed=1), settings)


def test_settled_accuracy_converges_before_max_iterations() -> None:
    result = _siq(max_iterations=4, tolerance=1.0)  # any accuracy change counts as settled
    assert result.converged
    assert len(result.iterations) == 2  # the first iteration that can compare with a previous
    assert result.iterations[-1]["codebook_change"] is not None


def test_codebook_tolerance_is_required_when_set() -> None:
    # the codebooks never move by less than nothing, so the loop must run to the cap
    result = _siq(max_iterations=3, tolerance=1.0, codebook_tolerance=1e-12)
    assert not result.converged
    assert len(result.iterations) == 3


def test_unsettled_accuracy_runs_to_max_iterations() -> None:
    result = _siq(max_iterations=2, tolerance=0.0)  # |change| < 0 never holds
    assert not result.converged and len(result.iterations) == 2
