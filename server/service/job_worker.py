"""The worker process of the local executor: `job_main` runs one job (server/service/
local_runner.py spawns it) and writes its progress, iterations and outcome to SQLite itself,
so the API process only ever reads the database.

A worker ignores SIGINT and SIGTERM (the server stops its workers itself and marks their
jobs `interrupted`) and exits when the server that started it is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from pathlib import Path

from server.progress import ProgressEvent, Throttle
from server.service.bundles import BundleStore
from server.service.checkpoints import read_checkpoint, write_checkpoint
from server.service.job_execution import execute_job
from server.service.jobs import JobStore, progress_of
from server.service.networks import read_network
from server.service.publishing import PublishRule
from server.service.verdicts import error_record

__all__ = ["job_main"]

log = logging.getLogger(__name__)


class _Reporter:
    """The pipeline's progress and should_cancel hooks, writing to / reading from SQLite."""

    def __init__(self, store: JobStore, job_id: str, attempt: int) -> None:
        self.store, self.job_id, self.attempt = store, job_id, attempt
        self._throttle = Throttle(0.2)  # progress is polled by people, not streamed
        self._last_poll = 0.0
        self._cancel = False

    def progress(self, event: ProgressEvent) -> None:
        if self._throttle.passes(event):
            self.store.set_progress(self.job_id, self.attempt, *progress_of(event))

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
    spec = store.get(job_id).spec
    reporter = _Reporter(store, job_id, attempt)
    checkpoint_dir = Path(db_path).parent / "checkpoints"  # ServerSettings.checkpoint_dir
    networks_dir = Path(db_path).parent / "networks"  # ServerSettings.networks_dir
    try:
        lead, network = spec.lead_job, spec.params.network
        if lead:
            checkpoint: bytes | None = read_checkpoint(checkpoint_dir, lead)
        else:  # a job that names a network starts from it
            checkpoint = read_network(networks_dir, network) if network else None
        out = execute_job(
            pipeline_ref,
            spec,
            Path(data_dir) if data_dir else None,
            Path(bundle_dir),
            progress=reporter.progress,
            should_cancel=reporter.should_cancel,
            job_id=job_id,
            checkpoint=checkpoint,
            on_checkpoint=lambda data: write_checkpoint(checkpoint_dir, job_id, data),
        )
        # A cancel accepted while the pipeline evaluated or packaged is honoured: `succeeded`
        # is recorded only if no cancel is pending, in the same transaction as the bundle's
        # row (the publishing rule says whether it becomes latest).
        bundle_path = Path(bundle_dir) / f"{out.result.bundle_id}.siq"
        bundles = BundleStore(Path(db_path), Path(bundle_dir))
        rule = PublishRule(**(publish_rule or {}))
        done = bundles.finish_succeeded(
            store, job_id, attempt, out.result, bundle_path, rule, iterations=out.iterations
        )
        if not done and store.cancel_requested(job_id):
            store.finish(job_id, attempt, "cancelled")
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the job's verdict
        if store.cancel_requested(job_id):
            store.finish(job_id, attempt, "cancelled")
        else:
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            store.finish(job_id, attempt, "failed", error=error_record(exc))
