"""The whole job: data set -> float training -> SIQ -> integer network -> bundle -> accuracy by
the integer engine (docs/ARCHITECTURE.md, "The pipeline").

`run_pipeline` is what a job runs. The benchmarks use the two halves separately, so one float
model serves many (weight bits, activation bits) configurations:

    ds = load_for(config, data_dir)
    fm = train_float(ds, config)                       # FloatModel
    result = quantize_model(fm, ds, config, out_dir)   # PipelineResult
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from server.data import Dataset, load_dataset, split_validation
from server.params import QuantizeConfig
from server.progress import ProgressFn, Reporter
from server.training.augment import augment_for
from server.training.export import encode_quantized, engine_accuracy
from server.training.models import build_model, float_param_bytes
from server.training.siq import SIQSettings, run_siq
from server.training.train import CancelCheck, JobCancelled, evaluate, seed_everything, train_model
from shared.bundle import bundle_id, write_bundle_atomic

__all__ = [
    "QuantizeConfig",
    "JobCancelled",
    "FloatModel",
    "PipelineResult",
    "load_for",
    "train_float",
    "quantize_model",
    "run_pipeline",
    "run_job",
]

VALIDATION_FRACTION = 0.1
_ITERATION_KEYS = (
    "iteration",
    "accuracy_after_kmeans",
    "accuracy_after_retrain",
    "codebook_change",
)


@dataclass
class FloatModel:
    model: nn.Sequential
    float_accuracy: float  # test set
    val_accuracy: float
    seconds: float
    val: tuple[np.ndarray, np.ndarray]
    train: tuple[np.ndarray, np.ndarray]


@dataclass
class PipelineResult:
    float_accuracy: float
    quantized_accuracy: float
    bundle_id: str
    bundle_path: str | None
    bundle_bytes: int
    float_bytes: int
    iterations: list[dict] = field(default_factory=list)
    converged: bool = False
    seconds: float = 0.0
    float_seconds: float = 0.0
    siq_seconds: float = 0.0
    simulated_accuracy: float = 0.0  # test accuracy of the float simulation of the integer net
    best_iteration: int = 0
    weight_bits: int = 0
    activation_bits: int = 0
    dataset: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_for(config: QuantizeConfig, data_dir: Path | None) -> Dataset:
    return load_dataset(
        config.dataset, data_dir, train_limit=config.train_limit, test_limit=config.test_limit
    )


def train_float(
    ds: Dataset,
    config: QuantizeConfig,
    *,
    report: Reporter | None = None,
    cancel: CancelCheck | None = None,
) -> FloatModel:
    """Train the data set's model family in float (seeded); accuracy on the test set."""
    started = time.perf_counter()
    recipe = ds.recipe.for_job(config)
    train_x, train_y, val_x, val_y = split_validation(ds, VALIDATION_FRACTION, config.seed)
    seed_everything(config.seed)
    c, size, _ = ds.input_shape
    model = build_model(ds.arch, c, ds.num_classes, size)
    train_model(
        model,
        train_x,
        train_y,
        epochs=recipe.epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        weight_decay=recipe.weight_decay,
        augment_shift=recipe.augment_shift,
        seed=config.seed,
        progress=(report or Reporter(None)).part(0, 1, "training", "float training: "),
        cancel=cancel,
        augment=augment_for(recipe),
    )
    return FloatModel(
        model=model,
        float_accuracy=evaluate(model, ds.test_x, ds.test_y),
        val_accuracy=evaluate(model, val_x, val_y),
        seconds=time.perf_counter() - started,
        val=(val_x, val_y),
        train=(train_x, train_y),
    )


