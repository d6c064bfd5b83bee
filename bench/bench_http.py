"""HTTP benchmark: POST /recognize of a real `python -m client` process against the ceiling of
its stack, a bare FastAPI route that only reads the uploaded file (bench/bare_upload.py), on the
same uvicorn (one worker process), with the same load generator (bench_client.http_load: asyncio
streams, pre-encoded multipart requests, keep-alive), in one run; and, for the MNIST PNGs, against
the service a user would write in thirty lines (bench/peer_service.py: FastAPI, Pillow, ONNX
Runtime int8 of the same network), whose labels must agree with /recognize's on the images sent.

    python -m bench.bench_http [--digit-bundle FILE] [--photo-bundle FILE] [--rounds 9]
                               [--requests 400] [--concurrency 16] [--workers 1,2]
                               [--inference-processes N] [--no-peer]

Two image kinds, each against the network it is made for: MNIST-size PNGs (28x28 test digits)
with a digit bundle, and 300x300 JPEG photos (office10 test photos, centre square resized) with
a photo bundle; and the JPEGs once more with the digit bundle, which keeps a photo's upload and
decoding but not the photo network's compute. Rounds are interleaved (bare, client, client, bare, ...; the order flips every
round) because this machine's speed drifts; each round gives one ratio client / bare per kind,
and the table quotes the median of those ratios and the median req/s. `--workers 1,2` also
measures the client with SIQ_WORKERS=2 beside SIQ_WORKERS=1.

Writes bench/results/http.json and its own section of bench/results/client.md (between the
`<!-- bench_http -->` markers; bench_client writes the rest of that file).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_client import RESULTS, get_bundle, http_load, infer_request, load_images
from bench.report import default_data_dir
from bench.sections import replace_section
from scripts.processes import ServiceProcess, start_service
from shared.bundle import decode_bundle

__all__ = ["main", "photo_jpegs", "peer_model", "measure", "section", "SECTION"]

SECTION = "bench_http"  # its section of client.md, which bench_client keeps (bench/sections.py)
PEER = "the thirty-line service (FastAPI, Pillow, ONNX Runtime int8; bench/peer_service.py)"


def photo_jpegs(count: int, side: int = 300, quality: int = 90) -> list[bytes]:
    """JPEGs of `side` x `side`: office10 test photos (class folders in turn), each centre
    square resized; [] when office10 is not there."""
    from PIL import Image

    folder = default_data_dir() / "office10" / "test"
    if not folder.is_dir():
        return []
    classes = [sorted(p for p in c.iterdir() if p.is_file()) for c in sorted(folder.iterdir())]
    files = [f for group in zip(*classes, strict=False) for f in group][:count]
    out = []
    for f in files:
        with Image.open(f) as image:
            rgb = image.convert("RGB")
        w, h = rgb.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        square = rgb.crop(box).resize((side, side), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        square.save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def photo_bundle(path: str | None, work: Path) -> tuple[bytes, str]:
    """A photo bundle: the file given, else a quick office10 pipeline run (speed does not
    depend on accuracy)."""
    if path:
        return get_bundle(path, work)
    from server.params import JobParams
    from server.training.pipeline import run_pipeline

    config = JobParams(
        dataset="office10",
        activation_bits=5,
        epochs=1,
        retrain_epochs=0.2,
        max_iterations=1,
        seed=0,
        train_limit=300,
    )
    result = run_pipeline(config, default_data_dir(), work / "photo")
    return Path(result.bundle_path).read_bytes(), (
        "run_pipeline(office10, 300 photos, 1 epoch, 1 SIQ iteration)"
    )


def peer_model(bundle_data: bytes, work: Path) -> Path:
    """The thirty-line service's model: the bundle's network with dequantised weights, exported
    to ONNX float32 and statically quantised to int8 QDQ by ONNX Runtime (bench/peers.py),
    calibrated on 256 MNIST test PNGs after the 64 the benchmark sends."""
    from bench.bench_client import float_model
    from bench.peers import export_float_onnx, quantize_qdq
    from shared.image import decode_image, preprocess

    bundle = decode_bundle(bundle_data)
    spec = bundle.manifest["input"]["preprocess"]
    images = load_images(64 + 256)[64:]
    calibration = np.stack([preprocess(decode_image(b), spec) for b in images])
    float_path = export_float_onnx(
        float_model(bundle), tuple(calibration.shape[1:]), work / "peer_float.onnx"
    )
    return quantize_qdq(float_path, calibration, work / "peer_int8.onnx")


def answered_labels(service: ServiceProcess, images: list[bytes]) -> list[int]:
    """The label a service's POST /recognize gives each image, one request each: the client's
    answer (`results[0].label`) or the thirty-line service's (`label`)."""
    import httpx

    labels = []
    with httpx.Client(base_url=f"http://{service.host}:{service.port}", timeout=30) as http:
        for image in images:
            answer = http.post("/recognize", files={"file": ("image", image)})
            answer.raise_for_status()
            body = answer.json()
            labels.append(int(body["results"][0]["label"] if "results" in body else body["label"]))
    return labels


