"""The report of bench/bench_client.py: bench/results/<name>.md from its result dict (the
engine and its peers, the ratios, the spread of rounds, the HTTP row and the per-node
profiles), keeping bench_http's own section of that file."""

from __future__ import annotations

import json
from pathlib import Path

from bench.sections import kept_sections

__all__ = ["PEERS_TITLE", "write_report"]

PEERS_TITLE = {
    "engine": "shared.engine (load_engine)",
    "numpy_engine": "IntegerNetwork (numpy)",
    "ort_float32": "ONNX Runtime float32",
    "ort_int8_qdq": "ONNX Runtime int8 static (QDQ)",
    "torch_ao_int8": "torch.ao int8 (x86)",
    "torch_float32": "PyTorch float32 eager",
}


def write_report(result: dict, out: Path, name: str = "client") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = result["engine"]["rows"]
    lines = [
        "# Client benchmark",
        "",
        f"Bundle: {result['bundle']['source']} ({result['bundle']['bytes']} bytes, "
        f"{result['bundle']['weight_bits']}-bit weights, "
        f"{result['bundle']['activation_bits']}-bit activations). Machine: {result['machine']}.",
        f"{result['note']}",
        "",
        f"Every runtime below runs the same network on the same images, timed in interleaved "
        f"rounds (each function in turn, {next(iter(rows.values()))['rounds']} rounds of 0.4 s "
        "per cell): images/s is from the median over rounds of each round's median batch "
        "time. Each returns labels and softmax probabilities. `threads` is each runtime's own "
        "intra-op thread count (the numpy engine: a batch split across threads).",
        "",
    ]
    cells = [(t, b) for t in (1, 2) for b in (1, 64)]
    lines += [
        "| images/s | "
        + " | ".join(f"{t} thread{'s' * (t > 1)}, batch {b}" for t, b in cells)
        + " |"
    ]
    lines += ["|---|" + "---|" * len(cells)]
    peers = list(dict.fromkeys(k.split("_b")[0] for k in rows))
    for peer in peers:
        lines.append(
            f"| {PEERS_TITLE.get(peer, peer)} | "
            + " | ".join(f"{rows[f'{peer}_b{b}_t{t}']['images_per_s']:,.0f}" for t, b in cells)
            + " |"
        )
    for peer in ("ort_int8_qdq", "ort_float32", "torch_ao_int8", "torch_float32", "numpy_engine"):
        ratios = [
            rows[f"engine_b{b}_t{t}"]["images_per_s"] / rows[f"{peer}_b{b}_t{t}"]["images_per_s"]
            for t, b in cells
        ]
        lines.append(
            f"| **engine / {PEERS_TITLE[peer]}** | "
            + " | ".join(f"**{r:.2f}x**" for r in ratios)
            + " |"
        )
    lines += ["", "Spread of the round medians (ms per batch, min-max):", ""]
    lines += ["| runtime | " + " | ".join(f"t{t} b{b}" for t, b in cells) + " |"]
    lines += ["|---|" + "---|" * len(cells)]
    for peer in ("engine", "ort_int8_qdq"):
        spread = [rows[f"{peer}_b{b}_t{t}"] for t, b in cells]
        lines.append(
            f"| {PEERS_TITLE[peer]} | "
            + " | ".join(f"{r['round_ms_min']:.3f}-{r['round_ms_max']:.3f}" for r in spread)
            + " |"
        )
    agreement = result["engine"]["label_agreement_with_engine"]
    lines += [
        "",
        f"The engine ran on `{result['engine']['engine_backend']}`. Labels agreeing with the "
        "engine's on these images: "
        + ", ".join(f"{PEERS_TITLE[k]} {v:.1%}" for k, v in agreement.items() if k != "engine")
        + " (the float and int8 peers round differently from the integer contract).",
        "",
    ]
    h = result["http"]
    lines += [
        f"HTTP: a real `python -m client` process; the load generator ({h['load_generator']}) "
        "runs on the same two cores.",
        "",
    ]
    lines += [
        "| HTTP /recognize (1 image per request) | requests | concurrency | req/s | p50 ms | p99 ms "
        "| errors |",
        "|---|---|---|---|---|---|---|",
        f"| `python -m client`, loopback | {h['requests']} | {h['concurrency']} | "
        f"{h['requests_per_s']:.0f} | {h['p50_ms']:.1f} | {h['p99_ms']:.1f} | {h['errors']} |",
    ]
    lines += [
        "",
        "## Where the engine's time goes (one thread, microseconds per batch)",
        "",
        "The ONNX Runtime engine: its session profiler's median per node, as ONNX Runtime "
        "rewrote the graph (NCHWc reorders around its float convolutions, NHWC transposes around "
        "its QLinearConv ones), profiler "
        "overhead included (`bench_client.profile_onnx_engine`).",
        "",
    ]
    lines += _profile_table(result["engine"]["profile_onnx"], "node")
    lines += [
        "",
        "The numpy engine (`IntegerNetwork`, the reference's fast twin and the fallback without "
        "onnxruntime): each step of its prepared pass, timed alone (`bench_client.profile_engine`).",
        "",
    ]
    lines += _profile_table(result["engine"]["profile"], "step")
    path = out / f"{name}.md"  # bench_http's section of it is kept
    path.write_text("\n".join(lines) + "\n" + kept_sections(path))


def _profile_table(profile: dict[str, list], what: str) -> list[str]:
    lines = [f"| {what} | " + " | ".join(f"batch {k[1:]}" for k in profile) + " |"]
    lines += ["|---|" + "---|" * len(profile)]
    tables = [dict(steps) for steps in profile.values()]
    for label in tables[-1]:
        lines.append(f"| {label} | " + " | ".join(f"{t.get(label, 0):.1f}" for t in tables) + " |")
    lines.append("| **total** | " + " | ".join(f"{sum(t.values()):.1f}" for t in tables) + " |")
    return lines
