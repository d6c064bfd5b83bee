"""The training server's one settings class, read from `SIQ_*` environment variables.

Unusable values are refused loudly (a `ConfigError` naming the variable) instead of guessed
around: a blank token or key, a state directory that cannot be written, fewer than one worker.

An *empty* environment variable counts as unset (docker compose passes `${SIQ_API_TOKEN:-}`
when the host has none); an empty SIQ_API_TOKEN is logged as a warning, because it leaves
writes open. A whitespace-only value, or an empty one given in code, is refused.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.service.publishing import PublishRule
from shared.errors import ConfigError

__all__ = ["ServerSettings", "load_settings", "prepare_state_dir"]

log = logging.getLogger(__name__)
REAL_PIPELINE = "server.training.job:run_job"


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIQ_", extra="ignore", env_ignore_empty=True)

    state_dir: Path = Field(Path("state"), description="SQLite database and bundles live here")
    data_dir: Path | None = Field(None, description="data sets (mnist/, image folders)")
    api_token: str | None = Field(None, description="when set, writes need 'Bearer <token>'")
    protect_reads: bool = Field(False, description="reads need the token too (not health)")
    bundle_hmac_key: str | None = Field(None, description="signs bundle downloads")
    max_concurrent_jobs: int = Field(1, ge=1, le=64)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    pipeline: str = Field(REAL_PIPELINE, description="'module:function' that runs a job")
    cancel_grace_s: float = Field(3.0, gt=0, description="then a cancelled worker is killed")
    poll_interval_s: float = Field(0.25, gt=0, le=5, description="job runner's DB poll")
    max_body_bytes: int = Field(
        1 << 20, ge=1024, le=1 << 30, description="request bodies above this are refused (413)"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="a request body must arrive within this (408)"
    )
    # Where jobs run (server/service/executor.py): this machine's worker processes, or Ray.
    executor: Literal["local", "ray"] = "local"
    ray_address: str = Field("local", description="auto | ray://host:10001 | host:port | local")
    ray_job_cpus: float = Field(1.0, gt=0, le=256, description="CPUs each Ray task declares")
    ray_job_gpus: float = Field(0.0, ge=0, le=16, description="GPUs each Ray task declares")
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs of an embedded cluster")
    # the publishing rule (server/service/publishing.py) and the queue's bound
    publish_min_accuracy_over_chance: float = Field(0.05, le=1, description="negative: off")
    publish_max_drop: float = Field(0.05, le=1, description="vs current latest; negative: off")
    max_queued_jobs: int = Field(16, ge=1, le=10_000, description="then submits get 429")
    # data sets uploaded over POST /datasets (server/data/archive.py, upload.py): the archive
    # is streamed to disk, then unpacked under these limits
    dataset_max_upload_bytes: int = Field(
        1 << 30, ge=1024, le=1 << 40, description="an archive above this is refused (413)"
    )
    dataset_upload_timeout_s: float = Field(
        900.0, gt=0, le=86_400, description="an archive must arrive within this (408)"
    )
    dataset_max_files: int = Field(
        50_000, ge=1, le=10_000_000, description="members in an archive, folders included"
    )
    dataset_max_file_bytes: int = Field(
        32 << 20, ge=1, le=1 << 40, description="one unpacked file (a decompression bomb)"
    )
    dataset_max_total_bytes: int = Field(
        4 << 30, ge=1, le=1 << 44, description="all unpacked files (a decompression bomb)"
    )
    dataset_max_ratio: float = Field(
        100.0, ge=1, le=1_000_000, description="unpacked bytes / archive bytes (a bomb)"
    )
    dataset_test_fraction: float = Field(
        0.2, gt=0, lt=1, description="test share of a <class>/* archive's hash split"
    )
    # float ONNX networks uploaded over POST /networks (server/networks/)
    network_max_upload_bytes: int = Field(
        64 << 20, ge=1024, le=1 << 32, description="an ONNX model above this is refused (413)"
    )
    network_upload_timeout_s: float = Field(
        300.0, gt=0, le=86_400, description="an ONNX model must arrive within this (408)"
    )
    network_max_nodes: int = Field(
        2000, ge=1, le=1_000_000, description="ONNX nodes a model may have (413 above)"
    )
    # where training runs when a job does not say (auto: cuda when a GPU is visible)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("api_token", "bundle_hmac_key")
    @classmethod
    def _no_blank_secret(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is set but empty; unset it to disable the feature or give a value")
        return value

    @field_validator("pipeline")
    @classmethod
    def _pipeline_ref(cls, value: str) -> str:
        module, _, attr = value.partition(":")
        if not module or not attr:
            raise ValueError("must look like 'package.module:function'")
        return value

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, value: str) -> str:
        if value in ("auto", "local") or re.fullmatch(r"(ray://)?[\w.-]+:\d{1,5}", value):
            return value
        raise ValueError(
            "must be 'auto', 'local', 'ray://host:port' (a head's client port, usually 10001)"
            " or 'host:port' (a head's GCS port, from a node of the cluster)"
        )

    @property
    def db_path(self) -> Path:
        return self.state_dir / "siq.db"

    @property
    def bundle_dir(self) -> Path:
        return self.state_dir / "bundles"

    @property
    def uploads_dir(self) -> Path:
        """Data sets uploaded over POST /datasets (server/service/datasets.py)."""
        return self.state_dir / "datasets"

    @property
    def networks_dir(self) -> Path:
        """Networks uploaded over POST /networks (server/service/networks.py)."""
        return self.state_dir / "networks"

    @property
    def checkpoint_dir(self) -> Path:
        """Float models a sweep's runs start from (server/service/checkpoints.py)."""
        return self.state_dir / "checkpoints"

    @property
    def publish_rule(self) -> PublishRule:
        return PublishRule(self.publish_min_accuracy_over_chance, self.publish_max_drop)


def load_settings(**overrides: object) -> ServerSettings:
    """Settings from the environment (and overrides), or a ConfigError naming the variable."""
    for name in ("SIQ_API_TOKEN", "SIQ_BUNDLE_HMAC_KEY"):
        if os.environ.get(name) == "":
            log.warning("%s is set but empty: treated as unset (feature off)", name)
    try:
        return ServerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"SIQ_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"unusable server configuration: {problems}") from None


def prepare_state_dir(settings: ServerSettings) -> None:
    """Create the state and bundle directories and prove they can be written."""
    data_dir = settings.data_dir
    if data_dir is not None and data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"SIQ_DATA_DIR={settings.data_dir} is not a directory")
    try:
        settings.bundle_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.state_dir, prefix=".probe-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"SIQ_STATE_DIR={settings.state_dir} is not a writable directory ({exc.strerror}); "
            "point it at a directory this user can write"
        ) from None
    if not os.access(settings.bundle_dir, os.W_OK):
        raise ConfigError(f"{settings.bundle_dir} is not writable")
