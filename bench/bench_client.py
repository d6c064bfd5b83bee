"""Client benchmark: the engine the client serves with (`shared.engine.load_engine`) against
ONNX Runtime float32 and int8 static (QDQ), torch.ao int8 and PyTorch float32 eager on the
equivalent float network (bench/peers.py), at batch 1 and 64 with 1 and 2 threads, on the same
preprocessed images; then HTTP /recognize of a real `python -m client` process under 16
concurrent clients.

    python -m bench.bench_client [--bundle FILE] [--requests 480] [--concurrency 16] [--name client]

The network: `--bundle FILE` (e.g. from `python -m server quantize`), else a quick
`server.pipeline.run_pipeline` (MNIST, or `digits` without it). The float network has the
bundle's graph with the dequantised weights (codebook value x weight scale), so both do the same
arithmetic work. Writes bench/results/client.json and client.md. Torch is fine here, never in client/.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import math
import os
import platform
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.client_report import write_report
from bench.report import default_data_dir
from scripts.processes import start_service
from shared.bundle import decode_bundle, layer_weights
from shared.engine import IntegerNetwork, load_engine
from shared.image import decode_image, preprocess

__all__ = ["main", "float_model", "time_per_batch", "http_load", "multipart_request", "load_images"]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def get_bundle(path: str | None, work: Path) -> tuple[bytes, str]:
    if path:
        data = Path(path).read_bytes()
        config = decode_bundle(data).manifest.get("provenance", {}).get("config", {})
        made = ", ".join(
            f"{k} {config[k]}"
            for k in ("dataset", "epochs", "retrain_epochs", "max_iterations", "train_limit")
            if config.get(k) is not None
        )
        return data, f"file {Path(path).name} ({made})"
    from server.params import JobParams
    from server.training.pipeline import run_pipeline

    data_dir = default_data_dir()
    dataset = "mnist" if (data_dir / "mnist").is_dir() else "digits"
    # a quick model: the benchmark measures speed, which does not depend on accuracy
    config = JobParams(
        dataset=dataset,
        epochs=1,
        retrain_epochs=0.25,
        max_iterations=1,
        seed=0,
        train_limit=5000,
        test_limit=500,
    )
    result = run_pipeline(config, data_dir, work)
    return Path(result.bundle_path).read_bytes(), (
        f"run_pipeline({dataset}, 5000 images, 1 epoch, 1 SIQ iteration; "
        f"integer accuracy {result.quantized_accuracy:.3f} on 500 test images)"
    )


def float_model(bundle):
    """The bundle's graph (a chain or a DAG) as a torch float32 network with dequantised
    weights: convolutions (grouped too) and linear layers with real weights and biases, ReLU,
    ReLU6 as a clamp at clamp_max times the output scale, adds of real values, the pools."""
    import torch
    from torch import nn

    from shared.network.graph import INPUT, activation, as_dag, groups

    scales = bundle.manifest.get("layers", {})
    graph = as_dag(bundle.manifest["graph"])
    modules: dict[str, nn.Module] = {}
    tops: dict[str, float | None] = {}  # the activation's upper clip, real; None: no clip
    for layer in graph:
        op, name = layer["op"], layer["name"]
        info = scales.get(name, {})
        if op in ("conv2d", "linear", "add"):
            act = activation(layer)
            top = float(layer.get("clamp_max") or 0) * float(info.get("output_scale") or 0.0)
            tops[name] = None if act == "none" else (top or 6.0) if act == "relu6" else math.inf
        if op == "maxpool2d":
            modules[name] = nn.MaxPool2d(layer["kernel_size"], layer["stride"])
        elif op == "avgpool2d":
            modules[name] = nn.AvgPool2d(layer["kernel_size"], layer["stride"])
        elif op in ("conv2d", "linear"):
            w = layer_weights(layer, bundle.tensors).astype(np.float32)
            scale = float(info.get("weight_scale", 1.0))
            # real bias = integer bias x accumulator scale (input scale x weight scale)
            acc_scale = scale * float(info.get("input_scale", 0.0))
            bias = bundle.tensors[f"{name}.bias"].astype(np.float32) * acc_scale
            m: nn.Conv2d | nn.Linear
            if op == "conv2d":
                m = nn.Conv2d(
                    layer["in_channels"],
                    layer["out_channels"],
                    layer["kernel_size"],
                    layer["stride"],
                    layer["padding"],
                    groups=groups(layer),
                )
            else:
                m = nn.Linear(layer["in_features"], layer["out_features"])
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(w * scale))
                m.bias.copy_(torch.from_numpy(bias))  # type: ignore[union-attr]
            modules[name] = m

    class FloatGraph(nn.Module):
        """The graph's nodes in order, each on the values of its inputs (FX traces the loop
        away, as torch.ao and torch.onnx.export need)."""

        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleDict({k.replace(".", "_"): v for k, v in modules.items()})

        def forward(self, x):
            values = {INPUT: x}
            for node in graph:
                op, name = node["op"], node["name"]
                args = [values[source] for source in node["inputs"]]
                if op == "flatten":
                    y = torch.flatten(args[0], 1)
                elif op == "global_avgpool":
                    y = args[0].mean(dim=(2, 3))
                elif op == "add":
                    y = args[0] + args[1]
                else:
                    y = self.layers[name.replace(".", "_")](args[0])
                top = tops.get(name)
                if top is not None:
                    y = torch.relu(y) if top == math.inf else torch.clamp(y, 0.0, top)
                values[name] = y
            return values[graph[-1]["name"]]

    return FloatGraph().eval()


def time_per_batch(fn, batches: list, min_seconds: float = 1.0) -> dict[str, float]:
    """Run fn over the batches (round robin) for at least min_seconds; per-batch stats."""
    fn(batches[0])  # warm up
    times: list[float] = []
    images = 0
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < min_seconds or len(times) < 5:
        b = batches[i % len(batches)]
        t = time.perf_counter()
        fn(b)
        times.append(time.perf_counter() - t)
        images += len(b)
        i += 1
    total = sum(times)
    median = float(np.median(times))
    return {
        # from the median batch time: robust to other processes on a shared machine
        "images_per_s": len(batches[0]) / median,
        "images_per_s_mean": images / total,
        "ms_per_batch_p50": float(np.median(times) * 1e3),
        "batches": len(times),
    }


def compare(fns: dict[str, Any], batches: list, rounds: int = 6, seconds: float = 0.4) -> dict:
    """Time several functions on the same batches in interleaved rounds (A, B, A, B, ...):
    this machine's speed drifts by up to 2x over seconds, so timing one function after the
    other would compare machine states. Per function: the median over rounds of each round's
    median batch time, and the spread of the round medians."""
    for fn in fns.values():
        time_per_batch(fn, batches, min_seconds=0.2)  # warm up (plans, caches, threads)
    per_round: dict[str, list[dict[str, float]]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            per_round[name].append(time_per_batch(fn, batches, min_seconds=seconds))
    out = {}
    for name, rows in per_round.items():
        ms = [r["ms_per_batch_p50"] for r in rows]
        median = float(np.median(ms))
        out[name] = {
            "images_per_s": len(batches[0]) / median * 1e3,
            "ms_per_batch_p50": median,
            "round_ms_min": min(ms),
            "round_ms_max": max(ms),
            "rounds": rounds,
            "batches": sum(int(r["batches"]) for r in rows),
        }
    return out


def load_images(count: int, dataset: str | None = None) -> list[bytes]:
    """Encoded test images: the bundle's own image-folder data set when it is one (its
    photos' bytes as they are, class folders in turn), else PNGs of MNIST test digits (or of
    scikit-learn digits when MNIST is absent)."""
    import gzip

    from PIL import Image

    data_dir = default_data_dir()
    folder = data_dir / dataset / "test" if dataset else None
    if folder is not None and folder.is_dir():
        classes = [sorted(p for p in c.iterdir() if p.is_file()) for c in sorted(folder.iterdir())]
        files = [f for group in zip(*classes, strict=False) for f in group][:count]
        return [f.read_bytes() for f in files]
    path = data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"
    if path.exists():
        with gzip.open(path) as f:
            raw = f.read(16 + count * 784)[16:]
        arrays = np.frombuffer(raw, np.uint8).reshape(count, 28, 28)
    else:
        from sklearn.datasets import load_digits

        arrays = (load_digits().images[:count] * 255 / 16).astype(np.uint8)
    out = []
    for a in arrays:
        buf = io.BytesIO()
        Image.fromarray(255 - a).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def bench_engine(bundle, x: np.ndarray, calibration: np.ndarray, work: Path) -> dict[str, Any]:
    """The engine and its peers (bench/peers.py) on the same network and images, at batch 1
    and 64, with 1 and 2 threads each (torch's intra-op threads, ONNX Runtime's intra-op
    threads, the engine's `threads`), all functions interleaved round by round."""
    import torch
    from threadpoolctl import threadpool_limits

    from bench.peers import build_peers

    model = float_model(bundle)
    threadpool_limits(1, user_api="blas")  # the numpy engine splits batches across threads
    cores = torch.get_num_threads()
    rows: dict[str, dict[str, float]] = {}
    agreement: dict[str, float] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        fns = build_peers(bundle, model, calibration, threads, work)
        if threads == 1:
            labels = fns["engine"](x)[0]
            agreement = {k: float((f(x)[0] == labels).mean()) for k, f in fns.items()}
        for batch in (1, 64):
            batches = [x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)]
            for who, row in compare(fns, batches).items():
                rows[f"{who}_b{batch}_t{threads}"] = row | {"threads": threads, "batch": batch}
    torch.set_num_threads(cores)
    engine = load_engine(bundle)
    return {
        "rows": rows,
        "label_agreement_with_engine": agreement,
        "engine_backend": engine.backend,
        "profile": {f"b{b}": profile_engine(IntegerNetwork(bundle), x[:b]) for b in (1, 32)},
        "profile_onnx": {f"b{b}": profile_onnx_engine(engine, x[:b]) for b in (1, 64)},
    }


