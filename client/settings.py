"""The client's one settings class, read from `SIQ_*` environment variables.

`SIQ_BUNDLE` names where the network comes from:

    <64 hex digits>     that bundle, fetched from SIQ_SERVER_URL (and cached in SIQ_STATE_DIR)
    latest:<dataset>    the server's newest bundle for the data set, polled every
                        SIQ_POLL_INTERVAL_S seconds and swapped in live
    <path>              a bundle file on disk (no server needed)

`load_settings()` refuses a configuration it cannot serve with (ConfigError, one clear line).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError

__all__ = ["ClientSettings", "BundleSource", "parse_bundle_source", "load_settings"]

BUNDLE_ID = re.compile(r"^[0-9a-fA-F]{64}$")
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIQ_", extra="ignore", populate_by_name=True)

    server_url: str | None = Field(None, description="training server, e.g. http://server:8000")
    bundle: str | None = Field(None, description="bundle id, latest:<dataset>, or a file path")
    poll_interval_s: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="latest: poll period",
        validation_alias=AliasChoices(
            "SIQ_POLL_INTERVAL_S", "SIQ_POLL_INTERVAL", "poll_interval_s"
        ),
    )
    retry_interval_s: float = Field(5.0, gt=0, le=3600, description="retry while none loaded")
    fetch_timeout_s: float = Field(30.0, gt=0, le=600)
    state_dir: Path = Field(Path("var/client"), description="cache of the last good bundle")
    bundle_hmac_key: SecretStr | None = Field(None, description="refuse unsigned bundles")
    api_token: SecretStr | None = Field(None, description="sent as Bearer when reads need it")
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="request body limit")
    max_images: int = Field(64, ge=1, le=4096, description="images per /recognize request")
    max_pixels: int = Field(16_000_000, ge=1, description="pixels per image (bomb guard)")
    max_request_pixels: int = Field(
        16_000_000, ge=1, description="decoded pixels per /recognize request, all images summed"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="a request body must arrive whole within this (408)"
    )
    body_min_rate: float = Field(
        1024.0,
        ge=0,
        le=1e9,
        description="bytes/s a request body must average once SIQ_BODY_RATE_GRACE_S have "
        "passed (408); 0: no minimum",
    )
    body_rate_grace_s: float = Field(
        5.0, ge=0, le=3600, description="the time a body has before its minimum rate applies"
    )
    max_reading_bodies: int = Field(
        128,
        ge=1,
        le=100_000,
        description="request bodies read at once; more get 503 at once (memory: this x "
        "SIQ_MAX_UPLOAD_BYTES at most)",
    )
    max_queued_requests: int = Field(
        64,
        ge=0,
        le=100_000,
        description="read requests that may wait for a worker; more get 503 at once",
    )
    inference_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="requests recognised at once, the others wait in line (default: CPUs)",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="server processes (uvicorn workers) sharing the port; each loads the bundle",
    )
    inference_processes: int = Field(
        0,
        ge=0,
        le=64,
        description="child processes per server process that decode and run the network "
        "(client/inference_process.py); 0: in the server process",
    )

    @model_validator(mode="after")
    def _request_holds_one_image(self) -> ClientSettings:
        if self.max_pixels > self.max_request_pixels:
            raise ValueError(
                f"SIQ_MAX_PIXELS ({self.max_pixels}) must not exceed SIQ_MAX_REQUEST_PIXELS "
                f"({self.max_request_pixels}): an image that large could never be recognised"
            )
        return self

    @property
    def hmac_key(self) -> str | None:
        """The signing key, or None when unset or empty (signatures then are not checked)."""
        key = self.bundle_hmac_key.get_secret_value() if self.bundle_hmac_key else ""
        return key or None


@dataclass(frozen=True)
class BundleSource:
    kind: Literal["id", "latest", "file"]
    value: str  # the id (lower case), the data set name, or the file path

    def describe(self) -> str:
        return {"id": "bundle {}", "latest": "latest:{}", "file": "file {}"}[self.kind].format(
            self.value
        )


def parse_bundle_source(bundle: str | None, server_url: str | None) -> BundleSource:
    """Interpret SIQ_BUNDLE; ConfigError when it cannot be used with SIQ_SERVER_URL."""
    if not bundle or not bundle.strip():
        raise ConfigError(
            "SIQ_BUNDLE is not set: give a bundle id (64 hex digits), latest:<dataset>, "
            "or the path of a bundle file"
        )
    bundle = bundle.strip()
    if BUNDLE_ID.match(bundle):
        source = BundleSource("id", bundle.lower())
    elif bundle.startswith("latest:"):
        dataset = bundle[len("latest:") :]
        if not DATASET_NAME.match(dataset):
            raise ConfigError(f"SIQ_BUNDLE={bundle!r}: {dataset!r} is not a data set name")
        source = BundleSource("latest", dataset)
    else:
        path = Path(bundle).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"SIQ_BUNDLE={bundle!r} is neither a bundle id (64 hex digits), "
                "latest:<dataset>, nor an existing bundle file"
            )
        return BundleSource("file", str(path))
    if not server_url:
        raise ConfigError(
            f"SIQ_BUNDLE={bundle!r} needs SIQ_SERVER_URL (e.g. http://server:8000) to fetch from"
        )
    if not re.match(r"^https?://[^/\s]+", server_url):
        raise ConfigError(f"SIQ_SERVER_URL={server_url!r} is not an http(s) URL")
    return source


def load_settings(**overrides) -> tuple[ClientSettings, BundleSource]:
    """Settings from the environment (plus overrides) and the parsed bundle source."""
    try:
        settings = ClientSettings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = str(first["loc"][0]).upper() if first["loc"] else ""
        name = (loc if loc.startswith("SIQ_") else "SIQ_" + loc) if loc else "a setting"
        raise ConfigError(f"{name}: {first['msg']}") from exc
    source = parse_bundle_source(settings.bundle, settings.server_url)
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"SIQ_STATE_DIR={settings.state_dir}: cannot create it ({exc})") from exc
    return settings, source
