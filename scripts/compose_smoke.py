"""The docker compose stack on a real Docker engine, end to end (issue 11).

    python -m scripts.compose_smoke [--data-dir DIR] [--phases default,ray] [--json OUT]

Builds both images from this checkout, brings the stack up, waits for both healthchecks,
trains a small MNIST job over HTTP, sees the client pick the bundle up and recognise test
digits (in its inference process: compose sets SIQ_INFERENCE_PROCESSES=1), scales to three
clients and recognises on each (addressed as 127.0.0.1:<port> from
`compose port --index N client 8001`), restarts the server mid-job (the clients keep
serving, the job ends `interrupted`), then `down` and `up` and finds the bundle kept.

Then the `ray` profile (issue 16): the server rebuilt with the Ray client (SIQ_EXECUTOR=ray),
a Ray head and two 1-CPU workers (`--profile ray up --scale ray-worker=2`, Ray's token auth
on), two small jobs submitted at once over HTTP; both succeed, each as a Ray task on its own
worker container (the job's `result.ray_node.host` is that container's hostname), and their
bundles download with the content address they are named by. The Ray nodes build on the
network the server's build uses (SIQ_RAY_BUILD_NETWORK; the sandbox override says `host`).

Works with compose v2 (`docker compose`) or v1 (`docker-compose`); extra compose files come
from COMPOSE_FILE as usual (the sandbox override of ../shared/tools/docker-sandbox, say).
The last stdout line is one JSON object: timings of each step and the image sizes. Exit
status 0 when every step held, 1 when one failed (its message on stderr), 77 when no
engine or compose CLI is usable. The stack, its volume and network are removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from PIL import Image

from shared.bundle import bundle_id

__all__ = ["compose_command", "engine_available", "main"]

REPO = Path(__file__).resolve().parent.parent
SKIP = 77  # "no engine here", as automake's test drivers say it
# small enough to train in well under a minute on two cores, good enough to read digits
QUICK_JOB = {"dataset": "mnist", "weight_bits": 4, "activation_bits": 4, "epochs": 1,
             "retrain_epochs": 0.5, "max_iterations": 1, "train_limit": 6000,
             "test_limit": 1000, "seed": 0}  # fmt: skip
LONG_JOB = {**QUICK_JOB, "epochs": 20, "train_limit": None, "seed": 1}
# the ray phase proves where jobs run, not how well: a smaller subset still reads digits
RAY_JOB = {**QUICK_JOB, "train_limit": 2000, "test_limit": 500}
RAY_WORKERS = 2
TERMINAL = ("succeeded", "failed", "cancelled")


class SmokeFailure(Exception):
    pass


def compose_command() -> list[str] | None:
    """`docker compose` (v2) when it answers, else `docker-compose` (v1), else None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def engine_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, subprocess.CalledProcessError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise SmokeFailure(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def mnist_digits(data_dir: Path, count: int) -> tuple[list[bytes], np.ndarray]:
    """The first `count` MNIST test digits as PNG bytes, and their labels."""
    folder = data_dir / "mnist"
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:count]
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:count]
    pngs = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    return pngs, labels.astype(np.int64)


