"""Dependencies the routes take through `Annotated` aliases: the server's context (settings,
stores, runner, metrics) and the bearer-token checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.service.bundles import BundleStore
from server.service.datasets import DatasetStore
from server.service.executor import Runner
from server.service.guard import token_problem
from server.service.jobs import JobStore
from server.service.metrics import ServerMetrics
from server.service.networks import NetworkStore
from server.service.settings import ServerSettings
from server.service.sweeps import SweepStore

__all__ = [
    "ServerContext",
    "ContextDep",
    "SettingsDep",
    "JobStoreDep",
    "BundleStoreDep",
    "RunnerDep",
    "SweepStoreDep",
    "require_writer",
    "require_reader",
]


@dataclass
class ServerContext:
    settings: ServerSettings
    jobs: JobStore
    bundles: BundleStore
    runner: Runner
    metrics: ServerMetrics
    sweeps: SweepStore
    datasets: DatasetStore
    networks: NetworkStore


def get_context(request: Request) -> ServerContext:
    return request.app.state.ctx


ContextDep = Annotated[ServerContext, Depends(get_context)]


def get_settings(ctx: ContextDep) -> ServerSettings:
    return ctx.settings


def get_jobs(ctx: ContextDep) -> JobStore:
    return ctx.jobs


def get_bundles(ctx: ContextDep) -> BundleStore:
    return ctx.bundles


def get_runner(ctx: ContextDep) -> Runner:
    return ctx.runner


def get_sweeps(ctx: ContextDep) -> SweepStore:
    return ctx.sweeps


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
JobStoreDep = Annotated[JobStore, Depends(get_jobs)]
BundleStoreDep = Annotated[BundleStore, Depends(get_bundles)]
RunnerDep = Annotated[Runner, Depends(get_runner)]
SweepStoreDep = Annotated[SweepStore, Depends(get_sweeps)]

_bearer = HTTPBearer(auto_error=False, description="SIQ_API_TOKEN, when the server has one")
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _check_token(
    settings: ServerSettings, credentials: HTTPAuthorizationCredentials | None
) -> None:
    header = f"Bearer {credentials.credentials}" if credentials else None
    if problem := token_problem(settings.api_token, header):
        raise problem


def require_writer(settings: SettingsDep, credentials: CredentialsDep) -> None:
    """Every write needs the token when SIQ_API_TOKEN is set."""
    _check_token(settings, credentials)


def require_reader(settings: SettingsDep, credentials: CredentialsDep) -> None:
    """Reads need the token only when SIQ_PROTECT_READS is true."""
    if settings.protect_reads:
        _check_token(settings, credentials)
