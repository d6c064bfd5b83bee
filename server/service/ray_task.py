"""What runs on the Ray cluster: one task per job, and one ledger actor per server.

The task runs the job in a temporary directory on whichever node Ray picked, and sends
everything back through Ray, so workers share no filesystem with the server:

- progress events (throttled like the local workers'), the float checkpoint of a sweep's
  lead, and finally the outcome (result + bundle bytes, or an error) go to the `JobLedger`
  actor, in that order (calls from one caller to one actor run in order);
- the server drains the ledger on every tick and writes what it finds to SQLite and the
  bundle directory.

The ledger is a *detached* named actor, so on a cluster the server does not own it outlives
a server restart: outcomes deposited while the server was down are collected when it comes
back (ray_runner.RayRunner.reconcile). Cancelling is `ray.cancel(force=True)` on the task.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from server.job_spec import JobSpec
from server.progress import ProgressEvent, Throttle
from server.service.job_execution import JobOutput, execute_job
from server.service.verdicts import error_record
from shared.api import ErrorInfo

__all__ = ["JobLedger", "Outcome", "run_job_task", "NAMESPACE", "TASK_NAME"]

NAMESPACE = "siq"
TASK_NAME = "siq_job"  # Ray names the worker process `ray::siq_job` while it runs one


@dataclass
class Outcome:
    """How a job's task ended: its output (result, iterations, bundle bytes) or its error."""

    output: JobOutput | None = None
    error: ErrorInfo | None = None


class JobLedger:
    """Progress, checkpoints and outcomes of one server's jobs, kept on the cluster."""

    def __init__(self) -> None:
        self._events: list[tuple[str, int, dict[str, Any]]] = []
        self._checkpoints: list[tuple[str, int, bytes]] = []
        self._outcomes: dict[str, tuple[int, Outcome]] = {}

    def report(self, job_id: str, attempt: int, event: dict[str, Any]) -> None:
        self._events.append((job_id, attempt, event))

    def checkpoint(self, job_id: str, attempt: int, data: bytes) -> None:
        self._checkpoints.append((job_id, attempt, data))

    def deposit(self, job_id: str, attempt: int, outcome: Outcome) -> None:
        self._outcomes[job_id] = (attempt, outcome)

    def drain(self) -> dict[str, Any]:
        """Progress and checkpoints since the last drain, and the ids of finished jobs."""
        events, self._events = self._events, []
        checkpoints, self._checkpoints = self._checkpoints, []
        return {"events": events, "checkpoints": checkpoints, "finished": list(self._outcomes)}

    def outcome(self, job_id: str) -> tuple[int, Outcome] | None:
        return self._outcomes.get(job_id)

    def forget(self, job_id: str) -> None:
        """Called once the server has recorded the outcome."""
        self._outcomes.pop(job_id, None)


class _Progress:
    """Progress to the ledger, throttled like the local workers' (people poll it)."""

    def __init__(self, ledger: Any, job_id: str, attempt: int) -> None:
        self.ledger, self.job_id, self.attempt = ledger, job_id, attempt
        self._throttle = Throttle(0.2)

    def __call__(self, event: ProgressEvent) -> None:
        if self._throttle.passes(event):
            self.ledger.report.remote(self.job_id, self.attempt, dict(event))


def run_job_task(
    ledger: Any,
    job_id: str,
    attempt: int,
    spec: JobSpec,
    pipeline_ref: str,
    data_dir: str | None,
    checkpoint: bytes | None,
) -> str:
    """The body of the Ray task (declared with resources by the runner). Returns the verdict;
    the outcome itself is in the ledger before this returns."""
    ran_on: dict[str, Any] = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    ledger.report.remote(
        job_id,
        attempt,
        {
            "stage": "starting",
            "fraction": 0.0,
            "message": f"Ray node {ran_on['node_id'][:12]} ({ran_on['host']}), pid {ran_on['pid']}",
        },
    )
    # The node's own data directory wins: the data sets are mounted where the node runs.
    local_data = os.environ.get("SIQ_DATA_DIR") or data_dir
    try:
        with tempfile.TemporaryDirectory(prefix="siq-ray-") as tmp:
            out = execute_job(
                pipeline_ref,
                spec,
                Path(local_data) if local_data else None,
                Path(tmp),
                progress=_Progress(ledger, job_id, attempt),
                should_cancel=lambda: False,  # a cancel kills the task (ray.cancel force)
                job_id=job_id,
                checkpoint=checkpoint,
                on_checkpoint=lambda data: ledger.checkpoint.remote(job_id, attempt, data),
            )
        out.result = out.result.model_copy(update={"ray_node": ran_on})
        outcome = Outcome(output=out)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the job's verdict
        outcome = Outcome(error=error_record(exc))
    ray.get(ledger.deposit.remote(job_id, attempt, outcome))
    return "succeeded" if outcome.output is not None else "failed"
