"""Several server processes on one port (`SIQ_WORKERS` / `--workers N`), each with a listening
socket of its own, bound with SO_REUSEPORT so that the kernel spreads new connections across
them (gunicorn's `reuse_port`, nginx's `reuseport`). This is before the serving path
(client/serving/): it decides which process a connection reaches.

Why not uvicorn's own workers: they share one listening socket, and whichever process wakes
first accepts every connection waiting, so keep-alive connections opened at once all went to
one worker; and that socket is made without naming TCP, so asyncio does not set TCP_NODELAY
on its connections, and every answer waited for the caller's delayed ACK
(bench/results/http_profile.md).

`serve_workers` starts the workers (spawned processes; each builds its app from the
environment with `create_app`, so each loads the bundle itself), restarts one that dies
(after a second), and on SIGTERM or SIGINT stops them all: SIGTERM, which uvicorn answers by
finishing the requests it holds, then SIGKILL for any still running after `grace_s`.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType

__all__ = ["serve_workers", "listening_socket"]

log = logging.getLogger(__name__)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, listening. Made with the protocol
    named (IPPROTO_TCP): asyncio sets TCP_NODELAY only on connections whose socket says TCP,
    and without it a response written in two pieces waits for the caller's delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _serve(host: str, port: int, log_level: str) -> None:
    """One worker: its own socket, its own app."""
    import uvicorn

    from client.logs import configure_logging

    configure_logging(log_level)  # a spawned process starts with no logging set up
    config = uvicorn.Config(
        "client.app:create_app", factory=True, host=host, port=port, log_level=log_level
    )
    uvicorn.Server(config).run(sockets=[listening_socket(host, port)])


def serve_workers(workers: int, host: str, port: int, log_level: str, grace_s: float = 30.0) -> int:
    """Run `workers` server processes on (host, port) until SIGTERM / SIGINT; exit status."""
    try:  # refuse an address in use (or not ours to bind) here, once, with a clear error
        listening_socket(host, port).close()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        return 1
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> BaseProcess:
        process = context.Process(target=_serve, args=(host, port, log_level), daemon=False)
        process.start()
        return process

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    processes = [start() for _ in range(workers)]
    log.info("started %d worker processes on %s:%d (SO_REUSEPORT)", workers, host, port)
    try:
        while not stopping:
            for i, process in enumerate(processes):
                if not process.is_alive() and not stopping:
                    log.warning(
                        "worker %d exited (%s); restarting it", process.pid, process.exitcode
                    )
                    time.sleep(1.0)
                    processes[i] = start()
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + grace_s
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
