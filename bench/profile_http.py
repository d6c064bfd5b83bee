"""Where a server's time goes under load: py-spy samples the thread holding the GIL (`--gil`:
what a one-process server is bound by) while the load generator of bench_client drives it,
and the samples are sorted into the steps of a request.

    python -m bench.profile_http --bundle FILE [--images png|jpeg] [--seconds 12] [--raw OUT]
    python -m bench.profile_http --bare [--images png|jpeg]      # the bare upload route

Needs py-spy (the dev extra) and permission to trace a child process (root, or
kernel.yama.ptrace_scope = 0). Prints a markdown table: step, share of the GIL samples.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.bench_client import http_load, load_images
from bench.bench_http import photo_jpegs
from scripts.processes import start_service

__all__ = ["STEPS", "categorise", "main"]

# (step, a frame that marks it); a sample counts for the step of its innermost marked frame
STEPS = [
    ("network (engine predict)", "predict (shared/engine/numpy_engine.py"),
    ("network (engine predict)", "shared/engine/onnx_engine.py"),
    ("preprocessing", "preprocess (shared/image/preprocessing.py"),
    ("image decoding", "load_image (shared/image/preprocessing.py"),
    ("image decoding", "open_image (shared/image/preprocessing.py"),
    ("image decoding", "decode_image (shared/image/preprocessing.py"),
    ("answer building", "recognize (client/recognize.py"),
    ("answer building", "answer (client/recognize.py"),
    ("batching (client/batching.py)", "client/batching.py"),
    ("inference processes: pipe and bookkeeping", "client/inference_process.py"),
    ("dispatching (client/dispatch.py)", "client/dispatch.py"),
    ("the route's own code", "recognize_route (client/api/recognize.py"),
    ("hand-off to a worker thread", "anyio/to_thread.py"),
    ("hand-off to a worker thread", "WorkerThread.run"),
    ("multipart parsing", "read_uploads (client/recognize.py"),
    ("multipart parsing", "file_parts (client/multipart.py"),
    ("multipart parsing", "Request._get_form"),
    ("response: JSON and send", "Response.__call__"),
    ("response: JSON and send", "JSONResponse.render"),
    ("response: JSON and send", "RequestResponseCycle.send"),
    ("FastAPI dependencies", "solve_dependencies"),
    ("HTTP parsing (h11)", "H11Protocol"),
    ("metrics middleware", "MetricsMiddleware.__call__ ("),  # not its send_wrapper
    ("routing and middleware", "Router.__call__"),
    ("routing and middleware", "FastAPI.__call__"),
]


def categorise(collapsed: str) -> dict[str, float]:
    """py-spy's raw (collapsed) output -> share of samples per step, largest first."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        counts[_step(stack.split(";"))] += int(n)
    return {step: n / total for step, n in counts.most_common()} if total else {}


def _step(frames: list[str]) -> str:
    for frame in reversed(frames):  # innermost first
        for name, marker in STEPS:
            if marker in frame:
                return name
    return "event loop and other"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_http")
    p.add_argument("--bundle", help="bundle file the client serves")
    p.add_argument("--bare", action="store_true", help="profile the bare upload route instead")
    p.add_argument("--images", choices=("png", "jpeg"), default="png")
    p.add_argument("--seconds", type=int, default=12)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    p.add_argument(
        "--inference-processes",
        type=int,
        default=0,
        help="the client's SIQ_INFERENCE_PROCESSES (its children are sampled too)",
    )
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    images = load_images(64) if args.images == "png" else photo_jpegs(64)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIQ_")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.bare:
            module, ready = "bench.bare_upload", "/healthz"
        else:
            module, ready = "client", "/readyz"
            env.update(SIQ_BUNDLE=str(args.bundle), SIQ_STATE_DIR=str(work / "state"))
            env["SIQ_INFERENCE_PROCESSES"] = str(args.inference_processes)
        log_args = ["--log-level", "warning"]
        with start_service(module, env=env, log_path=work / "s.log", args=log_args) as service:
            service.wait_ready(ready, timeout=120)
            stop = threading.Event()

            def drive() -> None:
                while not stop.is_set():
                    load = http_load(service.host, service.port, images, 400, args.concurrency)
                    asyncio.run(load)

            driver = threading.Thread(target=drive, daemon=True)
            driver.start()
            out = work / "profile.txt"
            command = [spy, "record", "-p", str(service.proc.pid), "--gil", "--rate", "200"]
            if args.inference_processes:
                command.append("--subprocesses")
            command += ["--duration", str(args.seconds), "--format", "raw", "-o", str(out)]
            subprocess.run([*command, "--nonblocking"], check=True, capture_output=True)
            stop.set()
            driver.join(timeout=60)
            shares = categorise(out.read_text())
            if args.raw:
                shutil.copy(out, args.raw)
    what = "bare upload route" if args.bare else f"/recognize ({Path(args.bundle).name})"
    print(f"| step ({what}, {args.images}) | share of GIL samples |\n|---|---|")
    for step, share in shares.items():
        print(f"| {step} | {share:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
