"""Supervised iterative quantization (Ji et al., SPIE 2015), read top to bottom:

    shadow <- the float model's weights, batch norm folded into its convolutions
              (server/training/batchnorm.py: the codebooks then hold the weights the integer
              network uses, and retraining runs on the folded network)
    for t = 1 .. max_iterations:
        1. quantise:  per weighted layer, k-means the shadow weights into 2^b centroids; the
                      codebook is then put on the integer grid the bundle stores
                      (codebook_bits = 8: c_int = round_half_up(c / s_w), s_w = max|c| / 127)
        2. calibrate: per requantising node (relu / relu6 layer, add), in order, the
                      output scale s_y that minimises the mean squared error of a-bit
                      activations (clipping search) on training images, with every earlier
                      node already quantised
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

Pruning (Deep Compression, Han et al. ICLR 2016), when the settings give per-layer sparsity
targets: before step 1 of iteration t, each layer's smallest-magnitude shadow weights are
pruned up to ramp_sparsity(target, t, prune_steps) (server/training/prune.py; pruned weights
stay pruned), set to zero, and held there: their code is the codebook's reserved exact zero
(the other 2^b - 1 centroids are fitted to the kept weights), and the quantised forward pass
multiplies by the mask, so they get no gradient. So pruning, k-means and retraining iterate
together, as the paper iterates pruning and retraining; only iterations at the full targets
can be the exported one or count towards convergence, and the learning rate starts halving
once they are reached.

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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from server.params import JobParams
from server.progress import Reporter
from server.recipes import Recipe
from server.training.augment import AugmentFn, augment_for
from server.training.batchnorm import fold_batchnorm
from server.training.codebook import codebook_change, fit_codebook, snap_to_grid
from server.training.models import GraphNet, layer_name, weighted_layers
from server.training.prune import magnitude_mask, pruned_codebook, ramp_sparsity, unit_mask
from server.training.quantsim import LayerQuant, QuantSimNet, calibrate
from server.training.train import CancelCheck, evaluate, train_model
from shared.network import codebook_size

__all__ = [
    "BUDGET_RETRAIN_FACTOR",
    "SIQSettings",
    "SIQResult",
    "quantize_layers",
    "prune_weights",
    "network_codebook_change",
    "run_siq",
]


# a job under a byte budget retrains this many times the recipe's epochs per iteration (unless
# it sets retrain_epochs): at MNIST's 1/50 budget 2x lifted the validation accuracy from 99.15
# to 99.30 % for about 75 s more (bench/results/compression.md)
BUDGET_RETRAIN_FACTOR = 2.0


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
    layer_bits: dict[str, int] | None = None  # per-layer codebook bits (else weight_bits)
    sparsity: dict[str, float] | None = None  # per-layer pruning targets in [0, 1)
    prune_steps: int = 3  # iterations over which pruning ramps up to the targets
    unit_pruned: tuple[str, ...] = ()  # layers whose target prunes whole output units
    distill: float = 0.0  # weight of distillation from the float model while retraining
    # > 0: pruning ramps gradually inside retraining, over this share of each pruning
    # iteration's steps (Zhu & Gupta), instead of in one jump before each iteration
    prune_within: float = 0.0

    def bits_of(self, name: str) -> int:
        return (self.layer_bits or {}).get(name, self.weight_bits)

    @classmethod
    def for_job(cls, config: JobParams, recipe: Recipe) -> SIQSettings:
        """A job's settings: its parameters, and its data set's recipe with the job's
        retrain_epochs where set (under a byte budget, BUDGET_RETRAIN_FACTOR x the recipe's)."""
        recipe = recipe.for_job(config)
        if config.size_budget_bytes is not None and config.retrain_epochs is None:
            recipe = recipe.model_copy(
                update={"retrain_epochs": recipe.retrain_epochs * BUDGET_RETRAIN_FACTOR}
            )
        knobs = ("weight_bits", "activation_bits", "max_iterations", "tolerance", "seed")
        training = ("retrain_epochs", "retrain_lr", "batch_size", "augment_shift")
        return cls(
            method="uniform" if config.weight_quantizer == "uniform" else config.kmeans,
            codebook_tolerance=config.codebook_tolerance,
            augment=augment_for(recipe),
            **{k: getattr(config, k) for k in knobs},
            **{k: getattr(recipe, k) for k in training},
        )


def quantize_layers(
    model: GraphNet, settings: SIQSettings, masks: dict[str, np.ndarray] | None = None
) -> dict[str, LayerQuant]:
    """Step 1: a codebook of 2^b centroids per weighted layer, on the integer grid; a layer
    with a pruning mask gets an exact zero and 2^b - 1 centroids fitted to its kept weights."""
    activation = {node.name: node.activation for node in model.nodes}
    layers: dict[str, LayerQuant] = {}

    def fit(w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return fit_codebook(w, k, settings.method, seed=settings.seed)

    for m in weighted_layers(model):
        name = layer_name(m)
        k = codebook_size(settings.bits_of(name))
        w = m.weight.detach().double().numpy().ravel()  # (n,)
        mask = (masks or {}).get(name)
        zero_code = None
        if mask is not None:
            centroids, codes = pruned_codebook(w, mask, k, fit)
            zero_code = int(np.flatnonzero(centroids == 0.0)[0])
        else:
            centroids, codes = fit(w, k)
        s_w, codebook_int = snap_to_grid(centroids, settings.codebook_bits)
        layers[name] = LayerQuant(
            name,
            centroids,
            s_w,
            codebook_int,
            activation[name],
            counts=np.bincount(codes, minlength=k),
            mask=mask,
            zero_code=zero_code,
        )
    return layers


def prune_weights(
    model: GraphNet, settings: SIQSettings, step: float, masks: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Step 0 (pruning): each layer with a target keeps all but its ramped share of
    smallest-magnitude weights, or of smallest-norm output units for the `unit_pruned`
    layers (those pruned before stay pruned); a linear layer after a unit-pruned one loses
    the pruned units' input columns too. The pruned shadow weights are set to zero.
    Returns the masks (True = kept)."""
    steps = min(settings.prune_steps, settings.max_iterations)
    new: dict[str, np.ndarray] = {}
    live_inputs: np.ndarray | None = None  # (in,) the previous unit-pruned layer's units
    for m in weighted_layers(model):
        name = layer_name(m)
        target = (settings.sparsity or {}).get(name, 0.0)
        w = m.weight.detach().numpy()
        keep = masks.get(name)
        if live_inputs is not None and isinstance(m, nn.Linear):
            columns = np.broadcast_to(live_inputs[None, :], w.shape)
            keep = columns if keep is None else keep & columns
        live_inputs = None
        if target > 0:
            prune = unit_mask if name in settings.unit_pruned else magnitude_mask
            mask = prune(w, ramp_sparsity(target, step, steps), keep=keep)
        elif keep is not None:
            mask = keep.copy()
        else:
            continue
        if name in settings.unit_pruned:
            live_inputs = np.asarray(mask.reshape(len(w), -1).any(axis=1))
        with torch.no_grad():
            m.weight.mul_(torch.from_numpy(mask).to(m.weight.dtype))
        new[name] = mask
    return new


def _sparsity(layers: dict[str, LayerQuant], model: GraphNet) -> float:
    """Share of all weights that are pruned (their code is the zero entry)."""
    total = sum(m.weight.numel() for m in weighted_layers(model))
    pruned = sum(int((~lq.mask).sum()) for lq in layers.values() if lq.mask is not None)
    return pruned / total if total else 0.0


PRUNE_EVENTS = 16  # pruning steps per iteration when pruning ramps inside retraining


def _pruning_steps(
    model: GraphNet, sim: QuantSimNet, settings: SIQSettings, t: int, held: list
) -> Callable[[int, int], None]:
    """The retraining hook of gradual pruning: PRUNE_EVENTS times over the first
    `prune_within` of iteration t's steps, prune up to ramp step t - 1 + the share done, and
    hold the new masks in the quantised forward pass (`held[0]`: the masks so far)."""

    def on_step(step: int, steps: int) -> None:
        span = max(1, math.ceil(settings.prune_within * steps))
        every = max(1, span // PRUNE_EVENTS)
        if step > span + every or (step % every and step != span):
            return
        held[0] = prune_weights(model, settings, t - 1 + min(1.0, step / span), held[0])
        for name, mask in held[0].items():
            sim.layers[name].mask = mask

    return on_step


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
    float_model: GraphNet,
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
    model = fold_batchnorm(float_model)  # shadow weights start at the (folded) float weights
    teacher = copy.deepcopy(float_model).eval() if settings.distill > 0 else None
    calib_idx = np.random.default_rng(settings.seed).permutation(len(train[1]))
    calib_x = train[0][np.sort(calib_idx[: settings.calibration_images])]
    T = settings.max_iterations
    result = SIQResult(sim=QuantSimNet(model, {}, settings.activation_bits))
    best_acc, prev_layers, prev_acc = -1.0, None, None
    masks: dict[str, np.ndarray] = {}
    pruning = any(v > 0 for v in (settings.sparsity or {}).values())
    prune_steps = min(settings.prune_steps, T) if pruning else 1
    for t in range(1, T + 1):
        base = (t - 1) / T
        if cancel is not None:
            cancel(force=True)
        # 0. pruning, ramped over the first prune_steps iterations (gradually: to where the
        # previous iteration's retraining left it; this one's retraining ramps on)
        gradual = pruning and settings.prune_within > 0 and t <= prune_steps
        if pruning:
            say(base, f"iteration {t}/{T}: pruning", stage="quantizing")
            masks = prune_weights(model, settings, t - 1 if gradual else t, masks)
        # 1. k-means codebooks
        say(base, f"iteration {t}/{T}: {settings.method} codebooks", stage="quantizing")
        layers = quantize_layers(model, settings, masks)
        sim = QuantSimNet(model, layers, settings.activation_bits)
        # 2. activation scales
        say(base + 0.05 / T, f"iteration {t}/{T}: activation scales", stage="calibrating")
        calibrate(sim, calib_x)
        # 3. accuracy right after quantisation
        acc_kmeans = evaluate(sim, *val)
        # 4. retrain through the quantised forward pass (the rate decays once fully pruned)
        lr = settings.retrain_lr * settings.lr_decay ** max(0, t - prune_steps)
        progress = say.part(
            base + 0.1 / T, base + 0.95 / T, stage="retraining", prefix=f"iteration {t}/{T}: "
        )
        held = [masks]
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
                teacher=teacher,
                distill=settings.distill,
                on_step=_pruning_steps(model, sim, settings, t, held) if gradual else None,
            )
        masks = held[0]
        # 5. accuracy after retraining, convergence
        acc_retrain = evaluate(sim, *val)
        record = _record(t, acc_kmeans, acc_retrain, prev_layers, layers, lr)
        record["sparsity"] = _sparsity(layers, model)
        result.iterations.append(record)
        say(t / T, f"iteration {t}/{T} done", record, stage="retraining")
        if t < prune_steps:  # not at the sparsity targets yet: neither exported nor compared
            prev_layers = layers
            continue
        if acc_retrain >= best_acc:  # keep the best iteration (ties: the later one)
            best_acc, result.best_iteration = acc_retrain, t
            result.sim = copy.deepcopy(sim)
        if t > prune_steps and _converged(settings, prev_acc, record):
            result.converged = True
            break
        prev_layers, prev_acc = layers, acc_retrain
    result.seconds = time.perf_counter() - started
    return result
