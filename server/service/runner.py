"""Runs quantize jobs in worker processes, at most `max_concurrent_jobs` at a time.

`JobRunner` lives in the API process: one thread claims queued jobs from SQLite, starts a
`spawn`ed process per job, enforces cancellation (the pipeline polls `should_cancel`; a
worker that has not stopped `cancel_grace_s` later is terminated) and notices workers that
died without a verdict. `job_main` is the worker process: it runs the pipeline and writes
progress, iterations and the outcome to SQLite itself, so the API only ever reads the DB.

Restarts: a job still `running` when the server starts belonged to a process that is gone;
it is failed with error code `interrupted` (resubmit it). Queued jobs survive and run.
A graceful shutdown terminates the workers and fails their jobs the same way.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.progress import ProgressEvent, Throttle
from server.service.bundles import BundleStore
from server.service.job_roles import (
    execute_job,
    float_job_of,
    read_checkpoint,
    resolve_pipeline,
    write_checkpoint,
)
from server.service.jobs import JobStore
from server.service.publishing import PublishRule
from server.service.settings import ServerSettings
from shared.errors import SIQError, error_body

__all__ = ["JobRunner", "job_main", "resolve_pipeline", "error_record"]

log = logging.getLogger(__name__)
# `SIQ_PIPELINE` names a 'module:function' (server/service/job_roles.py); the worker process
# imports it, never this one (server.training.pipeline:run_job imports torch).
INTERRUPTED = "the server stopped while this job was running, so the job was lost; submit it again"


def error_record(exc: BaseException) -> dict[str, str | None]:
    """A failed job's `error`, one a person can act on: an SIQError's own body (the shared
    mapping), anything else an internal error."""
    if isinstance(exc, SIQError):
        return error_body(exc)["error"]
    if isinstance(exc, MemoryError):
        return {"code": "internal_error", "message": "the worker ran out of memory"}
    return {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}


class _Reporter:
    """The pipeline's progress and should_cancel hooks, writing to / reading from SQLite."""

    def __init__(self, store: JobStore, job_id: str, attempt: int) -> None:
        self.store, self.job_id, self.attempt = store, job_id, attempt
        self._throttle = Throttle(0.2)  # progress is polled by people, not streamed
        self._last_poll = 0.0
        self._cancel = False

    def progress(self, event: ProgressEvent) -> None:
        if not self._throttle.passes(event):
            return
        iteration = event.get("iteration")
        progress = {
            "stage": str(event.get("stage") or "running"),
            "fraction": min(1.0, max(0.0, float(event.get("fraction") or 0.0))),
            "message": str(event.get("message") or ""),
        }
        self.store.set_progress(self.job_id, self.attempt, progress, iteration)

    def should_cancel(self) -> bool:
        now = time.monotonic()
        if not self._cancel and now - self._last_poll >= 0.2:
            self._last_poll = now
            self._cancel = self.store.cancel_requested(self.job_id)
        return self._cancel


