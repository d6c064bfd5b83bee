"""Choosing each layer's bits and sparsity, and holding a bundle to a byte budget.

plan_compression   before SIQ: measure each layer's sensitivity on the validation split
                   (only that layer quantised and pruned, the others float), measure what
                   its storage would cost by encoding it (shared.bundle.v2), and pick one
                   option per layer (server/training/allocate.py): under `size_budget_bytes`
                   the least summed loss whose bundle fits; under `sparsity` the least
                   loss that prunes that share of all weights. Explicit `bits_per_layer` /
                   `sparsity_per_layer` fix those layers' choices.
prune_to_fit       after SIQ, if the encoded bundle still exceeds the budget (the estimate
                   was made before retraining moved the weights): prune the largest
                   layer's smallest kept weights a little further, and encode again.
allocation_report  per layer: bits, sparsity, kept weights and bytes, as stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from server.params import JobParams
from server.training.allocate import LayerOption, allocate
from server.training.codebook import assign_codes, fit_codebook, snap_to_grid
from server.training.models import GraphNet, layer_name, weighted_layers
from server.training.prune import magnitude_mask, pruned_codebook, unit_mask
from server.training.quantsim import QuantSimNet
from server.training.train import to_float
from shared.bundle import Bundle, layer_weights
from shared.bundle import v2 as bundle_v2
from shared.errors import ConfigError
from shared.network import WEIGHTED_OPS, codebook_size

__all__ = [
    "SPARSITIES",
    "UNIT_SPARSITIES",
    "unit_prunable",
    "CompressionPlan",
    "wants_compression",
    "check_layer_names",
    "measure_options",
    "plan_compression",
    "prune_to_fit",
    "allocation_report",
]

# candidate sparsities of the sensitivity scan (denser near the top, where bytes go)
SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
# candidate shares of output units pruned, for a linear layer feeding another (whole units go,
# with the next layer's matching columns, and the kept ones are stored as a dense block)
UNIT_SPARSITIES = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96)
SENSITIVITY_IMAGES = 2000
FIT_SAMPLE = 20_000  # the scan fits codebooks to at most this many (evenly spaced) weights
MIN_BITS = 2  # a pruned layer's codebook: zero plus at least three values


@dataclass
class CompressionPlan:
    layer_bits: dict[str, int]
    sparsity: dict[str, float]
    options: dict[str, LayerOption] | None  # the chosen options, when allocated
    overhead_bytes: int  # budgeted for the manifest, header and the layers' fixed parts
    unit_pruned: tuple[str, ...] = ()  # layers whose sparsity prunes whole output units


def wants_compression(config: JobParams) -> bool:
    return any(
        v is not None
        for v in (
            config.size_budget_bytes,
            config.sparsity,
            config.bits_per_layer,
            config.sparsity_per_layer,
        )
    )


def check_layer_names(config: JobParams, model: GraphNet) -> None:
    """ConfigError naming the field when bits_per_layer / sparsity_per_layer name a layer
    the model does not have."""
    names = [layer_name(m) for m in weighted_layers(model)]
    for field in ("bits_per_layer", "sparsity_per_layer"):
        unknown = sorted(set(getattr(config, field) or {}) - set(names))
        if unknown:
            err = ConfigError(
                f"{field}: no layer named {', '.join(unknown)} (layers: {', '.join(names)})"
            )
            err.field = field  # type: ignore[attr-defined]
            raise err


def _loss(
    model: GraphNet, h: torch.Tensor, y: torch.Tensor, values: dict[str, torch.Tensor], start: int
) -> float:
    """Cross-entropy with the nodes before `start` taken from `values` (an earlier run)."""
    with torch.no_grad():
        return float(F.cross_entropy(model.run(h, values, start)[model.nodes[-1].name], y))


def measure_options(
    model: GraphNet,
    val: tuple[np.ndarray, np.ndarray],
    choices: dict[str, list[tuple[int, float, bool]]],
    *,
    method: str,
    codebook_bits: int,
    seed: int,
) -> dict[str, list[LayerOption]]:
    """For each layer and each (bits, sparsity, units) in `choices[layer]`: the validation
    cross-entropy rise with only that layer pruned (whole output units when `units`) and
    quantised so, and its v2 storage size.
    Each layer's input is computed once; only the layers after it run per option."""
    model = model.eval()
    x, y = val
    take = np.random.default_rng(seed).permutation(len(y))[:SENSITIVITY_IMAGES]
    h = to_float(x[np.sort(take)])
    labels = torch.from_numpy(np.asarray(y)[np.sort(take)]).long()
    with torch.no_grad():
        cache = model.run(h)  # every node's value: the nodes before a layer are kept
    base = _loss(model, h, labels, cache, len(model.nodes))
    options: dict[str, list[LayerOption]] = {}

    def fit(w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # a quantile sample keeps the distribution's shape at a fraction of the k-means cost
        sample = np.sort(w)[:: max(1, len(w) // FIT_SAMPLE)]
        centroids, _ = fit_codebook(sample, k, method, seed=seed)
        return centroids, assign_codes(w, centroids)

    for i, node in enumerate(model.nodes):
        if node.op not in WEIGHTED_OPS:
            continue
        m = model.weighted(node.name)
        name = node.name
        original = m.weight.detach().clone()
        w = original.double().numpy().ravel()  # (n,)
        relu = node.activation != "none"
        opts: list[LayerOption] = []
        rows = int(original.shape[0])
        for bits, sparsity, units in choices[name]:
            k = codebook_size(bits)
            if sparsity > 0:
                prune = unit_mask if units else magnitude_mask
                mask = prune(w.reshape(rows, -1), sparsity).ravel()
                centroids, codes = pruned_codebook(w, mask, k, fit)
            else:
                centroids, codes = fit(w, k)
            s_w, codebook_int = snap_to_grid(centroids, codebook_bits)
            values = codebook_int[codes]  # (n,) integer weights
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(values * s_w).reshape(m.weight.shape))
            loss = _loss(model, h, labels, cache, i) - base
            # + the fixed part: int8 codebook, biases in accumulator units (two bytes each
            # as a rule), multiplier and shift
            size = bundle_v2.codes_size(codes, bits, rows) + k + 2 * rows + 5 * relu
            nonzero = int((values != 0).sum())
            opts.append(LayerOption(bits, sparsity, size, nonzero, loss, units))
        with torch.no_grad():
            m.weight.copy_(original)
        options[name] = opts
    return options


def unit_prunable(model: GraphNet) -> list[str]:
    """Linear layers whose outputs feed another linear layer (and nothing else, the next
    weighted layer): those whose whole units can go."""
    nodes = model.nodes
    weighted = [n for n in nodes if n.op in WEIGHTED_OPS]
    return [
        node.name
        for node, nxt in zip(weighted, weighted[1:], strict=False)
        if node.op == nxt.op == "linear"
        and nxt.inputs == (node.name,)
        and all(node.name not in n.inputs for n in nodes if n is not nxt)
    ]


def _choices(
    config: JobParams, names: list[str], units: list[str]
) -> dict[str, list[tuple[int, float, bool]]]:
    """(bits, sparsity, units) candidates per layer, explicit settings fixing their part.
    Under a byte budget the `units` layers prune whole output units and take any bits from
    MIN_BITS up; where there are such layers, the others keep weight_bits and only their
    sparsity is chosen: after retraining, bytes buy more accuracy as wide codebooks in the
    small layers than as more units in the big one, though the one-shot sensitivities
    measured here say otherwise (bench/results/compression.md, "unit pruning")."""
    bits_fixed = config.bits_per_layer or {}
    sparsity_fixed = config.sparsity_per_layer or {}
    budget = config.size_budget_bytes is not None
    units = [n for n in units if n not in sparsity_fixed] if budget else []
    out = {}
    for name in names:
        if name in bits_fixed:
            bits = [bits_fixed[name]]
        elif budget and (name in units or not units):
            bits = list(range(min(MIN_BITS, config.weight_bits), config.weight_bits + 1))
        else:
            bits = [config.weight_bits]
        if name in sparsity_fixed:
            sparsities = [sparsity_fixed[name]]
        elif budget or config.sparsity is not None:
            sparsities = list(SPARSITIES)
        else:
            sparsities = [0.0]
        if name in units:
            # whole units only: after retraining they keep more accuracy per byte than single
            # weights, though one-shot (the sensitivity measured here) they lose more
            out[name] = [(b, s, s > 0) for b in bits for s in (0.0, *UNIT_SPARSITIES)]
        else:
            out[name] = [(b, s, False) for b in bits for s in sparsities]
    return out


def plan_compression(
    model: GraphNet,
    val: tuple[np.ndarray, np.ndarray],
    config: JobParams,
    *,
    method: str,
    codebook_bits: int,
    overhead_bytes: int,
) -> CompressionPlan:
    """Per-layer bits and sparsity for a job (module doc). `overhead_bytes`: what the bundle
    holds besides the layers' storage (manifest, safetensors header)."""
    names = [layer_name(m) for m in weighted_layers(model)]
    check_layer_names(config, model)
    choices = _choices(config, names, unit_prunable(model))
    if all(len(c) == 1 for c in choices.values()):  # everything explicit: nothing to measure
        return CompressionPlan(
            {n: c[0][0] for n, c in choices.items()},
            {n: c[0][1] for n, c in choices.items() if c[0][1] > 0},
            None,
            overhead_bytes,
        )
    options = measure_options(
        model, val, choices, method=method, codebook_bits=codebook_bits, seed=config.seed
    )
    if config.size_budget_bytes is not None:
        budget = config.size_budget_bytes - overhead_bytes
        chosen = allocate(options, budget)
        if chosen is None:
            cheapest = overhead_bytes + sum(min(o.bytes for o in opts) for opts in options.values())
            err = ConfigError(
                f"size_budget_bytes: {config.size_budget_bytes} bytes is below the smallest "
                f"bundle this network can make, about {cheapest} bytes"
            )
            err.field = "size_budget_bytes"  # type: ignore[attr-defined]
            raise err
    else:
        total = sum(int(np.prod(m.weight.shape)) for m in weighted_layers(model))
        keep = math.floor(total * (1.0 - (config.sparsity or 0.0)))
        chosen = allocate(options, keep, cost=lambda o: o.nonzero)
        if chosen is None:
            raise ConfigError("sparsity: the named layers' fixed choices keep too many weights")
    return CompressionPlan(
        {n: o.bits for n, o in chosen.items()},
        {n: o.sparsity for n, o in chosen.items() if o.sparsity > 0},
        chosen,
        overhead_bytes,
        tuple(n for n, o in chosen.items() if o.units and o.sparsity > 0),
    )


def prune_to_fit(sim: QuantSimNet, bundle: Bundle, excess: int) -> bool:
    """Prune the pruned layer with the most stored bytes further, by about `excess` bytes
    worth of its kept weights (smallest first), in place. False when no layer can be."""
    storage = bundle.manifest.get("storage", {})
    candidates = [
        (int(storage[name]["bytes"]), m)
        for m in weighted_layers(sim.model)
        if (name := layer_name(m)) in storage and sim.layers[name].mask is not None
    ]
    if not candidates:
        return False
    size, m = max(candidates, key=lambda c: c[0])
    lq = sim.layers[layer_name(m)]
    assert lq.mask is not None and lq.zero_code is not None
    if storage[layer_name(m)]["layout"] == "block":  # a block of units: drop whole units
        units = len(lq.mask)
        n_alive = int(lq.mask.reshape(units, -1).any(axis=1).sum())
        if n_alive <= 1:
            return False
        drop = min(n_alive - 1, math.ceil(1.25 * excess * n_alive / size) + 1)
        # the pruned units stay pruned, then the `drop` kept ones of least norm go too
        sparsity = (units - n_alive + drop) / units
        weight = m.weight.detach().numpy().reshape(lq.mask.shape)
        lq.mask = unit_mask(weight, sparsity, keep=lq.mask)
        return True
    stored = (sim.codes_of(m).numpy() != lq.zero_code) & lq.mask
    n_stored = int(stored.sum())
    if n_stored == 0:
        return False
    drop = min(n_stored, math.ceil(1.25 * excess * n_stored / size) + 8)
    magnitude = np.where(stored, np.abs(m.weight.detach().numpy()), np.inf).ravel()
    mask = lq.mask.copy().ravel()
    mask[np.argsort(magnitude, kind="stable")[:drop]] = False
    lq.mask = mask.reshape(lq.mask.shape)
    return True


def allocation_report(bundle: Bundle) -> dict[str, dict]:
    """Per weighted layer of a decoded bundle: bits, weights, kept (non-zero) weights,
    sparsity, stored bytes and layout (version-2 storage; v1 layers: packed codes)."""
    storage = bundle.manifest.get("storage", {})
    report = {}
    for layer in bundle.manifest["graph"]:
        if layer["op"] not in ("conv2d", "linear"):
            continue
        name = layer["name"]
        values = layer_weights(layer, bundle.tensors)
        entry = storage.get(name, {})
        report[name] = {
            "bits": layer["weight_bits"],
            "weights": int(values.size),
            "nonzero": int((values != 0).sum()),
            "sparsity": round(float((values == 0).mean()), 6),
            "bytes": int(entry.get("bytes", bundle.tensors[f"{name}.codes"].size)),
            "layout": entry.get("layout", "v1"),
        }
    return report
