"""Networks a user trains with plain PyTorch code (no SIQ module), exported to ONNX the way
they would: what the bring-your-own-network tests and bench/bench_byo.py upload."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import torch
from torch import nn

__all__ = ["TinyResNet", "to_onnx", "train_plain", "accuracy"]


class Block(nn.Module):
    """A basic block: conv-BN-ReLU, conv-BN, + the input (or a conv-BN-ReLU projection), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.proj(x))


class TinyResNet(nn.Module):
    def __init__(self, classes: int, widths: tuple[int, ...] = (8, 16), channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, widths[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU6(),
            nn.MaxPool2d(2),
        )
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(Block(c, w, 1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(self.drop(torch.flatten(x, 1)))


def to_onnx(model: nn.Module, shape: tuple[int, int, int]) -> bytes:
    """The model as ONNX bytes (TorchScript exporter, eval mode, a dynamic batch)."""
    model.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter says it is the legacy one
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(model, shape, buf)
    return buf.getvalue()


def _export(model: nn.Module, shape: tuple[int, int, int], buf: io.BytesIO) -> None:
    torch.onnx.export(
        model,
        (torch.zeros(1, *shape),),
        buf,
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}},
    )


def train_plain(
    model: nn.Module,
    x_u8: np.ndarray,
    y: np.ndarray,
    *,
    epochs: float,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> None:
    """What a user's own training script does: AdamW, cosine schedule, random horizontal
    flips, cross-entropy, on images scaled to [0, 1] (no SIQ code)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(x_u8).float() / 255.0
    t = torch.from_numpy(y).long()
    steps = max(1, math.ceil(epochs * len(t) / batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    order, pos = torch.randperm(len(t), generator=gen), 0
    for _ in range(steps):
        if pos + batch_size > len(t) and pos > 0:
            order, pos = torch.randperm(len(t), generator=gen), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        xb = x[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        loss = nn.functional.cross_entropy(model(xb), t[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


def accuracy(model: nn.Module, x_u8: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x_u8).float() / 255.0).argmax(1).numpy()
    return float((pred == y).mean())
