"""Supervised iterative quantization (Ji et al., SPIE 2015), read top to bottom:

    shadow <- the float model's weights
    for t = 1 .. max_iterations:
        1. quantise:  per weighted layer, k-means the shadow weights into 2^b centroids; the
                      codebook is then put on the integer grid the bundle stores
                      (codebook_bits = 8: c_int = round_half_up(c / s_w), s_w = max|c| / 127)
        2. calibrate: per ReLU layer, in order, the output scale s_y that minimises the mean
                      squared error of a-bit activations (clipping search) on training images,
                      with every earlier layer already quantised
        3. acc_kmeans  <- validation accuracy of that integer-exact network
        4. retrain:   forward with W = codebook[nearest centroid of shadow] and fake-quantised
                      activations; the straight-through estimator updates the float shadow
                      weights (which may move to another centroid); the learning rate halves
                      every iteration so the loop settles
        5. acc_retrain <- validation accuracy; converged when the validation accuracy has
                      settled, |acc_retrain_t - acc_retrain_t-1| < tolerance, and, when a
                      codebook_tolerance is set, the relative codebook change (all layers'
                      centroids, each weighted by the number of weights that use it) is below
                      it too. The codebook change is always reported; it is not required by
                      default because Adam's steps keep moving the shadow weights by a few
                      percent of their scale at any learning rate, so the re-fitted codebooks
                      keep shifting 3-10% while the accuracy no longer changes (measured on
                      MNIST, see bench/results/mnist.md).

Why STE with shadow weights rather than fine-tuning shared centroids with frozen assignments
(Deep Compression): the latter leaves the weights exactly on their codebook, so the next
k-means returns the same codebook and "iterating" changes nothing; letting weights change
cluster is what the iteration is for, and it recovers more accuracy at 2-3 bits.

`QuantSimNet` mirrors shared/engine.py exactly up to float rounding: input
q = clip(round_half_up(x / s_in), 0, A), bias rounded to accumulator units, activations
clip(round_half_up(acc / s_y), 0, A) * s_y, max-pool on those codes, logits = accumulators.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from server.kmeans import codebook_change, fit_codebook
from server.models import layer_name
from server.train import AugmentFn, CancelCheck, evaluate, to_float, train_model

__all__ = [
    "SIQSettings",
    "LayerQuant",
    "QuantSimNet",
    "SIQResult",
    "quantize_layers",
    "calibrate",
    "choose_activation_scale",
    "network_codebook_change",
    "run_siq",
]

Weighted = nn.Conv2d | nn.Linear
ReportFn = Callable[[str, float, str, dict | None], None]  # (stage, fraction, message, iteration)


@dataclass
class SIQSettings:
    weight_bits: int = 4
    activation_bits: int = 4
    codebook_bits: int = 8
    method: str = "optimal"  # codebook fit: optimal | lloyd | uniform
    max_iterations: int = 5
    tolerance: float = 0.002
    codebook_tolerance: float | None = None
    retrain_epochs: float = 1.0
    retrain_lr: float = 5e-4
    lr_decay: float = 0.5  # retraining learning rate multiplier per iteration
    retrain: str = "ste"  # "ste": shadow weights; "centroids": frozen codes, trained codebook
    batch_size: int = 128
    weight_decay: float = 0.0
    augment_shift: int = 0
    augment: AugmentFn | None = None
    calibration_images: int = 2048
    seed: int = 0


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

    @property
    def codebook_real(self) -> np.ndarray:
        return self.codebook_int * self.weight_scale  # (k,)


def _round_half_up(t: torch.Tensor) -> torch.Tensor:
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


def quantize_layers(model: nn.Sequential, settings: SIQSettings) -> dict[str, LayerQuant]:
    """Step 1: a codebook of 2^b centroids per weighted layer, on the integer grid."""
    k = 1 << settings.weight_bits
    limit = (1 << (settings.codebook_bits - 1)) - 1
    mods = list(model)
    layers: dict[str, LayerQuant] = {}
    for i, m in enumerate(mods):
        if not isinstance(m, nn.Conv2d | nn.Linear):
            continue
        w = m.weight.detach().double().numpy().ravel()  # (n,)
        centroids, codes = fit_codebook(w, k, settings.method, seed=settings.seed)
        cmax = float(np.abs(centroids).max())
        s_w = cmax / limit if cmax > 0 else 1.0
        codebook_int = np.floor(centroids / s_w + 0.5).astype(np.int64)  # (k,)
        relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
        layers[layer_name(m)] = LayerQuant(
            layer_name(m),
            centroids,
            s_w,
            codebook_int,
            relu,
            counts=np.bincount(codes, minlength=k),
        )
    return layers


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
        self.calibrating = False
        self.centroids = nn.ParameterDict()  # only while training shared centroids
        self.frozen_codes: dict[str, torch.Tensor] = {}

    def share_centroids(self, codebook_bits: int) -> None:
        """Deep Compression-style retraining: freeze each layer's codes and make its
        codebook the trainable parameter (the shadow weights then get no gradient)."""
        self.codebook_limit = (1 << (codebook_bits - 1)) - 1
        for m in self.model:
            if isinstance(m, nn.Conv2d | nn.Linear):
                lq = self.layers[layer_name(m)]
                self.frozen_codes[lq.name] = self.codes_of(m)
                self.centroids[lq.name] = nn.Parameter(torch.tensor(lq.centroids.copy()).float())

    def unshare_centroids(self) -> None:
        """Write the trained codebooks back: sorted centroids, integer grid, weights on them."""
        for m in self.model:
            if not isinstance(m, nn.Conv2d | nn.Linear):
                continue
            lq = self.layers[layer_name(m)]
            c = self.centroids[lq.name].detach().double().numpy()  # (k,)
            s_w = float(np.abs(c).max()) / self.codebook_limit
            with torch.no_grad():
                m.weight.copy_(torch.as_tensor(c)[self.frozen_codes[lq.name]].float())
            lq.centroids = np.sort(c)
            lq.weight_scale = s_w
            lq.codebook_int = np.floor(lq.centroids / s_w + 0.5).astype(np.int64)
        self.centroids = nn.ParameterDict()
        self.frozen_codes = {}

    def codes_of(self, m: Weighted) -> torch.Tensor:
        """Nearest-centroid codes of the shadow weights, same shape as the weight."""
        lq = self.layers[layer_name(m)]
        mids = torch.as_tensor((lq.centroids[1:] + lq.centroids[:-1]) / 2.0)  # (k-1,)
        return torch.bucketize(m.weight.detach().double(), mids)

    def weight_scale(self, m: Weighted) -> float | torch.Tensor:
        if layer_name(m) in self.centroids:
            return self.centroids[layer_name(m)].abs().max().detach() / self.codebook_limit
        return self.layers[layer_name(m)].weight_scale

    def quantized_weight(self, m: Weighted) -> torch.Tensor:
        lq = self.layers[layer_name(m)]
        if layer_name(m) in self.centroids:
            c = self.centroids[layer_name(m)]  # (k,) trainable
            s_w = self.weight_scale(m)
            return _ste(c, _round_half_up(c / s_w) * s_w)[self.frozen_codes[layer_name(m)]]
        table = torch.as_tensor(lq.codebook_real, dtype=m.weight.dtype)  # (k,)
        return _ste(m.weight, table[self.codes_of(m)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1]
        s_x = self.input_scale
        h = _round_half_up(x / s_x).clamp(0, self.top) * s_x  # the engine's input codes * s_in
        for m in self.model:
            if isinstance(m, nn.ReLU):
                continue  # fused into the layer before it
            if not isinstance(m, nn.Conv2d | nn.Linear):
                h = m(h)  # maxpool2d / flatten commute with the (monotone) quantiser
                continue
            lq = self.layers[layer_name(m)]
            s_acc = s_x * self.weight_scale(m)  # accumulator scale
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
            if lq.output_scale is None or self.calibrating:
                if not self.calibrating:
                    raise RuntimeError(f"layer {lq.name} has no calibrated output scale")
                if lq.output_scale is None:
                    lq.output_scale = choose_activation_scale(acc, self.activation_bits)
            s_y = lq.output_scale
            y = (acc / s_y).clamp(0, self.top)  # clip is the ReLU; zero gradient outside
            h = _ste(y, _round_half_up(y)) * s_y
            s_x = s_y
        return h


def calibrate(sim: QuantSimNet, x_u8: np.ndarray) -> None:
    """Step 2: one forward pass in which each ReLU layer picks its output scale from the
    activations it receives from the already-quantised layers before it."""
    for lq in sim.layers.values():
        lq.output_scale = None
    sim.eval()
    sim.calibrating = True
    try:
        with torch.no_grad():
            sim(to_float(x_u8))
    finally:
        sim.calibrating = False


@dataclass
class SIQResult:
    sim: QuantSimNet  # the network to export (best validation iteration)
    iterations: list[dict] = field(default_factory=list)
    converged: bool = False
    best_iteration: int = 0
    seconds: float = 0.0


def network_codebook_change(old: dict[str, LayerQuant], new: dict[str, LayerQuant]) -> float:
    """Relative change of all layers' codebooks, each centroid weighted by how many weights
    use it: sqrt(sum n_i (c_i - c'_i)^2 / sum n_i c'_i^2) over every layer's centroids i.
    (Unweighted, a 2-bit codebook's sparsely used outer centroid can swing by 10% between
    equally good k-means optima while hardly any weight changes.)"""
    num = den = 0.0
    for name, lq in new.items():
        n = lq.counts if lq.counts is not None else np.ones(len(lq.centroids))
        num += float((n * (lq.centroids - old[name].centroids) ** 2).sum())
        den += float((n * old[name].centroids ** 2).sum())
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


def run_siq(
    float_model: nn.Sequential,
    train: tuple[np.ndarray, np.ndarray],  # uint8 (N, C, H, W), int64 (N,)
    val: tuple[np.ndarray, np.ndarray],
    settings: SIQSettings,
    *,
    report: ReportFn | None = None,
    cancel: CancelCheck | None = None,
) -> SIQResult:
    started = time.perf_counter()
    say = report or (lambda stage, frac, msg, it: None)
    model = copy.deepcopy(float_model)  # shadow weights start at the float weights
    calib_idx = np.random.default_rng(settings.seed).permutation(len(train[1]))
    calib_x = train[0][np.sort(calib_idx[: settings.calibration_images])]
    T = settings.max_iterations
    result = SIQResult(sim=QuantSimNet(model, {}, settings.activation_bits))
    best_acc, prev_layers, prev_acc = -1.0, None, None
    for t in range(1, T + 1):
        base = (t - 1) / T
        if cancel is not None:
            cancel(force=True)
        # 1. k-means codebooks
        say("quantizing", base, f"iteration {t}/{T}: {settings.method} codebooks", None)
        layers = quantize_layers(model, settings)
        sim = QuantSimNet(model, layers, settings.activation_bits)
        # 2. activation scales
        say("calibrating", base + 0.05 / T, f"iteration {t}/{T}: activation scales", None)
        calibrate(sim, calib_x)
        # 3. accuracy right after quantisation
        acc_kmeans = evaluate(sim, *val)
        # 4. retrain through the quantised forward pass
        lr = settings.retrain_lr * settings.lr_decay ** (t - 1)

        def progress(frac: float, msg: str, t: int = t, base: float = base) -> None:
            say("retraining", base + (0.1 + 0.85 * frac) / T, f"iteration {t}/{T}: {msg}", None)

        if settings.retrain == "centroids":
            sim.share_centroids(settings.codebook_bits)
        if settings.retrain_epochs > 0:
            train_model(
                sim,
                *train,
                epochs=settings.retrain_epochs,
                lr=lr,
                batch_size=settings.batch_size,
                weight_decay=settings.weight_decay,
                augment_shift=settings.augment_shift,
                seed=settings.seed + t,
                progress=progress,
                cancel=cancel,
                augment=settings.augment,
            )
        if settings.retrain == "centroids":
            sim.unshare_centroids()
        # 5. accuracy after retraining, convergence
        acc_retrain = evaluate(sim, *val)
        change = None if prev_layers is None else network_codebook_change(prev_layers, layers)
        per_layer = (
            None
            if prev_layers is None
            else {n: codebook_change(prev_layers[n].centroids, layers[n].centroids) for n in layers}
        )
        record = {
            "iteration": t,
            "accuracy_after_kmeans": acc_kmeans,
            "accuracy_after_retrain": acc_retrain,
            "codebook_change": change,
            "layer_codebook_change": per_layer,  # unweighted, per layer
            "retrain_lr": lr,
        }
        result.iterations.append(record)
        say("retraining", t / T, f"iteration {t}/{T} done", record)
        if acc_retrain >= best_acc:  # keep the best iteration (ties: the later one)
            best_acc, result.best_iteration = acc_retrain, t
            result.sim = copy.deepcopy(sim)
        if (
            prev_acc is not None
            and change is not None
            and abs(acc_retrain - prev_acc) < settings.tolerance
            and (settings.codebook_tolerance is None or change < settings.codebook_tolerance)
        ):
            result.converged = True
            break
        prev_layers, prev_acc = layers, acc_retrain
    result.seconds = time.perf_counter() - started
    return result
