"""Scale-out: one 6-config MNIST sweep (weight bits 2, 3, 4 x activation bits 4, 8; one seed)
run over HTTP by the real server app: by the local executor with one worker slot (the runs
one after another), with torch's default threads (`local`) and with one thread per worker
(`local-1t`, what a 1-CPU Ray task gets), and on a local Ray cluster (SIQ_EXECUTOR=ray,
2 CPUs, 1 per task); the variants interleaved, their order rotating each round. Measures the sweep's wall time (POST to done), the ratio,
each job's executor overhead (job wall time minus the pipeline's own seconds), a bare Ray
task's round trip, and checks both executors gave the same integer accuracies. The growth
with N nodes is modelled from the measured float and SIQ times (see the .md).

    python -m bench.bench_scale [--variants local,ray[,local-1t]] [--rounds 2] [--train-limit 2000]
    python -m bench.bench_scale --variants local,ray,local-1t --rounds 1 --merge bench/results/scale.json

`--merge` adds this run's rounds to those of an earlier scale.json (same sweep; the order
keeps rotating), so a long measurement can be taken in several holds of the quiet lock.
Writes bench/results/scale.json and scale.md. Needs MNIST under SIQ_DATA_DIR and Ray
(the `.[ray]` extra).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from bench.report import default_data_dir
from bench.scale_report import CPUS, RESULTS, lock_holds, write_results

__all__ = ["main", "sweep_body", "run_sweep", "ray_task_overhead", "model_nodes", "summarize"]

REPO = Path(__file__).resolve().parents[1]


def sweep_body(train_limit: int, test_limit: int) -> dict[str, Any]:
    return {
        "dataset": "mnist",
        "weight_bits": [2, 3, 4],
        "activation_bits": [4, 8],
        "seeds": [0],
        "epochs": 1,
        "retrain_epochs": 0.5,
        "max_iterations": 1,
        "train_limit": train_limit,
        "test_limit": test_limit,
    }


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def run_sweep(variant: str, body: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """One sweep through a fresh server app and state directory; wall time and per-job
    timings. `variant` is 'ray' (the process must already be connected to a cluster),
    'local' (worker processes with torch's default threads) or 'local-1t' (one thread each,
    as Ray gives a 1-CPU task: the spawned workers' torch reads OMP_NUM_THREADS)."""
    from fastapi.testclient import TestClient

    from server.service.app import create_app
    from server.service.settings import ServerSettings

    executor: Literal["local", "ray"] = "ray" if variant == "ray" else "local"
    saved = os.environ.pop("OMP_NUM_THREADS", None)
    if variant == "local-1t":
        os.environ["OMP_NUM_THREADS"] = "1"
    try:
        with tempfile.TemporaryDirectory(prefix=f"siq-scale-{variant}-") as tmp:
            settings = ServerSettings(  # type: ignore[call-arg]
                _env_file=None,
                state_dir=Path(tmp),
                data_dir=data_dir,
                executor=executor,
                ray_address="auto",
                max_concurrent_jobs=1,
                poll_interval_s=0.1,
                api_token=None,
                bundle_hmac_key=None,
            )
            with TestClient(create_app(settings)) as client:
                started = time.perf_counter()
                resp = client.post("/quantize-sweeps", json=body)
                resp.raise_for_status()
                sweep_id = resp.json()["id"]
                while True:
                    sweep = client.get(f"/quantize-sweeps/{sweep_id}").json()
                    if sweep["status"] != "running":
                        break
                    time.sleep(0.2)
                wall = time.perf_counter() - started
                jobs = [client.get(f"/quantize-jobs/{r['job_id']}").json() for r in sweep["runs"]]
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)
        if saved is not None:
            os.environ["OMP_NUM_THREADS"] = saved
    if sweep["status"] != "succeeded":
        raise RuntimeError(f"{variant} sweep ended {sweep['status']}: {sweep['runs']}")
    runs = []
    for run, job in zip(sweep["runs"], jobs, strict=True):
        result = job["result"]
        job_wall = _seconds(job["started"], job["finished"])
        runs.append(
            {
                "weight_bits": run["weight_bits"],
                "activation_bits": run["activation_bits"],
                "role": run["role"],
                "quantized_accuracy": result["quantized_accuracy"],
                "bundle_bytes": result["bundle_bytes"],
                "job_seconds": round(job_wall, 3),
                "pipeline_seconds": round(result["seconds"], 3),
                "float_seconds": round(result["float_seconds"], 3),
                "siq_seconds": round(result["siq_seconds"], 3),
                "overhead_seconds": round(job_wall - result["seconds"], 3),
            }
        )
    return {"variant": variant, "wall_seconds": round(wall, 2), "runs": runs}


