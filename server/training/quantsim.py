"""The quantised forward pass used in training: `QuantSimNet` runs a (batch-norm-free) graph
as shared/engine/ runs the bundle, in float arithmetic (docs/ARCHITECTURE.md, "The integer
network, precisely"). Values are real: codes times their scale, or accumulators times theirs.

    input          q = clip(round_half_up(x / s_in), 0, A) * s_in
    weights        W = codebook_int[nearest centroid of the shadow weight] * s_w
    bias           round_half_up(b / s_acc) * s_acc, with s_acc = s_x * s_w
    relu / relu6   clip(round_half_up(acc / s_y), 0, top) * s_y   (top = A, or relu6's
                   clamp_max = min(A, round_half_up(6 / s_y)); the clip is the activation)
    none           the accumulators as they are (the logits, or an add's first input)
    add            clip(round_half_up((x + y) / s_out), 0, top) * s_out
    max-pool       on those values; flatten as is
    avg-pool       on the codes: (sum + n // 2) // n, times the same scale (global: n = H * W)

Gradients reach the float shadow weights through the straight-through estimator (every
rounding passes the gradient of what it rounds). The engine requantises with integer
multipliers and shifts that approximate the scale ratios (shared.network.quant.
quantize_multiplier); where that approximation and float rounding move a value across a
rounding boundary the two can differ by one code (tests/server/test_quantsim_engine.py
measures how often on a trained network; in float64 the DAG test finds none).

Calibration is its own step (`calibrate`): one pass in which each requantising node, in
order, picks its output scale s_y from the values it receives from the already-quantised
nodes before it. `forward` needs every scale set.
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
from server.training.models import RELU6_TOP, GraphNet, Node, layer_name
from server.training.train import to_float
from shared.network import WEIGHTED_OPS, relu6_clamp_max

__all__ = [
    "LayerQuant",
    "QuantSimNet",
    "calibrate",
    "choose_activation_scale",
]

Weighted = nn.Conv2d | nn.Linear
Value = tuple[torch.Tensor, float]  # (real values, their scale: of the codes or accumulators)
ScaleChooser = Callable[[torch.Tensor, str], float]  # (real pre-activation values, activation)


@dataclass
class LayerQuant:
    """One weighted layer's quantisation state (all scales are real numbers)."""

    name: str
    centroids: np.ndarray  # (k,) float64 sorted: the k-means codebook
    weight_scale: float  # s_w: real weight = codebook_int * s_w
    codebook_int: np.ndarray  # (k,) int64, |v| <= 2^(codebook_bits-1) - 1
    activation: str  # relu | relu6 | none (accumulators)
    output_scale: float | None = None  # s_y of the requantised output (relu / relu6)
    counts: np.ndarray | None = None  # (k,) weights per centroid at k-means time
    mask: np.ndarray | None = None  # bool, the weight's shape: False = pruned (held at zero)
    zero_code: int | None = None  # the codebook's exact-zero entry, the code of pruned weights

    @property
    def codebook_real(self) -> np.ndarray:
        return dequantize(self.codebook_int, self.weight_scale)  # (k,)

    @property
    def relu(self) -> bool:
        """Whether the layer requantises to codes (relu or relu6), else its output is
        accumulators."""
        return self.activation != "none"


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


