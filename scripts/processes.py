"""Start `python -m <module>` as a child process, wait until it answers over HTTP, stop it.

The one helper for this in the dev tooling: `make run` (scripts/run_local.py), the tests that
run real services (tests/conftest.py) and the benchmarks (bench/). The services themselves
never use it.

    with start_service("client", env=env, log_path=work / "client.log") as client:
        client.wait_ready("/readyz", timeout=60)   # ServiceError, with the log's tail, if not
        httpx.post(client.url + "/recognize", ...)
    # stopped here: SIGTERM, then SIGKILL after the grace period

The child's stdout and stderr go to `log_path`, so a failure can quote what it said. Every
child still running when the interpreter exits is stopped too (an `atexit` hook), so a
crashing script does not leave a service behind holding its port.
"""

from __future__ import annotations

import atexit
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["ServiceError", "ServiceProcess", "pick_port", "start_service"]

REPO_ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger(__name__)

_running: set[ServiceProcess] = set()  # started and not yet stopped, for _stop_all


class ServiceError(RuntimeError):
    """A child exited, or did not become ready in time; the message ends with its log tail."""


def pick_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """`preferred` when it is free, else a free port the OS picks (0 always asks the OS). Free a
    moment ago, that is: another process may take it before the child binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, preferred))
        except OSError:
            sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """One `python -m <module> --host H --port P [args]` child logging to a file. `stop()` is
    idempotent; used as a context manager it stops on leaving the block."""

    def __init__(
        self,
        module: str,
        *,
        port: int,
        env: Mapping[str, str],
        log_path: Path,
        host: str = "127.0.0.1",
        args: Sequence[str] = (),
        append_log: bool = False,
        own_session: bool = False,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.module, self.host, self.port = module, host, port
        self.url = f"http://{host}:{port}"
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab" if append_log else "wb")
        self._log_start = self._log.tell()  # an appended log's tail is this run's only
        command = [sys.executable, "-m", module, "--host", host, "--port", str(port), *args]
        try:
            # own_session: a terminal's Ctrl-C reaches only the parent, which stops the
            # children itself, in order (make run)
            self.proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=dict(env),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=own_session,
            )
        except BaseException:
            self._log.close()
            raise
        _running.add(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        """The last `chars` characters this child wrote (stdout and stderr)."""
        if not self._log.closed:
            self._log.flush()
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(max(self._log_start, fh.seek(0, 2) - chars))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        """ServiceError, quoting the log, when the child has exited."""
        if self.proc.poll() is not None:
            raise ServiceError(
                f"python -m {self.module} exited with code {self.proc.returncode}; "
                f"the end of {self.log_path}:\n{self.log_tail()}"
            )

    def wait_ready(
        self, path: str = "/healthz", timeout: float = 60.0, interval: float = 0.2
    ) -> httpx.Response:
        """Poll `GET url + path` until it answers 200 and return that answer. ServiceError,
        quoting the log, when the child exits first or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=min(5.0, max(timeout, 0.1))) as http:
            while True:
                self.check_alive()
                try:
                    response = http.get(self.url + path)
                    if response.status_code == 200:
                        return response
                    last = f"last answer {response.status_code}"
                except httpx.TransportError as exc:
                    last = f"last attempt: {type(exc).__name__}"
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"python -m {self.module}: GET {path} not 200 after {timeout:.0f} s "
                        f"({last}); the end of {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(interval)

    def stop(self, grace: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Send `sig` (SIGTERM, or SIGINT), wait up to `grace` seconds, then SIGKILL: the
        child never outlives this call. Returns its exit status (negative: killed by that
        signal; uvicorn re-raises SIGTERM after a clean shutdown, so -15 is clean too)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("python -m %s did not stop in %.0f s; killing it", self.module, grace)
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        _running.discard(self)
        return self.proc.returncode

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_service(
    module: str,
    *,
    env: Mapping[str, str],
    log_path: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    args: Sequence[str] = (),
    append_log: bool = False,
    own_session: bool = False,
) -> ServiceProcess:
    """Start `python -m module` on `port` when it is free, else on a free one (0: any)."""
    return ServiceProcess(
        module,
        port=pick_port(port, host),
        env=env,
        log_path=log_path,
        host=host,
        args=args,
        append_log=append_log,
        own_session=own_session,
    )


@atexit.register
def _stop_all() -> None:
    for service in list(_running):
        service.stop(grace=5.0)
