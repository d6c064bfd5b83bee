"""Per-layer bits and sparsity under a byte budget (or a weight budget), from measured
sensitivities: which option per layer keeps the network best while the whole fits.

Each layer offers options (bits, sparsity) with a cost (the bytes its packed storage takes,
measured by encoding it with shared.bundle.v2, or its count of kept weights) and a loss (how
much the validation cross-entropy rises when only that layer is quantised and pruned so).
Treating losses as additive across layers (the usual assumption of sensitivity analysis:
Deep Compression section 2, HAQ, HAWQ) turns the choice into a multiple-choice knapsack,
solved exactly here by dynamic programming over the cost in `resolution`-sized units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["LayerOption", "allocate"]


@dataclass(frozen=True)
class LayerOption:
    bits: int
    sparsity: float
    bytes: int  # packed storage of the layer in a version-2 bundle
    nonzero: int  # weights kept
    loss: float  # rise of the validation loss with only this layer quantised this way
    units: bool = False  # the sparsity prunes whole output units (else single weights)


def allocate(
    options: dict[str, list[LayerOption]],
    budget: int,
    cost: Callable[[LayerOption], int] = lambda o: o.bytes,
    max_units: int = 4096,
) -> dict[str, LayerOption] | None:
    """One option per layer minimising the summed loss with summed cost <= `budget`
    (None when even the cheapest options exceed it). Costs are rounded up to units of
    `ceil(budget / max_units)`, so the result never exceeds the budget; ties prefer cheaper."""
    if budget < 0:
        return None
    names = list(options)
    unit = max(1, math.ceil(budget / max_units))
    cap = budget // unit
    inf = math.inf
    best = np.full(cap + 1, inf)  # best[c]: least loss of the layers so far within c units
    best[0] = 0.0
    choice: list[np.ndarray] = []  # per layer: option index chosen at each cost
    for name in names:
        new = np.full(cap + 1, inf)
        pick = np.full(cap + 1, -1, dtype=np.int64)
        for i, opt in enumerate(options[name]):
            units = math.ceil(cost(opt) / unit)
            if units > cap:
                continue
            cand = np.full(cap + 1, inf)
            cand[units:] = best[: cap + 1 - units] + opt.loss
            better = cand < new
            new[better], pick[better] = cand[better], i
        best = new
        choice.append(pick)
    if not np.isfinite(best).any():
        return None
    c = int(np.argmin(best))  # least loss; argmin takes the cheapest among equals
    result: dict[str, LayerOption] = {}
    for name, pick in zip(reversed(names), reversed(choice), strict=True):
        opt = options[name][int(pick[c])]
        result[name] = opt
        c -= math.ceil(cost(opt) / unit)
    return dict(reversed(list(result.items())))
