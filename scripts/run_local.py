"""`make run`: the whole system on this machine, without Docker.

Starts the training server and one recognition client on localhost (state and logs under
./var/), trains a first bundle when the server has none for the data set (MNIST when it is
under SIQ_DATA_DIR, else scikit-learn's bundled `digits`), prints the job's progress, waits
until the client serves the bundle, recognises a sample digit and prints curl commands to
try. Ctrl-C stops both services (terminate, wait, kill after a timeout).

    python -m scripts.run_local [--dataset mnist] [--quick] [--once] [--server-port 8000] ...
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

from scripts.processes import ServiceError, ServiceProcess, start_service

__all__ = [
    "main",
    "choose_dataset",
    "job_request",
    "describe_progress",
    "ProgressReporter",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
FALLBACK_DATASET = "digits"  # bundled with scikit-learn: works offline, anywhere


class RunError(RuntimeError):
    """Something the user has to fix; printed without a traceback."""


def choose_dataset(requested: str | None, available: list[str]) -> str:
    """The requested data set, else MNIST when the server sees it, else `digits`."""
    if requested:
        if requested not in available:
            raise RunError(f"data set {requested!r} not found; the server has {available}")
        return requested
    if "mnist" in available:
        return "mnist"
    data_dir = os.environ.get("SIQ_DATA_DIR", "(unset)")
    print(
        f"! MNIST not found under SIQ_DATA_DIR={data_dir} (expected mnist/*-idx?-ubyte.gz).\n"
        f"! Falling back to the `{FALLBACK_DATASET}` data set bundled with scikit-learn.",
        flush=True,
    )
    return FALLBACK_DATASET


def job_request(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": dataset,
        "weight_bits": args.weight_bits,
        "activation_bits": args.activation_bits,
    }
    if args.quick:
        body.update(epochs=1, retrain_epochs=1.0, max_iterations=2, train_limit=10000)
    for knob in ("epochs", "max_iterations", "train_limit"):
        value = getattr(args, knob)
        if value is not None:
            body[knob] = value
    return body


def describe_progress(job: dict[str, Any]) -> str:
    """One line for the terminal: stage, fraction and the latest iteration's metrics."""
    progress = job.get("progress") or {}
    line = f"  [{job.get('status', '?'):>9}] {progress.get('stage', '-'):<11}"
    fraction = progress.get("fraction")
    if isinstance(fraction, int | float):
        bar = "#" * int(20 * fraction)
        line += f" {bar:<20} {100 * fraction:5.1f}%"
    if progress.get("message"):
        line += f"  {progress['message']}"
    iterations = job.get("iterations") or []
    if iterations:
        it = iterations[-1]
        parts = [f"iteration {it.get('iteration', len(iterations))}"]
        for key, label in (
            ("accuracy_after_kmeans", "after k-means"),
            ("accuracy_after_retrain", "after retrain"),
            ("codebook_change", "codebook change"),
        ):
            if isinstance(it.get(key), int | float):
                parts.append(f"{label} {it[key]:.4f}")
        line += "  | " + ", ".join(parts)
    return line


class ProgressReporter:
    """Job progress on a terminal: one line redrawn in place, a new line when the stage or
    the SIQ iteration changes. Into a file or pipe: only those changes, plus every 10 s."""

    def __init__(self, stream: TextIO, every_s: float = 10.0):
        self.stream, self.every_s = stream, every_s
        self.tty = stream.isatty()
        self.key: tuple = ()
        self.last_print = 0.0
        self.width = 0

    def update(self, job: dict[str, Any]) -> None:
        line = describe_progress(job)
        progress = job.get("progress") or {}
        key = (job.get("status"), progress.get("stage"), len(job.get("iterations") or []))
        changed, now = key != self.key, time.monotonic()
        if self.tty:
            if changed and self.key:
                self.stream.write("\n")
                self.width = 0
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        elif changed or now - self.last_print >= self.every_s:
            self.stream.write(line + "\n")
            self.last_print = now
        self.key = key
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.key:
            self.stream.write("\n")
            self.stream.flush()


