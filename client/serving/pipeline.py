"""The serving path, stage by stage: what POST /recognize and POST /v2/.../infer do between
the HTTP edge (client/api/) and the network.

    admit   a reading place: 503 past SIQ_MAX_READING_BODIES             admit.py
    read    the whole body: 413 over its size; 408 past its deadline     read.py
            or under its minimum rate
    admit   a place in line: 503 past workers + SIQ_MAX_QUEUED_REQUESTS  admit.py
    run     the Runner: decode (decode.py) and batch (batch.py) the      run.py
            images and run the network inline, in a worker thread, or
            in an inference process (children.py)
    answer  /recognize's JSON; /v2: oip_model.finish's bytes             answer.py

`Pipeline` holds each stage's one object; `create_app` makes it (`make_pipeline`) and puts it
on `app.state.pipeline`, the only serving state the routes read.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request

from client.manager import BundleManager
from client.metrics import ClientMetrics
from client.oip_codec import HEADER_LENGTH
from client.oip_model import Limits, check_model
from client.serving.admit import Admission
from client.serving.answer import recognition_body
from client.serving.children import InferencePool
from client.serving.read import BodyLimits, read_body, read_uploads
from client.serving.run import InChildren, InferCall, InProcess, Runner
from client.settings import ClientSettings

__all__ = ["Pipeline", "make_pipeline"]


class Pipeline:
    def __init__(
        self,
        settings: ClientSettings,
        manager: BundleManager,
        metrics: ClientMetrics,
        admission: Admission,
        runner: Runner,
    ) -> None:
        self.settings, self.manager, self.metrics = settings, manager, metrics
        self.admission, self.runner = admission, runner
        self.body_limits = BodyLimits(
            settings.max_upload_bytes,
            settings.body_timeout_s,
            settings.body_min_rate,
            settings.body_rate_grace_s,
        )
        self.infer_limits = Limits(
            settings.max_images,
            settings.max_pixels,
            settings.max_request_pixels,
            settings.max_upload_bytes,
        )

    async def recognize(self, request: Request) -> dict[str, Any]:
        """POST /recognize: the answer's JSON body."""
        start = time.perf_counter()
        loaded = self.manager.serving()  # 503 before the first bundle
        admission = self.admission
        admission.start_reading()
        try:
            uploads = await read_uploads(request, self.body_limits, self.settings.max_images)
        finally:
            admission.done_reading()
        admission.admit()
        try:
            labels, probs, timings = await self.runner.recognize(loaded, uploads)
        finally:
            admission.release()
        names = [name for name, _ in uploads]
        body = recognition_body(loaded, names, labels, probs, timings)
        self.metrics.images.inc(len(uploads))
        timings["total"] = round((time.perf_counter() - start) * 1e3, 3)
        return body

    async def infer(
        self, request: Request, name: str, version: str | None
    ) -> tuple[bytes, dict[str, str]]:
        """POST /v2/models/{name}[/versions/{version}]/infer: the answer's body and headers."""
        loaded = self.manager.serving()  # 503 before the first bundle
        check_model(loaded, name, version)
        admission = self.admission
        admission.start_reading()
        try:
            body = await read_body(request, self.body_limits)
        finally:
            admission.done_reading()
        headers = request.headers
        call = InferCall(
            body, headers.get(HEADER_LENGTH), headers.get("content-encoding"), self.infer_limits
        )
        admission.admit()
        try:
            content, answer_headers, images = await self.runner.infer(loaded, call)
        finally:
            admission.release()
        self.metrics.images.inc(images)
        return content, answer_headers


def make_pipeline(
    settings: ClientSettings, manager: BundleManager, metrics: ClientMetrics
) -> Pipeline:
    """The app's pipeline: its runner by SIQ_INFERENCE_PROCESSES."""
    local = InProcess(
        settings.inference_workers,
        max_pixels=settings.max_pixels,
        max_request_pixels=settings.max_request_pixels,
        observe=metrics.batch_images.observe,
    )
    runner: Runner = local
    if settings.inference_processes:
        pool = InferencePool(
            settings.inference_processes,
            max_pixels=settings.max_pixels,
            max_request_pixels=settings.max_request_pixels,
            observe=metrics.batch_images.observe,
            lost=lambda reason: metrics.inference_process_losses.labels(reason).inc(),
        )
        metrics.inference_processes.set_function(pool.running)
        runner = InChildren(pool, local)
    admission = Admission(
        settings.inference_workers, settings.max_queued_requests, settings.max_reading_bodies
    )
    return Pipeline(settings, manager, metrics, admission, runner)