def _pool_codes(h: torch.Tensor, scale: float, node: Node, kernel: int, stride: int) -> Value:
    """avgpool2d / global_avgpool on the codes: (sum + n // 2) // n, same scale; the
    gradient is the float mean's."""
    codes = torch.round(h.detach() / scale)  # the exact integer codes
    n = kernel * kernel
    total = F.avg_pool2d(codes, kernel, stride, divisor_override=1)  # exact integer sums
    target = torch.floor((total + n // 2) / n) * scale
    mean = F.avg_pool2d(h, kernel, stride)
    if node.op == "global_avgpool":
        target, mean = target.flatten(1), mean.flatten(1)
    return _ste(mean, target), scale


class QuantSimNet(nn.Module):
    """The float model's graph run as the integer engine would (see module doc).
    Parameters are the float shadow weights; gradients reach them through the STE.
    `add_scales` holds each add node's calibrated output scale."""

    def __init__(
        self,
        model: GraphNet,
        layers: dict[str, LayerQuant],
        activation_bits: int,
        input_scale: float | None = None,
    ):
        super().__init__()
        if len(model.norms):
            raise ValueError("fold batch norm first (server.training.batchnorm.fold_batchnorm)")
        self.model = model
        self.layers = layers
        self.add_scales: dict[str, float] = {}
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

    def top_of(self, activation: str, output_scale: float) -> int:
        """The largest code a requantising node writes: A, or relu6's clamp_max."""
        if activation == "relu6":
            return relu6_clamp_max(output_scale, self.activation_bits)
        return self.top

    def output_scale_of(self, node: Node) -> float | None:
        """A requantising node's calibrated output scale (None: not calibrated)."""
        if node.op == "add":
            return self.add_scales.get(node.name)
        return self.layers[node.name].output_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1]
        return self._run(x, choose_scale=None)

    def _run(self, x: torch.Tensor, choose_scale: ScaleChooser | None) -> torch.Tensor:
        """The forward pass; with `choose_scale`, each requantising node first sets its s_y
        from the values it sees (calibration)."""
        s_in = self.input_scale
        h = _round_half_up(x / s_in).clamp(0, self.top) * s_in  # the engine's input codes * s_in
        values: dict[str, Value] = {"input": (h, s_in)}
        for node in self.model.nodes:
            args = [values[i] for i in node.inputs]
            values[node.name] = self._node(node, args, choose_scale)
        return values[self.model.nodes[-1].name][0]

    def _node(self, node: Node, args: list[Value], choose_scale: ScaleChooser | None) -> Value:
        h, s_x = args[0]
        if node.op in WEIGHTED_OPS:
            m = self.model.weighted(node.name)
            lq = self.layers[node.name]
            s_acc = s_x * lq.weight_scale  # accumulator scale
            b_real = m.bias if m.bias is not None else m.weight.new_zeros(m.weight.shape[0])
            bias = _ste(b_real, _round_half_up(b_real / s_acc) * s_acc)  # (O,)
            w = self.quantized_weight(m)
            if isinstance(m, nn.Conv2d):
                acc = F.conv2d(h, w, bias, m.stride, m.padding, groups=m.groups)  # (N, O, H', W')
            else:
                acc = F.linear(h, w, bias)  # (N, O)
            if not lq.relu:
                return acc, s_acc  # accumulators * s_acc
            if choose_scale is not None:
                lq.output_scale = choose_scale(acc, lq.activation)
            return self._requantize(node, acc, lq.output_scale)
        if node.op == "add":
            total = h + args[1][0]  # both real: codes or accumulators times their scales
            if choose_scale is not None:
                self.add_scales[node.name] = choose_scale(total, node.activation)
            return self._requantize(node, total, self.add_scales.get(node.name))
        if node.op == "maxpool2d":
            return self.model.ops[node.name](h), s_x  # commutes with the (monotone) quantiser
        if node.op == "avgpool2d":
            return _pool_codes(h, s_x, node, *self.model.window(node.name))
        if node.op == "global_avgpool":
            if h.shape[2] != h.shape[3]:
                raise ValueError(f"{node.name}: global_avgpool of a non-square map")
            return _pool_codes(h, s_x, node, h.shape[2], 1)
        return torch.flatten(h, 1), s_x  # flatten

    def _requantize(self, node: Node, acc: torch.Tensor, s_y: float | None) -> Value:
        """clip(round_half_up(acc / s_y), 0, top) * s_y, the STE passing acc's gradient
        (zero outside the clip)."""
        if s_y is None:
            raise RuntimeError(f"node {node.name} has no calibrated output scale")
        y = (acc / s_y).clamp(0, self.top_of(node.activation, s_y))  # clip is the activation
        return _ste(y, _round_half_up(y)) * s_y, s_y


def _calibration_scale(bits: int) -> ScaleChooser:
    def choose(acc: torch.Tensor, activation: str) -> float:
        if activation == "relu6":
            acc = acc.clamp_max(RELU6_TOP)  # the float network's clamp
        return choose_activation_scale(acc, bits)

    return choose


def calibrate(sim: QuantSimNet, x_u8: np.ndarray) -> None:
    """One pass over uint8 images (N, C, H, W) in which each requantising node picks its
    output scale from the values it receives from the already-quantised nodes before it."""
    sim.eval()
    with torch.no_grad():
        sim._run(to_float(x_u8), _calibration_scale(sim.activation_bits))