def profile_onnx_engine(engine: Any, x: np.ndarray, runs: int = 400) -> list[list]:
    """Where the ONNX Runtime engine's time goes, one thread: its session's own profiler, the
    median microseconds of each node (as ONNX Runtime rewrote the graph) over `runs` calls;
    the profiler adds a few microseconds to every node."""
    import onnxruntime as ort

    from shared.onnx import UNSAFE_FUSIONS

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "siq-bench-ort")
    options.log_severity_level = 3
    session = ort.InferenceSession(
        engine.model,
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=UNSAFE_FUSIONS,
    )
    images = np.ascontiguousarray(x, dtype=np.float32)
    for _ in range(runs):
        session.run(None, {"images": images})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    per_node: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            label = f"{e['args']['op_name']} ({e['name'].removesuffix('_kernel_time')})"
            per_node.setdefault(label, []).append(e["dur"])
    return [[label, float(np.median(d))] for label, d in per_node.items()]


def profile_engine(net: IntegerNetwork, x: np.ndarray, seconds: float = 0.5) -> list[list]:
    """Where one thread's time goes: the engine's prepared pass for this batch size, timed
    step by step (input quantisation, patch copies, matmuls, pools, requantisation); a DAG
    bundle's pass as one figure."""
    from shared.engine.numpy_engine import (
        _Plan,  # the engine's internals, on purpose: this is a profile
    )

    if net._dag is not None:  # a DAG runs as one DagProgram, not as the chain's steps
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or runs < 20:
            net.predict(x)
            runs += 1
        return [["whole pass (DAG program)", 1e6 * (time.perf_counter() - start) / runs]]
    plan = _Plan(net, len(x), quantized=False)
    totals: dict[str, float] = {}
    runs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 20:
        t = time.perf_counter()
        plan.load(x)
        totals["input quantise"] = totals.get("input quantise", 0.0) + time.perf_counter() - t
        for label, step in plan.steps:
            t = time.perf_counter()
            step()
            totals[label] = totals.get(label, 0.0) + time.perf_counter() - t
        runs += 1
    return [[label, 1e6 * total / runs] for label, total in totals.items()]


