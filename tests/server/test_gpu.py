"""Training on CUDA (`device: cuda`), where the machine has a GPU: skipped without one.
scripts/gpu_check.py compares the recipes' accuracy and time on CUDA and on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.params import JobParams
from server.training.pipeline import run_pipeline
from shared.bundle import decode_bundle

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_a_job_trains_on_cuda_and_writes_a_bundle(tmp_path: Path) -> None:
    config = JobParams(
        dataset="digits",
        weight_bits=4,
        activation_bits=4,
        epochs=2,
        retrain_epochs=0.25,
        max_iterations=1,
        train_limit=300,
        test_limit=100,
        device="cuda",
    )
    result = run_pipeline(config, None, tmp_path)
    assert result.float_accuracy > 0.3
    bundle = decode_bundle(Path(result.bundle_path or "").read_bytes())
    assert bundle.manifest["format_version"] >= 2
