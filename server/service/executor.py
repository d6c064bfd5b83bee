"""Where jobs run: `SIQ_EXECUTOR=local` (the default: worker processes on this machine,
`SIQ_MAX_CONCURRENT_JOBS` at a time) or `ray` (one Ray task per job on a cluster at
`SIQ_RAY_ADDRESS`: `local` starts an embedded one with the server, `auto` joins the cluster
this machine belongs to, `ray://host:10001` reaches a head's client port).

Both runners have one interface (`Runner`). Ray is an optional extra (`pip install
'.[ray]'`): the server imports it only when the executor asks for it, and says so in one
line when it is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from server.service.bundles import BundleStore
from server.service.jobs import JobStore
from server.service.local_runner import JobRunner
from server.service.settings import ServerSettings
from shared.errors import ConfigError

__all__ = ["Runner", "make_runner"]


class Runner(Protocol):
    def start(self) -> None: ...
    def stop(self, timeout: float = 10.0) -> None: ...
    def alive(self) -> bool: ...
    def wake(self) -> None: ...


def make_runner(
    settings: ServerSettings,
    store: JobStore,
    bundles: BundleStore,
    on_job_end: Callable[[str], None],
) -> Runner:
    if settings.executor == "ray":
        try:
            from server.service.ray_runner import RayRunner
        except ImportError as exc:
            raise ConfigError(
                f"SIQ_EXECUTOR=ray needs Ray, which is not installed ({exc.name}): "
                "pip install 'siq[ray]' (in a checkout: pip install -e '.[ray]')"
            ) from None
        return RayRunner(store, bundles, settings, on_job_end=on_job_end)
    return JobRunner(store, settings, on_job_end=on_job_end)