def _media_type(image: bytes) -> str:
    return "image/jpeg" if image[:2] == b"\xff\xd8" else "image/png"


def multipart_request(host: str, port: int, name: str, image: bytes) -> bytes:
    """The bytes of one keep-alive `POST /recognize` with the image in a multipart `file`
    field."""
    boundary = "siqbenchboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {_media_type(image)}\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /recognize HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def infer_request(host: str, port: int, model: str, image: bytes) -> bytes:
    """The bytes of one keep-alive Open Inference Protocol `POST /v2/models/{model}/infer`
    with the image as a one-element BYTES input in Triton's binary tensor form, label and
    probabilities asked for: what `tritonclient.http` sends by default."""
    element = struct.pack("<I", len(image)) + image  # a BYTES element: length, then bytes
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(element)},
                }
            ],
            "outputs": [{"name": "label"}, {"name": "probabilities"}],
        }
    ).encode()
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {len(header) + len(element)}\r\n\r\n"
    )
    return head.encode() + header + element


async def http_load(
    host: str,
    port: int,
    images: list[bytes],
    requests: int,
    concurrency: int,
    *,
    payloads: list[bytes] | None = None,
):
    """`concurrency` keep-alive connections, each sending its next request when the last
    answer is in, until `requests` are done. The requests are encoded beforehand and answers
    are read by Content-Length only: a full HTTP client (httpx) costs ~5 ms of CPU a request
    and, sharing this machine's two cores with the service, was the bottleneck (its own
    queueing showed up as 100-600 ms p99 latency, measured).

    A connection that breaks (reset, closed mid-answer) counts one transport error and is
    opened again; so does one the service closes (`Connection: close`), without an error.
    `payloads`: whole HTTP requests to send instead of /recognize uploads of `images`."""
    if payloads is None:
        payloads = [multipart_request(host, port, f"{i}", im) for i, im in enumerate(images)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    transport_errors = [0]
    counter = iter(range(requests))

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in counter:
                t = time.perf_counter()
                try:
                    writer.write(payloads[i % len(payloads)])
                    status_line = await reader.readline()
                    length, close = 0, False
                    while (line := await reader.readline()) not in (b"\r\n", b""):
                        key, _, value = line.decode("latin-1").partition(":")
                        key = key.strip().lower()
                        if key == "content-length":
                            length = int(value)
                        elif key == "connection" and value.strip().lower() == "close":
                            close = True
                    await reader.readexactly(length)
                    code = int(status_line.split()[1])
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    transport_errors[0] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                latencies.append(time.perf_counter() - t)
                statuses[code] = statuses.get(code, 0) + 1
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    return {
        "requests": requests,
        "concurrency": concurrency,
        "errors": requests - statuses.get(200, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "transport_errors": transport_errors[0],
        "requests_per_s": requests / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "load_generator": "asyncio streams, pre-encoded multipart requests, keep-alive",
    }


def bench_http(bundle_path: Path, work: Path, images, requests: int, concurrency: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIQ_")}
    env.update(SIQ_BUNDLE=str(bundle_path), SIQ_STATE_DIR=str(work / "client-state"))
    args = ["--log-level", "warning"]
    with start_service("client", env=env, log_path=work / "client.log", args=args) as client:
        client.wait_ready("/readyz", timeout=60)
        # one real client call checks the answer's shape before the load
        files = {"file": ("0", images[0], _media_type(images[0]))}
        answer = httpx.post(f"{client.url}/recognize", files=files, timeout=30)
        answer.raise_for_status()
        assert answer.json()["results"][0]["label"] >= 0
        load = functools.partial(http_load, client.host, client.port, images)
        asyncio.run(load(min(64, requests), concurrency))  # warm up
        return asyncio.run(load(requests, concurrency))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_client")
    p.add_argument("--bundle", help="bundle file to benchmark (default: train or build one)")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--requests", type=int, default=480)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="client", help="result file stem: <out>/<name>.md, .json")
    p.add_argument("--note", default="", help="a sentence for the report (how it was run)")
    args = p.parse_args(argv)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, source = get_bundle(args.bundle, work)
        bundle = decode_bundle(data)
        bundle_path = work / "bench.siq"
        bundle_path.write_bytes(data)
        dataset = bundle.manifest.get("provenance", {}).get("config", {}).get("dataset")
        # the benchmark's images, then as many others to calibrate the int8 peers on
        everything = load_images(2 * args.images, dataset)
        images = everything[: args.images]
        spec = bundle.manifest["input"]["preprocess"]
        xs = np.stack([preprocess(decode_image(b), spec) for b in everything])  # (N, C, H, W)
        x, calibration = xs[: args.images], xs[args.images :]
        if len(calibration) < 32:  # a small image folder: calibrate on what there is
            calibration = xs
        engine = bench_engine(bundle, x, calibration, work)
        http = bench_http(bundle_path, work, images, args.requests, args.concurrency)
    m = bundle.manifest
    result = {
        "bundle": {
            "id": bundle.id,
            "source": source,
            "bytes": len(data),
            "weight_bits": m["weight_bits"],
            "activation_bits": m["activation_bits"],
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "note": f"Load average {load[0]:.1f} (1 min) on {os.cpu_count()} CPUs when it started "
        f"and {os.getloadavg()[0]:.1f} when it ended: "
        # the conditions as the caller states them (--note); else a guess from the load,
        # which this benchmark's own two-thread cells raise too
        + (
            args.note
            if args.note
            else "the machine was shared with other work while this ran, so absolute figures "
            "are low and noisy; the ratios come from interleaved rounds."
            if max(load[0], os.getloadavg()[0]) > 1.5
            else "a quiet machine; its speed still drifts, hence the interleaved rounds."
        ),
        "engine": engine,
        "http": http,
    }
    write_report(result, args.out, args.name)
    print((args.out / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