def quantize_model(
    fm: FloatModel,
    ds: Dataset,
    config: QuantizeConfig,
    out_dir: Path | None = None,
    *,
    report: Reporter | None = None,
    cancel: CancelCheck | None = None,
    job_id: str | None = None,
) -> PipelineResult:
    """SIQ on a copy of the float model, export, evaluate with shared.engine, write the bundle
    to `out_dir/<id>.siq` (not written when out_dir is None)."""
    started = time.perf_counter()
    report = report or Reporter(None)
    settings = SIQSettings.for_job(config, ds.recipe)
    siq = run_siq(
        copy.deepcopy(fm.model),
        fm.train,
        fm.val,
        settings,
        report=report.part(0, 0.85),
        cancel=cancel,
    )
    if cancel is not None:
        cancel(force=True)
    evaluating = report.part(0.85, 0.97, "evaluating")
    packaging = report.part(0.97, 1.0, "packaging")
    evaluating(0.0, "simulated accuracy on the test set")
    simulated = evaluate(siq.sim, ds.test_x, ds.test_y)
    metrics: dict[str, Any] = {
        "float_accuracy": fm.float_accuracy,
        "simulated_accuracy": simulated,
        "iterations": len(siq.iterations),
        "best_iteration": siq.best_iteration,
        "converged": siq.converged,
        "float_bytes": float_param_bytes(fm.model),
        "float_seconds": round(fm.seconds, 3),
        "siq_seconds": round(siq.seconds, 3),
        "siq_iterations": [  # the doc's four numbers per iteration (keeps the header small)
            {k: it[k] for k in _ITERATION_KEYS} for it in siq.iterations
        ],
    }

    def encode(metrics: dict[str, Any]) -> bytes:
        return encode_quantized(
            siq.sim,
            ds,
            weight_bits=config.weight_bits,
            weight_quantizer=config.weight_quantizer,
            metrics=metrics,
            config=config.to_dict(),
            job_id=job_id,
        )

    # The accuracy goes into the manifest, so measure it on a first encoding whose tensors
    # are identical to the final one's.
    draft = encode(metrics)
    evaluating(0.3, "integer-engine accuracy on the test set")
    quantized = engine_accuracy(draft, ds.test_x, ds.test_y)
    packaging(0.0, "writing the bundle")
    metrics["quantized_accuracy"] = quantized
    data = encode(metrics)
    path = write_bundle_atomic(out_dir, data) if out_dir is not None else None
    packaging(1.0, "done")
    return PipelineResult(
        float_accuracy=fm.float_accuracy,
        quantized_accuracy=quantized,
        bundle_id=bundle_id(data),
        bundle_path=str(path) if path is not None else None,
        bundle_bytes=len(data),
        float_bytes=float_param_bytes(fm.model),
        iterations=siq.iterations,
        converged=siq.converged,
        seconds=fm.seconds + (time.perf_counter() - started),
        float_seconds=fm.seconds,
        siq_seconds=siq.seconds,
        simulated_accuracy=simulated,
        best_iteration=siq.best_iteration,
        weight_bits=config.weight_bits,
        activation_bits=config.activation_bits,
        dataset=ds.name,
    )


def run_pipeline(
    config: QuantizeConfig,
    data_dir: Path | None,
    out_dir: Path,
    *,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    job_id: str | None = None,
) -> PipelineResult:
    started = time.perf_counter()
    cancel = CancelCheck(should_cancel)
    report = Reporter(progress)
    report.part(0.0, 0.02, "loading")(0.0, f"loading data set {config.dataset}")
    ds = load_for(config, data_dir)
    cancel(force=True)
    fm = train_float(ds, config, report=report.part(0.02, 0.45), cancel=cancel)
    result = quantize_model(
        fm, ds, config, Path(out_dir), report=report.part(0.45, 1.0), cancel=cancel, job_id=job_id
    )
    result.seconds = time.perf_counter() - started
    return result


def run_job(
    config: dict[str, Any],
    data_dir: Path | None,
    out_dir: Path,
    *,
    checkpoint: bytes | None = None,
    on_checkpoint: Callable[[bytes], object] | None = None,
    **hooks: Any,
) -> dict[str, Any]:
    """What a job's worker process runs (SIQ_PIPELINE's default): the stored config dict in,
    the result dict out (ConfigError for a bad config). A sweep's cell (`config["sweep"]`,
    server/service/job_roles.py) runs from or hands over a float checkpoint."""
    if isinstance(config.get("sweep"), dict):
        from server.training.sweep import run_sweep_run

        plain = {k: v for k, v in config.items() if k != "sweep"}
        return run_sweep_run(
            plain, data_dir, out_dir, checkpoint=checkpoint, on_checkpoint=on_checkpoint, **hooks
        )
    return run_pipeline(QuantizeConfig.from_dict(config), data_dir, out_dir, **hooks).to_dict()