def cpu_seconds(pid: int) -> float:
    """CPU time that process `pid` and its children (worker processes) have used so far, all
    threads, from /proc/.../schedstat (nanoseconds); 0.0 where /proc has no such files.
    Unlike req/s, CPU time per request hardly moves when other work shares the cores."""
    pids = [pid]
    try:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:  # ppid
                pids.append(int(stat.parent.name))
    except OSError:
        return 0.0
    total = 0
    for p in pids:
        for sched in Path(f"/proc/{p}/task").glob("*/schedstat"):
            try:
                total += int(sched.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIQ_")}
    env.update(settings)
    return env


def _start(
    stack: ExitStack, module: str, work: Path, name: str, *args: str, **settings: str
) -> ServiceProcess:
    """`python -m module --log-level warning *args` with the SIQ_* `settings`, stopped with
    `stack`."""
    log = work / f"{name}.log"
    args = ("--log-level", "warning", *args)
    service = start_service(module, env=_env(**settings), log_path=log, args=args)
    stack.enter_context(service)
    return service


def measure(
    kinds: dict[str, tuple[list[bytes], Path, str | None]],
    work: Path,
    *,
    rounds: int,
    requests: int,
    concurrency: int,
    workers: tuple[int, ...] = (1,),
    processes: int = 0,
    peers: dict[str, tuple[Path, Path]] | None = None,
) -> dict[str, Any]:
    """kinds: name -> (encoded images, bundle file, None for /recognize or the model name to
    send them to /v2/models/{model}/infer as tritonclient does). Per kind, the bare route
    (the same images uploaded) and the client
    with each worker count (and, with `processes`, one worker with that many inference
    processes: `client_w1_p{N}`), in interleaved rounds; req/s, p50, p99, per-round ratios.
    peers: kind -> (int8 ONNX model, bundle file) of a thirty-line service (`peer`) measured in
    the same rounds; each client's row then has its ratio to the peer too, and the peer's row
    the share of images on which its label agrees with the first client's."""
    with ExitStack() as stack:
        bare = _start(stack, "bench.bare_upload", work, "bare")
        targets: dict[str, list[tuple[str, ServiceProcess]]] = {}
        # (label, log and state name, settings) of each client measured against the bare route
        clients = [(f"client_w{n}", str(n), {"SIQ_WORKERS": str(n)}) for n in workers]
        if processes:
            settings = {"SIQ_INFERENCE_PROCESSES": str(processes)}
            clients.append((f"client_w1_p{processes}", f"p{processes}", settings))
        for kind, (_, bundle, _) in kinds.items():
            targets[kind] = [("bare", bare)]
            for label, name, settings in clients:
                client = _start(
                    stack,
                    "client",
                    work,
                    f"client-{kind}-{name}",
                    SIQ_BUNDLE=str(bundle),
                    SIQ_STATE_DIR=str(work / f"state-{kind}-{name}"),
                    **settings,
                )
                targets[kind].append((label, client))
        for kind, (model, bundle) in (peers or {}).items():
            args = ("--model", str(model), "--bundle", str(bundle))
            peer = _start(stack, "bench.peer_service", work, f"peer-{kind}", *args)
            targets[kind].append(("peer", peer))
        bare.wait_ready("/healthz", timeout=60)
        for kind in targets:
            for who, service in targets[kind][1:]:
                service.wait_ready("/healthz" if who == "peer" else "/readyz", timeout=120)
        agreement = {}
        for kind in peers or {}:
            images, services = kinds[kind][0], dict(targets[kind])
            theirs = answered_labels(services["peer"], images)
            ours = answered_labels(targets[kind][1][1], images)
            agreement[kind] = float(np.mean([a == b for a, b in zip(theirs, ours, strict=True)]))

        def run(service: ServiceProcess, kind: str, count: int) -> dict:
            images, _, model = kinds[kind]
            payloads = None
            if model is not None and service is not bare:
                payloads = [infer_request(service.host, service.port, model, i) for i in images]
            before = cpu_seconds(service.proc.pid)
            load = http_load(
                service.host, service.port, images, count, concurrency, payloads=payloads
            )
            out = asyncio.run(load)
            out["server_cpu_ms_per_request"] = (
                (cpu_seconds(service.proc.pid) - before) / count * 1e3
            )
            return out

        for kind in kinds:  # warm up: plans, caches, connections
            for _, service in targets[kind]:
                run(service, kind, min(64, requests))
        samples: dict[str, dict[str, list[dict]]] = {
            kind: {who: [] for who, _ in targets[kind]} for kind in kinds
        }
        for r in range(rounds):
            order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
            for kind in order:
                pairs = targets[kind] if r % 2 == 0 else list(reversed(targets[kind]))
                for who, service in pairs:
                    samples[kind][who].append(run(service, kind, requests))
    out: dict[str, Any] = {}
    for kind, by_who in samples.items():
        bare_rps = [s["requests_per_s"] for s in by_who["bare"]]
        row: dict[str, Any] = {"images": len(kinds[kind][0])}
        row["image_bytes_mean"] = float(np.mean([len(b) for b in kinds[kind][0]]))
        for who, runs in by_who.items():
            rps = [s["requests_per_s"] for s in runs]
            row[who] = {
                "requests_per_s": float(np.median(rps)),
                "round_requests_per_s": rps,
                "p50_ms": float(np.median([s["p50_ms"] for s in runs])),
                "p99_ms": float(np.median([s["p99_ms"] for s in runs])),
                "errors": sum(s["errors"] for s in runs),
                "server_cpu_ms_per_request": float(
                    np.median([s["server_cpu_ms_per_request"] for s in runs])
                ),
            }
            if who != "bare":
                ratios = [c / b for c, b in zip(rps, bare_rps, strict=True)]
                row[who]["ratio_to_bare"] = float(np.median(ratios))
                row[who]["round_ratios"] = ratios
                cpu = [
                    b["server_cpu_ms_per_request"] / c["server_cpu_ms_per_request"]
                    for c, b in zip(runs, by_who["bare"], strict=True)
                    if c["server_cpu_ms_per_request"] > 0
                ]
                row[who]["cpu_ratio_to_bare"] = float(np.median(cpu)) if cpu else None
        if "peer" in by_who:
            peer_rps = [s["requests_per_s"] for s in by_who["peer"]]
            row["peer"]["label_agreement"] = agreement[kind]
            for who, runs in by_who.items():
                if who.startswith("client"):
                    ratios = [s["requests_per_s"] / p for s, p in zip(runs, peer_rps, strict=True)]
                    row[who]["ratio_to_peer"] = float(np.median(ratios))
                    row[who]["round_ratios_to_peer"] = ratios
        out[kind] = row
    return {
        "rounds": rounds,
        "requests_per_round": requests,
        "concurrency": concurrency,
        "workers": list(workers),
        "processes": processes,
        "kinds": out,
    }


def section(result: dict[str, Any]) -> str:
    """The markdown section of client.md for a `measure` result (with bundle notes)."""
    workers = result["workers"]
    lines = [
        "## HTTP: /recognize against a bare FastAPI upload route",
        "",
        f"Same uvicorn (one worker process unless said), same load generator ({result['load']}), "
        f"{result['concurrency']} keep-alive connections, one image per request, "
        f"{result['rounds']} interleaved rounds of {result['requests_per_round']} requests per "
        "server; req/s and latencies are medians over rounds, the ratio is the median of "
        "each round's client / bare. The load generator runs on the same cores. A row sent "
        "to /v2/models/.../infer measures that route in the /recognize columns (one image "
        "as a binary BYTES input, label and probabilities asked for, as tritonclient sends "
        "it), against the bare route with the same images uploaded. "
        f"Machine: {result['machine']}. {result['note']}",
        "",
        "| image | recognition runs | bare FastAPI req/s | /recognize req/s "
        "| **/recognize / bare** "
        "| ratio range over rounds | server CPU ms per request, bare / /recognize "
        "| CPU ratio bare / /recognize | /recognize p50 / p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    processes = result.get("processes", 0)
    variants = [("client_w1", "in the server process")]
    if processes:
        plural = "es" * (processes > 1)
        variants.append((f"client_w1_p{processes}", f"{processes} inference process{plural}"))
    for kind, row in result["kinds"].items():
        for who, where in variants + [("peer", PEER)] * ("peer" in row):
            c, b = row[who], row["bare"]
            cpu = c["cpu_ratio_to_bare"]
            lines.append(
                f"| {result['labels'][kind]} | {where} | "
                f"{b['requests_per_s']:.0f} | {c['requests_per_s']:.0f} | "
                f"**{c['ratio_to_bare']:.2f}** | {min(c['round_ratios']):.2f}-"
                f"{max(c['round_ratios']):.2f} | {b['server_cpu_ms_per_request']:.3f} / "
                f"{c['server_cpu_ms_per_request']:.3f} | {'-' if cpu is None else f'{cpu:.2f}'} | "
                f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f} | {c['errors'] + b['errors']} |"
            )
    lines += [""] + [
        f"Bundle for {result['labels'][kind]}: {result['bundles'][kind]}."
        for kind in result["kinds"]
    ]
    lines += peer_lines(result, variants)
    if len(workers) > 1:
        lines += [
            "",
            f"Worker processes (`SIQ_WORKERS`), {os.cpu_count()} cores, same rounds:",
            "",
            "| image | "
            + " | ".join(f"{n} worker{'s' * (n > 1)} req/s" for n in workers)
            + f" | {workers[-1]} / {workers[0]} |",
            "|---|" + "---|" * (len(workers) + 1),
        ]
        for kind, row in result["kinds"].items():
            rps = [row[f"client_w{n}"]["requests_per_s"] for n in workers]
            first = row[f"client_w{workers[0]}"]["round_requests_per_s"]
            last = row[f"client_w{workers[-1]}"]["round_requests_per_s"]
            gain = float(np.median([a / b for a, b in zip(last, first, strict=True)]))
            lines.append(
                f"| {result['labels'][kind]} | "
                + " | ".join(f"{v:.0f}" for v in rps)
                + f" | {gain:.2f}x |"
            )
    lines += [
        "",
        "Where the time went (py-spy of the client under this load, before and after): "
        "bench/results/http_profile.md.",
    ]
    return "\n".join(lines) + "\n"


def peer_lines(result: dict[str, Any], variants: list[tuple[str, str]]) -> list[str]:
    """The table of /recognize against the thirty-line service, in the same rounds ([] when
    it was not measured)."""
    kinds = {kind: row for kind, row in result["kinds"].items() if "peer" in row}
    if not kinds:
        return []
    lines = [
        "",
        f"/recognize against {PEER}: the bundle's network with dequantised weights, exported "
        "to ONNX and statically quantised to int8 QDQ by onnxruntime.quantization (calibrated "
        "on other MNIST test digits), the bundle's preprocessing through shared.image, one "
        "ONNX Runtime thread, `async def` route, one uvicorn worker; the ratio is the median "
        "of each round's /recognize / thirty-line.",
        "",
        "| image | recognition runs | thirty-line req/s | /recognize req/s "
        "| **/recognize / thirty-line** | ratio range over rounds | labels agree |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, row in kinds.items():
        peer = row["peer"]
        for who, where in variants:
            c = row[who]
            lines.append(
                f"| {result['labels'][kind]} | {where} | {peer['requests_per_s']:.0f} | "
                f"{c['requests_per_s']:.0f} | **{c['ratio_to_peer']:.2f}** | "
                f"{min(c['round_ratios_to_peer']):.2f}-{max(c['round_ratios_to_peer']):.2f} | "
                f"{peer['label_agreement']:.1%} |"
            )
    return lines


def disagreements(result: dict[str, Any], minimum: float) -> list[str]:
    """One line per image kind whose thirty-line service agrees with /recognize on fewer than
    `minimum` of the images sent: then the two do not run the same network."""
    return [
        f"{result['labels'][kind]}: the thirty-line service's labels agree with /recognize's "
        f"on {row['peer']['label_agreement']:.1%} of the images, under {minimum:.0%}"
        for kind, row in result["kinds"].items()
        if "peer" in row and row["peer"]["label_agreement"] < minimum
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_http")
    p.add_argument("--digit-bundle", help="digit bundle file (default: a quick MNIST run)")
    p.add_argument("--photo-bundle", help="photo bundle file (default: a quick office10 run)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--workers", default="1", help="worker counts to compare, e.g. 1,2")
    p.add_argument(
        "--inference-processes",
        type=int,
        default=0,
        help="also measure one worker with this many SIQ_INFERENCE_PROCESSES",
    )
    p.add_argument(
        "--no-peer", action="store_true", help="leave out the thirty-line service (no torch)"
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=0.85,
        help="least share of images on which the thirty-line service's labels must agree with "
        "/recognize's (its float/int8 rounding differs from the integer contract's)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--note", default="The machine was shared with other work while measuring.")
    args = p.parse_args(argv)
    workers = tuple(int(n) for n in args.workers.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        kinds: dict[str, tuple[list[bytes], Path, str | None]] = {}
        bundles, labels = {}, {}
        data, source = get_bundle(args.digit_bundle, work)
        (work / "digit.siq").write_bytes(data)
        kinds["png"] = (load_images(64), work / "digit.siq", None)
        bundles["png"], labels["png"] = source, "MNIST digit, 28x28 PNG"
        peers = {} if args.no_peer else {"png": (peer_model(data, work), work / "digit.siq")}
        # the same PNGs as the Open Inference Protocol's binary BYTES input (tritonclient's)
        model = decode_bundle(data).dataset or "siq"
        kinds["png_v2"] = (kinds["png"][0], work / "digit.siq", model)
        bundles["png_v2"] = source
        labels["png_v2"] = f"the same PNGs to /v2/models/{model}/infer"
        photos = photo_jpegs(64)
        if photos:
            data, source = photo_bundle(args.photo_bundle, work)
            (work / "photo.siq").write_bytes(data)
            kinds["jpeg"] = (photos, work / "photo.siq", None)
            bundles["jpeg"], labels["jpeg"] = source, "office10 photo, 300x300 JPEG"
            # the same photos through the digit network: the upload and decoding cost of a
            # photo without the photo network's compute
            kinds["jpeg_digit"] = (photos, work / "digit.siq", None)
            bundles["jpeg_digit"] = bundles["png"]
            labels["jpeg_digit"] = "the same JPEGs, digit bundle"
        result = measure(
            kinds,
            work,
            rounds=args.rounds,
            requests=args.requests,
            concurrency=args.concurrency,
            workers=workers,
            processes=args.inference_processes,
            peers=peers,
        )
    result.update(
        bundles=bundles,
        labels=labels,
        load="asyncio streams, pre-encoded multipart (or inference) requests, keep-alive",
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        note=args.note,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "http.json").write_text(json.dumps(result, indent=2) + "\n")
    text = section(result)
    replace_section(args.out / "client.md", SECTION, text)
    print(text)
    problems = disagreements(result, args.min_agreement)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
