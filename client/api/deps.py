"""Dependencies the client's routes take through `Annotated` aliases. `create_app` puts the
settings, the bundle manager and the metrics on `app.state`; the lifespan adds the inference
limiter. The getters are `async def` so FastAPI calls them in the event loop instead of handing
each to a worker thread (the client answers hundreds of requests a second)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from client.admission import Admission, Lanes
from client.batching import Batcher
from client.dispatch import Dispatcher
from client.inference_process import InferencePool
from client.manager import BundleManager, LoadedBundle
from client.metrics import ClientMetrics
from client.settings import ClientSettings
from shared.errors import NotReadyError

__all__ = [
    "SettingsDep",
    "ManagerDep",
    "MetricsDep",
    "LanesDep",
    "AdmissionDep",
    "DispatcherDep",
    "LoadedDep",
    "Serving",
    "serving_of",
]


async def get_settings(request: Request) -> ClientSettings:
    return request.app.state.settings


async def get_manager(request: Request) -> BundleManager:
    return request.app.state.manager


async def get_metrics(request: Request) -> ClientMetrics:
    return request.app.state.metrics


async def get_lanes(request: Request) -> Lanes | None:
    # the app's limiters once the lifespan has started them, else None (anyio's default one)
    return getattr(request.app.state, "lanes", None)


async def get_admission(request: Request) -> Admission:
    return request.app.state.admission


async def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


SettingsDep = Annotated[ClientSettings, Depends(get_settings)]
ManagerDep = Annotated[BundleManager, Depends(get_manager)]
MetricsDep = Annotated[ClientMetrics, Depends(get_metrics)]
LanesDep = Annotated[Lanes | None, Depends(get_lanes)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def current_bundle(manager: BundleManager) -> LoadedBundle:
    """The bundle serving this request, whatever swaps happen meanwhile; 503 before the first."""
    loaded = manager.current
    if loaded is None:
        raise NotReadyError(
            f"no bundle is loaded yet ({manager.source.describe()}); try again shortly"
        )
    return loaded


async def get_loaded(manager: ManagerDep) -> LoadedBundle:
    return current_bundle(manager)


LoadedDep = Annotated[LoadedBundle, Depends(get_loaded)]


@dataclass(frozen=True, slots=True)
class Serving:
    """What a recognition route needs, in one object. The hot route takes it from
    `serving_of(request)` rather than as FastAPI dependencies: FastAPI resolves each
    dependency with its own bookkeeping (py-spy under load: 10 % of /recognize's GIL time went
    to solving six of them)."""

    loaded: LoadedBundle
    settings: ClientSettings
    metrics: ClientMetrics
    dispatcher: Dispatcher
    admission: Admission
    batcher: Batcher
    processes: InferencePool | None  # SIQ_INFERENCE_PROCESSES > 0


def serving_of(request: Request) -> Serving:
    """The app's serving state and the bundle of this request; 503 before the first bundle."""
    state = request.app.state
    loaded = current_bundle(state.manager)
    return Serving(
        loaded,
        state.settings,
        state.metrics,
        state.dispatcher,
        state.admission,
        state.batcher,
        state.processes,
    )
