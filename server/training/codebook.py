"""A layer's weight codebook, all its verbs in one place:

- fit:          k-means in one dimension (exact or Lloyd) or the uniform baseline grid:
                a 1-D float array of a layer's weights in, a sorted codebook of `k` centroids
                and one code per weight out (`fit_codebook`);
- snap to grid: the centroids as the integers the bundle stores, c_int = round_half_up(c / s_w)
                with s_w = max|c| / (2^(codebook_bits-1) - 1) (`snap_to_grid`);
- assign:       each weight's nearest centroid (`assign_codes`, `assign_codes_tensor` for the
                training forward pass);
- dequantise:   the real values the integer codebook stands for (`dequantize`).

`k` centroids are always returned, even when the layer has fewer distinct values (the
extra centroids are unused), because the bundle stores exactly 2^b codebook entries.
"""

from __future__ import annotations

import numpy as np
import torch

from shared.network import round_half_up

__all__ = [
    "fit_codebook",
    "optimal_kmeans",
    "lloyd_kmeans",
    "uniform_codebook",
    "snap_to_grid",
    "dequantize",
    "assign_codes",
    "assign_codes_tensor",
    "within_cluster_sse",
    "codebook_change",
]


def _midpoints(centroids: np.ndarray) -> np.ndarray:
    c = np.asarray(centroids, dtype=np.float64)
    return (c[1:] + c[:-1]) / 2.0  # (k-1,) decision boundaries


def assign_codes(weights: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid for each weight (ties to the lower one). `centroids` sorted
    ascending, (k,) -> codes (n,) int64."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    return np.searchsorted(_midpoints(centroids), w, side="left").astype(np.int64)


def assign_codes_tensor(weight: torch.Tensor, centroids: np.ndarray) -> torch.Tensor:
    """`assign_codes` on a weight tensor, keeping its shape (torch.bucketize is
    searchsorted side="left"); used on every retraining step."""
    return torch.bucketize(weight.detach().double(), torch.as_tensor(_midpoints(centroids)))


def snap_to_grid(centroids: np.ndarray, codebook_bits: int) -> tuple[float, np.ndarray]:
    """(s_w, codebook_int): the centroids on the signed `codebook_bits`-bit integer grid the
    bundle stores, real value = codebook_int * s_w."""
    limit = (1 << (codebook_bits - 1)) - 1
    cmax = float(np.abs(centroids).max())
    scale = cmax / limit if cmax > 0 else 1.0
    return scale, round_half_up(np.asarray(centroids) / scale).astype(np.int64)  # (k,)


def dequantize(codebook_int: np.ndarray, scale: float) -> np.ndarray:
    """The real values of an integer codebook: codebook_int * s_w, (k,) float64."""
    return np.asarray(codebook_int) * scale


def within_cluster_sse(weights: np.ndarray, centroids: np.ndarray, codes: np.ndarray) -> float:
    w = np.asarray(weights, dtype=np.float64).ravel()
    return float(((w - np.asarray(centroids, dtype=np.float64)[codes]) ** 2).sum())


def _pad_centroids(centroids: np.ndarray, k: int, weights: np.ndarray) -> np.ndarray:
    """Fill up to k distinct sorted centroids when there are fewer distinct weights."""
    c = np.unique(np.asarray(centroids, dtype=np.float64))
    if len(c) >= k:
        return c[:k]
    span = float(np.ptp(weights)) if len(weights) else 1.0
    step = max(span, 1e-8) * 1e-3
    extra = c[-1] + step * np.arange(1, k - len(c) + 1) if len(c) else np.arange(k) * step
    return np.sort(np.concatenate([c, extra]))


def optimal_kmeans(weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Globally optimal 1-D k-means by dynamic programming (the `kmeans1d` package,
    O(k n) after sorting). Returns (centroids (k,) sorted, codes (n,))."""
    import kmeans1d

    w = np.asarray(weights, dtype=np.float64).ravel()
    distinct = np.unique(w)
    if len(distinct) <= k:
        centroids = _pad_centroids(distinct, k, w)
        return centroids, assign_codes(w, centroids)
    _, centroids = kmeans1d.cluster(w, k)
    centroids = np.sort(np.asarray(centroids, dtype=np.float64))
    return centroids, assign_codes(w, centroids)


def lloyd_kmeans(
    weights: np.ndarray, k: int, *, seed: int = 0, max_iter: int = 100, tol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's algorithm with k-means++ seeding, in numpy (1-D, so assignment is a
    searchsorted on the midpoints). Returns (centroids (k,) sorted, codes (n,))."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    distinct = np.unique(w)
    if len(distinct) <= k:
        centroids = _pad_centroids(distinct, k, w)
        return centroids, assign_codes(w, centroids)
    rng = np.random.default_rng(seed)
    # k-means++: each next centre drawn with probability proportional to squared distance.
    c = [w[rng.integers(len(w))]]
    d2 = (w - c[0]) ** 2
    for _ in range(1, k):
        total = d2.sum()
        nxt = w[rng.choice(len(w), p=d2 / total)] if total > 0 else w[rng.integers(len(w))]
        c.append(nxt)
        d2 = np.minimum(d2, (w - nxt) ** 2)
    centroids = np.sort(np.asarray(c))
    for _ in range(max_iter):
        codes = assign_codes(w, centroids)
        sums = np.bincount(codes, weights=w, minlength=k)
        counts = np.bincount(codes, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        new = np.sort(new)
        moved = float(np.abs(new - centroids).max())
        centroids = new
        if moved <= tol:
            break
    centroids = _pad_centroids(centroids, k, w)
    return centroids, assign_codes(w, centroids)


def uniform_codebook(weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: k evenly spaced values over [-max|w|, max|w|] (symmetric), nearest code."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    m = float(np.abs(w).max()) if len(w) else 0.0
    m = m if m > 0 else 1e-8
    centroids = np.linspace(-m, m, k) if k > 1 else np.zeros(1)
    return centroids, assign_codes(w, centroids)


def fit_codebook(
    weights: np.ndarray, k: int, method: str = "optimal", *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Quantise a layer's weights to `k` values: (centroids (k,) sorted ascending, codes (n,)
    int64 in [0, k)). `method`: "optimal" (exact DP), "lloyd", or "uniform" (baseline)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if np.asarray(weights).size == 0:
        raise ValueError("no weights to cluster")
    if method == "optimal":
        return optimal_kmeans(weights, k)
    if method == "lloyd":
        return lloyd_kmeans(weights, k, seed=seed)
    if method == "uniform":
        return uniform_codebook(weights, k)
    raise ValueError(f"unknown codebook method {method!r} (optimal, lloyd, uniform)")


def codebook_change(old: np.ndarray, new: np.ndarray) -> float:
    """Relative change between two sorted codebooks: ||new - old|| / ||old||."""
    old = np.asarray(old, dtype=np.float64)
    new = np.asarray(new, dtype=np.float64)
    denom = float(np.linalg.norm(old))
    return float(np.linalg.norm(new - old) / denom) if denom > 0 else float(np.linalg.norm(new))
