"""bench_scale's bookkeeping on made-up sweeps: merging holds, medians, ratios, which variants'
integer accuracies match Ray's, and the rendered tables (the measurement itself is the bench)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from bench.bench_scale import merge, summarize, sweep_body
from bench.scale_report import write_results


def _sweep(variant: str, wall: float, siq: float, acc: dict | None = None) -> dict:
    acc = acc or {}
    runs = [
        {
            "weight_bits": w,
            "activation_bits": a,
            "role": "lead" if (w, a) == (2, 4) else "child",
            "quantized_accuracy": acc.get((w, a), 0.5 + 0.01 * w),
            "bundle_bytes": 1000 * w,
            "job_seconds": siq + 1,
            "pipeline_seconds": siq,
            "float_seconds": 3.0,
            "siq_seconds": siq,
            "overhead_seconds": 1.0,
        }
        for w in (2, 3, 4)
        for a in (4, 8)
    ]
    return {"variant": variant, "wall_seconds": wall, "runs": runs}


def _raw(walls: dict[str, float], load: float, acc: dict | None = None) -> dict:
    return {
        "sweep": sweep_body(2000, 500),
        "rounds": 1,
        "machine": {
            "platform": "test",
            "cpus": 2,
            "shared": True,
            "holds": [
                {
                    "finished": "t",
                    "rounds": 1,
                    "load_average_before": [load] * 3,
                    "load_average_after": [load] * 3,
                }  # fmt: skip
            ],
        },
        "ray_cluster_start_seconds": 9.0,
        "ray_task_round_trip": {"noop_ms": 2.0, "bytes_80k_ms": 2.5},
        "sweeps": {
            v: [_sweep(v, w, w / 10, acc if v == "local" else None)] for v, w in walls.items()
        },
    }


def test_merged_holds_give_medians_ratios_and_rounds(tmp_path: Path) -> None:
    first = _raw({"local": 200.0, "ray": 40.0, "local-1t": 100.0}, 5.0, {(2, 4): 0.9})
    second = _raw({"local": 100.0, "ray": 80.0, "local-1t": 120.0}, 15.0)
    result = summarize(merge(first, second))
    assert result["rounds"] == 2 and len(result["machine"]["holds"]) == 2
    assert result["summary"]["ray"]["wall_seconds"] == 60.0  # median of 40 and 80
    assert result["ratio_vs_ray"] == {"local": 2.5, "ray": 1.0, "local-1t": 1.83}
    # only the first hold's `local` sweep differs from Ray, in one cell
    assert not result["same_integer_accuracies"]
    assert result["accuracies_unlike_ray"] == {
        "local": [[2, 4, 0.9, 0.52]],
        "ray": [],
        "local-1t": [],
    }
    write_results(result, tmp_path)
    md = (tmp_path / "scale.md").read_text()
    assert "2 round(s) in 2 hold(s)" in md and "[15.0, 15.0, 15.0] before" in md
    assert "| 1 | 200.0 s | 40.0 s | 100.0 s | 5.00x | 2.50x |" in md
    assert "| 2 | 100.0 s | 80.0 s | 120.0 s | 1.25x | 1.50x |" in md
    assert "W2A4 0.9000 vs 0.5200" in md


def test_merge_refuses_another_sweep_or_other_variants() -> None:
    first = _raw({"local": 200.0, "ray": 40.0}, 5.0)
    other = copy.deepcopy(first)
    other["sweep"]["train_limit"] = 4000
    with pytest.raises(SystemExit, match="different sweep"):
        merge(first, other)
    with pytest.raises(SystemExit, match="measured"):
        merge(first, _raw({"local-1t": 100.0, "ray": 40.0}, 5.0))
