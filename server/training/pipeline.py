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
import dataclasses
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from server.datasets import Dataset, load_dataset, split_validation
from server.export import encode_quantized, engine_accuracy
from server.models import build_model, float_param_bytes
from server.siq import SIQSettings, run_siq
from server.train import (
    CancelCheck,
    JobCancelled,
    augment_from_defaults,
    evaluate,
    seed_everything,
    train_model,
)
from shared.bundle import bundle_id, write_bundle_atomic
from shared.errors import ConfigError

__all__ = [
    "CONFIG_VERSION",
    "QuantizeConfig",
    "JobCancelled",
    "FloatModel",
    "PipelineResult",
    "load_for",
    "train_float",
    "quantize_model",
    "run_pipeline",
]

CONFIG_VERSION = 1
VALIDATION_FRACTION = 0.1
_ITERATION_KEYS = (
    "iteration",
    "accuracy_after_kmeans",
    "accuracy_after_retrain",
    "codebook_change",
)
ProgressFn = Callable[[dict], None]


def _bad(name: str, message: str) -> ConfigError:
    err = ConfigError(f"{name}: {message}")
    err.field = name  # type: ignore[attr-defined]
    return err


def _check_int(name: str, value: Any, lo: int, hi: int | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _bad(name, f"must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise _bad(name, f"must be in {lo}..{hi if hi is not None else 'inf'}, got {value}")


def _check_num(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise _bad(name, f"must be a number, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo):
        bracket = "(" if lo_open else "["
        raise _bad(name, f"must be in {bracket}{lo}, {hi}], got {value}")


@dataclass
class QuantizeConfig:
    """A job's parameters; versioned and validated on construction (ConfigError names the field)."""

    dataset: str
    weight_bits: int = 4  # 1..8
    activation_bits: int = 4  # 2..8
    epochs: float | None = None  # float training epochs (None: the data set's default)
    retrain_epochs: float | None = None  # retraining epochs per SIQ iteration
    max_iterations: int = 5
    tolerance: float = 0.002  # converged: validation accuracy changes less than this
    codebook_tolerance: float | None = None  # ... and, if set, the codebook change too
    seed: int = 0
    kmeans: str = "optimal"  # "optimal" (exact 1-D DP) | "lloyd"
    weight_quantizer: str = "kmeans"  # "kmeans" | "uniform" (the baseline)
    train_limit: int | None = None
    test_limit: int | None = None
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise _bad("dataset", f"must be a data-set name, got {self.dataset!r}")
        _check_int("weight_bits", self.weight_bits, 1, 8)
        _check_int("activation_bits", self.activation_bits, 2, 8)
        _check_num("epochs", self.epochs, 0, 1000, lo_open=True)
        _check_num("retrain_epochs", self.retrain_epochs, 0, 1000)
        _check_int("max_iterations", self.max_iterations, 1, 50)
        _check_num("tolerance", self.tolerance, 0, 1)
        if self.tolerance is None:
            raise _bad("tolerance", "must be a number")
        _check_num("codebook_tolerance", self.codebook_tolerance, 0, 1, lo_open=True)
        _check_int("seed", self.seed, 0, 2**31 - 1)
        if self.kmeans not in ("optimal", "lloyd"):
            raise _bad("kmeans", f"must be 'optimal' or 'lloyd', got {self.kmeans!r}")
        if self.weight_quantizer not in ("kmeans", "uniform"):
            raise _bad(
                "weight_quantizer", f"must be 'kmeans' or 'uniform', got {self.weight_quantizer!r}"
            )
        _check_int("train_limit", self.train_limit, 2, None, optional=True)
        _check_int("test_limit", self.test_limit, 1, None, optional=True)
        if self.version != CONFIG_VERSION:
            raise _bad("version", f"config version {self.version!r} is not {CONFIG_VERSION}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantizeConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be an object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise _bad(unknown[0], f"unknown parameter(s) {', '.join(unknown)}")
        if "dataset" not in d:
            raise _bad("dataset", "is required")
        # None means "the default" for the optional knobs
        optional = {"epochs", "retrain_epochs", "train_limit", "test_limit"}
        kwargs = {k: v for k, v in d.items() if v is not None or k in optional}
        return cls(**kwargs)


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


def _hparams(ds: Dataset, config: QuantizeConfig) -> dict[str, Any]:
    h = dict(ds.defaults)
    h.setdefault("epochs", 5)
    h.setdefault("retrain_epochs", 1.0)
    h.setdefault("lr", 3e-3)
    h.setdefault("retrain_lr", 5e-4)
    h.setdefault("batch_size", 128)
    h.setdefault("augment_shift", 0)
    h.setdefault("weight_decay", 1e-4)
    if config.epochs is not None:
        h["epochs"] = config.epochs
    if config.retrain_epochs is not None:
        h["retrain_epochs"] = config.retrain_epochs
    return h


def _stage(progress: ProgressFn | None, stage: str, lo: float, hi: float):
    """A (fraction, message) callback mapping a sub-task's progress into [lo, hi]."""

    def report(frac: float, message: str, iteration: dict | None = None) -> None:
        if progress is None:
            return
        event: dict[str, Any] = {
            "stage": stage,
            "fraction": float(min(1.0, max(0.0, lo + (hi - lo) * frac))),
            "message": message,
        }
        if iteration is not None:
            event["iteration"] = iteration
        progress(event)

    return report


def load_for(config: QuantizeConfig, data_dir: Path | None) -> Dataset:
    return load_dataset(
        config.dataset, data_dir, train_limit=config.train_limit, test_limit=config.test_limit
    )


def train_float(
    ds: Dataset,
    config: QuantizeConfig,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelCheck | None = None,
    lo: float = 0.0,
    hi: float = 1.0,
) -> FloatModel:
    """Train the data set's model family in float (seeded); accuracy on the test set."""
    started = time.perf_counter()
    h = _hparams(ds, config)
    train_x, train_y, val_x, val_y = split_validation(ds, VALIDATION_FRACTION, config.seed)
    seed_everything(config.seed)
    c, size, _ = ds.input_shape
    model = build_model(ds.arch, c, ds.num_classes, size)
    report = _stage(progress, "training", lo, hi)
    train_model(
        model,
        train_x,
        train_y,
        epochs=float(h["epochs"]),
        lr=float(h["lr"]),
        batch_size=int(h["batch_size"]),
        weight_decay=float(h["weight_decay"]),
        augment_shift=int(h["augment_shift"]),
        seed=config.seed,
        progress=lambda f, m: report(f, f"float training: {m}"),
        cancel=cancel,
        augment=augment_from_defaults(h),
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
    progress: ProgressFn | None = None,
    cancel: CancelCheck | None = None,
    job_id: str | None = None,
    lo: float = 0.0,
    hi: float = 1.0,
    siq_overrides: dict[str, Any] | None = None,
) -> PipelineResult:
    """SIQ on a copy of the float model, export, evaluate with shared.engine, write the bundle
    to `out_dir/<id>.siq` (not written when out_dir is None). `siq_overrides` sets
    SIQSettings fields a job cannot (benchmarks: e.g. {"retrain": "centroids"})."""
    started = time.perf_counter()
    h = _hparams(ds, config)
    span = hi - lo
    settings = SIQSettings(
        weight_bits=config.weight_bits,
        activation_bits=config.activation_bits,
        method="uniform" if config.weight_quantizer == "uniform" else config.kmeans,
        max_iterations=config.max_iterations,
        tolerance=config.tolerance,
        codebook_tolerance=config.codebook_tolerance,
        retrain_epochs=float(h["retrain_epochs"]),
        retrain_lr=float(h["retrain_lr"]),
        batch_size=int(h["batch_size"]),
        augment_shift=int(h["augment_shift"]),
        augment=augment_from_defaults(h),
        seed=config.seed,
    )
    if siq_overrides:
        settings = dataclasses.replace(settings, **siq_overrides)

    def siq_report(stage: str, frac: float, msg: str, iteration: dict | None) -> None:
        _stage(progress, stage, lo, lo + 0.85 * span)(frac, msg, iteration)

    siq = run_siq(
        copy.deepcopy(fm.model), fm.train, fm.val, settings, report=siq_report, cancel=cancel
    )
    if cancel is not None:
        cancel(force=True)
    evaluating = _stage(progress, "evaluating", lo + 0.85 * span, lo + 0.97 * span)
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
    _stage(progress, "packaging", lo + 0.97 * span, hi)(0.0, "writing the bundle")
    metrics["quantized_accuracy"] = quantized
    data = encode(metrics)
    path = write_bundle_atomic(out_dir, data) if out_dir is not None else None
    _stage(progress, "packaging", lo + 0.97 * span, hi)(1.0, "done")
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
    if isinstance(config, dict):
        config = QuantizeConfig.from_dict(config)
    cancel = CancelCheck(should_cancel)
    _stage(progress, "loading", 0.0, 0.02)(0.0, f"loading data set {config.dataset}")
    ds = load_for(config, data_dir)
    cancel(force=True)
    fm = train_float(ds, config, progress=progress, cancel=cancel, lo=0.02, hi=0.45)
    result = quantize_model(
        fm, ds, config, Path(out_dir), progress=progress, cancel=cancel, job_id=job_id, lo=0.45
    )
    result.seconds = time.perf_counter() - started
    return result
