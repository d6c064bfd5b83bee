"""Dependencies the client's routes take through `Annotated` aliases. `create_app` puts the
settings, the bundle manager, the metrics and the serving pipeline on `app.state`. The getters
are `async def` so FastAPI calls them in the event loop instead of handing each to a worker
thread (the client answers hundreds of requests a second)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from client.manager import BundleManager, LoadedBundle
from client.metrics import ClientMetrics
from client.serving.pipeline import Pipeline
from client.settings import ClientSettings

__all__ = ["SettingsDep", "ManagerDep", "MetricsDep", "LoadedDep", "pipeline_of"]


async def get_settings(request: Request) -> ClientSettings:
    return request.app.state.settings


async def get_manager(request: Request) -> BundleManager:
    return request.app.state.manager


async def get_metrics(request: Request) -> ClientMetrics:
    return request.app.state.metrics


async def get_loaded(manager: Annotated[BundleManager, Depends(get_manager)]) -> LoadedBundle:
    return manager.serving()  # 503 before the first bundle


SettingsDep = Annotated[ClientSettings, Depends(get_settings)]
ManagerDep = Annotated[BundleManager, Depends(get_manager)]
MetricsDep = Annotated[ClientMetrics, Depends(get_metrics)]
LoadedDep = Annotated[LoadedBundle, Depends(get_loaded)]


def pipeline_of(request: Request) -> Pipeline:
    """The serving pipeline. The hot routes take it so rather than as a FastAPI dependency:
    resolving dependencies has per-request bookkeeping of its own, which showed in profiles."""
    return request.app.state.pipeline
