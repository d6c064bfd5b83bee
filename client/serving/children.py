"""Inference processes: the `InChildren` runner's children (`SIQ_INFERENCE_PROCESSES`).

Why: in one process, the event loop and the threads that decode and run the network share one
GIL; under load the loop holds it most of the time, and a worker thread back from Pillow's
decoder or ONNX Runtime waits for it, so little runs in parallel
(bench/results/http_profile.md). A child process has a GIL of its own: the serving process
reads and answers, the children decode, preprocess and run the network. This is TorchServe's
split (a frontend, and backend worker processes fed over a socket).

How: each child holds the bundle's network (sent once, when it starts) and serves batches
over a pipe. A request's image bytes join the line of the pool; a child with no batch in
flight takes everything waiting (up to `MAX_BATCH_IMAGES` images), decodes and preprocesses
each request with the functions the serving process uses (client/serving/decode.py), runs the
network once for the batch (`predict_each`, client/serving/batch.py) and answers each request
(labels, probabilities, timings, or its own error: an image it cannot decode fails alone,
with the same 4xx). The event loop reads the answers when the pipe is readable
(`add_reader`): no thread on the serving side.

`run(bundle, work)` sends one whole request's work instead, a picklable `work(loaded)` that
runs on its own in a child (several share a round trip): the Open Inference Protocol's
`infer` route sends `oip_model.infer_bytes` (the body in, the answer's bytes out), so parsing,
decoding, the network and encoding leave the serving process too.

A child that dies (a crash in a decoder, a kill), or leaves a batch unanswered for
`BATCH_TIMEOUT_S` (and is killed), fails that batch's requests with 503 and is started again
for the next. A new bundle gets new children; the old ones finish their batch and exit. The
child, not the serving process, reads the images' headers and enforces the pixel budgets; a
request whose images would decode to more than `MAX_PIXELS` comes back unrun (None) and the
serving process runs it (its heavy lane): seconds of decoding in a child would hold up a
whole batch.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy as np

from client.oip_codec import ProtocolError
from client.serving.batch import predict_each
from shared import errors
from shared.bundle import Bundle
from shared.errors import NotReadyError, SIQError

__all__ = ["InferencePool", "MAX_PIXELS", "MAX_BATCH_IMAGES", "BATCH_TIMEOUT_S"]

log = logging.getLogger(__name__)

MAX_PIXELS = 1_000_000  # eleven 300x300 photos: decoded in milliseconds, not seconds
MAX_BATCH_IMAGES = 64
RUN_WEIGHT = 4  # images a `run` job counts for in a batch: up to 16 of them share a round trip
BATCH_TIMEOUT_S = 60.0  # far beyond what 64 images of under MAX_PIXELS take to decode
Answer = tuple[np.ndarray, np.ndarray, dict[str, float]]  # labels, probabilities, timings


def _serve(
    conn: multiprocessing.connection.Connection,
    bundle: Bundle,
    *,
    max_pixels: int,
    max_request_pixels: int | None,
    child_pixels: int,
) -> None:
    """The child: load the network, then answer batches until the pipe closes (its parent's
    shutdown closes it; a Ctrl-C in the terminal is the parent's to handle)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from client.manager import load_network
    from client.serving.decode import decode_timed, open_uploads

    try:
        loaded = load_network(bundle, "process")
    except Exception as exc:  # the parent tells the callers
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            jobs = conn.recv()
        except (EOFError, OSError):
            return
        answers: list[tuple[int, str, Any]] = []
        inputs: list[tuple[int, np.ndarray, dict[str, float]]] = []
        for job, uploads in jobs:
            if callable(uploads):  # a whole request's work (`InferencePool.run`), on its own
                try:
                    answers.append((job, "done", uploads(loaded)))
                except Exception as exc:
                    answers.append((job, "error", _portable(exc)))
                continue
            try:
                opened = open_uploads(
                    uploads, max_pixels=max_pixels, max_request_pixels=max_request_pixels
                )
                if opened.pixels > child_pixels:  # the serving process's heavy lane runs it
                    opened.close()
                    answers.append((job, "heavy", None))
                    continue
                batch, timings = decode_timed(loaded, opened)
                inputs.append((job, batch, timings))
            except Exception as exc:
                answers.append((job, "error", _portable(exc)))
        answers += _predict(loaded.network, inputs)
        conn.send(answers)


def _predict(network: Any, inputs: list[tuple[int, np.ndarray, dict[str, float]]]) -> list:
    """One network call for the batch (`predict_each`: on failure, each request alone, its
    error its own); each answer with its share of the call's time."""
    if not inputs:
        return []
    start = time.perf_counter()
    results = predict_each(network.predict, [x for _, x, _ in inputs])
    per_image = (time.perf_counter() - start) * 1e3 / sum(len(x) for _, x, _ in inputs)
    out: list[tuple[int, str, Any]] = []
    for (job, x, timings), result in zip(inputs, results, strict=True):
        if isinstance(result, Exception):
            out.append((job, "error", _portable(result)))
        else:
            timings["inference"] = round(per_image * len(x), 3)
            out.append((job, "ok", (*result, timings)))
    return out


# the errors a child's answer may carry, raised again in the parent by name: shared.errors'
# and the protocol's (AuthError never comes from a child)
_PORTABLE: dict[str, type[SIQError]] = {
    **{
        name: kind
        for name, kind in vars(errors).items()
        if isinstance(kind, type) and issubclass(kind, SIQError) and kind is not errors.AuthError
    },
    ProtocolError.__name__: ProtocolError,
}


def _portable(exc: Exception) -> tuple[str, str]:
    """An exception as (SIQError class name, message): raised again in the parent as itself
    (the same HTTP status); anything else becomes a 500's RuntimeError there."""
    name = type(exc).__name__
    if _PORTABLE.get(name) is type(exc):
        return name, str(exc)
    return "RuntimeError", f"{name}: {exc}"


def _rebuilt(name: str, message: str) -> Exception:
    """The exception `_portable` described, made again here (to be raised by the caller)."""
    kind = _PORTABLE.get(name)
    return RuntimeError(message) if kind is None else kind(message)


@dataclass
class _Job:
    uploads: list[tuple[str, bytes]] | Callable[[Any], Any]  # images, or `run`'s work
    future: asyncio.Future[Any]

    @property
    def images(self) -> int:  # a `run` job's images are not known: it counts as RUN_WEIGHT
        return RUN_WEIGHT if callable(self.uploads) else len(self.uploads)


@dataclass
class _Child:
    bundle: Bundle
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    loop: asyncio.AbstractEventLoop
    ready: bool = False
    in_flight: dict[int, _Job] = field(default_factory=dict)  # the batch it is working on
    deadline: asyncio.TimerHandle | None = None  # when that batch is overdue


class InferencePool:
    """`processes` children per bundle, used from one event loop at a time."""

    def __init__(
        self,
        processes: int,
        *,
        max_pixels: int,
        max_request_pixels: int | None = None,
        child_pixels: int = MAX_PIXELS,  # larger requests come back unrun
        batch_timeout_s: float = BATCH_TIMEOUT_S,
        target: Callable[..., None] = _serve,  # the child's main (tests give a stand-in)
        observe: Callable[[int], Any] | None = None,  # told each batch's images run (metrics)
        lost: Callable[[str], Any] | None = None,  # told each child lost, by reason (metrics)
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be >= 1")
        self.processes = processes
        self._limits: dict[str, Any] = {  # the child's keyword arguments
            "max_pixels": max_pixels,
            "max_request_pixels": max_request_pixels,
            "child_pixels": child_pixels,
        }
        self.batch_timeout_s = batch_timeout_s
        self._target = target
        self._observe = observe
        self._lost_one = lost
        self._context = multiprocessing.get_context("spawn")  # fork is unsafe with threads
        self._children: list[_Child] = []
        self._waiting: collections.deque[tuple[int, _Job]] = collections.deque()
        self._jobs = itertools.count()
        self._stopped: list[multiprocessing.process.BaseProcess] = []

    async def recognize(self, bundle: Bundle, uploads: list[tuple[str, bytes]]) -> Answer | None:
        """Labels, probabilities and timings of `uploads` (name, bytes) through `bundle`'s
        network in a child; the request's own error (ImageError, a pixel budget's 413...)
        raised here; None for a request over `child_pixels`, for the caller to run itself."""
        return await self._submit(bundle, uploads)

    async def run(self, bundle: Bundle, work: Callable[[Any], Any]) -> Any:
        """`work(loaded)` in a child, `loaded` its LoadedBundle of `bundle`: a request that
        is not a batch of uploads (an inference request of the Open Inference Protocol). It
        shares the child's round trip with other waiting requests (counted as `RUN_WEIGHT`
        images) but runs alone; its SIQError is raised here as itself, like `recognize`'s.
        `work` must be picklable (a module-level function, or a functools.partial of one)."""
        return await self._submit(bundle, work)

    async def _submit(self, bundle: Bundle, uploads: Any) -> Any:
        self.warm(bundle)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((next(self._jobs), _Job(uploads, future)))
        self._feed()
        return await future

    def warm(self, bundle: Bundle) -> None:
        """Have `processes` children of `bundle` on the running loop, starting the missing
        ones (they load the network while requests wait in line); children of another bundle
        stop once their batch is answered. The app calls it when a bundle goes into service,
        so the first request does not wait for a spawn; `recognize` calls it too."""
        loop = asyncio.get_running_loop()
        if self._stopped:  # children stopped earlier: reap the ones that have exited
            self._reap()
        self._retire(bundle.id, loop)
        while len(self._children) < self.processes:
            self._start(bundle, loop)

    @property
    def child_pixels(self) -> int:
        """The children's pixel bound: `run`'s work should hand back larger requests too."""
        return self._limits["child_pixels"]

    def pids(self) -> list[int]:
        return [c.process.pid for c in self._children if c.process.pid is not None]

    def running(self) -> int:
        """Children started and not yet lost or stopped (the metrics' gauge)."""
        return len(self._children)

    def close(self) -> None:
        """Stop every child (the lifespan's end)."""
        for child in list(self._children):
            self._stop(child, NotReadyError("the client is shutting down"))
        for _, job in self._waiting:
            if not job.future.done():
                job.future.set_exception(NotReadyError("the client is shutting down"))
        self._waiting.clear()
        self._reap(timeout=2)

    def _retire(self, bundle_id: str, loop: asyncio.AbstractEventLoop) -> None:
        """Children of another bundle (or of another event loop, as a test client makes)
        stop once their batch is answered."""
        for child in list(self._children):
            if child.bundle.id != bundle_id or child.loop is not loop:
                self._children.remove(child)
                if not child.in_flight or child.loop is not loop:
                    self._stop(child, NotReadyError("the bundle changed; try again"))

    def _start(self, bundle: Bundle, loop: asyncio.AbstractEventLoop) -> None:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=self._target, args=(theirs, bundle), kwargs=self._limits, daemon=True
        )
        process.start()
        theirs.close()
        child = _Child(bundle, process, ours, loop)
        self._children.append(child)
        loop.add_reader(ours.fileno(), self._readable, child)

    def _feed(self) -> None:
        """Hand the waiting requests to the ready children with no batch in flight."""
        for child in list(self._children):  # _died may replace one meanwhile
            if not self._waiting:
                return
            if not child.ready or child.in_flight:
                continue
            batch: dict[int, _Job] = {}
            images = 0
            while self._waiting:
                job_id, job = self._waiting[0]
                if job.future.done():  # its caller left
                    self._waiting.popleft()
                    continue
                if batch and images + job.images > MAX_BATCH_IMAGES:
                    break  # the next batch's (a larger request goes alone)
                batch[job_id] = job
                images += job.images
                self._waiting.popleft()
            if not batch:
                return
            try:
                child.conn.send([(job_id, job.uploads) for job_id, job in batch.items()])
            except OSError:
                child.in_flight = batch
                self._died(child)
                continue
            except Exception:  # a `run` job that cannot be pickled: nothing was sent
                self._refuse_unpicklable(batch)
                self._feed()  # the rest, to this child again
                return
            child.in_flight = batch
            child.deadline = child.loop.call_later(self.batch_timeout_s, self._overdue, child)

    def _refuse_unpicklable(self, batch: dict[int, _Job]) -> None:
        """Fail the jobs of `batch` that cannot be pickled (a `run` of a lambda, say: a bug
        of its caller, a 500); the others go back to the front of the line."""
        keep = []
        for job_id, job in batch.items():
            try:
                ForkingPickler.dumps(job.uploads)
            except Exception as exc:
                if not job.future.done():
                    why = f"not sent to an inference process: {type(exc).__name__}: {exc}"
                    job.future.set_exception(RuntimeError(why))
            else:
                keep.append((job_id, job))
        if len(keep) == len(batch):  # none failed alone: the batch as a whole cannot go
            for _, job in keep:
                job.future.set_exception(RuntimeError("not sent to an inference process"))
            return
        self._waiting.extendleft(reversed(keep))

    def _overdue(self, child: _Child) -> None:
        """A batch not answered in time (a decoder that never returns): the child is killed,
        its requests get 503, the others in line go to its replacement."""
        if not child.in_flight:
            return
        log.error(
            "inference process %s gave no answer in %g s; killed, %d requests failed",
            child.process.pid,
            self.batch_timeout_s,
            len(child.in_flight),
        )
        child.process.kill()
        why = f"the inference process gave no answer in {self.batch_timeout_s:g} s; try again"
        self._lost(child, NotReadyError(why), "unanswered")

    def _readable(self, child: _Child) -> None:
        try:
            message = child.conn.recv()
        except (EOFError, OSError):
            self._died(child)
            return
        if isinstance(message, tuple):  # ("ready", None) or ("failed", why)
            kind, why = message
            if kind == "ready":
                child.ready = True
            else:
                log.error("inference process could not load bundle %s: %s", child.bundle.id, why)
                failed = NotReadyError(f"the inference process failed: {why}")
                self._count_lost("load_failed")
                self._stop(child, failed)
                self._fail_waiting(failed)
            self._feed()
            return
        if child.deadline is not None:
            child.deadline.cancel()
        ran = 0  # images the child's network ran (not those it handed back or refused)
        for job_id, status, payload in message:
            job = child.in_flight.pop(job_id, None)
            if job is None:
                continue
            ran += job.images if status == "ok" else 0
            if job.future.done():
                continue
            if status in ("ok", "heavy", "done"):
                job.future.set_result(payload)
            else:
                job.future.set_exception(_rebuilt(*payload))
        child.in_flight.clear()
        if ran and self._observe is not None:
            self._observe(ran)
        if child not in self._children:  # retired: its batch is answered
            self._stop(child, NotReadyError("the bundle changed; try again"))
        self._feed()

    def _died(self, child: _Child) -> None:
        log.error(
            "inference process %s exited (code %s); %d requests failed",
            child.process.pid,
            child.process.exitcode,
            len(child.in_flight),
        )
        self._lost(child, NotReadyError("the inference process exited; try again"), "exited")

    def _lost(self, child: _Child, exc: Exception, reason: str) -> None:
        """A child gone (`reason`): its batch fails with `exc`; a replacement takes the line."""
        self._count_lost(reason)
        self._stop(child, exc)
        if child.ready and self._waiting:  # the others in line were not its fault
            self._start(child.bundle, child.loop)
        elif not self._children:  # it never started: the next ones would fail the same way
            self._fail_waiting(exc)

    def _count_lost(self, reason: str) -> None:
        if self._lost_one is not None:
            self._lost_one(reason)

    def _fail_waiting(self, exc: Exception) -> None:
        while self._waiting:
            _, job = self._waiting.popleft()
            if not job.future.done():
                job.future.set_exception(exc)

    def _stop(self, child: _Child, exc: Exception) -> None:
        """Close the child's pipe (it exits), fail whatever it still had."""
        if child in self._children:
            self._children.remove(child)
        if child.deadline is not None:
            child.deadline.cancel()
        if not child.loop.is_closed():
            child.loop.remove_reader(child.conn.fileno())
        child.conn.close()
        for job in child.in_flight.values():
            if not job.future.done() and not job.future.get_loop().is_closed():
                job.future.set_exception(exc)
        child.in_flight.clear()
        self._stopped.append(child.process)  # it exits on its pipe's EOF; reaped later
        self._reap()

    def _reap(self, timeout: float = 0.0) -> None:
        for process in list(self._stopped):
            process.join(timeout=timeout)
            if process.is_alive() and timeout > 0:
                process.terminate()
                process.join(timeout=2)
            if not process.is_alive():
                self._stopped.remove(process)
