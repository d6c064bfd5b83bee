"""How fast the training server answers while a job trains.

Starts the real server (`python -m server`) on a free loopback port with a temporary state
directory, submits a real quantize job that trains for a while (mnist subset when
SIQ_DATA_DIR has it, else digits with more epochs), waits until it is training, then times
`GET /healthz` and `GET /quantize-jobs/{id}` (N sequential keep-alive requests each) and
checks the job was still running for the whole measurement. Target: median < 50 ms.

    python -m bench.bench_api_latency [--requests 200] [--dataset mnist|digits]

Writes bench/results/api_latency.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from scripts.processes import start_service

__all__ = ["main", "measure"]

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MEDIAN_MS = 50.0


def _job_body(dataset: str) -> dict[str, Any]:
    if dataset == "mnist":
        return {
            "dataset": "mnist",
            "weight_bits": 4,
            "activation_bits": 4,
            "epochs": 3,
            "max_iterations": 2,
            "train_limit": 6000,
            "test_limit": 1000,
        }
    return {
        "dataset": "digits",
        "weight_bits": 4,
        "activation_bits": 4,
        "epochs": 40,
        "max_iterations": 2,
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(http: httpx.Client, path: str, count: int) -> dict[str, float]:
    """`count` sequential GETs of `path`; latency figures in milliseconds."""
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        response = http.get(path)
        latencies.append((time.perf_counter() - start) * 1000.0)
        response.raise_for_status()
    return {
        "requests": count,
        "median_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(_percentile(latencies, 0.99), 3),
        "mean_ms": round(statistics.fmean(latencies), 3),
        "max_ms": round(max(latencies), 3),
    }


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def run(requests: int, dataset: str | None) -> dict[str, Any]:
    data_dir = os.environ.get("SIQ_DATA_DIR")
    if dataset is None:
        has_mnist = data_dir and (Path(data_dir) / "mnist/train-images-idx3-ubyte.gz").is_file()
        dataset = "mnist" if has_mnist else "digits"
    body = _job_body(dataset)
    with tempfile.TemporaryDirectory(prefix="siq-bench-api-") as state:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIQ_")}
        env.update(SIQ_STATE_DIR=state, PYTHONUNBUFFERED="1")
        if data_dir:
            env["SIQ_DATA_DIR"] = data_dir
        log_path = Path(state) / "server.log"
        args = ["--log-level", "warning"]
        with start_service("server", env=env, log_path=log_path, args=args) as server:
            try:
                server.wait_ready("/healthz", timeout=60)
                with httpx.Client(base_url=server.url, timeout=10) as http:
                    return _bench(http, body, requests)
            except Exception:
                print(server.log_tail(3000), file=sys.stderr)
                raise


def _bench(http: httpx.Client, body: dict[str, Any], requests: int) -> dict[str, Any]:
    job_id = http.post("/quantize-jobs", json=body).raise_for_status().json()["id"]
    path = f"/quantize-jobs/{job_id}"

    def training() -> dict | None:
        job = http.get(path).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            raise RuntimeError(f"job ended before the measurement: {job}")
        stage = (job.get("progress") or {}).get("stage")
        return (
            job
            if job["status"] == "running" and stage not in (None, "starting", "loading")
            else None
        )

    before = _wait(training, 300, "the job to start training")
    health = measure(http, "/healthz", requests)
    job_status = measure(http, path, requests)
    after = http.get(path).json()
    http.post(f"{path}/cancel")
    still_running = after["status"] == "running"
    return {
        "benchmark": "api_latency",
        "command": f"python -m bench.bench_api_latency --requests {requests}"
        + f" --dataset {body['dataset']}",
        "job": body,
        "stage_before": before["progress"],
        "stage_after": after.get("progress"),
        "job_running_throughout": still_running,
        "healthz": health,
        "job_status": job_status,
        "target_median_ms": TARGET_MEDIAN_MS,
        "meets_target": still_running
        and max(health["median_ms"], job_status["median_ms"]) < TARGET_MEDIAN_MS,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_results(result: dict[str, Any], out_dir: Path = RESULTS) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "api_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        f"| `GET {name}` | {m['requests']} | {m['median_ms']:.2f} | {m['p99_ms']:.2f} | "
        f"{m['max_ms']:.2f} |"
        for name, m in (
            ("/healthz", result["healthz"]),
            ("/quantize-jobs/{id}", result["job_status"]),
        )
    ]
    machine = result["machine"]
    md = [
        "# API latency while a job trains",
        "",
        f"Command: `{result['command']}` ({result['when']})",
        "",
        f"Job: `{json.dumps(result['job'])}`; stage when measuring began: "
        f"`{result['stage_before'].get('stage')}`, job still running at the end: "
        f"{'yes' if result['job_running_throughout'] else 'NO'}.",
        "",
        "| request | n | median ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Target: median < {result['target_median_ms']:.0f} ms — "
        f"{'met' if result['meets_target'] else 'NOT met'}.",
        "",
        f"Machine: {machine['cpus']} CPUs, 1-min load {machine['loadavg_1m']} at the end, "
        f"Python {machine['python']}. Sequential keep-alive requests over loopback (httpx), "
        "the server in one uvicorn process, the job in a separate worker process.",
        "",
    ]
    if machine["loadavg_1m"] > (machine["cpus"] or 1):
        md[-1:] = [
            "",
            "The machine was busy (load above its CPU count), so these figures are "
            "pessimistic; rerun on a quiet machine for the record.",
            "",
        ]
    (out_dir / "api_latency.md").write_text("\n".join(md))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_api_latency")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--dataset", choices=["mnist", "digits"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(max(1, args.requests), args.dataset)
    write_results(result, args.out)
    print(json.dumps({k: result[k] for k in ("healthz", "job_status", "meets_target")}))
    return 0 if result["job_running_throughout"] else 1


if __name__ == "__main__":
    sys.exit(main())