class Stack:
    """One compose project: its commands, its service ports, its HTTP calls."""

    def __init__(self, compose: list[str], env: dict[str, str], project: str):
        self.compose, self.env, self.project = compose, env, project
        self.server = f"http://127.0.0.1:{env['SIQ_SERVER_PORT']}"
        self.http = httpx.Client(timeout=30)
        self.profiles: list[str] = []  # compose profiles every command enables

    def run(self, *args: str, timeout: float = 900, check: bool = True) -> str:
        enable = [arg for name in self.profiles for arg in ("--profile", name)]
        cmd = [*self.compose, "-p", self.project, *enable, *args]
        done = subprocess.run(
            cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise SmokeFailure(
                f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        return done.stdout

    def containers(self, service: str) -> list[str]:
        return self.run("ps", "-q", service).split()

    def healthy(self, service: str, count: int) -> bool:
        ids = self.containers(service)
        if len(ids) != count:
            return False
        states = subprocess.run(
            ["docker", "inspect", "--format", "{{.State.Health.Status}}", *ids],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        return states == ["healthy"] * count

    def client_url(self, index: int) -> str:
        out = self.run("port", "--index", str(index), "client", "8001").strip()
        port = out.rsplit(":", 1)[-1]
        if not port.isdigit():
            raise ValueError(f"no port for client {index}: {out!r}")
        return f"http://127.0.0.1:{port}"

    def submit(self, params: dict) -> str:
        body = {k: v for k, v in params.items() if v is not None}
        answer = self.http.post(f"{self.server}/quantize-jobs", json=body)
        if answer.status_code != 202:
            raise SmokeFailure(f"job refused: {answer.status_code} {answer.text}")
        return answer.json()["id"]

    def job(self, job_id: str) -> dict:
        return self.http.get(f"{self.server}/quantize-jobs/{job_id}").raise_for_status().json()

    def finished(self, job_id: str, what: str, timeout: float) -> dict:
        """The job once it ended; a SmokeFailure unless it succeeded."""
        job = wait_for(
            what, lambda: (j := self.job(job_id))["status"] in TERMINAL and j, timeout, 2
        )
        if job["status"] != "succeeded":
            raise SmokeFailure(f"{what} ended {job['status']}: {job.get('error')}")
        return job

    def serving(self, client: str, bundle: str) -> bool:
        answer = self.http.get(f"{client}/bundle")
        return answer.status_code == 200 and answer.json()["id"] == bundle

    def accuracy(self, client: str, pngs: list[bytes], labels: np.ndarray) -> float:
        files = [("files", (f"{i}.png", b, "image/png")) for i, b in enumerate(pngs)]
        answer = self.http.post(f"{client}/recognize", files=files)
        if answer.status_code != 200:
            raise SmokeFailure(f"{client}/recognize: {answer.status_code} {answer.text}")
        got = np.array([r["label"] for r in answer.json()["results"]])
        return float((got == labels).mean())

    def inference_processes(self, client: str) -> float:
        """The client's running inference processes, from its /metrics gauge."""
        text = self.http.get(f"{client}/metrics").raise_for_status().text
        for line in text.splitlines():
            if line.startswith("siq_client_inference_processes "):
                return float(line.split()[-1])
        raise SmokeFailure(f"{client}/metrics has no siq_client_inference_processes")

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "60", check=False)


def image_mb(name: str) -> float | None:
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", name],
        capture_output=True,
        text=True,
    )
    return round(int(done.stdout.strip()) / 1e6, 1) if done.returncode == 0 else None


@contextlib.contextmanager
def timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.monotonic()
    print(f"==> {step}", file=sys.stderr, flush=True)
    yield
    timings[step] = round(time.monotonic() - start, 1)
    print(f"    {timings[step]} s", file=sys.stderr, flush=True)


def smoke(stack: Stack, data_dir: Path, timings: dict[str, float]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    pngs, labels = mnist_digits(data_dir, 64)
    with timed(timings, "build"):
        stack.run("build")
    facts["image_mb"] = {
        name: image_mb(name)
        for name in ("python:3.11-slim", "siq-server:latest", "siq-client:latest")
    }
    with timed(timings, "up_to_healthy"):
        stack.run("up", "-d")
        wait_for(
            "both services healthy",
            lambda: stack.healthy("server", 1) and stack.healthy("client", 1),
            180,
            2,
        )
    with timed(timings, "quick_job"):
        job = stack.finished(stack.submit(QUICK_JOB), "the quick job", 600)
        bundle = job["result"]["bundle_id"]
        facts["quick_job"] = {
            k: job["result"][k] for k in ("float_accuracy", "quantized_accuracy", "bundle_bytes")
        }
    with timed(timings, "client_picks_up"):
        first = stack.client_url(1)
        wait_for("client 1 to serve the new bundle", lambda: stack.serving(first, bundle), 120)
        facts["accuracy"] = [stack.accuracy(first, pngs, labels)]
        # compose's SIQ_INFERENCE_PROCESSES=1: the digits ran in a child, in the container
        facts["inference_processes"] = stack.inference_processes(first)
        if facts["inference_processes"] < 1:
            raise SmokeFailure("the client recognised in its server process, not in a child")
    with timed(timings, "scale_to_3"):
        stack.run("up", "-d", "--no-recreate", "--scale", "client=3")
        wait_for("three healthy clients", lambda: stack.healthy("client", 3), 180, 2)
        clients = [stack.client_url(i) for i in (1, 2, 3)]
        for url in clients:
            wait_for(
                f"{url} to serve the bundle", functools.partial(stack.serving, url, bundle), 120
            )
        facts["accuracy"] = [stack.accuracy(url, pngs, labels) for url in clients]
    with timed(timings, "server_restart_mid_job"):
        long_id = stack.submit(LONG_JOB)
        wait_for("the long job to run", lambda: stack.job(long_id)["status"] == "running", 120)
        stack.run("restart", "server")
        served_meanwhile = [stack.accuracy(url, pngs, labels) for url in clients]
        wait_for("the server healthy again", lambda: stack.healthy("server", 1), 180, 2)
        ended = wait_for(
            "the long job to end",
            lambda: (j := stack.job(long_id))["status"] != "running" and j,
            60,
        )
        error = ended.get("error") or {}
        if ended["status"] != "failed" or error.get("code") != "interrupted":
            raise SmokeFailure(f"after the restart the job is {ended['status']} {error}")
        facts["served_during_restart"] = served_meanwhile
        facts["interrupted_job"] = {"status": ended["status"], "error": error.get("code")}
    with timed(timings, "down_up_keeps_bundles"):
        stack.run("down")
        stack.run("up", "-d")
        wait_for(
            "both services healthy after up",
            lambda: stack.healthy("server", 1) and stack.healthy("client", 1),
            180,
            2,
        )
        listed = stack.http.get(f"{stack.server}/bundles", params={"dataset": "mnist"}).json()
        ids = [b["id"] for b in listed["items"]]
        if bundle not in ids:
            raise SmokeFailure(f"after down/up the server lists {ids}, not {bundle}")
        url = stack.client_url(1)
        wait_for("the client to serve the kept bundle", lambda: stack.serving(url, bundle), 120)
        facts["accuracy_after_down_up"] = stack.accuracy(url, pngs, labels)
    low = min(
        facts["accuracy"] + facts["served_during_restart"] + [facts["accuracy_after_down_up"]]
    )
    if low < 0.8:
        raise SmokeFailure(f"a client recognised only {low:.0%} of 64 test digits")
    return facts


def server_build_network(stack: Stack) -> str | None:
    """The server build's network in the effective compose config (an override's `host`)."""
    config = yaml.safe_load(stack.run("config"))
    build = config["services"]["server"].get("build") or {}
    network = build.get("network") if isinstance(build, dict) else None
    return str(network) if network else None


def ray_phase(stack: Stack, timings: dict[str, float]) -> dict[str, Any]:
    """The `ray` profile: jobs over HTTP run as Ray tasks on the worker containers."""
    facts: dict[str, Any] = {}
    stack.run("down", "-v", "--remove-orphans")  # the default stack, if a phase left it up
    network = server_build_network(stack)
    stack.env.update(
        SIQ_EXECUTOR="ray",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        SIQ_RAY_WORKER_CPUS="1",  # one task per worker: two jobs at once need both workers
        SIQ_RAY_DASHBOARD_PORT=str(free_port()),
    )
    if network and "SIQ_RAY_BUILD_NETWORK" not in os.environ:
        stack.env["SIQ_RAY_BUILD_NETWORK"] = network
    stack.profiles = ["ray"]
    with timed(timings, "ray_build"):
        stack.run("build", "server", "ray-head", "ray-worker")
    facts["image_mb"] = {n: image_mb(n) for n in ("siq-server:latest", "siq-ray:latest")}
    with timed(timings, "ray_up_to_healthy"):
        # The cluster first (`up` returns once the head is healthy: the workers wait for
        # it), then the server: started earlier, it exits until the head answers and
        # compose restarts it, with a growing back-off.
        stack.run("up", "-d", "--scale", f"ray-worker={RAY_WORKERS}", "ray-head", "ray-worker")
        wait_for("the Ray head healthy", lambda: stack.healthy("ray-head", 1), 240, 2)
        stack.run("up", "-d", "--no-deps", "server")
        wait_for("the server healthy", lambda: stack.healthy("server", 1), 240, 2)
        workers = stack.containers("ray-worker")
        if len(workers) != RAY_WORKERS:
            raise SmokeFailure(f"{len(workers)} ray-worker containers, not {RAY_WORKERS}")
        hosts = {cid[:12] for cid in workers}  # a container's hostname: its id's first 12
    with timed(timings, "ray_jobs"):
        # Two at once, while the workers may still be joining: the runner claims a job
        # when the cluster has a free CPU for it (the head has none), so they wait queued.
        ids = [stack.submit({**RAY_JOB, "seed": seed}) for seed in range(RAY_WORKERS)]
        jobs = [stack.finished(i, f"Ray job {n + 1}", 600) for n, i in enumerate(ids)]
        ran_on = [(j["result"].get("ray_node") or {}).get("host") for j in jobs]
        if set(ran_on) != hosts:
            raise SmokeFailure(f"the jobs ran on {ran_on}, not one on each worker {sorted(hosts)}")
        for job in jobs:
            bundle = job["result"]["bundle_id"]
            data = stack.http.get(f"{stack.server}/bundles/{bundle}").raise_for_status().content
            if bundle_id(data) != bundle:
                raise SmokeFailure(f"bundle {bundle} downloaded as {bundle_id(data)}")
        facts["jobs"] = [
            {
                "ray_node": j["result"]["ray_node"],
                "quantized_accuracy": j["result"]["quantized_accuracy"],
                "bundle_bytes": j["result"]["bundle_bytes"],
                "seconds": j["result"]["seconds"],
            }
            for j in jobs
        ]
    low = min(j["quantized_accuracy"] for j in facts["jobs"])
    if low < 0.3:
        raise SmokeFailure(f"a Ray job's bundle reached only {low:.0%} test accuracy")
    return facts


PHASES = ("default", "ray")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("SIQ_DATA_DIR", REPO.parent / "shared/data")),
    )
    parser.add_argument("--json", type=Path, help="also write the result object here")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="default (the stack of server and clients), ray (the `ray` profile), or both",
    )
    args = parser.parse_args(argv)
    phases = args.phases.split(",")
    if not phases or set(phases) - set(PHASES):
        parser.error(f"--phases takes a comma-separated subset of {','.join(PHASES)}")
    compose = compose_command()
    if compose is None or not engine_available():
        print("compose_smoke: no Docker engine or compose CLI here; skipped", file=sys.stderr)
        return SKIP
    data_dir = args.data_dir.resolve()
    if not (data_dir / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        print(f"compose_smoke: no MNIST under {data_dir}; skipped", file=sys.stderr)
        return SKIP
    env = {**os.environ, "SIQ_HOST_DATA_DIR": str(data_dir), "SIQ_SERVER_PORT": str(free_port()),
           "SIQ_POLL_INTERVAL_S": "2"}  # fmt: skip
    for secret in ("SIQ_API_TOKEN", "SIQ_BUNDLE_HMAC_KEY", "RAY_AUTH_TOKEN"):
        env.pop(secret, None)  # the smoke test runs the default, open stack
    env.pop("SIQ_EXECUTOR", None)  # the default phase runs the local executor
    stack = Stack(compose, env, f"siqsmoke{os.getpid()}")
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"compose": " ".join(compose), "timings_s": timings}
    status = 0
    start = time.monotonic()
    try:
        if "default" in phases:
            result.update(smoke(stack, data_dir, timings))
        if "ray" in phases:
            result["ray"] = ray_phase(stack, timings)
    except (SmokeFailure, subprocess.TimeoutExpired, httpx.HTTPError) as exc:
        print(f"compose_smoke: FAILED: {exc}\n--- logs ---\n{stack.logs()}", file=sys.stderr)
        result["failure"] = str(exc)
        status = 1
    finally:
        with timed(timings, "down_and_remove_volume"):
            stack.profiles = ["ray"]  # whichever phases ran, their containers all go
            stack.run("down", "-v", "--remove-orphans", check=False)
        stack.http.close()
    timings["total"] = round(time.monotonic() - start, 1)
    text = json.dumps(result, sort_keys=True)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
