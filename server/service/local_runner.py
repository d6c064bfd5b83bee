"""The local executor: runs quantize jobs in worker processes on this machine, at most
`max_concurrent_jobs` at a time.

`JobRunner` lives in the API process: one thread claims queued jobs from SQLite, starts a
`spawn`ed process per job (`job_worker.job_main`, which records the job's progress and
outcome itself), enforces cancellation (the pipeline polls `should_cancel`; a worker that
has not stopped `cancel_grace_s` later is terminated) and notices workers that died without
a verdict. The worker imports the pipeline (`SIQ_PIPELINE`, server/service/job_execution.py);
this process never does (server.training.job:run_job imports torch).

Restarts: a job still `running` when the server starts belonged to a process that is gone;
it is failed with error code `interrupted` (resubmit it). Queued jobs survive and run.
A graceful shutdown terminates the workers and fails their jobs the same way.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.data import dataset_root
from server.service.job_worker import job_main
from server.service.jobs import JobStore
from server.service.settings import ServerSettings
from server.service.verdicts import error_record, interrupted, job_error

__all__ = ["JobRunner"]

log = logging.getLogger(__name__)


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
        self.pipeline = settings.pipeline
        self.data = (settings.data_dir, settings.uploads_dir)  # where data sets are found
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
        lost = self.store.interrupt_running(interrupted())
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
            self.store.finish(job_id, worker.attempt, "failed", error=interrupted())
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
            data_dir = dataset_root(job.spec.params.dataset, *self.data)
            self._spawn(job.id, job.attempt, data_dir)

    def _spawn(self, job_id: str, attempt: int, data_dir: Path | None) -> None:
        args = (
            str(self.store.db_path),
            job_id,
            attempt,
            self.pipeline,
            str(data_dir) if data_dir else None,
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
                error=job_error(
                    "worker_crashed",
                    f"the worker process exited with code {code} before finishing "
                    "(out of memory or killed?); see the server log",
                ),
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
