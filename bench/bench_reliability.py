"""Reliability benchmark (issues 11 and 28): what a hostile or heavy caller costs the services.

    python -m bench.bench_reliability [--requests 10000] [--concurrency 32] [--seconds 10]
    python -m bench.bench_reliability --client-src DIR --only attack   # another checkout

1. The amplification attack of issue 11, item 1: as many concurrent callers as the client has
   inference workers each send, back to back, a 4.5 MB request of 64 PNGs of 4000x4000 RGBA;
   then the same with requests right at the pixel budget (one 4000x4000 RGBA digit each), the
   most an accepted request can cost. Meanwhile an ordinary caller sends one digit every
   50 ms. Reported: the client's peak RSS (sampled from /proc every 50 ms, and the kernel's
   VmHWM), its RSS 2 s after the attack, and the ordinary requests' latency (goals: peak RSS
   under 500 MB, an ordinary request waits under 1 s).
2. 10,000 requests at concurrency 32 (bench.bench_client's lean load generator, one digit
   PNG each): status counts, transport errors, p50, p99, with the default queue bound and
   with a small SIQ_MAX_QUEUED_REQUESTS that must shed (503 + Retry-After).
3. The server's /healthz while a 100 MB body is refused: `python -m server` (fake pipeline),
   one caller polling /healthz every 50 ms before and during a POST /quantize-jobs that
   announces 100 MB (Content-Length) and streams it unless answered within 1 s (the server
   refuses bodies over SIQ_MAX_BODY_BYTES from Content-Length). `--only server` measures just this row and keeps the others of an
   existing report.

Issue 28's rows (each `--only NAME` measures one and keeps the other rows of an existing report):

4. `slow-uploads` (item 1): `--tricklers` (70) connections each announce a 100,000-byte
   /recognize body and send one byte every `--trickle-interval` s (2), reopening when
   answered or closed, while an ordinary caller sends one digit every 0.25 s: the share of
   ordinary requests answered 200 within 2 s (target >= 99 %).
5. `server-trickle` (item 2): `--server-tricklers` (8) connections trickle a 10,000-byte
   POST /quantize-jobs body, one byte every `--trickle-interval` s: what they are answered and
   after how long (goal: 408 at SIQ_BODY_TIMEOUT_S, `--server-body-timeout` sets it), and
   /healthz meanwhile.
6. `oip-bomb` (item 4): `--bomb-callers` (4) callers send, back to back, a 15 KB gzip of a
   10,000-image FP32 JSON tensor to /v2 infer (one declaring its 10,000 images, one declaring
   one image): the client's peak RSS, its /healthz latency and ordinary /recognize meanwhile.
7. `job-json` (item 5): `--job-callers` (8) callers send, back to back, a 1 MiB
   POST /quantize-jobs body whose `bits_per_layer` has as many entries as fit: the server's
   peak RSS and /healthz latency meanwhile.

`--client-src DIR` runs `python -m client` from another checkout (e.g. `git archive main`),
for a before/after comparison on the same machine. Writes bench/results/reliability.json
and reliability.md (or `--name`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.attacks import Prober, Trickle, flood, job_json_body, oip_bombs, trickler
from bench.bench_client import http_load, load_images
from bench.report import utc_now
from scripts.processes import ServiceProcess, pick_port

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SERVER_ROW_MARK = "<!-- server row: /healthz while a 100 MB body is refused (issue 11, item 3) -->"
# the report's rows by key; `--only` replaces one and keeps the others (and the header)
ROWS = ("attack", "load", "server", "slow_uploads", "server_trickle", "oip_bomb", "job_json")
WITHIN_MS = 2000.0  # an ordinary request counts as served when answered 200 within this


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def attack_bodies(digit_png: bytes) -> dict[str, list[tuple[str, bytes]]]:
    """The issue's 4.5 MB request (64 blank 4000x4000 RGBA PNGs) and an in-budget one (one
    4000x4000 RGBA digit: 16 M pixels, the default SIQ_MAX_REQUEST_PIXELS)."""
    blank = _png(Image.new("RGBA", (4000, 4000), (0, 0, 0, 0)))
    big_digit = _png(Image.open(io.BytesIO(digit_png)).convert("RGBA").resize((4000, 4000)))
    return {
        "64 x 4000x4000 RGBA": [("files", blank)] * 64,
        "1 x 4000x4000 RGBA": [("file", big_digit)],
    }


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, from /proc (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


@contextlib.contextmanager
def client_process(
    bundle: Path, work: Path, src: Path, **settings: str
) -> Iterator[tuple[subprocess.Popen, int]]:
    """`python -m client` from checkout `src` serving `bundle`, ready; stopped on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIQ_")}
    port = pick_port()
    env.update(
        SIQ_BUNDLE=str(bundle), SIQ_STATE_DIR=str(work / f"state-{port}"), PYTHONPATH=str(src)
    )
    env.update({f"SIQ_{k.upper()}": v for k, v in settings.items()})
    log = work / f"client-{port}.log"
    args = ["--log-level", "warning"]
    with ServiceProcess("client", port=port, env=env, log_path=log, args=args, cwd=src) as client:
        client.wait_ready("/readyz", timeout=60)
        yield client.proc, port


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.peak = max(self.peak, rss_mb(self.pid)[0])
            time.sleep(0.05)


