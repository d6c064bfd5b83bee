"""The hostile callers of issue 28 and the probes that watch a service while they run, for
bench/bench_reliability.py: raw-socket body tricklers, back-to-back senders of a body, and a
prober that sends one ordinary request at a time and records its status and latency.

Everything here is asyncio on one event loop, so a run needs no threads but the RSS sampler.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

__all__ = [
    "Trickle",
    "trickler",
    "Prober",
    "flood",
    "latency_summary",
    "oip_bombs",
    "job_json_body",
]


@dataclass
class Trickle:
    """What the tricklers saw: answers by status, connections opened, seconds to an answer."""

    statuses: dict[str, int] = field(default_factory=dict)
    connections: int = 0
    answered_after_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        waits = np.array(self.answered_after_s or [float("nan")])
        return {
            "trickle_statuses": self.statuses,
            "trickle_connections": self.connections,
            "trickle_answered_p50_s": float(np.percentile(waits, 50)),
            "trickle_answered_max_s": float(waits.max()),
        }


async def trickler(
    host: str,
    port: int,
    head: bytes,
    stop: asyncio.Event,
    seen: Trickle,
    *,
    interval_s: float,
    reopen: bool = True,
) -> None:
    """Send the request head `head` (which announces a body), then one body byte every
    `interval_s` until the server answers or closes; then open a new connection and start
    again (`reopen`), until `stop` is set."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        seen.connections += 1
        started = time.monotonic()
        try:
            writer.write(head)
            await writer.drain()
            while not stop.is_set():
                try:
                    line = await asyncio.wait_for(reader.readline(), interval_s)
                except TimeoutError:
                    writer.write(b"0")
                    await writer.drain()
                    continue
                parts = line.split()
                status = parts[1].decode() if len(parts) > 1 else "closed"
                seen.statuses[status] = seen.statuses.get(status, 0) + 1
                seen.answered_after_s.append(time.monotonic() - started)
                break
        except OSError as exc:
            name = type(exc).__name__
            seen.statuses[name] = seen.statuses.get(name, 0) + 1
            seen.answered_after_s.append(time.monotonic() - started)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not reopen:
            return


class Prober:
    """One ordinary request at a time, `interval_s` apart, until stopped: each one's status
    (or transport error) and latency."""

    def __init__(
        self,
        send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
        interval_s: float,
        timeout_s: float = 30.0,
    ) -> None:
        self.send, self.interval_s, self.timeout_s = send, interval_s, timeout_s
        self.results: list[tuple[str, float]] = []

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as http:
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    code = str((await self.send(http)).status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                self.results.append((code, (time.perf_counter() - t) * 1e3))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)

    def summary(self, prefix: str, within_ms: float | None = None) -> dict[str, Any]:
        row = latency_summary(prefix, [ms for _, ms in self.results])
        statuses: dict[str, int] = {}
        for code, _ in self.results:
            statuses[code] = statuses.get(code, 0) + 1
        row[f"{prefix}_statuses"] = statuses
        if within_ms is not None:
            good = sum(code == "200" and ms <= within_ms for code, ms in self.results)
            row[f"{prefix}_ok_within_share"] = good / max(len(self.results), 1)
        return row


async def flood(
    send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
    callers: int,
    stop: asyncio.Event,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """`callers` concurrent callers, each sending back to back until `stop` (finishing the
    request it is in): their answers by status and the seconds each request took."""
    statuses: dict[str, int] = {}
    seconds: list[float] = []

    async def caller(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                code = str((await send(http)).status_code)
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            seconds.append(time.perf_counter() - t)
            statuses[code] = statuses.get(code, 0) + 1

    async with httpx.AsyncClient(timeout=timeout_s) as http:
        await asyncio.gather(*(caller(http) for _ in range(callers)))
    return {
        "attack_requests": len(seconds),
        "attack_statuses": statuses,
        "attack_seconds_mean": float(np.mean(seconds)) if seconds else None,
    }


def latency_summary(prefix: str, ms: list[float]) -> dict[str, Any]:
    arr = np.array(ms or [float("nan")])
    return {
        f"{prefix}_n": len(ms),
        f"{prefix}_p50_ms": float(np.percentile(arr, 50)),
        f"{prefix}_p99_ms": float(np.percentile(arr, 99)),
        f"{prefix}_max_ms": float(arr.max()),
    }


def oip_bombs(images: int = 10_000, shape: tuple[int, ...] = (1, 28, 28)) -> dict[str, bytes]:
    """gzip bodies of an OIP v2 JSON `input` tensor of `images` zero images: one that declares
    its shape before its data, one that declares a single image and carries them all."""
    values = images * int(np.prod(shape))
    data = b'"data": [' + b"0," * (values - 1) + b"0]"

    def body(declared: list[int]) -> bytes:
        head = json.dumps({"name": "input", "datatype": "FP32", "shape": declared})[:-1]
        return gzip.compress(b'{"inputs": [' + head.encode() + b", " + data + b"}]}", 6)

    return {
        f"{images:,} images declared": body([images, *shape]),
        f"1 image declared, {images:,} sent": body([1, *shape]),
    }


def job_json_body(max_bytes: int = 1 << 20, dataset: str = "digits") -> bytes:
    """A POST /quantize-jobs body of at most `max_bytes` whose `bits_per_layer` map has as
    many entries as fit (issue 28 item 5: small JSON, expensive to validate)."""
    entries = max(1, (max_bytes - 200) // len('"fffff":4,'))
    layers = ",".join(f'"{i:05x}":4' for i in range(entries))
    return (
        f'{{"dataset":"{dataset}","weight_bits":4,"activation_bits":4,'
        f'"bits_per_layer":{{{layers}}}}}'
    ).encode()
