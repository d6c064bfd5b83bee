"""`python -m bench.report`: the combined results report from the benchmarks' JSON files.

Reads bench/results/mnist.json (bench_mnist) and bench/results/office10.json (bench_office10),
whichever exist, and writes

- bench/results/report.md: float vs integer-engine accuracy for both data sets, k-means vs
  uniform weight quantisation, mean over the seeds each configuration ran with;
- bench/results/accuracy_vs_bits.png: integer accuracy against weight bits, one panel per
  data set, a line per (quantiser, activation bits), float accuracy dashed;
- bench/results/<dataset>_weights.png: each layer's float weight histogram with the k-means
  codebook's centroids on it;
- bench/results/<dataset>_iterations.png: validation accuracy after k-means and after
  retraining over the SIQ iterations of one job.

Result files hold a list of runs, each a dict with at least `weight_bits`,
`activation_bits`, `float_accuracy`, `quantized_accuracy` (and optionally `seed`,
`weight_quantizer`, `iterations`); optional `layers` (name, hist_edges, hist_counts,
centroids) and `iteration_trace` feed the plots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("mnist", "office10")


def default_data_dir() -> Path:
    """$SIQ_DATA_DIR, else ../shared/data beside the checkout (as `make bench` sets it)."""
    env = os.environ.get("SIQ_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def utc_now() -> str:
    """When a result was measured, as every benchmark's environment block states it."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def run_environment(threads: int) -> dict[str, Any]:
    """Where and when a training benchmark ran, as its JSON records it (SIQ_BENCH_NOTE: a
    line on the conditions, e.g. what else the machine was doing)."""
    import torch

    return {
        "when": utc_now(),
        "threads": threads,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "load_average": list(os.getloadavg()),
        "note": os.environ.get("SIQ_BENCH_NOTE", ""),
    }


def load_results(results_dir: Path) -> dict[str, dict]:
    out = {}
    for name in DATASETS:
        path = results_dir / f"{name}.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