async def _attack(
    url: str, body: list[tuple[str, bytes]], attackers: int, seconds: float, digit: bytes
) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    attack_s: list[float] = []
    ordinary_ms: list[float] = []
    ordinary_status: dict[str, int] = {}
    end = time.monotonic() + seconds
    attacking = [attackers]  # the ordinary caller goes on until the last attack is answered
    files = [(field, (f"{i}.png", data, "image/png")) for i, (field, data) in enumerate(body)]

    async def attacker(http: httpx.AsyncClient) -> None:
        while time.monotonic() < end:
            t = time.perf_counter()
            try:
                code = str((await http.post(f"{url}/recognize", files=files)).status_code)
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            attack_s.append(time.perf_counter() - t)
            statuses[code] = statuses.get(code, 0) + 1
        attacking[0] -= 1

    async def ordinary(http: httpx.AsyncClient) -> None:
        await asyncio.sleep(0.2)  # let the attack start first
        while attacking[0] > 0:
            t = time.perf_counter()
            try:
                code = str(
                    (
                        await http.post(
                            f"{url}/recognize", files={"file": ("d.png", digit, "image/png")}
                        )
                    ).status_code
                )
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            ordinary_ms.append((time.perf_counter() - t) * 1e3)
            ordinary_status[code] = ordinary_status.get(code, 0) + 1
            await asyncio.sleep(0.05)

    timeout = httpx.Timeout(300.0)
    async with httpx.AsyncClient(timeout=timeout) as a, httpx.AsyncClient(timeout=timeout) as o:
        await asyncio.gather(*(attacker(a) for _ in range(attackers)), ordinary(o))
    ms = np.array(ordinary_ms or [float("nan")])
    return {
        "attack_requests": sum(statuses.values()),
        "attack_statuses": statuses,
        "attack_seconds_mean": float(np.mean(attack_s)) if attack_s else None,
        "ordinary_requests": len(ordinary_ms),
        "ordinary_statuses": ordinary_status,
        "ordinary_p50_ms": float(np.percentile(ms, 50)),
        "ordinary_p99_ms": float(np.percentile(ms, 99)),
        "ordinary_max_ms": float(ms.max()),
    }


