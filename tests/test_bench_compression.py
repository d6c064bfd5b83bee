"""bench/bench_compression.py's measurements and bench/compression_report.py's report on a
small pruned bundle (no training): the layout and coder comparisons add up, the report
renders every section."""

from __future__ import annotations

from pathlib import Path

from bench.bench_compression import coder_comparison, layout_comparison
from bench.compression_report import plot, render
from shared.bundle import decode_bundle
from tests.shared.test_bundle_v2 import _pruned_network, _v2


def _fake_results(bundle) -> dict:
    alloc = {"fc1": {"weights": 8192, "bits": 2, "sparsity": 0.95, "nonzero": 410,
                     "bytes": 700, "layout": "sparse"}}  # fmt: skip
    point = {"kind": "budget", "budget": 22482, "bundle_bytes": 21000, "ratio": 53.5,
             "quantized_accuracy": 0.9927, "v1_bytes": 150000, "simulated_accuracy": 0.9926,
             "iterations": [{"iteration": t, "sparsity": 0.9, "accuracy_after_kmeans": 0.98,
                             "accuracy_after_retrain": 0.99, "retrain_lr": 5e-4}
                            for t in (1, 2)],
             "seconds": 250.0, "weight_bits": 4, "allocation": alloc}  # fmt: skip
    base = dict(point, kind="uniform", bundle_bytes=70000, ratio=16.0, weight_bits=2)
    return {
        "float_bytes": 1124136, "float_accuracy": 0.9936, "float_seconds": 30.0,
        "test_images": 10000, "points": [point, base], "seconds": 900.0,
        "layouts": layout_comparison(bundle), "coder": coder_comparison(bundle),
        "decode_ms": {"v2": 5.0, "v1_same_network": 3.0},
        "environment": {"when": "now", "load_average": [1.0, 2.0, 3.0]},
    }  # fmt: skip


def test_comparisons_and_report(tmp_path: Path) -> None:
    bundle = decode_bundle(_v2(*_pruned_network(density=0.05)))
    layouts = layout_comparison(bundle)
    assert {row["layer"] for row in layouts} == {"conv2", "fc1"}
    for row in layouts:
        assert (
            row["relative_index_bytes"] > 0 and 0 < row["bitmap_bytes"] <= row["bitmap_raw_bytes"]
        )
    coder = coder_comparison(bundle)
    assert coder["entropy_bytes"] <= coder["huffman_bytes"]
    res = _fake_results(bundle)
    text = render(res, "python -m bench.bench_compression")
    for heading in ("The target", "Per-layer allocation", "Sparse layout", "Entropy coder"):
        assert heading in text
    assert "| integer-engine accuracy | 99.27 % | ≥ 99.26 % | yes |" in text
    assert "| 2 | 90.0 % | 98.00 | 99.00 | 0.0005 |" in text  # where the accuracy goes
    res["variants"] = {
        "long": dict(res["points"][0], extra={"max_iterations": 6}, quantized_accuracy=0.99)
    }
    assert '| long | `{"max_iterations": 6}` | 99.00 | 99.00 | 21,000 | fc1 2b/95% |' in render(
        res, "x"
    )
    res["job_timing"] = {"command": "python -m server quantize ...", "seconds": 400.0,
                         "wall_seconds": 402.0, "float_seconds": 100.0, "siq_seconds": 250.0,
                         "when": "now", "quantized_accuracy": 0.99, "bundle_bytes": 21000,
                         "load_average_before": [2.0], "load_average_after": [3.0]}  # fmt: skip
    assert "| 400 s (the CLI job, below) | ≤ 300 s | no |" in render(res, "x")
    res["job_timing"] = {"command": "python -m server quantize ...", "timed_out": True,
                         "wall_seconds": 840.0, "when": "now", "last_progress": ["[ 839s] x"],
                         "load_average_before": [2.0], "load_average_after": [3.0]}  # fmt: skip
    assert "| >840 s (the CLI job, below) | ≤ 300 s | no |" in render(res, "x")
    plot(res, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