def runs_of(result: dict) -> list[dict]:
    """The quantisation runs of a result file: `runs` (bench_office10) or `main` + `grid`
    (bench_mnist, whose rows name the quantiser `kind`; its grid runs a shorter SIQ, so
    those rows are marked `siq: "short"` and kept apart in the table)."""
    rows: list[dict] = []
    if isinstance(result.get("runs"), list):
        rows = [dict(r) for r in result["runs"]]
    else:
        for key, siq in (("main", "full"), ("grid", "short")):
            for r in result.get(key) or []:
                rows.append({"weight_quantizer": r.get("kind", "kmeans"), "siq": siq, **r})
    return [r for r in rows if "quantized_accuracy" in r and r.get("weight_bits") is not None]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def summarise(runs: list[dict]) -> list[dict]:
    """Mean float / integer accuracy per (weight bits, activation bits, quantiser)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        key = (
            int(r["weight_bits"]),
            int(r["activation_bits"]),
            r.get("weight_quantizer", "kmeans"),
            r.get("siq", "full"),
        )
        groups[key].append(r)
    rows = []
    for (wb, ab, wq, siq), rs in sorted(groups.items()):
        fl = [r["float_accuracy"] for r in rs if r.get("float_accuracy") is not None]
        q = [r["quantized_accuracy"] for r in rs]
        rows.append(
            {
                "weight_bits": wb,
                "activation_bits": ab,
                "weight_quantizer": wq,
                "siq": siq,
                "float_accuracy": _mean(fl) if fl else None,
                "quantized_accuracy": _mean(q),
                "seeds": len(rs),
            }
        )
    return rows


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _pivot(name: str, rows: list[dict], label: str) -> list[str]:
    """Markdown rows: float, k-means and uniform integer accuracy side by side per bits."""
    cells: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        cells[(row["weight_bits"], row["activation_bits"], row["siq"])][row["weight_quantizer"]] = (
            row
        )
    out = []
    for (wb, ab, siq), by_q in sorted(cells.items()):
        km, un = by_q.get("kmeans"), by_q.get("uniform")
        fl = (km or un or {}).get("float_accuracy")
        delta = "–" if km is None or fl is None else f"{100 * (km['quantized_accuracy'] - fl):+.2f}"
        out.append(
            f"| {name} | {wb} | {ab} | {siq} | {_pct(fl)} | "
            f"{_pct(km['quantized_accuracy'] if km else None)} | "
            f"{_pct(un['quantized_accuracy'] if un else None)} | {delta} | {label} |"
        )
    return out


def markdown_table(results: dict[str, dict]) -> str:
    """Per data set: every configuration on one seed (the grid's), k-means and uniform side by
    side against the same float model; then the configurations that ran on several seeds, as
    means over those seeds."""
    lines = [
        "| data set | W bits | A bits | SIQ | float % | integer, k-means % | integer, uniform % "
        "| k-means − float (points) | runs |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for name, result in results.items():
        runs = runs_of(result)
        single = _one_seed(runs)
        seeds = {r.get("seed") for r in single} - {None}
        lines += _pivot(name, summarise(single), f"seed {seeds.pop()}" if len(seeds) == 1 else "1")
        multi = [row for row in summarise(runs) if row["seeds"] > 1]
        for n in sorted({row["seeds"] for row in multi}):
            group = [row for row in multi if row["seeds"] == n]
            lines += _pivot(name, group, f"mean of {n} seeds")
    return "\n".join(lines)


def layer_histograms(model: Any, bundle_path: Path, bins: int = 60) -> list[dict]:
    """For the weight plot: each weighted layer's float weight histogram (from the float
    `model`, a GraphNet, its batch norm folded as SIQ folds it) and the codebook values the
    bundle uses, in real units. Benchmarks call it and store the result as `layers` in
    their JSON."""
    import numpy as np
    from torch import nn

    from server.training.batchnorm import fold_batchnorm
    from shared.bundle import layer_weights, read_bundle_file

    bundle = read_bundle_file(bundle_path)
    manifest = bundle.manifest
    out = []
    for m in fold_batchnorm(model).modules():
        name = getattr(m, "siq_name", None)
        if name is None or not isinstance(m, nn.Conv2d | nn.Linear):
            continue
        counts, edges = np.histogram(m.weight.detach().numpy().ravel(), bins=bins)
        scale = manifest["layers"][name]["weight_scale"]
        layer = next(g for g in manifest["graph"] if g["name"] == name)
        used = np.unique(layer_weights(layer, bundle.tensors))  # codebook values in use
        out.append(
            {
                "name": name,
                "weight_bits": manifest["weight_bits"],
                "hist_edges": edges.tolist(),
                "hist_counts": counts.tolist(),
                "centroids": (used * scale).tolist(),
            }
        )
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _one_seed(runs: list[dict]) -> list[dict]:
    """The runs of the seed with the most configurations (the grid's seed), so a line never
    mixes single-seed points with means over seeds."""
    seeds = Counter(r.get("seed") for r in runs)
    if len(seeds) <= 1:
        return runs
    seed = seeds.most_common(1)[0][0]
    return [r for r in runs if r.get("seed") == seed]


def plot_accuracy_vs_bits(results: dict[str, dict], path: Path) -> bool:
    panels = [(n, summarise(_one_seed(runs_of(r)))) for n, r in results.items() if runs_of(r)]
    if not panels:
        return False
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], panels, strict=True):
        lines: dict[tuple, list[dict]] = defaultdict(list)
        for row in rows:
            lines[(row["weight_quantizer"], row["activation_bits"], row["siq"])].append(row)
        for (wq, ab, siq), rs in sorted(lines.items()):
            if len(rs) < 2:
                continue
            rs.sort(key=lambda r: r["weight_bits"])
            style = "-o" if wq == "kmeans" else "--s"
            ax.plot(
                [r["weight_bits"] for r in rs],
                [100 * r["quantized_accuracy"] for r in rs],
                style,
                label=f"{wq}, A{ab}" + ("" if siq == "full" else f" ({siq} SIQ)"),
            )
        floats = [r["float_accuracy"] for r in rows if r["float_accuracy"] is not None]
        if floats:
            ax.axhline(100 * _mean(floats), color="k", ls=":", lw=1, label="float")
        seeds = {r.get("seed") for r in _one_seed(runs_of(results[name]))} - {None}
        seed = f" (seed {seeds.pop()})" if len(seeds) == 1 else ""
        ax.set_title(f"{name}: integer-engine accuracy{seed}")
        ax.set_xlabel("weight bits")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_weight_histograms(name: str, layers: list[dict[str, Any]], path: Path) -> bool:
    if not layers:
        return False
    plt = _plt()
    cols = min(3, len(layers))
    rows = (len(layers) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat[len(layers) :]:
        ax.axis("off")
    for ax, layer in zip(axes.flat, layers, strict=False):
        edges, counts = layer["hist_edges"], layer["hist_counts"]
        ax.stairs(counts, edges, fill=True, alpha=0.6)
        for c in layer.get("centroids", []):
            ax.axvline(c, color="C3", lw=0.9)
        bits = layer.get("weight_bits")
        ax.set_title(f"{layer['name']}" + (f" ({bits}-bit codebook)" if bits else ""), fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{name}: float weights and k-means centroids (red)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_iterations(name: str, trace: list[dict], path: Path, title: str = "") -> bool:
    if not trace:
        return False
    plt = _plt()
    it = [t["iteration"] for t in trace]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(it, [100 * t["accuracy_after_kmeans"] for t in trace], "-o", label="after k-means")
    ax.plot(it, [100 * t["accuracy_after_retrain"] for t in trace], "-s", label="after retrain")
    ax.set_xlabel("SIQ iteration")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_xticks(it)
    ax.set_title(f"{name}: SIQ iterations {title}".strip(), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _trace_of(result: dict) -> tuple[list[dict], str]:
    """The iteration trace to plot: an explicit one, else the first k-means run that has one."""
    trace = result.get("iteration_trace")
    if isinstance(trace, dict):
        return trace.get("iterations", []), trace.get("label", "")
    for r in runs_of(result):
        if r.get("iterations") and r.get("weight_quantizer", "kmeans") == "kmeans":
            return r["iterations"], f"(W{r['weight_bits']}A{r['activation_bits']})"
    return [], ""


def write_report(results_dir: Path = RESULTS) -> list[Path]:
    results = load_results(results_dir)
    if not results:
        raise SystemExit(f"no results in {results_dir}: run bench_mnist / bench_office10 first")
    written = []
    md = [
        "# SIQ results",
        "",
        "Generated by `python -m bench.report` from "
        + ", ".join(f"`{n}.json`" for n in results)
        + ". Accuracies are on each data set's test set; `integer` is the bundle run by "
        "`shared.engine` (what the client delivers); means over the seeds listed.",
        "",
        markdown_table(results),
        "",
    ]
    if plot_accuracy_vs_bits(results, results_dir / "accuracy_vs_bits.png"):
        written.append(results_dir / "accuracy_vs_bits.png")
        md += ["![accuracy vs bits](accuracy_vs_bits.png)", ""]
    for name, result in results.items():
        hist = results_dir / f"{name}_weights.png"
        if plot_weight_histograms(name, result.get("layers") or [], hist):
            written.append(hist)
            md += [f"![{name} weights]({hist.name})", ""]
        trace, label = _trace_of(result)
        its = results_dir / f"{name}_iterations.png"
        if plot_iterations(name, trace, its, label):
            written.append(its)
            md += [f"![{name} iterations]({its.name})", ""]
    (results_dir / "report.md").write_text("\n".join(md))
    return [results_dir / "report.md", *written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for path in write_report(args.results):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
