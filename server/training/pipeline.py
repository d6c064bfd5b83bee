"""The whole job: data set -> float training -> SIQ -> integer network -> bundle -> accuracy by
the integer engine (docs/ARCHITECTURE.md, "The pipeline").

`run_pipeline` is what a job runs. The benchmarks use the two halves separately, so one float
model serves many (weight bits, activation bits) configurations:

    ds = load_job_dataset(config, data_dir)
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
import torch

from server.data import Dataset, load_dataset, split_validation
from server.params import JobParams
from server.progress import ProgressFn, Reporter
from server.recipes import Recipe
from server.training.augment import augment_for
from server.training.batchnorm import fold_batchnorm
from server.training.compress import (
    CompressionPlan,
    allocation_report,
    check_layer_names,
    plan_compression,
    prune_to_fit,
    wants_compression,
)
from server.training.device import resolve_device
from server.training.export import encode_quantized, engine_accuracy
from server.training.models import (
    GraphNet,
    build_model,
    float_param_bytes,
    layer_name,
    weighted_layers,
)
from server.training.quantsim import QuantSimNet, calibrate
from server.training.siq import SIQSettings, prune_weights, quantize_layers, run_siq
from server.training.train import CancelCheck, JobCancelled, evaluate, seed_everything, train_model
from shared.bundle import bundle_id, decode_bundle, write_bundle_atomic
from shared.errors import ConfigError

__all__ = [
    "JobCancelled",
    "FloatModel",
    "PipelineResult",
    "load_job_dataset",
    "train_float",
    "quantize_model",
    "run_pipeline",
]

VALIDATION_FRACTION = 0.1
FIT_ROUNDS = 8  # prune-and-re-encode rounds allowed to bring a bundle under its budget
_ITERATION_KEYS = (
    "iteration",
    "accuracy_after_kmeans",
    "accuracy_after_retrain",
    "codebook_change",
)


@dataclass
class FloatModel:
    model: GraphNet
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
    allocation: dict[str, dict] | None = None  # per layer: bits, sparsity, nonzero, bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_job_dataset(config: JobParams, data_dir: Path | None) -> Dataset:
    """The job's data set, cut to its train_limit / test_limit, with the job's network
    family (`arch`) and that family's recipe where it names one."""
    ds = load_dataset(
        config.dataset, data_dir, train_limit=config.train_limit, test_limit=config.test_limit
    )
    return ds.with_arch(config.arch)


def train_float(
    ds: Dataset,
    config: JobParams,
    *,
    report: Reporter | None = None,
    cancel: CancelCheck | None = None,
    model: GraphNet | None = None,
) -> FloatModel:
    """Train the data set's model family in float (seeded), or `model` when given (a
    network a user brought: no training at 0 epochs); accuracy on the test set."""
    started = time.perf_counter()
    recipe = ds.recipe.for_job(config)
    train_x, train_y, val_x, val_y = split_validation(ds, VALIDATION_FRACTION, config.seed)
    seed_everything(config.seed)
    c, size, _ = ds.input_shape
    device = resolve_device(config.device)
    if model is None:
        model = build_model(ds.arch, c, ds.num_classes, size)
    if recipe.epochs > 0:
        _fit(model, train_x, train_y, recipe, config.seed, device, report, cancel)
    model.eval()
    return FloatModel(
        model=model,
        float_accuracy=evaluate(model, ds.test_x, ds.test_y),
        val_accuracy=evaluate(model, val_x, val_y),
        seconds=time.perf_counter() - started,
        val=(val_x, val_y),
        train=(train_x, train_y),
    )


def _fit(
    model: GraphNet,
    train_x: np.ndarray,
    train_y: np.ndarray,
    recipe: Recipe,
    seed: int,
    device: torch.device,
    report: Reporter | None,
    cancel: CancelCheck | None,
) -> None:
    train_model(
        model,
        train_x,
        train_y,
        epochs=recipe.epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        weight_decay=recipe.weight_decay,
        augment_shift=recipe.augment_shift,
        seed=seed,
        progress=(report or Reporter(None)).part(0, 1, "training", "float training: "),
        cancel=cancel,
        augment=augment_for(recipe),
        mixup=recipe.mixup,
        device=device,
    )


