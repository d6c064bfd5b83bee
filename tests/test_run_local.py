"""The pure helpers behind `make run` (scripts/run_local.py); the whole flow is exercised by
tests/integration/test_end_to_end.py's services and by running `make run` itself."""

from __future__ import annotations

import pytest

from scripts.run_local import (
    ProgressReporter,
    RunError,
    choose_dataset,
    describe_progress,
    job_request,
    parse_args,
)


def test_choose_dataset_falls_back_to_digits_with_a_message(capsys) -> None:
    assert choose_dataset(None, ["mnist", "digits"]) == "mnist"
    assert choose_dataset(None, ["digits", "office10"]) == "digits"
    assert "MNIST not found" in capsys.readouterr().out
    assert choose_dataset("office10", ["digits", "office10"]) == "office10"
    with pytest.raises(RunError):
        choose_dataset("cifar", ["digits"])


def test_job_request_defaults_quick_and_overrides() -> None:
    body = job_request(parse_args([]), "mnist")
    assert body == {"dataset": "mnist", "weight_bits": 4, "activation_bits": 4}
    quick = job_request(parse_args(["--quick", "--epochs", "3", "--weight-bits", "2"]), "digits")
    assert quick["epochs"] == 3 and quick["max_iterations"] == 2 and quick["weight_bits"] == 2


def test_describe_progress_shows_stage_fraction_and_iteration_metrics() -> None:
    job = {
        "status": "running",
        "progress": {"stage": "retraining", "fraction": 0.5, "message": "epoch 1/2"},
        "iterations": [
            {"iteration": 2, "accuracy_after_kmeans": 0.91, "accuracy_after_retrain": 0.97}
        ],
    }
    line = describe_progress(job)
    for part in ("running", "retraining", "50.0%", "epoch 1/2", "iteration 2", "0.9700"):
        assert part in line
    assert "queued" in describe_progress({"status": "queued"})


def test_progress_reporter_prints_changes_not_every_step() -> None:
    import io

    out = io.StringIO()
    reporter = ProgressReporter(out)
    step = {"status": "running", "progress": {"stage": "training", "fraction": 0.1}}
    for fraction in (0.1, 0.2, 0.3):
        reporter.update({**step, "progress": {"stage": "training", "fraction": fraction}})
    reporter.update({"status": "running", "progress": {"stage": "quantizing", "fraction": 0.5}})
    reporter.update({"status": "succeeded", "progress": {"stage": "packaging", "fraction": 1.0}})
    reporter.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    for line, stage in zip(lines, ("training", "quantizing", "packaging"), strict=True):
        assert stage in line
