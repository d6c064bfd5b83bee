"""Load shedding for /recognize: a bounded line in front of the inference workers.

At most `workers` requests are recognised at once (the others wait in line); once `queued`
more are already waiting, a new request is refused at once with 503 and `Retry-After`,
before its body is read, instead of joining a line whose wait grows until callers time out.
This is the policy of TorchServe's job queue (`job_queue_size`) and of Triton's queue policy
(`max_queue_size`, rejected requests answered at once).

The count covers a request from admission to its answer, body reading included, so slow
uploads take their place in line too. One event loop drives it (no lock needed): `admit`
and `release` run on the serving loop, never in worker threads.

`Lanes` keeps one worker for ordinary requests: a request whose images decode to more than
`HEAVY_PIXELS` also needs a place in the heavy lane, which holds `workers - 1` (at least 1).
A 4000x4000 RGBA upload takes seconds to decode and shrink here (2.5 s measured on this
machine); without the lane, as many of them as there are workers made every one-digit
request wait that long (3.9 s measured with two).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio

from shared.errors import OverloadedError

__all__ = ["Admission", "Lanes", "HEAVY_PIXELS"]

HEAVY_PIXELS = 2_000_000  # about 0.3 s of PNG decoding here; a 28x28 digit is 784


@dataclass
class Admission:
    workers: int  # requests recognised at once
    queued: int  # requests allowed to wait for a worker
    retry_after_s: float = 1.0
    active: int = field(default=0, init=False)  # admitted and not yet answered
    shed: int = field(default=0, init=False)  # refused since start

    def __post_init__(self) -> None:
        if self.workers < 1 or self.queued < 0:
            raise ValueError("workers must be >= 1 and queued >= 0")

    @property
    def capacity(self) -> int:
        return self.workers + self.queued

    @property
    def waiting(self) -> int:
        return max(0, self.active - self.workers)

    def admit(self) -> None:
        """Take a place, or raise OverloadedError (503 with Retry-After) when all are taken."""
        if self.active >= self.capacity:
            self.shed += 1
            raise OverloadedError(
                f"overloaded: {self.workers} requests are being recognised and {self.queued} "
                f"are waiting; try again in {self.retry_after_header} s",
                retry_after=self.retry_after_header,
            )
        self.active += 1

    def release(self) -> None:
        self.active = max(0, self.active - 1)

    @property
    def retry_after_header(self) -> int:
        return max(1, math.ceil(self.retry_after_s))


class Lanes:
    """The inference limiter (`workers` at once) and the heavy lane inside it. Made in the
    serving event loop (the lifespan), which anyio limiters belong to."""

    def __init__(self, workers: int):
        self.inference = anyio.CapacityLimiter(workers)
        self.heavy = anyio.CapacityLimiter(max(1, workers - 1))

    @contextlib.asynccontextmanager
    async def lane(self, pixels: int) -> AsyncIterator[None]:
        """Hold a heavy-lane place while recognising a request of `pixels` decoded pixels."""
        if pixels <= HEAVY_PIXELS:
            yield
            return
        async with self.heavy:
            yield