def quantize_model(
    fm: FloatModel,
    ds: Dataset,
    config: JobParams,
    out_dir: Path | None = None,
    *,
    report: Reporter | None = None,
    cancel: CancelCheck | None = None,
    job_id: str | None = None,
    siq_overrides: dict[str, Any] | None = None,
) -> PipelineResult:
    """SIQ on a copy of the float model, export, evaluate with shared.engine, write the bundle
    to `out_dir/<id>.siq` (not written when out_dir is None). `siq_overrides`: SIQSettings
    fields over the job's (experiments: bench/compression_variants.py)."""
    started = time.perf_counter()
    report = report or Reporter(None)
    settings = SIQSettings.for_job(config, ds.recipe)
    plan: CompressionPlan | None = None
    if wants_compression(config):
        report.part(0, 0.05, "quantizing")(0.0, "measuring each layer's sensitivity")
        plan = plan_compression(
            fold_batchnorm(fm.model),
            fm.val,
            config,
            method=settings.method,
            codebook_bits=settings.codebook_bits,
            overhead_bytes=_overhead_bytes(fm, ds, config, settings),
        )
        settings = dataclasses.replace(
            settings,
            layer_bits=plan.layer_bits,
            sparsity=plan.sparsity,
            unit_pruned=plan.unit_pruned,
        )
    if siq_overrides:
        settings = dataclasses.replace(settings, **siq_overrides)
    siq = run_siq(
        copy.deepcopy(fm.model),
        fm.train,
        fm.val,
        settings,
        report=report.part(0.05 if plan else 0, 0.85),
        cancel=cancel,
    )
    if cancel is not None:
        cancel(force=True)
    evaluating = report.part(0.85, 0.97, "evaluating")
    packaging = report.part(0.97, 1.0, "packaging")
    metrics: dict[str, Any] = {
        "float_accuracy": fm.float_accuracy,
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

    # The accuracy and the allocation go into the manifest, so measure them on a first
    # encoding whose tensors are identical to the final one's. Over the budget, prune the
    # largest layer a little further and measure again.
    budget = config.size_budget_bytes
    for _ in range(FIT_ROUNDS):
        evaluating(0.0, "simulated accuracy on the test set")
        metrics["simulated_accuracy"] = evaluate(siq.sim, ds.test_x, ds.test_y)
        draft = decode_bundle(encode(metrics))
        metrics["allocation"] = allocation_report(draft)
        evaluating(0.3, "integer-engine accuracy on the test set")
        metrics["quantized_accuracy"] = engine_accuracy(draft, ds.test_x, ds.test_y)
        packaging(0.0, "writing the bundle")
        data = encode(metrics)
        if budget is None or len(data) <= budget:
            break
        if not prune_to_fit(siq.sim, draft, len(data) - budget):
            break
    if budget is not None and len(data) > budget:
        err = ConfigError(
            f"size_budget_bytes: the bundle takes {len(data)} bytes after pruning to fit, "
            f"more than the budget of {budget}"
        )
        err.field = "size_budget_bytes"  # type: ignore[attr-defined]
        raise err
    quantized, simulated = metrics["quantized_accuracy"], metrics["simulated_accuracy"]
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
        allocation=metrics["allocation"],
    )


def _overhead_bytes(fm: FloatModel, ds: Dataset, config: JobParams, settings: SIQSettings) -> int:
    """What a bundle of this network holds besides its layers' packed storage (manifest and
    safetensors header), measured on a draft: the float model quantised without retraining,
    pruned in every layer (so the storage entries are the long, sparse ones), with as many
    iteration records as the loop may write, plus room for the allocation report."""
    model = fold_batchnorm(fm.model)
    names = [layer_name(m) for m in weighted_layers(model)]
    draft_settings = dataclasses.replace(
        settings, sparsity={n: 0.9 for n in names}, prune_steps=1, max_iterations=1
    )
    masks = prune_weights(model, draft_settings, 1, {})
    sim = QuantSimNet(
        model, quantize_layers(model, draft_settings, masks), settings.activation_bits
    )
    calibrate(sim, fm.train[0][:256])
    record = {k: 0.123456 for k in _ITERATION_KEYS}
    metrics = {
        "float_accuracy": 0.123456,
        "simulated_accuracy": 0.123456,
        "quantized_accuracy": 0.123456,
        "iterations": settings.max_iterations,
        "best_iteration": settings.max_iterations,
        "converged": False,
        "float_bytes": float_param_bytes(model),
        "float_seconds": 123.456,
        "siq_seconds": 123.456,
        "siq_iterations": [record] * settings.max_iterations,
    }
    encode = lambda m: encode_quantized(  # noqa: E731
        sim, ds, weight_bits=config.weight_bits, metrics=m, config=config.to_dict()
    )
    bundle = decode_bundle(encode(metrics))
    metrics["allocation"] = {
        name: dict(entry, sparsity=0.123456) for name, entry in allocation_report(bundle).items()
    }
    data = encode(metrics)
    stored = sum(int(e["bytes"]) for e in decode_bundle(data).manifest["storage"].values())
    return len(data) - stored + 64  # + 64: digits the real figures may need over the draft's


def run_pipeline(
    config: JobParams,
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
    ds = load_job_dataset(config, data_dir)
    c, size, _ = ds.input_shape
    check_layer_names(config, build_model(ds.arch, c, ds.num_classes, size))  # before training
    cancel(force=True)
    fm = train_float(ds, config, report=report.part(0.02, 0.45), cancel=cancel)
    result = quantize_model(
        fm, ds, config, Path(out_dir), report=report.part(0.45, 1.0), cancel=cancel, job_id=job_id
    )
    result.seconds = time.perf_counter() - started
    return result