def latest_bundle(http: httpx.Client, server: ServiceProcess, dataset: str) -> dict | None:
    # /bundles/latest serves the file itself; the list (newest first) has the info
    response = http.get(f"{server.url}/bundles", params={"dataset": dataset}, timeout=10)
    items = response.json().get("items", []) if response.status_code == 200 else []
    return items[0] if items else None


def run_job(http: httpx.Client, server: ServiceProcess, body: dict, headers: dict) -> dict:
    print(f"> POST /quantize-jobs {json.dumps(body)}", flush=True)
    response = http.post(f"{server.url}/quantize-jobs", json=body, headers=headers, timeout=30)
    if response.status_code != 202:
        raise RunError(f"job refused: {response.status_code} {response.text}")
    location = response.headers.get("location") or f"/quantize-jobs/{response.json()['id']}"
    url = httpx.URL(server.url).join(location)
    reporter = ProgressReporter(sys.stdout)
    while True:
        server.check_alive()
        job = http.get(url, timeout=10).json()
        reporter.update(job)
        if job.get("status") in {"succeeded", "failed", "cancelled"}:
            break
        time.sleep(1.0)
    reporter.close()
    if job["status"] != "succeeded":
        raise RunError(f"job {job.get('id')} {job['status']}: {job.get('error')}")
    result = job.get("result") or {}
    print(
        f"> job {job.get('id')} succeeded: float accuracy {result.get('float_accuracy')}, "
        f"quantized accuracy {result.get('quantized_accuracy')}, bundle {result.get('bundle_id')} "
        f"({result.get('bundle_bytes')} bytes vs {result.get('float_bytes')} float)",
        flush=True,
    )
    return job


def write_sample_image(dataset: str, data_dir: Path, out: Path) -> tuple[Path, int | str]:
    """A test-set image of `dataset` as a PNG, and its true label."""
    import numpy as np
    from PIL import Image

    from server.data import load_dataset

    ds = load_dataset(dataset, data_dir, train_limit=1, test_limit=1)
    image = ds.test_x[0]  # (C, H, W) uint8
    array = image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(out)
    return out, ds.class_names[int(ds.test_y[0])]


def print_examples(
    server: ServiceProcess,
    client: ServiceProcess,
    sample: Path,
    dataset: str,
    token: str | None,
) -> None:
    s, c, img = server.url, client.url, shlex.quote(str(sample))
    auth = ' -H "Authorization: Bearer $SIQ_API_TOKEN"' if token else ""
    print(
        f"""
Ready. Try:
  curl -s -F file=@{img} {c}/recognize
  curl -s -F files=@{img} -F files=@{img} {c}/recognize
  curl -s -H 'Content-Type: image/png' --data-binary @{img} {c}/recognize
  curl -s {c}/bundle
  curl -s {c}/readyz ; curl -s {c}/metrics | head
  curl -s {s}/datasets
  curl -s {s}/bundles ; curl -s '{s}/bundles/latest/manifest?dataset={dataset}'
  curl -s -o latest.siq '{s}/bundles/latest?dataset={dataset}'
  curl -s {s}/quantize-jobs ; curl -s {s}/healthz ; curl -s {s}/metrics | head
  curl -s -X POST{auth} -H 'Content-Type: application/json' \\
       -d '{{"dataset": "{dataset}", "weight_bits": 2, "activation_bits": 4}}' {s}/quantize-jobs
Logs: {server.log_path}, {client.log_path}.  Ctrl-C stops both services.""",
        flush=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.run_local", description=__doc__)
    p.add_argument("--dataset", help="data set to train (default: mnist, else digits)")
    p.add_argument("--weight-bits", type=int, default=4)
    p.add_argument("--activation-bits", type=int, default=4)
    p.add_argument("--epochs", type=int, help="float training epochs (default: the data set's)")
    p.add_argument("--max-iterations", type=int, help="SIQ iterations at most")
    p.add_argument("--train-limit", type=int, help="train on the first N images only")
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 epoch, 2 iterations of 1 retraining epoch, 10k images",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--server-port", type=int, default=int(os.environ.get("SIQ_SERVER_PORT", 8000)))
    p.add_argument("--client-port", type=int, default=int(os.environ.get("SIQ_CLIENT_PORT", 8001)))
    p.add_argument("--state-dir", type=Path, default=REPO_ROOT / "var")
    p.add_argument("--once", action="store_true", help="exit after the first recognition")
    p.add_argument("--start-timeout", type=float, default=120.0)
    return p.parse_args(argv)


