"""Stage 1, admit: two bounded counts, one before the body is read and one after.

- Reading: at most `readers` request bodies are read at once. Past that a request is refused
  at once (503 `overloaded`, `Retry-After`) before a byte of its body is read. Reading costs
  the event loop little but holds the body in memory, so this bounds memory (`readers` x the
  body limit), not CPU.
- Recognising: at most `workers` read requests are decoded and run at once, and at most
  `queued` more wait for them; past that a read request is refused at once (503
  `overloaded`, `Retry-After`) instead of joining a line whose wait grows until callers
  time out: the policy of TorchServe's `job_queue_size` and Triton's `max_queue_size`.

A place in the line is taken only once the body is read, so callers that trickle a body
(slowloris) wait in the reading count, which their deadline and minimum rate (stage 2,
client/serving/read.py) empty, and never hold a place that a read request could use.

One event loop drives both counts (no lock): every call is made on the serving loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from shared.errors import OverloadedError

__all__ = ["Admission"]


@dataclass
class Admission:
    workers: int  # requests decoded and run at once
    queued: int  # read requests allowed to wait for a worker
    readers: int  # request bodies read at once
    retry_after_s: float = 1.0
    reading: int = field(default=0, init=False)  # bodies being read now
    active: int = field(default=0, init=False)  # read, admitted and not yet answered
    shed: int = field(default=0, init=False)  # refused since start, at either count

    def __post_init__(self) -> None:
        if self.workers < 1 or self.queued < 0 or self.readers < 1:
            raise ValueError("workers and readers must be >= 1 and queued >= 0")

    @property
    def capacity(self) -> int:
        return self.workers + self.queued

    @property
    def waiting(self) -> int:
        return max(0, self.active - self.workers)

    @property
    def retry_after_header(self) -> int:
        return max(1, math.ceil(self.retry_after_s))

    def start_reading(self) -> None:
        """Count a body being read, or raise OverloadedError when `readers` are read already."""
        if self.reading >= self.readers:
            self._refuse(f"{self.readers} request bodies are being read already")
        self.reading += 1

    def done_reading(self) -> None:
        self.reading = max(0, self.reading - 1)

    def admit(self) -> None:
        """Take a place in the line of read requests, or raise OverloadedError when all
        are taken."""
        if self.active >= self.capacity:
            self._refuse(
                f"{self.workers} requests are being recognised and {self.queued} are waiting"
            )
        self.active += 1

    def release(self) -> None:
        self.active = max(0, self.active - 1)

    def _refuse(self, why: str) -> None:
        self.shed += 1
        raise OverloadedError(
            f"overloaded: {why}; try again in {self.retry_after_header} s",
            retry_after=self.retry_after_header,
        )
