"""Magnitude pruning for the SIQ loop (Deep Compression, Han et al. ICLR 2016, section 2):
which weights to drop, how fast to drop them, and a codebook that keeps zero exact.

Pure numpy, no torch: the SIQ loop (server/training/siq.py) applies the masks to its shadow
weights, holds the pruned ones at zero through retraining, and stores them as the codebook's
reserved zero, which the bundle's sparse layout (shared/bundle/v2.py) then leaves implicit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["magnitude_mask", "unit_mask", "ramp_sparsity", "pruned_codebook"]

FitFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (w, k) -> (centroids, codes)


def magnitude_mask(
    weights: np.ndarray, sparsity: float, keep: np.ndarray | None = None
) -> np.ndarray:
    """Boolean mask (same shape as `weights`) keeping all but the `round(sparsity * n)`
    smallest-magnitude weights. Weights already pruned in `keep` stay pruned (they count
    towards the sparsity first), so iterated pruning only ever removes more."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    w = np.abs(np.asarray(weights, dtype=np.float64)).ravel()  # (n,)
    if keep is not None:
        w = np.where(np.asarray(keep).ravel(), w, -1.0)  # already pruned sort first
    n_pruned = int(round(sparsity * w.size))
    mask = np.ones(w.size, dtype=bool)
    mask[np.argsort(w, kind="stable")[:n_pruned]] = False
    return mask.reshape(np.shape(weights))


def unit_mask(weights: np.ndarray, sparsity: float, keep: np.ndarray | None = None) -> np.ndarray:
    """Structured pruning: a mask (same shape as `weights`, (out, ...)) keeping whole output
    units, all but the `round(sparsity * out)` units of smallest L2 norm. Units already
    pruned in `keep` (no weight kept) stay pruned and count first, as in magnitude_mask; a
    kept unit keeps the weights `keep` kept. The bundle stores such a layer as a dense block
    of its kept units (shared/bundle/v2.py, layout "block"), positions costing nothing."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    w = np.asarray(weights, dtype=np.float64)
    rows = w.reshape(len(w), -1)  # (out, fan_in)
    kept = np.ones(rows.shape, dtype=bool) if keep is None else np.asarray(keep).reshape(rows.shape)
    norm = np.where(kept.any(axis=1), np.sqrt((rows**2 * kept).sum(axis=1)), -1.0)  # (out,)
    alive = np.ones(len(rows), dtype=bool)
    alive[np.argsort(norm, kind="stable")[: int(round(sparsity * len(rows)))]] = False
    return (kept & alive[:, None]).reshape(w.shape)


def ramp_sparsity(target: float, step: float, steps: int) -> float:
    """Sparsity after pruning step `step` of `steps` (1-based): Zhu & Gupta's cubic ramp
    s_t = target * (1 - (1 - t/steps)^3), pruning fast while many redundant weights remain
    and gently near the target; `target` from step `steps` on."""
    frac = min(1.0, max(0.0, step / steps)) if steps > 0 else 1.0
    return float(target * (1.0 - (1.0 - frac) ** 3))


def pruned_codebook(
    weights: np.ndarray, mask: np.ndarray, k: int, fit: FitFn
) -> tuple[np.ndarray, np.ndarray]:
    """A `k`-entry sorted codebook whose entries are exactly 0 plus `k - 1` centroids fitted
    to the kept weights, and each weight's code: pruned weights get the zero entry, kept
    ones their nearest entry (a kept weight nearest to zero becomes zero, i.e. pruned too).
    Returns (centroids (k,), codes (n,) int64)."""
    if k < 2:
        raise ValueError("a pruned layer's codebook needs at least 2 entries (zero and one more)")
    w = np.asarray(weights, dtype=np.float64).ravel()
    m = np.asarray(mask, dtype=bool).ravel()
    kept = w[m]
    if kept.size == 0:
        kept = np.zeros(1)
    centroids, _ = fit(kept, k - 1)
    centroids = np.sort(np.append(np.asarray(centroids, dtype=np.float64), 0.0))  # (k,)
    zero = int(np.flatnonzero(centroids == 0.0)[0])
    mids = (centroids[1:] + centroids[:-1]) / 2.0  # (k-1,) decision boundaries
    codes = np.searchsorted(mids, w, side="left").astype(np.int64)
    codes[~m] = zero
    return centroids, codes
