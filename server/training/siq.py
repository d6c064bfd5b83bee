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

The quantised forward pass is server/training/quantsim.py; the codebook's fit, grid and
assignment are server/training/codebook.py.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from server.params import QuantizeConfig, Recipe
from server.progress import Reporter
from server.training.augment import AugmentFn, augment_for
from server.training.codebook import codebook_change, fit_codebook, snap_to_grid
from server.training.models import layer_name, weighted_layers
from server.training.quantsim import LayerQuant, QuantSimNet, calibrate
from server.training.train import CancelCheck, evaluate, train_model
from shared.graph import carries_relu

__all__ = ["SIQSettings", "SIQResult", "quantize_layers", "network_codebook_change", "run_siq"]


@dataclass
class SIQSettings:
    """The loop's knobs. The job's come from its parameters and its data set's recipe
    (`for_job`); the defaults here are the method's own."""

    weight_bits: int
    activation_bits: int
    method: str  # codebook fit: optimal | lloyd | uniform
    max_iterations: int
    tolerance: float
    codebook_tolerance: float | None
    retrain_epochs: float
    retrain_lr: float
    batch_size: int
    augment_shift: int
    augment: AugmentFn | None
    seed: int
    codebook_bits: int = 8
    lr_decay: float = 0.5  # retraining learning rate multiplier per iteration
    weight_decay: float = 0.0  # none while retraining: the weights sit on their codebooks
    calibration_images: int = 2048

    @classmethod
    def for_job(cls, config: QuantizeConfig, recipe: Recipe) -> SIQSettings:
        """A job's settings: its parameters, and its data set's recipe with the job's
        retrain_epochs where set."""
        recipe = recipe.for_job(config)
        knobs = ("weight_bits", "activation_bits", "max_iterations", "tolerance", "seed")
        training = ("retrain_epochs", "retrain_lr", "batch_size", "augment_shift")
        return cls(
            method="uniform" if config.weight_quantizer == "uniform" else config.kmeans,
            codebook_tolerance=config.codebook_tolerance,
            augment=augment_for(recipe),
            **{k: getattr(config, k) for k in knobs},
            **{k: getattr(recipe, k) for k in training},
        )


def quantize_layers(model: nn.Sequential, settings: SIQSettings) -> dict[str, LayerQuant]:
    """Step 1: a codebook of 2^b centroids per weighted layer, on the integer grid."""
    k = 1 << settings.weight_bits
    weighted = weighted_layers(model)
    layers: dict[str, LayerQuant] = {}
    for i, m in enumerate(weighted):
        w = m.weight.detach().double().numpy().ravel()  # (n,)
        centroids, codes = fit_codebook(w, k, settings.method, seed=settings.seed)
        s_w, codebook_int = snap_to_grid(centroids, settings.codebook_bits)
        layers[layer_name(m)] = LayerQuant(
            layer_name(m),
            centroids,
            s_w,
            codebook_int,
            carries_relu(i, len(weighted)),
            counts=np.bincount(codes, minlength=k),
        )
    return layers


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


def _record(
    t: int,
    acc_kmeans: float,
    acc_retrain: float,
    prev: dict[str, LayerQuant] | None,
    layers: dict[str, LayerQuant],
    lr: float,
) -> dict:
    """One iteration's report: the validation accuracies and how far the codebooks moved."""
    return {
        "iteration": t,
        "accuracy_after_kmeans": acc_kmeans,
        "accuracy_after_retrain": acc_retrain,
        "codebook_change": None if prev is None else network_codebook_change(prev, layers),
        "layer_codebook_change": (  # unweighted, per layer
            None
            if prev is None
            else {n: codebook_change(prev[n].centroids, layers[n].centroids) for n in layers}
        ),
        "retrain_lr": lr,
    }


def _converged(settings: SIQSettings, prev_acc: float | None, record: dict) -> bool:
    """Step 5's rule: the accuracy settled, and the codebooks too when a tolerance asks."""
    change = record["codebook_change"]
    return (
        prev_acc is not None
        and change is not None
        and abs(record["accuracy_after_retrain"] - prev_acc) < settings.tolerance
        and (settings.codebook_tolerance is None or change < settings.codebook_tolerance)
    )


def run_siq(
    float_model: nn.Sequential,
    train: tuple[np.ndarray, np.ndarray],  # uint8 (N, C, H, W), int64 (N,)
    val: tuple[np.ndarray, np.ndarray],
    settings: SIQSettings,
    *,
    report: Reporter | None = None,
    cancel: CancelCheck | None = None,
) -> SIQResult:
    """The SIQ loop of the module doc on a copy of `float_model`; `report` gets the loop's
    progress as fractions of its own run."""
    started = time.perf_counter()
    say = report or Reporter(None)
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
        say(base, f"iteration {t}/{T}: {settings.method} codebooks", stage="quantizing")
        layers = quantize_layers(model, settings)
        sim = QuantSimNet(model, layers, settings.activation_bits)
        # 2. activation scales
        say(base + 0.05 / T, f"iteration {t}/{T}: activation scales", stage="calibrating")
        calibrate(sim, calib_x)
        # 3. accuracy right after quantisation
        acc_kmeans = evaluate(sim, *val)
        # 4. retrain through the quantised forward pass
        lr = settings.retrain_lr * settings.lr_decay ** (t - 1)
        progress = say.part(
            base + 0.1 / T, base + 0.95 / T, stage="retraining", prefix=f"iteration {t}/{T}: "
        )
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
        # 5. accuracy after retraining, convergence
        acc_retrain = evaluate(sim, *val)
        record = _record(t, acc_kmeans, acc_retrain, prev_layers, layers, lr)
        result.iterations.append(record)
        say(t / T, f"iteration {t}/{T} done", record, stage="retraining")
        if acc_retrain >= best_acc:  # keep the best iteration (ties: the later one)
            best_acc, result.best_iteration = acc_retrain, t
            result.sim = copy.deepcopy(sim)
        if _converged(settings, prev_acc, record):
            result.converged = True
            break
        prev_layers, prev_acc = layers, acc_retrain
    result.seconds = time.perf_counter() - started
    return result