def bench_attack(
    bundle: Path, work: Path, src: Path, digit: bytes, seconds: float, attackers: int
) -> list[dict[str, Any]]:
    workers = attackers
    rows = []
    for name, body in attack_bodies(digit).items():
        with client_process(bundle, work, src) as (proc, port):
            sampler = RssSampler(proc.pid)
            sampler.start()
            base = rss_mb(proc.pid)[0]
            row = asyncio.run(_attack(f"http://127.0.0.1:{port}", body, workers, seconds, digit))
            time.sleep(2)
            sampler.stop.set()
            sampler.join()
            after, hwm = rss_mb(proc.pid)
            request_mb = sum(len(data) for _, data in body) / 1e6
            row.update(request=name, request_mb=round(request_mb, 2), attackers=workers,
                       rss_start_mb=base, rss_peak_mb=max(sampler.peak, hwm), rss_after_mb=after)  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def bench_load(
    bundle: Path,
    work: Path,
    src: Path,
    images: list[bytes],
    requests: int,
    concurrency: int,
    small_queue: int,
) -> list[dict[str, Any]]:
    rows = []
    for label, settings in (
        ("default queue bound", {}),
        (f"SIQ_MAX_QUEUED_REQUESTS={small_queue}", {"max_queued_requests": str(small_queue)}),
    ):
        with client_process(bundle, work, src, **settings) as (proc, port):
            asyncio.run(
                http_load("127.0.0.1", port, images, min(200, requests), concurrency)
            )  # warm up
            row = asyncio.run(http_load("127.0.0.1", port, images, requests, concurrency))
            row.update(setting=label, rss_peak_mb=rss_mb(proc.pid)[1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


async def _healthz_during(url: str, seconds: float, body_mb: int) -> dict[str, Any]:
    """/healthz latency for `seconds` alone, then while one caller sends a `body_mb` MB body."""
    phases: dict[str, list[float]] = {"alone": [], "during": []}
    attack: dict[str, Any] = {}
    phase = ["alone"]

    async def poll(http: httpx.AsyncClient, until: float) -> None:
        while time.monotonic() < until or phase[0] == "during" and not attack.get("done"):
            t = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                (await http.get(f"{url}/healthz")).raise_for_status()
                phases[phase[0]].append((time.perf_counter() - t) * 1e3)
            await asyncio.sleep(0.05)

    async def big_post() -> None:
        """Raw HTTP/1.1, so the answer is read while the body still streams (a server that
        refuses early answers and closes; an HTTP client would only see the broken pipe)."""
        t = time.perf_counter()
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /quantize-jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {body_mb << 20}\r\n\r\n".encode()
        )

        async def send() -> None:
            with contextlib.suppress(OSError):
                for _ in range(body_mb):
                    writer.write(b" " * (1 << 20))
                    await writer.drain()

        sender = None
        try:
            try:  # a guard that reads Content-Length answers before any body byte is sent
                line = await asyncio.wait_for(reader.readline(), 1.0)
            except TimeoutError:
                sender = asyncio.create_task(send())
                line = await asyncio.wait_for(reader.readline(), 120)
            attack["status"] = line.split()[1].decode() if line else "closed"
        except (OSError, TimeoutError) as exc:
            attack["status"] = type(exc).__name__
        attack["seconds"] = time.perf_counter() - t
        attack["done"] = True
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender
        writer.close()

    timeout = httpx.Timeout(120.0)
    async with httpx.AsyncClient(timeout=timeout) as h:
        await poll(h, time.monotonic() + seconds)
        phase[0] = "during"
        await asyncio.gather(poll(h, time.monotonic() + 1.0), big_post())
    row: dict[str, Any] = {"body_mb": body_mb, "attack_status": attack.get("status"),
                           "attack_seconds": attack.get("seconds")}  # fmt: skip
    for name, ms in phases.items():
        arr = np.array(ms or [float("nan")])
        row[f"healthz_{name}_n"] = len(ms)
        row[f"healthz_{name}_p50_ms"] = float(np.percentile(arr, 50))
        row[f"healthz_{name}_p99_ms"] = float(np.percentile(arr, 99))
        row[f"healthz_{name}_max_ms"] = float(arr.max())
    return row


@contextlib.contextmanager
def server_process(work: Path, **settings: str) -> Iterator[ServiceProcess]:
    """`python -m server` of this checkout (fake pipeline, its own state), ready; stopped on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIQ_")}
    port = pick_port()
    env.update(
        SIQ_STATE_DIR=str(work / f"server-state-{port}"),
        SIQ_PIPELINE="tests.server.fake_pipelines:succeed",
        PYTHONPATH=str(REPO),
    )
    env.update({f"SIQ_{k.upper()}": v for k, v in settings.items()})
    args = ["--log-level", "warning"]
    log = work / f"server-{port}.log"
    with ServiceProcess("server", port=port, env=env, log_path=log, args=args, cwd=REPO) as server:
        server.wait_ready("/healthz", timeout=60)
        yield server


def bench_server(work: Path, seconds: float, body_mb: int = 100) -> dict[str, Any]:
    with server_process(work) as server:
        row = asyncio.run(_healthz_during(server.url, seconds, body_mb))
        row["rss_peak_mb"] = rss_mb(server.proc.pid)[1]
    print(json.dumps(row), flush=True)
    return row


# --- issue 28 ------------------------------------------------------------------------------


def _recognize(url: str, digit: bytes) -> Any:
    return lambda http: http.post(f"{url}/recognize", files={"file": ("d.png", digit, "image/png")})


def _healthz(url: str) -> Any:
    return lambda http: http.get(f"{url}/healthz")


async def _under_attack(
    send: Any, callers: int, seconds: float, probes: list[Prober]
) -> dict[str, Any]:
    """`callers` back-to-back senders for `seconds` while `probes` run, until the last attack
    request is answered."""
    stop_attack, stop_probes = asyncio.Event(), asyncio.Event()
    watching = [asyncio.create_task(p.run(stop_probes)) for p in probes]
    attack = asyncio.create_task(flood(send, callers, stop_attack))
    await asyncio.sleep(seconds)
    stop_attack.set()
    row = await attack
    stop_probes.set()
    await asyncio.gather(*watching)
    return row


async def _slow_uploads(
    port: int, digit: bytes, seconds: float, tricklers: int, interval_s: float
) -> dict[str, Any]:
    url, stop, seen = f"http://127.0.0.1:{port}", asyncio.Event(), Trickle()
    head = (
        b"POST /recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    slow = [
        asyncio.create_task(trickler("127.0.0.1", port, head, stop, seen, interval_s=interval_s))
        for _ in range(tricklers)
    ]
    await asyncio.sleep(min(interval_s, seconds / 4))  # the tricklers first, as in the issue
    ordinary = Prober(_recognize(url, digit), interval_s=0.25, timeout_s=10.0)
    probing = asyncio.create_task(ordinary.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(probing, *slow)
    return {**seen.summary(), **ordinary.summary("ordinary", WITHIN_MS)}


def bench_slow_uploads(
    bundle: Path, work: Path, src: Path, digit: bytes, seconds: float, tricklers: int,
    interval_s: float,
) -> dict[str, Any]:  # fmt: skip
    with client_process(bundle, work, src) as (proc, port):
        row = asyncio.run(_slow_uploads(port, digit, seconds, tricklers, interval_s))
        row["rss_peak_mb"] = rss_mb(proc.pid)[1]
    row.update(tricklers=tricklers, interval_s=interval_s, seconds=seconds)
    print(json.dumps(row), flush=True)
    return row


async def _server_trickle(
    server: ServiceProcess, tricklers: int, interval_s: float, cap_s: float
) -> dict[str, Any]:
    stop, seen = asyncio.Event(), Trickle()
    head = (
        b"POST /quantize-jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        b"\r\nContent-Length: 10000\r\n\r\n"
    )
    health = Prober(_healthz(server.url), interval_s=0.05)
    probing = asyncio.create_task(health.run(stop))
    slow = [
        trickler("127.0.0.1", server.port, head, stop, seen, interval_s=interval_s, reopen=False)
        for _ in range(tricklers)
    ]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*slow), cap_s)
    stop.set()
    await probing
    unanswered = tricklers - sum(seen.statuses.values())
    if unanswered:
        seen.statuses[f"none within {cap_s:g} s"] = unanswered
    return {**seen.summary(), **health.summary("healthz")}


def bench_server_trickle(
    work: Path, tricklers: int, interval_s: float, body_timeout_s: float | None
) -> dict[str, Any]:
    settings = {} if body_timeout_s is None else {"body_timeout_s": str(body_timeout_s)}
    cap_s = (body_timeout_s or 30.0) + 30.0
    with server_process(work, **settings) as server:
        row = asyncio.run(_server_trickle(server, tricklers, interval_s, cap_s))
        row["rss_peak_mb"] = rss_mb(server.proc.pid)[1]
    row.update(tricklers=tricklers, interval_s=interval_s, body_timeout_s=body_timeout_s)
    print(json.dumps(row), flush=True)
    return row


def bench_oip_bomb(
    bundle: Path, work: Path, src: Path, digit: bytes, seconds: float, callers: int
) -> list[dict[str, Any]]:
    from shared.bundle import decode_bundle

    model = decode_bundle(bundle.read_bytes()).dataset or "siq"
    rows = []
    for name, body in oip_bombs().items():
        with client_process(bundle, work, src) as (proc, port):
            url = f"http://127.0.0.1:{port}"

            def send(http: httpx.AsyncClient, url: str = url, body: bytes = body) -> Any:
                headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
                return http.post(f"{url}/v2/models/{model}/infer", content=body, headers=headers)

            health = Prober(_healthz(url), interval_s=0.05)
            ordinary = Prober(_recognize(url, digit), interval_s=0.05)
            sampler = RssSampler(proc.pid)
            sampler.start()
            row = asyncio.run(_under_attack(send, callers, seconds, [health, ordinary]))
            sampler.stop.set()
            sampler.join()
            row.update(health.summary("healthz"), **ordinary.summary("ordinary", WITHIN_MS))
            row.update(body=name, body_kb=round(len(body) / 1e3, 1), callers=callers,
                       rss_peak_mb=max(sampler.peak, rss_mb(proc.pid)[1]))  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_job_json(work: Path, seconds: float, callers: int) -> dict[str, Any]:
    body = job_json_body()
    with server_process(work) as server:

        def send(http: httpx.AsyncClient) -> Any:
            headers = {"Content-Type": "application/json"}
            return http.post(f"{server.url}/quantize-jobs", content=body, headers=headers)

        health = Prober(_healthz(server.url), interval_s=0.05)
        sampler = RssSampler(server.proc.pid)
        sampler.start()
        row = asyncio.run(_under_attack(send, callers, seconds, [health]))
        sampler.stop.set()
        sampler.join()
        row.update(health.summary("healthz"))
        row.update(body_bytes=len(body), entries=body.count(b":4"), callers=callers,
                   rss_peak_mb=max(sampler.peak, rss_mb(server.proc.pid)[1]))  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def write_report(result: dict[str, Any], out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Reliability benchmark",
        "",
        f"Machine: {result['machine']}. {result['note']}",
        f"Client: `{result['client_src']}`, default settings unless a row says otherwise "
        f"({result['workers']} inference workers). Command: `{result['command']}`.",
        "",
    ]
    if result.get("attack"):
        lines += [
            "## Amplification attack on /recognize (issue 11, item 1)",
            "",
            f"{result['attackers']} callers send the request back to back "
            f"for {result['seconds']:.0f} s (each finishes the request it is in); an ordinary caller "
            "sends one MNIST digit every 50 ms until the last attack request is answered. "
            "Goals: peak RSS < 500 MB, an ordinary request waits < 1 s.",
            "",
            "| attack request | MB | attack answers | s per attack request | peak RSS MB | RSS after MB | ordinary p50 ms | ordinary p99 ms | ordinary max ms | ordinary answers |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in result["attack"]:
            mean = r["attack_seconds_mean"]
            lines.append(
                f"| {r['request']} | {r['request_mb']} | {_counts(r['attack_statuses'])} | "
                f"{mean:.3f} | {r['rss_peak_mb']:.0f} | {r['rss_after_mb']:.0f} | "
                f"{r['ordinary_p50_ms']:.1f} | {r['ordinary_p99_ms']:.1f} | {r['ordinary_max_ms']:.1f} | "
                f"{_counts(r['ordinary_statuses'])} |"
            )
        lines.append("")
    if result.get("load"):
        lines += [
            f"## {result['load'][0]['requests']:,} requests at concurrency {result['load'][0]['concurrency']} (issue 11, item 8)",
            "",
            "bench.bench_client's load generator (asyncio streams, keep-alive, one digit PNG a "
            "request, multipart), on the same cores as the client.",
            "",
            "| setting | statuses | transport errors | requests/s | p50 ms | p99 ms | peak RSS MB |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in result["load"]:
            lines.append(
                f"| {r['setting']} | {_counts(r['statuses'])} | {r['transport_errors']} | "
                f"{r['requests_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['rss_peak_mb']:.0f} |"
            )
        lines.append("")
    lines += [
        "## Server: /healthz while a 100 MB body is refused (issue 11, item 3)",
        "",
        SERVER_ROW_MARK,
    ]
    server = result.get("server")
    if server:
        lines += [
            f"`python -m server` (fake pipeline), default settings; one caller polls /healthz "
            f"every 50 ms, first alone for {server.get('seconds', result['seconds']):.0f} s, then "
            f"while another sends POST /quantize-jobs announcing {server['body_mb']} MB "
            "(Content-Length) and streaming it unless answered within 1 s. "
            f"Command: `{server.get('command', result['command'])}`"
            f"{', run ' + server['when'] if server.get('when') else ''}.",
            "",
            "| 100 MB body answered | in s | /healthz alone p50 / p99 / max ms (n) | /healthz during p50 / p99 / max ms (n) | server peak RSS MB |",
            "|---|---:|---|---|---:|",
            f"| {server['attack_status']} | {server['attack_seconds']:.2f} | "
            f"{server['healthz_alone_p50_ms']:.1f} / {server['healthz_alone_p99_ms']:.1f} / "
            f"{server['healthz_alone_max_ms']:.1f} ({server['healthz_alone_n']}) | "
            f"{server['healthz_during_p50_ms']:.1f} / {server['healthz_during_p99_ms']:.1f} / "
            f"{server['healthz_during_max_ms']:.1f} ({server['healthz_during_n']}) | "
            f"{server['rss_peak_mb']:.0f} |",
            "",
        ]
        if server.get("remark"):
            lines += [server["remark"], ""]
    else:
        lines += ["_Not measured yet: `--only server` fills this row._", ""]
    lines += _issue28_sections(result)
    (out / f"{name}.md").write_text("\n".join(lines))


def _ms3(row: dict[str, Any], prefix: str) -> str:
    return (
        f"{row[prefix + '_p50_ms']:.1f} / {row[prefix + '_p99_ms']:.1f} / "
        f"{row[prefix + '_max_ms']:.1f} ({row[prefix + '_n']})"
    )


def _ran(row: dict[str, Any]) -> str:
    return f"Command: `{row['command']}`, run {row['when']}. {row.get('note', '')}".strip()


_PENDING = "_Not measured yet: `python -m bench.bench_reliability --only {}` fills this section._"


def _issue28_sections(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, only, title in (
        ("slow_uploads", "slow-uploads", "Slow uploads against /recognize (issue 28, item 1)"),
        ("server_trickle", "server-trickle", "A body trickled to the server (issue 28, item 2)"),
        ("oip_bomb", "oip-bomb", "gzip bombs to /v2 infer (issue 28, item 4)"),
        ("job_json", "job-json", "Small JSON, expensive to validate (issue 28, item 5)"),
    ):
        if not result.get(key):
            lines += [f"## {title}", "", _PENDING.format(only), ""]
    if r := result.get("slow_uploads"):
        lines += [
            "## Slow uploads against /recognize (issue 28, item 1)",
            "",
            f"{r['tricklers']} connections each announce a 100,000-byte /recognize body and send "
            f"one byte every {r['interval_s']:g} s, reopening when answered or closed, for "
            f"{r['seconds']:g} s; meanwhile an ordinary caller sends one MNIST digit every 0.25 s. "
            f"Target: at least 99 % of the ordinary requests answered 200 within "
            f"{WITHIN_MS / 1e3:g} s. {_ran(r)}",
            "",
            "| ordinary answered 200 within 2 s | ordinary answers | ordinary p50 / p99 / max ms (n) | trickling connections | their answers | client peak RSS MB |",
            "|---:|---|---|---:|---|---:|",
            f"| {r['ordinary_ok_within_share']:.1%} | {_counts(r['ordinary_statuses'])} | "
            f"{_ms3(r, 'ordinary')} | {r['trickle_connections']} | "
            f"{_counts(r['trickle_statuses'])} | {r['rss_peak_mb']:.0f} |",
            "",
        ]
    if r := result.get("server_trickle"):
        timeout = r["body_timeout_s"]
        setting = "the default" if timeout is None else f"{timeout:g} s"
        lines += [
            "## A body trickled to the server (issue 28, item 2)",
            "",
            f"{r['tricklers']} connections each announce a 10,000-byte POST /quantize-jobs body "
            f"and send one byte every {r['interval_s']:g} s until answered; SIQ_BODY_TIMEOUT_S "
            f"{setting}. Goal: 408 at SIQ_BODY_TIMEOUT_S. {_ran(r)}",
            "",
            "| answers | answered after p50 / max s | /healthz p50 / p99 / max ms (n) | server peak RSS MB |",
            "|---|---|---|---:|",
            f"| {_counts(r['trickle_statuses'])} | {r['trickle_answered_p50_s']:.1f} / "
            f"{r['trickle_answered_max_s']:.1f} | {_ms3(r, 'healthz')} | {r['rss_peak_mb']:.0f} |",
            "",
        ]
    if rows := result.get("oip_bomb"):
        lines += [
            "## gzip bombs to /v2 infer (issue 28, item 4)",
            "",
            f"{rows[0]['callers']} callers send the body back to back for {rows[0]['seconds']:g} s "
            "(each finishes the request it is in): a gzip of a JSON FP32 `input` tensor of "
            "10,000 zero images; meanwhile one caller polls the client's /healthz every 50 ms and "
            f"another sends one MNIST digit to /recognize every 50 ms. {_ran(rows[0])}",
            "",
            "| body | KB | answers | s per request | client peak RSS MB | /healthz p50 / p99 / max ms (n) | ordinary p50 / p99 / max ms (n) | ordinary 200 within 2 s |",
            "|---|---:|---|---:|---:|---|---|---:|",
        ]
        for r in rows:
            mean = r["attack_seconds_mean"] or float("nan")
            lines.append(
                f"| {r['body']} | {r['body_kb']} | {_counts(r['attack_statuses'])} | {mean:.3f} | "
                f"{r['rss_peak_mb']:.0f} | {_ms3(r, 'healthz')} | {_ms3(r, 'ordinary')} | "
                f"{r['ordinary_ok_within_share']:.1%} |"
            )
        lines.append("")
    if r := result.get("job_json"):
        mean = r["attack_seconds_mean"] or float("nan")
        lines += [
            "## Small JSON, expensive to validate (issue 28, item 5)",
            "",
            f"{r['callers']} callers send, back to back for {r['seconds']:g} s, a "
            f"{r['body_bytes']:,}-byte POST /quantize-jobs body whose `bits_per_layer` has "
            f"{r['entries']:,} entries; one caller polls /healthz every 50 ms. {_ran(r)}",
            "",
            "| answers | s per request | server peak RSS MB | /healthz p50 / p99 / max ms (n) |",
            "|---|---:|---:|---|",
            f"| {_counts(r['attack_statuses'])} | {mean:.3f} | {r['rss_peak_mb']:.0f} | "
            f"{_ms3(r, 'healthz')} |",
            "",
        ]
    return lines


def _counts(statuses: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items())) or "none"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_reliability")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each attack")
    p.add_argument("--small-queue", type=int, default=4)
    p.add_argument("--attackers", type=int, default=os.cpu_count() or 1, help="default: CPUs")
    p.add_argument("--client-src", type=Path, default=REPO, help="checkout to run the client from")
    p.add_argument(
        "--only",
        choices=(
            "attack",
            "load",
            "server",
            "slow-uploads",
            "server-trickle",
            "oip-bomb",
            "job-json",
        ),
    )
    p.add_argument("--tricklers", type=int, default=70, help="slow-uploads: connections")
    p.add_argument("--trickle-interval", type=float, default=2.0, help="s between body bytes")
    p.add_argument("--server-tricklers", type=int, default=8)
    p.add_argument(
        "--server-body-timeout", type=float, help="SIQ_BODY_TIMEOUT_S for server-trickle"
    )
    p.add_argument("--bomb-callers", type=int, default=4)
    p.add_argument("--job-callers", type=int, default=8)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="reliability")
    args = p.parse_args(argv)
    from tests.factories import make_random_bundle  # the server's LeNet shape, no training

    src = args.client_src.resolve()
    images = load_images(64)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = work / "bench.siq"
        bundle.write_bytes(make_random_bundle(0))
        result: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "note": f"Load average {os.getloadavg()[0]:.1f} at the start on {os.cpu_count()} "
            "CPUs (other work on the machine raises it); figures drift with it.",
            "client_src": "this checkout" if src == REPO else str(src),
            "workers": os.cpu_count() or 1,
            "attackers": args.attackers,
            "seconds": args.seconds,
            "command": "python -m bench.bench_reliability "
            + " ".join(argv if argv is not None else sys.argv[1:]),
        }
        if args.only in (None, "attack"):
            result["attack"] = bench_attack(
                bundle, work, src, images[0], args.seconds, args.attackers
            )
        if args.only in (None, "load"):
            result["load"] = bench_load(
                bundle, work, src, images, args.requests, args.concurrency, args.small_queue
            )
        if args.only in (None, "server"):
            server = bench_server(work, min(args.seconds, 5.0))
            server.update(
                command=result["command"],
                seconds=min(args.seconds, 5.0),
                when=utc_now(),
                note=result["note"],
            )
            result["server"] = server
        stamp = {"command": result["command"], "when": utc_now(), "note": result["note"]}
        if args.only in (None, "slow-uploads"):
            result["slow_uploads"] = {
                **bench_slow_uploads(bundle, work, src, images[0], args.seconds, args.tricklers,
                                     args.trickle_interval),
                **stamp,
            }  # fmt: skip
        if args.only in (None, "server-trickle"):
            result["server_trickle"] = {
                **bench_server_trickle(
                    work, args.server_tricklers, args.trickle_interval, args.server_body_timeout
                ),
                **stamp,
            }
        if args.only in (None, "oip-bomb"):
            bombs = bench_oip_bomb(bundle, work, src, images[0], args.seconds, args.bomb_callers)
            result["oip_bomb"] = [{**r, **stamp, "seconds": args.seconds} for r in bombs]
        if args.only in (None, "job-json"):
            job = bench_job_json(work, args.seconds, args.job_callers)
            result["job_json"] = {**job, **stamp, "seconds": args.seconds}
    previous = args.out / f"{args.name}.json"
    if args.only is not None and previous.is_file():  # keep the last run's header, other rows
        measured = {k: v for k, v in result.items() if k in ROWS}
        result = {**json.loads(previous.read_text()), **measured}
    write_report(result, args.out, args.name)
    print((args.out / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