def ray_task_overhead(rounds: int = 30) -> dict[str, float]:
    """Round trip of a no-op 1-CPU task, and of one returning a bundle-sized 80 kB."""
    import ray

    @ray.remote(num_cpus=1)
    def noop(size: int) -> bytes:
        return b"\0" * size

    out = {}
    for label, size in (("noop_ms", 0), ("bytes_80k_ms", 80_000)):
        ray.get(noop.remote(size))  # warm a worker
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            ray.get(noop.remote(size))
            times.append((time.perf_counter() - t) * 1000)
        out[label] = round(statistics.median(times), 2)
    return out


def model_nodes(float_s: float, siq_s: float, overhead_s: float, runs: int) -> list[dict]:
    """Sweep time on N nodes of CPUS cores: the float model first (serial: one per seed),
    then the SIQ runs in waves of N * CPUS tasks."""
    rows = []
    for nodes in (1, 2, 3, 6):
        slots = nodes * CPUS
        waves = math.ceil(runs / slots)
        rows.append(
            {
                "nodes": nodes,
                "slots": slots,
                "waves": waves,
                "seconds": round(float_s + waves * (siq_s + overhead_s), 1),
            }
        )
    return rows


def _median(runs: list[dict], key: str, role: str | None = None) -> float:
    values = [r[key] for r in runs if role is None or r["role"] == role]
    return round(statistics.median(values), 3)


def measure(
    variants: list[str], rounds: int, train_limit: int, test_limit: int, first_round: int = 0
) -> dict:
    """`rounds` rounds of every variant; `first_round` continues an earlier run's rotation."""
    import ray

    data_dir = default_data_dir()
    if not (data_dir / "mnist").is_dir():
        raise SystemExit(f"bench_scale needs MNIST under {data_dir}/mnist")
    body = sweep_body(train_limit, test_limit)
    load_before = os.getloadavg()
    sweeps: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="siq-ray-") as ray_tmp:
        started = time.perf_counter()
        ray.init(
            num_cpus=CPUS,
            include_dashboard=False,
            namespace="siq",
            log_to_driver=False,
            object_store_memory=256 * 1024**2,
            _temp_dir=ray_tmp,
        )
        cluster_start = time.perf_counter() - started
        try:
            task_overhead = ray_task_overhead()
            for r in range(first_round, first_round + rounds):
                order = variants[r % len(variants) :] + variants[: r % len(variants)]
                for variant in order:
                    print(f"[bench_scale] round {r + 1}: {variant} sweep", flush=True)
                    sweeps[variant].append(run_sweep(variant, body, data_dir))
        finally:
            ray.shutdown()
    return summarize(
        {
            "sweep": body,
            "rounds": rounds,
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "shared": True,
                "holds": [
                    {
                        "finished": datetime.now().isoformat(timespec="seconds"),
                        "rounds": rounds,
                        "load_average_before": [round(x, 1) for x in load_before],
                        "load_average_after": [round(x, 1) for x in os.getloadavg()],
                    }
                ],
            },
            "ray_cluster_start_seconds": round(cluster_start, 1),
            "ray_task_round_trip": task_overhead,
            "sweeps": sweeps,
        }
    )


