"""Where training runs: a job's `device` (auto, cpu, cuda; None = the server's SIQ_DEVICE,
which the submit route records in the job, else auto). auto is cuda when torch sees a CUDA
GPU, else cpu; cuda without one is a ConfigError, never a silent fall-back to the CPU."""

from __future__ import annotations

import torch

from shared.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(requested: str | None) -> torch.device:
    want = requested or "auto"
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda" and not torch.cuda.is_available():
        err = ConfigError(
            "device: cuda was asked for, but torch sees no CUDA GPU on this machine (ask for "
            "auto or cpu, or run the job where a GPU is)"
        )
        err.field = "device"  # type: ignore[attr-defined]
        raise err
    if want not in ("cpu", "cuda"):
        raise ConfigError(f"device: {want!r} is not auto, cpu or cuda")
    return torch.device(want)
