"""A job's progress: the one event shape, the reporter the training code calls, and the
throttle the job worker and the CLI share (torch-free).

The pipeline emits `ProgressEvent`s to a `ProgressFn` (docs/ARCHITECTURE.md, "The
pipeline"): `{"stage", "fraction" in [0, 1], "message"}`, plus `"iteration"` when an SIQ
iteration ends. Inside, each sub-task gets a `Reporter` for its slice of the job's [0, 1]
and reports its own fraction of that slice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NotRequired, TypedDict

__all__ = ["ProgressEvent", "ProgressFn", "Reporter", "Throttle"]


class ProgressEvent(TypedDict):
    stage: str  # loading, training, quantizing, calibrating, retraining, evaluating, packaging
    fraction: float  # of the whole job, in [0, 1]
    message: str
    iteration: NotRequired[dict[str, Any]]  # when an SIQ iteration ends


ProgressFn = Callable[[ProgressEvent], None]


class Reporter:
    """Maps a sub-task's own fraction in [0, 1] onto [lo, hi] of the job's progress."""

    def __init__(
        self,
        sink: ProgressFn | None,
        stage: str = "running",
        lo: float = 0.0,
        hi: float = 1.0,
        prefix: str = "",
    ) -> None:
        self.sink, self.stage, self.lo, self.hi, self.prefix = sink, stage, lo, hi, prefix

    def __call__(
        self,
        fraction: float,
        message: str,
        iteration: dict[str, Any] | None = None,
        *,
        stage: str | None = None,
    ) -> None:
        if self.sink is None:
            return
        event: ProgressEvent = {
            "stage": stage or self.stage,
            "fraction": float(min(1.0, max(0.0, self.lo + (self.hi - self.lo) * fraction))),
            "message": self.prefix + message,
        }
        if iteration is not None:
            event["iteration"] = iteration
        self.sink(event)

    def part(self, lo: float, hi: float, stage: str | None = None, prefix: str = "") -> Reporter:
        """The slice [lo, hi] of this reporter's range (fractions of it), under `stage`."""
        span = self.hi - self.lo
        return Reporter(
            self.sink,
            stage or self.stage,
            self.lo + span * lo,
            self.lo + span * hi,
            self.prefix + prefix,
        )


class Throttle:
    """Lets an event through unless it repeats the last one's stage within `interval`
    seconds; an iteration's end and the final event (fraction 1) always pass."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last_stage: str | None = None
        self._last = 0.0

    def passes(self, event: ProgressEvent) -> bool:
        now = time.monotonic()
        final = float(event.get("fraction") or 0.0) >= 1.0
        stage = event.get("stage")
        if (
            event.get("iteration") is None
            and not final
            and stage == self._last_stage
            and now - self._last < self.interval
        ):
            return False
        self._last, self._last_stage = now, stage
        return True
