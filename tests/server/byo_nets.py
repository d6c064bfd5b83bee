"""Networks a user trains with plain PyTorch code (no SIQ module), exported to ONNX the way
they would: what the bring-your-own-network tests and bench/bench_byo.py upload."""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

__all__ = ["TinyResNet", "to_onnx"]


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
