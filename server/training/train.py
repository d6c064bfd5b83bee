"""Training loop shared by float training and SIQ retraining: seeded, AdamW with a
OneCycle schedule, random shifts for augmentation, cooperative cancellation.

Images arrive as uint8 (N, C, H, W) and are scaled to [0, 1] per batch (the range the
integer engine's input quantiser expects), so the whole data set stays small in memory.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from server.training.augment import AugmentFn

__all__ = [
    "JobCancelled",
    "CancelCheck",
    "seed_everything",
    "to_float",
    "random_shift",
    "train_model",
    "predict_logits",
    "evaluate",
]

SubProgress = Callable[[float, str], None]  # (own fraction in [0, 1], message): a Reporter


class JobCancelled(Exception):
    """Raised inside the pipeline when `should_cancel()` turns true."""


class CancelCheck:
    """Polls `should_cancel` at most every `interval` seconds; raises JobCancelled."""

    def __init__(self, should_cancel: Callable[[], bool] | None, interval: float = 0.5):
        self.should_cancel = should_cancel
        self.interval = interval
        self.last = 0.0

    def __call__(self, force: bool = False) -> None:
        if self.should_cancel is None:
            return
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            if self.should_cancel():
                raise JobCancelled("job cancelled")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def to_float(x_u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(x_u8)
    return t.to(torch.float32).div_(255.0)


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift every image by its own random (dy, dx) in [-max_shift, max_shift], zero fill."""
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    s = max_shift
    xp = nn.functional.pad(x, (s, s, s, s))  # (N, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    rows = (torch.arange(h)[None, :] + dy[:, None])[:, None, :, None]  # (N, 1, H, 1)
    cols = (torch.arange(w)[None, :] + dx[:, None])[:, None, None, :]  # (N, 1, 1, W)
    ni = torch.arange(n)[:, None, None, None]
    ci = torch.arange(c)[None, :, None, None]
    return xp[ni, ci, rows, cols]  # (N, C, H, W)


def train_model(
    model: nn.Module,
    x_u8: np.ndarray,
    y: np.ndarray,
    *,
    epochs: float,
    lr: float,
    batch_size: int = 128,
    weight_decay: float = 1e-4,
    augment_shift: int = 0,
    seed: int = 0,
    progress: SubProgress | None = None,
    cancel: CancelCheck | None = None,
    augment: AugmentFn | None = None,
    teacher: nn.Module | None = None,
    distill: float = 0.0,
    temperature: float = 4.0,
    on_step: Callable[[int, int], object] | None = None,
    mixup: float = 0.0,
    device: torch.device | None = None,
) -> float:
    """Train `model` in place for `epochs` (fractions allowed) epochs; returns the mean loss
    of the last 50 batches. `augment` transforms each float batch after the random shifts.
    With a `teacher`, the loss is knowledge distillation (Hinton et al. 2015):
    (1 - distill) * cross-entropy + distill * T^2 * KL(teacher || model) at temperature T.
    `on_step(step, steps)` runs after each optimiser step (1-based). `mixup` > 0: each batch
    is mixed with a shuffle of itself, x = lam x + (1 - lam) x', the loss likewise, lam ~
    Beta(mixup, mixup) (Zhang et al. 2018); 0 leaves the batches (and the random stream) as
    they are."""
    with _placed(device, model, teacher):
        return _train(
            model,
            x_u8,
            y,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            weight_decay=weight_decay,
            augment_shift=augment_shift,
            seed=seed,
            progress=progress,
            cancel=cancel,
            augment=augment,
            teacher=teacher,
            distill=distill,
            temperature=temperature,
            on_step=on_step,
            mixup=mixup,
            device=device,
        )


@contextmanager
def _placed(device: torch.device | None, *models: nn.Module | None) -> Iterator[None]:
    """The models on `device` for the block, back on the CPU after it (the rest of SIQ runs
    there); nothing moves for the CPU."""
    if device is None or device.type == "cpu":
        yield
        return
    for m in models:
        if m is not None:
            m.to(device)
    try:
        yield
    finally:
        for m in models:
            if m is not None:
                m.to("cpu")


def _train(
    model: nn.Module,
    x_u8: np.ndarray,
    y: np.ndarray,
    *,
    epochs: float,
    lr: float,
    batch_size: int,
    weight_decay: float,
    augment_shift: int,
    seed: int,
    progress: SubProgress | None,
    cancel: CancelCheck | None,
    augment: AugmentFn | None,
    teacher: nn.Module | None,
    distill: float,
    temperature: float,
    on_step: Callable[[int, int], object] | None,
    mixup: float,
    device: torch.device | None,
) -> float:
    n = len(y)
    steps = max(1, math.ceil(epochs * n / batch_size))
    gen = torch.Generator().manual_seed(seed)
    mix_rng = np.random.default_rng(seed)
    xs = torch.from_numpy(np.ascontiguousarray(x_u8))  # (N, C, H, W) uint8
    ys = torch.from_numpy(np.ascontiguousarray(y)).long()  # (N,)
    opt = torch.optim.AdamW(list(model.parameters()), lr=lr, weight_decay=weight_decay)
    sched: torch.optim.lr_scheduler.LRScheduler
    if steps >= 4:
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=steps, pct_start=0.25 if steps > 20 else 0.5
        )
    else:  # OneCycleLR cannot plan fewer steps
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    losses: list[float] = []
    order = torch.randperm(n, generator=gen)
    pos = 0
    last_report = time.monotonic()
    for step in range(steps):
        if cancel is not None:
            cancel()
        if pos + batch_size > n and pos > 0:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        xb = random_shift(to_float(xs[idx]), augment_shift, gen)  # (B, C, H, W)
        if augment is not None:
            xb = augment(xb, gen)
        yb = ys[idx]
        if device is not None and device.type != "cpu":  # made on the CPU (seeded), then moved
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if mixup > 0:
            lam = float(mix_rng.beta(mixup, mixup))
            other = torch.randperm(len(idx), generator=gen)
            xb = lam * xb + (1.0 - lam) * xb[other]
            logits = model(xb)
            ce = nn.functional.cross_entropy
            loss = lam * ce(logits, yb) + (1.0 - lam) * ce(logits, yb[other])
        else:
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
        if teacher is not None and distill > 0:
            loss = (1.0 - distill) * loss + distill * _distillation(
                logits, teacher, xb, temperature
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step + 1, steps)
        losses.append(float(loss.detach()))
        now = time.monotonic()
        if progress is not None and (now - last_report >= 0.5 or step == steps - 1):
            last_report = now
            progress(
                (step + 1) / steps, f"step {step + 1}/{steps} loss {np.mean(losses[-50:]):.4f}"
            )
    model.eval()
    return float(np.mean(losses[-50:]))


def _distillation(
    logits: torch.Tensor, teacher: nn.Module, xb: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(logits / T)), batch mean."""
    with torch.no_grad():
        target = nn.functional.log_softmax(teacher(xb) / temperature, dim=1)
    student = nn.functional.log_softmax(logits / temperature, dim=1)
    kl = nn.functional.kl_div(student, target, reduction="batchmean", log_target=True)
    return temperature**2 * kl


@torch.no_grad()
def predict_logits(model: nn.Module, x_u8: np.ndarray, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    outs = [model(to_float(x_u8[i : i + batch_size])) for i in range(0, len(x_u8), batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0)


def evaluate(model: nn.Module, x_u8: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    if len(y) == 0:
        return float("nan")
    pred = predict_logits(model, x_u8, batch_size).argmax(1).numpy()
    return float((pred == y).mean())
