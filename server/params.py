"""A quantize job's parameters: every knob a caller may set, with its type, bounds, default
and help, written down once (torch-free: the HTTP service imports it).

- `JobKnobs`: the knobs a sweep applies to every cell (all but the three a sweep spans).
- `JobParams`: a job's parameters, the knobs plus `weight_bits`, `activation_bits` and
  `seed`. The pipeline runs one; `python -m server quantize` builds its flags from its fields
  (server/cli.py), so the names, bounds and help agree everywhere.
- `QuantizeJobCreate`: the body of POST /quantize-jobs, the same fields with the bit widths
  required. It *is* a `JobParams`: the route puts it into the job's `JobSpec` as it is.
- `QuantizeSweepCreate`: the body of POST /quantize-sweeps, the knobs with lists for the grid
  (`weight_bits`, `activation_bits`, `seeds`); `cell(...)` is one cell's `JobParams`.

Every map and list is bounded (`MAX_LAYERS` named layers at most), so an oversized body is
refused at its size, before its entries are validated.

A null knob means "the default": dropped before validation, so a stored job's parameters
list only what the caller set. A bundle's manifest keeps them versioned (`to_dict`, with
`version`); `from_dict` reads that form back and raises ConfigError naming the field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from shared.errors import ConfigError

__all__ = [
    "CONFIG_VERSION",
    "MAX_LIMIT",
    "MAX_LAYERS",
    "Arch",
    "ARCHS",
    "DatasetName",
    "WeightBits",
    "ActivationBits",
    "Seed",
    "Device",
    "NetworkName",
    "JobKnobs",
    "JobParams",
    "QuantizeJobCreate",
    "QuantizeSweepCreate",
    "MAX_RUNS",
]

CONFIG_VERSION = 1
MAX_LIMIT = 10_000_000  # train_limit / test_limit: far above any data set here
# Work a 2-core server finishes in hours, not weeks (the largest recipe trains 40 epochs).
MAX_EPOCHS = 100
MAX_RETRAIN_EPOCHS = 20
MAX_ITERATIONS = 20
# Named layers a per-layer map may hold: the model families have at most 28 weighted layers
# (server/training/models.py; tests/server/test_pipeline.py checks this bound covers them).
MAX_LAYERS = 32
# The network families a job may name (server/training/models.py builds them; a test checks
# the two lists agree): chains lenet and photonet, and the DAGs with batch norm.
Arch = Literal["lenet", "photonet", "mobilenet", "resnet", "dsnet", "m0net"]
ARCHS: tuple[str, ...] = get_args(Arch)
MIN_BUDGET = 2048  # below this not even the manifest fits
MAX_RUNS = 64  # cells of a sweep's grid

DatasetName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="data set: mnist, digits, or an image folder listed by GET /datasets",
        examples=["mnist"],
    ),
]
WeightBits = Annotated[
    int, Field(ge=1, le=8, description="bits per weight code: each layer's codebook has 2^b values")
]
ActivationBits = Annotated[
    int, Field(ge=2, le=8, description="bits per activation: unsigned a-bit feature maps")
]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
# where training runs: auto = cuda when a CUDA GPU is visible, else cpu (server/training/device.py)
Device = Literal["auto", "cpu", "cuda"]
NetworkName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="a network uploaded with POST /networks: the job starts from its weights "
        "(epochs then fine-tune it, default 0) instead of training a family",
    ),
]
LayerName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
LayerBits = Annotated[int, Field(ge=1, le=8)]
LayerSparsity = Annotated[float, Field(ge=0, lt=1)]


def _null_means_default(schema: dict[str, Any], cls: type) -> None:
    """The JSON schema says what `_null_is_default` does: an optional knob may be null."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        nullable = {"type": "null"} in prop.get("anyOf", ())
        if name not in required and "default" in prop and not nullable:
            default = prop.pop("default")
            extra = {k: prop.pop(k) for k in ("title", "description") if k in prop}
            schema["properties"][name] = {
                "anyOf": [dict(prop), {"type": "null"}],
                "default": default,
                **extra,
            }


