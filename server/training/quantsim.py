"""The quantised forward pass used in training: `QuantSimNet` runs the float model's layers as
shared/engine/ runs the bundle, in float arithmetic (docs/ARCHITECTURE.md, "The integer
network, precisely"):

    input        q = clip(round_half_up(x / s_in), 0, A) * s_in
    weights      W = codebook_int[nearest centroid of the shadow weight] * s_w
    bias         round_half_up(b / s_acc) * s_acc, with s_acc = s_x * s_w
    ReLU layers  clip(round_half_up(acc / s_y), 0, A) * s_y   (clip is the ReLU)
    max-pool     on those values; flatten as is; the last layer's accumulators are the logits

Gradients reach the float shadow weights through the straight-through estimator. The
engine requantises with an integer multiplier and shift that approximate s_acc / s_y
(shared.network.quant.quantize_multiplier); where that approximation and float rounding move a
value across a rounding boundary the two can differ by one code (tests/server/
test_quantsim_engine.py measures how often on a trained network).

Calibration is its own step (`calibrate`): one pass in which each ReLU layer, in order,
picks its output scale s_y from the accumulators it receives from the already-quantised
layers before it. `forward` needs every scale set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from server.training.codebook import assign_codes_tensor, dequantize
from server.training.models import layer_name
from server.training.train import to_float

__all__ = ["LayerQuant", "QuantSimNet", "calibrate", "choose_activation_scale"]

Weighted = nn.Conv2d | nn.Linear


@dataclass
class LayerQuant:
    """One weighted layer's quantisation state (all scales are real numbers)."""

    name: str
    centroids: np.ndarray  # (k,) float64 sorted: the k-means codebook
    weight_scale: float  # s_w: real weight = codebook_int * s_w
    codebook_int: np.ndarray  # (k,) int64, |v| <= 2^(codebook_bits-1) - 1
    relu: bool
    output_scale: float | None = None  # s_y of the requantised output (relu layers)
    counts: np.ndarray | None = None  # (k,) weights per centroid at k-means time
    mask: np.ndarray | None = None  # bool, the weight's shape: False = pruned (held at zero)
    zero_code: int | None = None  # the codebook's exact-zero entry, the code of pruned weights

    @property
    def codebook_real(self) -> np.ndarray:
        return dequantize(self.codebook_int, self.weight_scale)  # (k,)


def _round_half_up(t: torch.Tensor) -> torch.Tensor:
    """shared.network.round_half_up's rule, floor(t + 0.5), on tensors (autograd needs torch)."""
    return torch.floor(t + 0.5)


def _ste(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`target` forward, identity gradient to `value` backward."""
    return value + (target - value).detach()


def choose_activation_scale(acc: torch.Tensor, bits: int, max_values: int = 1 << 18) -> float:
    """MSE-optimal clipping for ReLU outputs: s_y = clip / A over 100 candidate clip values
    in (0, max]; the clip minimising mean((Q(v) - v)^2) over the sample wins."""
    top = (1 << bits) - 1
    v = acc.detach().flatten().clamp_min(0).double()
    if v.numel() > max_values:
        v = v[:: math.ceil(v.numel() / max_values)]
    vmax = float(v.max()) if v.numel() else 0.0
    if vmax <= 0:
        return 1.0 / top  # a dead layer: any positive scale gives the same (zero) codes
    best, best_err = vmax / top, math.inf
    for clip in np.linspace(vmax / 100, vmax, 100):
        s = clip / top
        err = float(((_round_half_up(v / s).clamp(0, top) * s - v) ** 2).mean())
        if err < best_err:
            best, best_err = s, err
    return float(best)


class QuantSimNet(nn.Module):
    """The float model's layers run as the integer engine would (see module doc).
    Parameters are the float shadow weights; gradients reach them through the STE."""

    def __init__(
        self,
        model: nn.Sequential,
        layers: dict[str, LayerQuant],
        activation_bits: int,
        input_scale: float | None = None,
    ):
        super().__init__()
        self.model = model
        self.layers = layers
        self.activation_bits = activation_bits
        self.top = (1 << activation_bits) - 1
        self.input_scale = input_scale if input_scale is not None else 1.0 / self.top

    def codes_of(self, m: Weighted) -> torch.Tensor:
        """Nearest-centroid codes of the shadow weights, same shape as the weight; pruned
        weights get the zero entry's code."""
        lq = self.layers[layer_name(m)]
        codes = assign_codes_tensor(m.weight, lq.centroids)
        if lq.mask is not None and lq.zero_code is not None:
            codes = torch.where(torch.from_numpy(lq.mask), codes, lq.zero_code)
        return codes

    def quantized_weight(self, m: Weighted) -> torch.Tensor:
        lq = self.layers[layer_name(m)]
        table = torch.as_tensor(lq.codebook_real, dtype=m.weight.dtype)
        w = _ste(m.weight, table[self.codes_of(m)])  # (k,) table at each weight's code
        # times the mask: pruned weights stay exactly zero and get no gradient
        return w * torch.from_numpy(lq.mask) if lq.mask is not None else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1]
        return self._run(x, choose_scale=None)

    def _run(
        self, x: torch.Tensor, choose_scale: Callable[[torch.Tensor], float] | None
    ) -> torch.Tensor:
        """The forward pass; with `choose_scale`, each ReLU layer first sets its s_y from
        the accumulators it sees (calibration)."""
        s_x = self.input_scale
        h = _round_half_up(x / s_x).clamp(0, self.top) * s_x  # the engine's input codes * s_in
        for m in self.model:
            if isinstance(m, nn.ReLU):
                continue  # fused into the layer before it
            if not isinstance(m, nn.Conv2d | nn.Linear):
                h = m(h)  # maxpool2d / flatten commute with the (monotone) quantiser
                continue
            lq = self.layers[layer_name(m)]
            s_acc = s_x * lq.weight_scale  # accumulator scale
            b_real = m.bias if m.bias is not None else torch.zeros(m.weight.shape[0])
            bias = _ste(b_real, _round_half_up(b_real / s_acc) * s_acc)  # (O,)
            w = self.quantized_weight(m)
            if isinstance(m, nn.Conv2d):
                acc = F.conv2d(h, w, bias, m.stride, m.padding)  # (N, O, H', W')
            else:
                acc = F.linear(h, w, bias)  # (N, O)
            if not lq.relu:
                h = acc  # logits: accumulators * s_acc
                continue
            if choose_scale is not None:
                lq.output_scale = choose_scale(acc)
            if lq.output_scale is None:
                raise RuntimeError(f"layer {lq.name} has no calibrated output scale")
            s_y = lq.output_scale
            y = (acc / s_y).clamp(0, self.top)  # clip is the ReLU; zero gradient outside
            h = _ste(y, _round_half_up(y)) * s_y
            s_x = s_y
        return h


def calibrate(sim: QuantSimNet, x_u8: np.ndarray) -> None:
    """One pass over uint8 images (N, C, H, W) in which each ReLU layer picks its output
    scale from the activations it receives from the already-quantised layers before it."""
    sim.eval()
    with torch.no_grad():
        sim._run(to_float(x_u8), lambda acc: choose_activation_scale(acc, sim.activation_bits))