def merge(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """The raw rounds of two runs of the same sweep, as one run (summarize it after)."""
    if earlier["sweep"] != later["sweep"]:
        raise SystemExit("--merge: the earlier scale.json measured a different sweep")
    if set(earlier["sweeps"]) != set(later["sweeps"]):
        raise SystemExit(
            f"--merge: the earlier run measured {sorted(earlier['sweeps'])}, "
            f"this one {sorted(later['sweeps'])}"
        )
    machine = dict(later["machine"], holds=lock_holds(earlier) + lock_holds(later))
    return {
        **later,
        "rounds": earlier["rounds"] + later["rounds"],
        "machine": machine,
        "sweeps": {v: earlier["sweeps"][v] + later["sweeps"][v] for v in later["sweeps"]},
    }


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """The medians, ratios, accuracy check and N-node model of a run's raw sweeps."""
    sweeps = raw["sweeps"]

    def accuracies(s: dict) -> list:
        return sorted(
            (r["weight_bits"], r["activation_bits"], r["quantized_accuracy"]) for r in s["runs"]
        )

    first = next(iter(sweeps.values()))[0]
    same = all(accuracies(s) == accuracies(first) for v in sweeps.values() for s in v)
    ray_first = accuracies(sweeps["ray"][0])
    # cells (W, A, this variant's accuracy, Ray's) where a sweep differs from Ray's first
    differ = {
        v: sorted(
            {
                (w, a, acc, ray_acc)
                for s in done
                for (w, a, acc), (_, _, ray_acc) in zip(accuracies(s), ray_first, strict=True)
                if acc != ray_acc
            }
        )
        for v, done in sweeps.items()
    }
    summary = {}
    for variant, done in sweeps.items():
        runs = [run for s in done for run in s["runs"]]
        summary[variant] = {
            "wall_seconds": statistics.median(s["wall_seconds"] for s in done),
            "overhead_per_job_seconds": _median(runs, "overhead_seconds"),
            "median_siq_seconds": _median(runs, "siq_seconds"),
            "lead_float_seconds": _median(runs, "float_seconds", "lead"),
        }
    ray_s = summary["ray"]
    return {
        **{k: raw[k] for k in RAW_KEYS},
        "summary": summary,
        "ratio_vs_ray": {
            v: round(s["wall_seconds"] / ray_s["wall_seconds"], 2) for v, s in summary.items()
        },
        "same_integer_accuracies": same,
        "accuracies_unlike_ray": {v: [list(c) for c in cells] for v, cells in differ.items()},
        "nodes_model": model_nodes(
            ray_s["lead_float_seconds"],
            ray_s["median_siq_seconds"],
            ray_s["overhead_per_job_seconds"],
            len(first["runs"]),
        ),
    }


RAW_KEYS = (
    "sweep",
    "rounds",
    "machine",
    "ray_cluster_start_seconds",
    "ray_task_round_trip",
    "sweeps",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_scale", description=__doc__)
    parser.add_argument("--variants", default="local,ray")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=2_000)
    parser.add_argument("--test-limit", type=int, default=500)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--render", type=Path, help="only re-render the tables from a scale.json's raw sweeps"
    )
    parser.add_argument(
        "--merge", type=Path, help="add this run's rounds to an earlier scale.json's (same sweep)"
    )
    parser.add_argument(
        "--note",
        help="the machine's conditions while measuring, for the report (default: "
        "the shared machine of 2026-12-02's runs)",
    )
    args = parser.parse_args(argv)
    if args.render:
        write_results(summarize(json.loads(args.render.read_text())), args.out)
        return 0
    variants = args.variants.split(",")
    if "ray" not in variants:
        parser.error("--variants must include ray (the ratios are to it)")
    earlier = json.loads(args.merge.read_text()) if args.merge else None
    first_round = earlier["rounds"] if earlier else 0
    result = measure(variants, args.rounds, args.train_limit, args.test_limit, first_round)
    if earlier:
        result = summarize(merge(earlier, result))
    if args.note:
        result["conditions"] = args.note
    write_results(result, args.out)
    print(json.dumps({"ratio_vs_ray": result["ratio_vs_ray"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
