"""`SIQ_EXECUTOR=ray`: every job is one Ray task (server/service/ray_task.py).

`RayRunner` has the local `JobRunner`'s interface (start, stop, wake, alive). One
thread claims queued jobs from SQLite as long as the cluster has room for their declared
resources (`SIQ_RAY_JOB_CPUS`, `SIQ_RAY_JOB_GPUS`; re-read every few seconds, so nodes that
join are used), submits one task per job, and on every tick drains the ledger actor:
progress -> the job's status, a sweep lead's float checkpoint -> the state directory, and an
outcome -> the bundle store and the job's verdict.

Failures. A cancel is `ray.cancel(force=True)`: the task's worker is killed, the job ends
`cancelled`. A task whose worker process or node dies ends the job `failed` with code
`worker_died`; it is not retried (`max_retries=0`): a training job is minutes of work that
may have been what killed its worker (memory), so a person decides whether to resubmit.

Restarts. Ray ends a driver's tasks when the driver goes, so a server restart cannot
re-attach to running tasks; what survives is the detached ledger. `reconcile()` runs at start:
a job still `running` whose outcome the ledger holds gets that outcome (nothing finished is
lost), the rest are failed `interrupted` (nothing stays running). An embedded cluster
(`SIQ_RAY_ADDRESS=local`) ends with the server, ledger included.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError, TaskCancelledError

from server.data import dataset_root
from server.service.bundles import BundleStore
from server.service.checkpoints import read_checkpoint, write_checkpoint
from server.service.jobs import JobRecord, JobStore, progress_of
from server.service.networks import read_network
from server.service.ray_task import NAMESPACE, TASK_NAME, JobLedger, Outcome, run_job_task
from server.service.settings import ServerSettings
from server.service.verdicts import error_record, interrupted, job_error
from shared.api import ErrorInfo
from shared.bundle import write_bundle_atomic
from shared.errors import ConfigError

__all__ = ["RayRunner", "WORKER_DIED"]

log = logging.getLogger(__name__)
WORKER_DIED = "worker_died"
EMBEDDED_OBJECT_STORE_BYTES = 256 * 1024**2  # bundles and checkpoints are kilobytes
CLIENT_CONNECT_ATTEMPTS = 3  # `_init_client`
CAPACITY_REFRESH_S = 5.0
CHECKPOINT_REFS_KEPT = 16


@dataclass
class _Task:
    ref: Any  # ray.ObjectRef of run_job_task's verdict
    attempt: int
    cancel_at: float | None = None  # when ray.cancel was sent


def _server_id(state_dir: Path) -> str:
    """A name for this state directory's ledger, stable across restarts."""
    path = state_dir / "ray-server-id"
    if not path.exists():
        path.write_text(uuid.uuid4().hex[:16] + "\n")
    return path.read_text().strip()


