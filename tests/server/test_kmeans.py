"""k-means codebooks: the exact DP is never worse than Lloyd, codes are valid, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from server.training.codebook import (
    assign_codes,
    codebook_change,
    fit_codebook,
    uniform_codebook,
    within_cluster_sse,
)


@pytest.mark.parametrize("k", [2, 4, 8, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_optimal_sse_not_worse_than_lloyd(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # a bimodal mixture, like trained weights, where Lloyd can get stuck
    w = np.concatenate([rng.normal(-0.1, 0.03, 700), rng.laplace(0.05, 0.02, 1300)])
    c_opt, codes_opt = fit_codebook(w, k, "optimal")
    c_ll, codes_ll = fit_codebook(w, k, "lloyd", seed=seed)
    sse_opt = within_cluster_sse(w, c_opt, codes_opt)
    sse_ll = within_cluster_sse(w, c_ll, codes_ll)
    assert sse_opt <= sse_ll * (1 + 1e-9)
    assert sse_opt < within_cluster_sse(w, *uniform_codebook(w, k))


@pytest.mark.parametrize("method", ["optimal", "lloyd", "uniform"])
def test_codes_in_range_and_sorted_codebook(method: str) -> None:
    w = np.random.default_rng(3).standard_normal(5000)
    c, codes = fit_codebook(w, 8, method)
    assert c.shape == (8,)
    assert np.all(np.diff(c) > 0)
    assert codes.shape == w.shape and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 8
    # every weight sits on its nearest centroid
    dist = np.abs(w[:, None] - c[None, :])
    np.testing.assert_allclose(dist[np.arange(len(w)), codes], dist.min(1))


@pytest.mark.parametrize("method", ["optimal", "lloyd"])
def test_k_at_least_distinct_values_is_lossless(method: str) -> None:
    w = np.array([0.5, -0.25, 0.5, 0.0, -0.25, 0.5])
    c, codes = fit_codebook(w, 8, method)
    assert c.shape == (8,) and len(np.unique(c)) == 8
    np.testing.assert_array_equal(c[codes], w)
    assert within_cluster_sse(w, c, codes) == 0.0


def test_uniform_codebook_is_symmetric_grid() -> None:
    w = np.array([-0.3, 0.1, 0.2, 0.6])
    c, _ = uniform_codebook(w, 4)
    np.testing.assert_allclose(c, [-0.6, -0.2, 0.2, 0.6])


def test_assign_and_change() -> None:
    c = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(
        assign_codes(np.array([-5, -0.4, 0.9, 1.1, 9]), c), [0, 1, 1, 2, 2]
    )
    assert codebook_change(c, c) == 0.0
    assert codebook_change(c, c * 1.1) == pytest.approx(0.1)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        fit_codebook(np.ones(3), 0)
    with pytest.raises(ValueError):
        fit_codebook(np.ones(3), 2, "median")
