"""A sweep's run: float training once per seed (the lead), SIQ from that float checkpoint.

The checkpoint is the float model's state dict as safetensors bytes (no pickle) with the
float-training parameters and accuracies in its metadata. The lead trains, serialises, and
then quantises from the *deserialised* model, exactly as every other run of its seed does,
so a run's result does not depend on which run trained the float model.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from server.data import Dataset, split_validation
from server.params import JobParams
from server.progress import ProgressFn, Reporter
from server.training.models import build_model
from server.training.pipeline import (
    VALIDATION_FRACTION,
    FloatModel,
    PipelineResult,
    load_job_dataset,
    quantize_model,
    train_float,
)
from server.training.train import CancelCheck, seed_everything
from shared.errors import ConfigError

__all__ = ["FLOAT_KEYS", "encode_checkpoint", "decode_checkpoint", "run_sweep_run"]

# The parameters that decide the float model: runs that agree on these can share one.
FLOAT_KEYS = ("dataset", "arch", "epochs", "seed", "train_limit", "test_limit")


def _float_params(config: JobParams) -> dict[str, Any]:
    return {k: getattr(config, k) for k in FLOAT_KEYS}


def encode_checkpoint(fm: FloatModel, config: JobParams) -> bytes:
    state = {k: v.detach().contiguous() for k, v in fm.model.state_dict().items()}
    meta = {
        "float_params": _float_params(config),
        "float_accuracy": fm.float_accuracy,
        "val_accuracy": fm.val_accuracy,
        "seconds": fm.seconds,
    }
    return save_tensors(state, metadata={"siq_float": json.dumps(meta)})


def _metadata(data: bytes) -> dict[str, Any]:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    return json.loads(header.get("__metadata__", {}).get("siq_float", "{}"))


def decode_checkpoint(data: bytes, ds: Dataset, config: JobParams) -> FloatModel:
    """The float model of `data`, refused unless it was trained with this run's float
    parameters (same data set, seed, epochs and subsets)."""
    try:
        meta = _metadata(data)
        state = load_tensors(data)
    except Exception as exc:  # noqa: BLE001 - any corrupt checkpoint is the same error
        raise ConfigError(f"the float checkpoint cannot be read: {exc}") from None
    if meta.get("float_params") != _float_params(config):
        raise ConfigError(
            f"the float checkpoint was trained with {meta.get('float_params')}, "
            f"not this run's {_float_params(config)}"
        )
    c, size, _ = ds.input_shape
    model = build_model(ds.arch, c, ds.num_classes, size)
    model.load_state_dict(state)
    train_x, train_y, val_x, val_y = split_validation(ds, VALIDATION_FRACTION, config.seed)
    return FloatModel(
        model=model,
        float_accuracy=float(meta["float_accuracy"]),
        val_accuracy=float(meta["val_accuracy"]),
        seconds=float(meta["seconds"]),
        val=(val_x, val_y),
        train=(train_x, train_y),
    )


def run_sweep_run(
    cfg: JobParams,
    data_dir: Path | None,
    out_dir: Path,
    *,
    checkpoint: bytes | None,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[bytes], object] | None = None,
    job_id: str | None = None,
) -> PipelineResult:
    """One grid cell. Without `checkpoint` this is the seed's lead: it trains the float model
    and hands the checkpoint to `on_checkpoint` before quantising."""
    started = time.perf_counter()
    cancel = CancelCheck(should_cancel)
    report = Reporter(progress)
    report.part(0.0, 0.02, "loading")(0.0, f"loading data set {cfg.dataset}")
    ds = load_job_dataset(cfg, data_dir)
    cancel(force=True)
    lo = 0.02
    if checkpoint is None:
        fm = train_float(ds, cfg, report=report.part(0.02, 0.45), cancel=cancel)
        checkpoint = encode_checkpoint(fm, cfg)
        if on_checkpoint is not None:
            on_checkpoint(checkpoint)
        lo = 0.45
    fm = decode_checkpoint(checkpoint, ds, cfg)
    seed_everything(cfg.seed)  # the same RNG state whether or not this run trained fm
    result = quantize_model(
        fm, ds, cfg, out_dir, report=report.part(lo, 1.0), cancel=cancel, job_id=job_id
    )
    result.seconds = time.perf_counter() - started
    return result