class JobKnobs(BaseModel):
    """The knobs of a quantize job that every cell of a sweep shares (README, "Jobs"; every
    knob's bounds and help are in /openapi.json)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, json_schema_extra=_null_means_default
    )

    dataset: DatasetName
    arch: Arch | None = Field(
        None,
        description="network family: lenet, photonet (chains), mobilenet, resnet (photos), "
        "dsnet, m0net (digits; m0net: the Cortex-M0's, 2 KB of RAM) (default: the data set's)",
    )
    epochs: float | None = Field(
        None,
        ge=0,
        le=MAX_EPOCHS,
        description="float training epochs (default: the data set's); with `network`, "
        "fine-tuning epochs (default 0)",
    )
    retrain_epochs: float | None = Field(
        None,
        ge=0,
        le=MAX_RETRAIN_EPOCHS,
        description="retraining epochs per SIQ iteration (data set's; twice that under "
        "size_budget_bytes)",
    )
    max_iterations: int = Field(5, ge=1, le=MAX_ITERATIONS, description="SIQ iterations at most")
    tolerance: float = Field(
        0.002, ge=0, le=1, description="converged when validation accuracy changes less than this"
    )
    codebook_tolerance: float | None = Field(
        None, gt=0, le=1, description="... and the relative codebook change is below this"
    )
    kmeans: Literal["optimal", "lloyd"] = Field(
        "optimal", description="codebook fit: optimal (exact 1-D dynamic programming) or lloyd"
    )
    weight_quantizer: Literal["kmeans", "uniform"] = Field(
        "kmeans", description="kmeans (SIQ) or uniform (the baseline grid)"
    )
    train_limit: int | None = Field(
        None, ge=2, le=MAX_LIMIT, description="use only the first N training images"
    )
    test_limit: int | None = Field(
        None, ge=1, le=MAX_LIMIT, description="use only the first N test images"
    )
    bits_per_layer: dict[LayerName, LayerBits] | None = Field(
        None,
        max_length=MAX_LAYERS,
        description="codebook bits of named layers, e.g. fc1=2,conv1=4 (the rest: weight_bits)",
    )
    sparsity_per_layer: dict[LayerName, LayerSparsity] | None = Field(
        None,
        max_length=MAX_LAYERS,
        description="share of each named layer's weights pruned, e.g. fc1=0.95,conv2=0.7",
    )
    sparsity: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="share of all weights pruned, per-layer rates chosen by measured sensitivity",
    )
    size_budget_bytes: int | None = Field(
        None,
        ge=MIN_BUDGET,
        le=256 * 1024 * 1024,
        description="the bundle file's size limit: per-layer bits and sparsity chosen by "
        "measured sensitivity; weight_bits is then the widest codebook a layer may get",
    )

    device: Device | None = Field(
        None,
        description="where training runs: auto (cuda when a GPU is visible), cpu or cuda "
        "(default: the server's SIQ_DEVICE, auto)",
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers_are_integers(cls, data: Any) -> Any:
        return _whole_numbers(data)


class JobParams(JobKnobs):
    """Every knob of one quantize job: what the pipeline runs."""

    weight_bits: WeightBits = 4
    activation_bits: ActivationBits = 4
    seed: Seed = Field(0, description="seeds data order, initialisation, validation split")
    network: NetworkName | None = None

    @model_validator(mode="after")
    def _network_or_family(self) -> Self:
        if self.network is not None and self.arch is not None:
            raise ValueError("arch: a job names a network family or a `network`, not both")
        if self.network is None and self.epochs == 0:
            raise ValueError("epochs: 0 epochs only with a `network` (fine-tuning)")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Every parameter and the config `version`: what a bundle's manifest records."""
        return {**self.model_dump(), "version": CONFIG_VERSION}

    @classmethod
    def from_dict(cls, d: Any) -> Self:
        """The parameters of `d` (a `to_dict` or only some knobs); ConfigError names the
        field of a bad one."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be an object, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise _field_error("version", f"config version {version!r} is not {CONFIG_VERSION}")
        try:
            return cls.model_validate(d)
        except ValidationError as exc:
            raise _config_error(exc) from None


class QuantizeJobCreate(JobParams):
    """Body of POST /quantize-jobs: the bit widths have no default over HTTP."""

    weight_bits: WeightBits
    activation_bits: ActivationBits


_DISTINCT: dict[str, Any] = {"uniqueItems": True}  # the schema says what `_grid` checks


class QuantizeSweepCreate(JobKnobs):
    """A job's knobs, with lists where a job has one value: weight_bits, activation_bits
    and seeds span the grid; the other knobs apply to every run."""

    weight_bits: list[WeightBits] = Field(min_length=1, max_length=8, json_schema_extra=_DISTINCT)
    activation_bits: list[ActivationBits] = Field(
        min_length=1, max_length=7, json_schema_extra=_DISTINCT
    )
    seeds: list[Seed] = Field(
        [0],
        min_length=1,
        max_length=8,
        json_schema_extra=_DISTINCT,
        description="a float model each",
    )
    epochs: float | None = Field(  # a sweep trains its float models: no 0 here
        None, gt=0, le=MAX_EPOCHS, description="float training epochs (default: the data set's)"
    )
    byte_budget: int | None = Field(
        None, ge=1, description="the best bundle is the most accurate of at most this size"
    )

    @model_validator(mode="before")
    @classmethod
    def _seeds_not_seed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "seed" in data:
            raise ValueError("a sweep takes `seeds` (a list), not `seed`")
        return data

    @model_validator(mode="after")
    def _grid(self) -> QuantizeSweepCreate:
        for name in ("weight_bits", "activation_bits", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name}: distinct values, got {values}")
        runs = len(self.weight_bits) * len(self.activation_bits) * len(self.seeds)
        if runs > MAX_RUNS:
            raise ValueError(f"the grid has {runs} runs; at most {MAX_RUNS}")
        return self

    def knobs(self) -> dict[str, Any]:
        """The knobs the caller set that every cell shares (all but the data set and the
        grid): what a sweep's summary shows as its `config`."""
        grid = {"dataset", "weight_bits", "activation_bits", "seeds", "byte_budget"}
        return self.model_dump(exclude_unset=True, exclude=grid)

    def cell(self, seed: int, weight_bits: int, activation_bits: int) -> JobParams:
        """The parameters of one cell of the grid."""
        cell = {"weight_bits": weight_bits, "activation_bits": activation_bits, "seed": seed}
        return JobParams.model_validate({"dataset": self.dataset, **cell, **self.knobs()})


def _whole_numbers(value: Any) -> Any:
    """`value` with every whole-number float (4.0) an int, in lists and maps too: JSON
    Schema counts 4.0 as an integer, so an integer knob takes it (4.5 is still refused, and
    so are strings and booleans: the models stay strict)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _config_error(exc: ValidationError) -> ConfigError:
    """The first problem of `exc` as a ConfigError whose `field` names the parameter."""
    first = exc.errors()[0]
    name = ".".join(str(p) for p in first.get("loc", ())) or "config"
    message = first.get("msg", "invalid")
    named = re.match(r"Value error, (\w+): (.*)", message, re.S)
    if not first.get("loc") and named and named.group(1) in JobParams.model_fields:
        name, message = named.groups()  # a rule between fields names the one at fault
    if first.get("type") == "extra_forbidden":
        message = "unknown parameter (not a job parameter)"
    return _field_error(name, message)


def _field_error(name: str, message: str) -> ConfigError:
    err = ConfigError(f"{name}: {message}")
    err.field = name  # type: ignore[attr-defined]
    return err