class RayRunner:
    def __init__(
        self,
        store: JobStore,
        bundles: BundleStore,
        settings: ServerSettings,
        *,
        on_job_end: Any = None,
    ) -> None:
        self.store, self.bundles, self.settings = store, bundles, settings
        self.on_job_end = on_job_end or (lambda job_id: None)
        self.poll_interval_s = settings.poll_interval_s
        self._tasks: dict[str, _Task] = {}
        self._checkpoint_refs: dict[str, Any] = {}
        self._capacity, self._capacity_at = 1, 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ledger: Any = None
        self._remote: Any = None
        self._owns_ray = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._connect()
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, name="siq-ray-runner", daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        address = self.settings.ray_address
        common: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False}
        # A process that is already a Ray driver (an embedding program, the tests) keeps its
        # connection: the runner uses it and leaves it open on stop.
        self._owns_ray = not ray.is_initialized()
        try:
            if self._owns_ray and address == "local":
                # address="local": a new cluster even where `ray start` left one to join
                ray.init(
                    address="local",
                    num_cpus=self.settings.ray_num_cpus,
                    include_dashboard=False,
                    object_store_memory=EMBEDDED_OBJECT_STORE_BYTES,
                    **common,
                )
            elif self._owns_ray:
                _init_client(address, common)
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; one clear line out
            raise ConfigError(
                f"cannot start or reach Ray at SIQ_RAY_ADDRESS={address}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        log.info("jobs run on Ray at %s: %s", address, ray.cluster_resources())
        self._ledger = (
            ray.remote(JobLedger)
            .options(
                name=f"siq-ledger-{_server_id(self.settings.state_dir)}",
                namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0,
            )
            .remote()
        )
        self._remote = ray.remote(run_job_task).options(
            name=TASK_NAME,
            num_cpus=self.settings.ray_job_cpus,
            num_gpus=self.settings.ray_job_gpus,
            max_retries=0,
            retry_exceptions=False,
        )

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            if self._tasks:
                self._drain()  # outcomes that arrived meanwhile are kept, not failed
            for job_id, task in list(self._tasks.items()):
                ray.cancel(task.ref, force=True)
                self.store.finish(job_id, task.attempt, "failed", error=interrupted())
                self.on_job_end(job_id)
            self._tasks.clear()
        finally:
            if self._owns_ray:
                ray.shutdown()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        self._wake.set()

    def reconcile(self) -> None:
        """Jobs left `running` by a previous server: their deposited outcome, or `interrupted`."""
        finished = set(self._drain())
        running, _ = self.store.page(10_000, 0, "running")
        recovered = 0
        for job in running:
            found = ray.get(self._ledger.outcome.remote(job.id))
            # (an outcome of another server version's shape is not ours to read: interrupted)
            if found is not None and found[0] == job.attempt and isinstance(found[1], Outcome):
                self._apply(job.id, job.attempt, found[1])
                recovered += 1
        for stale in finished - {job.id for job in running}:
            self._ledger.forget.remote(stale)  # recorded before the restart already
        lost = self.store.interrupt_running(interrupted())
        if recovered or lost:
            log.warning(
                "restart: %d finished job(s) recovered, %d interrupted", recovered, len(lost)
            )

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the runner must outlive a bad tick
                log.exception("ray runner tick failed")
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()

    def _tick(self) -> None:
        if self._tasks:
            self._drain()
            ready, _ = ray.wait([t.ref for t in self._tasks.values()], timeout=0)
            done = {ref.hex() for ref in ready}
            for job_id, task in list(self._tasks.items()):
                if task.ref.hex() in done:
                    self._collect(job_id)
            self._enforce_cancels()
        while len(self._tasks) < self._room() and not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                break
            self._submit(job)

    def _room(self) -> int:
        now = time.monotonic()
        if now - self._capacity_at >= CAPACITY_REFRESH_S:
            res = ray.cluster_resources()
            slots = int(res.get("CPU", 0) // self.settings.ray_job_cpus)
            if self.settings.ray_job_gpus:
                slots = min(slots, int(res.get("GPU", 0) // self.settings.ray_job_gpus))
            self._capacity, self._capacity_at = max(1, slots), now
        return self._capacity

    def _submit(self, job: JobRecord) -> None:
        try:
            checkpoint = self._checkpoint_for(job)
            # an uploaded data set is in the server's state directory: a Ray node reads it
            # only where it shares that filesystem (its own SIQ_DATA_DIR comes first)
            data_dir = dataset_root(
                job.spec.params.dataset, self.settings.data_dir, self.settings.uploads_dir
            )
            ref = self._remote.remote(
                self._ledger,
                job.id,
                job.attempt,
                job.spec,
                self.settings.pipeline,
                str(data_dir) if data_dir else None,
                checkpoint,
            )
        except Exception as exc:  # noqa: BLE001 - a job that cannot start fails, visibly
            self.store.finish(job.id, job.attempt, "failed", error=error_record(exc))
            self.on_job_end(job.id)
            return
        self._tasks[job.id] = _Task(ref, job.attempt)
        log.info("job %s submitted as Ray task %s", job.id, ref.hex()[:16])

    def _checkpoint_for(self, job: JobRecord) -> Any:
        """A sweep cell's float checkpoint, put into the object store once per lead job."""
        lead = job.spec.lead_job
        if lead is None:  # a job that names a network gets its stored bytes instead
            name = job.spec.params.network
            return ray.put(read_network(self.settings.networks_dir, name)) if name else None
        if lead not in self._checkpoint_refs:
            data = read_checkpoint(self.settings.checkpoint_dir, lead)
            self._checkpoint_refs[lead] = ray.put(data)
            while len(self._checkpoint_refs) > CHECKPOINT_REFS_KEPT:
                self._checkpoint_refs.pop(next(iter(self._checkpoint_refs)))
        return self._checkpoint_refs[lead]

    def _drain(self) -> list[str]:
        """Record progress and checkpoints; collect tasks that finished. The finished ids."""
        drained = ray.get(self._ledger.drain.remote(), timeout=30)
        for job_id, attempt, event in drained["events"]:
            self.store.set_progress(job_id, attempt, *progress_of(event))
        for job_id, _attempt, data in drained["checkpoints"]:
            write_checkpoint(self.settings.checkpoint_dir, job_id, data)
        for job_id in drained["finished"]:
            if job_id in self._tasks:
                self._collect(job_id)
        return list(drained["finished"])

    def _collect(self, job_id: str) -> None:
        """The verdict of a task that deposited an outcome or ended without one."""
        task = self._tasks.pop(job_id, None)
        if task is None:
            return
        found = ray.get(self._ledger.outcome.remote(job_id))
        if found is not None and found[0] == task.attempt:
            self._apply(job_id, task.attempt, found[1])
            return
        error: ErrorInfo | None
        try:
            ray.get(task.ref, timeout=5)
            error = job_error("internal_error", "the Ray task left no outcome")
        except TaskCancelledError:
            error = None
        except GetTimeoutError:
            self._tasks[job_id] = task  # the outcome is on its way; look again next tick
            return
        except RayError as exc:
            error = job_error(
                WORKER_DIED,
                "the Ray worker running this job died before it finished "
                f"({type(exc).__name__}: killed, out of memory, or its node left the "
                "cluster); it is not retried: submit it again",
            )
        if error is None or self.store.cancel_requested(job_id):
            self.store.finish(job_id, task.attempt, "cancelled")
        else:
            log.error("job %s: %s", job_id, error.message)
            self.store.finish(job_id, task.attempt, "failed", error=error)
        self.on_job_end(job_id)

    def _apply(self, job_id: str, attempt: int, outcome: Outcome) -> None:
        """Record a deposited outcome: success and the bundle's row together (unless a
        cancel came first), else the failure or the cancel."""
        recorded, error = False, outcome.error
        if outcome.output is not None:
            out = outcome.output
            try:
                path = write_bundle_atomic(self.settings.bundle_dir, out.bundle)
                recorded = self.bundles.finish_succeeded(
                    self.store,
                    job_id,
                    attempt,
                    out.result,
                    path,
                    self.settings.publish_rule,
                    iterations=out.iterations,
                )
                # not recorded: a cancel accepted meanwhile is honoured (issue 11, item 6)
            except Exception as exc:  # noqa: BLE001 - a bad bundle fails its job, not the loop
                error = error_record(exc)
        if not recorded:
            if error is None or self.store.cancel_requested(job_id):
                self.store.finish(job_id, attempt, "cancelled")
            else:
                self.store.finish(job_id, attempt, "failed", error=error)
        self._ledger.forget.remote(job_id)
        self.on_job_end(job_id)

    def _enforce_cancels(self) -> None:
        wanted = self.store.running_with_cancel_request() & set(self._tasks)
        now = time.monotonic()
        for job_id in wanted:
            task = self._tasks[job_id]
            if task.cancel_at is None:
                task.cancel_at = now
                ray.cancel(task.ref, force=True)
                log.info("job %s: cancelling its Ray task", job_id)
            elif now - task.cancel_at > 3 * self.settings.cancel_grace_s:
                # Ray has not confirmed the kill (a node that went away): end it anyway.
                del self._tasks[job_id]
                self.store.finish(job_id, task.attempt, "cancelled")
                self.on_job_end(job_id)


def _init_client(address: str, common: dict[str, Any]) -> None:
    """`ray.init(address)`, tried again when a Ray Client server aborts the connection: its
    per-client server failed to start ("Initialization failure from server", 3 of 8 full
    test runs on 2 cores), and a new connection gets a new one. Any other error, and the
    last attempt's, goes to the caller."""
    for attempt in range(1, CLIENT_CONNECT_ATTEMPTS + 1):
        try:
            ray.init(address=address, **common)
            return
        except ConnectionAbortedError:
            if attempt == CLIENT_CONNECT_ATTEMPTS:
                raise
            log.warning("Ray at %s aborted the connection (attempt %d); again", address, attempt)
            ray.shutdown()
            time.sleep(1)