def _exit_with_parent(parent_pid: int) -> None:
    """A worker never outlives the server that started it (e.g. after a SIGKILL)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)


def job_main(
    db_path: str,
    job_id: str,
    attempt: int,
    pipeline_ref: str,
    data_dir: str | None,
    bundle_dir: str,
    publish_rule: dict[str, float] | None = None,
) -> None:
    """Worker process entry point: run one job and record its outcome."""
    # Ctrl-C and SIGTERM (systemd and docker signal the whole process group) are the
    # server's to handle: it stops its workers itself and marks their jobs `interrupted`,
    # where a worker dying of the same signal would be reaped first as `worker_crashed`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    store = JobStore(Path(db_path))
    job = store.get(job_id)
    reporter = _Reporter(store, job_id, attempt)
    checkpoint_dir = Path(db_path).parent / "checkpoints"  # ServerSettings.checkpoint_dir
    try:
        float_job = float_job_of(job.config)
        result = execute_job(
            pipeline_ref,
            job.config,
            Path(data_dir) if data_dir else None,
            Path(bundle_dir),
            progress=reporter.progress,
            should_cancel=reporter.should_cancel,
            job_id=job_id,
            checkpoint=read_checkpoint(checkpoint_dir, float_job) if float_job else None,
            on_checkpoint=lambda data: write_checkpoint(checkpoint_dir, job_id, data),
        ).result
        # A cancel accepted while the pipeline evaluated or packaged is honoured: `succeeded`
        # is recorded only if no cancel is pending, in the same transaction as the bundle's
        # row (the publishing rule says whether it becomes latest).
        bundle_path = Path(bundle_dir) / f"{result['bundle_id']}.siq"
        bundles = BundleStore(Path(db_path), Path(bundle_dir))
        rule = PublishRule(**(publish_rule or {}))
        done = bundles.finish_succeeded(store, job_id, attempt, result, bundle_path, rule)
        if not done and store.cancel_requested(job_id):
            store.finish(job_id, attempt, "cancelled")
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the job's verdict
        if store.cancel_requested(job_id):
            store.finish(job_id, attempt, "cancelled")
        else:
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            store.finish(job_id, attempt, "failed", error=error_record(exc))


@dataclass
class _Worker:
    process: Any  # multiprocessing.context.SpawnProcess
    attempt: int
    kill_at: float | None = None  # set when a cancel was seen


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        settings: ServerSettings,
        on_job_end: Callable[[str], None] | None = None,
    ) -> None:
        """Runs `settings.pipeline` for the jobs of `store`, at most
        `settings.max_concurrent_jobs` at once; `on_job_end(job_id)` after each."""
        self.store = store
        self.pipeline, self.data_dir = settings.pipeline, settings.data_dir
        self.bundle_dir = settings.bundle_dir
        self.publish_rule = settings.publish_rule
        self.max_concurrent = settings.max_concurrent_jobs
        self.cancel_grace_s = settings.cancel_grace_s
        self.poll_interval_s = settings.poll_interval_s
        self.on_job_end = on_job_end or (lambda job_id: None)
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: dict[str, _Worker] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        lost = self.store.interrupt_running(INTERRUPTED)
        if lost:
            log.warning("marked %d job(s) left running by a dead server as interrupted", len(lost))
        self._thread = threading.Thread(target=self._loop, name="siq-job-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for job_id, worker in list(self._workers.items()):
            self._terminate(worker.process)
            self.store.finish(
                job_id,
                worker.attempt,
                "failed",
                error={"code": "interrupted", "message": INTERRUPTED},
            )
            self.on_job_end(job_id)
        self._workers.clear()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the runner must outlive a bad tick (e.g. DB busy)
                log.exception("job runner tick failed")
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()

    def _tick(self) -> None:
        self._reap()
        self._enforce_cancels()
        while len(self._workers) < self.max_concurrent and not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                break
            self._spawn(job.id, job.attempt)

    def _spawn(self, job_id: str, attempt: int) -> None:
        args = (
            str(self.store.db_path),
            job_id,
            attempt,
            self.pipeline,
            str(self.data_dir) if self.data_dir else None,
            str(self.bundle_dir),
            self.publish_rule.as_dict(),
        )
        process = self._ctx.Process(target=job_main, args=args, name=f"siq-job-{job_id[:8]}")
        try:
            process.start()
        except Exception as exc:  # noqa: BLE001
            self.store.finish(job_id, attempt, "failed", error=error_record(exc))
            return
        self._workers[job_id] = _Worker(process, attempt)
        log.info("job %s started in process %s", job_id, process.pid)

    def _reap(self) -> None:
        for job_id, worker in list(self._workers.items()):
            if worker.process.is_alive():
                continue
            worker.process.join()
            code = worker.process.exitcode
            # The worker records its own verdict; this only catches a crash before it could.
            if self.store.finish(
                job_id,
                worker.attempt,
                "failed",
                error={
                    "code": "worker_crashed",
                    "message": f"the worker process exited with code {code} before finishing "
                    "(out of memory or killed?); see the server log",
                },
            ):
                log.error("job %s: worker exited with %s without a verdict", job_id, code)
            del self._workers[job_id]
            self.on_job_end(job_id)

    def _enforce_cancels(self) -> None:
        if not self._workers:
            return
        wanted = self.store.running_with_cancel_request() & set(self._workers)
        now = time.monotonic()
        for job_id in wanted:
            worker = self._workers[job_id]
            if worker.kill_at is None:
                worker.kill_at = now + self.cancel_grace_s
            elif now >= worker.kill_at:
                log.warning("job %s did not stop after a cancel; terminating it", job_id)
                self._terminate(worker.process)
                self.store.finish(job_id, worker.attempt, "cancelled")
                del self._workers[job_id]
                self.on_job_end(job_id)

    @staticmethod
    def _terminate(process: Any) -> None:
        # SIGKILL: workers ignore SIGTERM (job_main), and hold nothing a kill could corrupt
        # (bundle files are renamed into place; the scan removes partial ones).
        if process.is_alive():
            process.kill()
            process.join(5.0)