def _start(
    module: str, args: argparse.Namespace, port: int, env: dict[str, str], log: Path
) -> ServiceProcess:
    # its own session: Ctrl-C reaches only us, and we stop the children in order
    return start_service(
        module, env=env, log_path=log, host=args.host, port=port, append_log=True, own_session=True
    )


def run(args: argparse.Namespace, services: list[ServiceProcess]) -> None:
    data_dir = Path(os.environ.get("SIQ_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    state = args.state_dir.resolve()
    token = os.environ.get("SIQ_API_TOKEN") or None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base_env = {**os.environ, "SIQ_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()

    with httpx.Client() as http:
        server_env = {**base_env, "SIQ_STATE_DIR": str(state / "server")}
        server = _start("server", args, args.server_port, server_env, state / "logs/server.log")
        services.append(server)
        print(f"> server on {server.url} (state {state / 'server'})")
        server.wait_ready("/healthz", args.start_timeout)

        answer = http.get(f"{server.url}/datasets", headers=headers, timeout=30)
        if answer.status_code != 200:
            raise RunError(f"GET /datasets answered {answer.status_code}: {answer.text}")
        names = [d["name"] for d in answer.json()]  # a list of shared.api.schemas.DatasetInfo
        dataset = choose_dataset(args.dataset, names)

        client_env = {
            **base_env,
            "SIQ_SERVER_URL": server.url,
            "SIQ_BUNDLE": f"latest:{dataset}",
            "SIQ_STATE_DIR": str(state / "client"),
            "SIQ_POLL_INTERVAL_S": os.environ.get("SIQ_POLL_INTERVAL_S", "2"),
            "SIQ_RETRY_INTERVAL_S": os.environ.get("SIQ_RETRY_INTERVAL_S", "1"),
            # as docker-compose.yml: recognition in one child process beside the event loop
            "SIQ_INFERENCE_PROCESSES": os.environ.get("SIQ_INFERENCE_PROCESSES", "1"),
        }
        client = _start("client", args, args.client_port, client_env, state / "logs/client.log")
        services.append(client)
        print(f"> client on {client.url} (bundle latest:{dataset})")
        client.wait_ready("/healthz", args.start_timeout)

        bundle = latest_bundle(http, server, dataset)
        if bundle is None:
            hint = "" if args.quick else " (for a 1-epoch demo: make run RUN_ARGS=--quick)"
            print(f"> no {dataset} bundle yet: training one, minutes on a CPU{hint}")
            run_job(http, server, job_request(args, dataset), headers)
        else:
            print(f"> using the existing {dataset} bundle {bundle.get('id', bundle)}")

        print("> waiting for the client to load the bundle ...", flush=True)
        client.wait_ready("/readyz", args.start_timeout)
        sample, label = write_sample_image(dataset, data_dir, state / f"sample-{dataset}.png")
        with sample.open("rb") as fh:
            answer = http.post(f"{client.url}/recognize", files={"file": fh}, timeout=30)
        if answer.status_code != 200:
            raise RunError(f"/recognize answered {answer.status_code}: {answer.text}")
        print(f"> recognised {sample} (true label {label}): {answer.text}")
        print(f"> first recognition {time.monotonic() - started:.1f} s after start", flush=True)
        print_examples(server, client, sample, dataset, token)

    if not args.once:
        while True:
            for service in services:
                service.check_alive()
            time.sleep(1.0)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    services: list[ServiceProcess] = []
    # Ctrl-C, and SIGTERM from a supervisor, stop the services. Installed explicitly: a shell
    # that starts us in the background leaves SIGINT ignored otherwise.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    try:
        run(args, services)
    except KeyboardInterrupt:
        print("\n> stopping ...", flush=True)
    except (RunError, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        # A second Ctrl-C must not orphan the children: stop() is bounded by its timeouts.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for service in reversed(services):
            service.stop()
        if services:
            print("> server and client stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
