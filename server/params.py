"""A quantize job's parameters and the per-data-set recipes of training defaults: the one
place both are written down (torch-free: the HTTP service imports it).

- `JobParams` holds every knob a caller may set, with its type, bounds, default and help.
  `QuantizeJobCreate` (the body of POST /quantize-jobs) is the same fields with
  `weight_bits` and `activation_bits` required; `QuantizeConfig` (what the pipeline runs)
  adds the config `version`. `python -m server quantize` builds its flags from these fields
  (server/cli.py), so the names, bounds and help agree everywhere.
- `Recipe` is a data-set family's training defaults (epochs, learning rates, batch size,
  augmentation); `RECIPES` has one per family (mnist, digits, imagefolder). A job's
  `epochs` / `retrain_epochs` override the recipe's (`Recipe.for_job`).

A null knob means "the default": dropped before validation, so a stored job config lists
only what the caller set.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.errors import ConfigError

__all__ = [
    "CONFIG_VERSION",
    "MAX_LIMIT",
    "JobParams",
    "QuantizeJobCreate",
    "QuantizeConfig",
    "PhotoAugment",
    "HandwritingAugment",
    "Recipe",
    "RECIPES",
]

CONFIG_VERSION = 1
MAX_LIMIT = 10_000_000  # train_limit / test_limit: far above any data set here
# Work a 2-core server finishes in hours, not weeks (the largest recipe trains 40 epochs).
MAX_EPOCHS = 100
MAX_RETRAIN_EPOCHS = 20
MAX_ITERATIONS = 20

WeightBits = Annotated[
    int, Field(ge=1, le=8, description="bits per weight code: each layer's codebook has 2^b values")
]
LayerBits = Annotated[int, Field(ge=1, le=8)]
LayerSparsity = Annotated[float, Field(ge=0, lt=1)]
MIN_BUDGET = 2048  # below this not even the manifest fits
ActivationBits = Annotated[
    int, Field(ge=2, le=8, description="bits per activation: unsigned a-bit feature maps")
]


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


class JobParams(BaseModel):
    """Every knob of a quantize job (README, "Job parameters")."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, json_schema_extra=_null_means_default
    )

    dataset: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="data set: mnist, digits, or an image folder listed by GET /datasets",
        examples=["mnist"],
    )
    weight_bits: WeightBits = 4
    activation_bits: ActivationBits = 4
    epochs: float | None = Field(
        None, gt=0, le=MAX_EPOCHS, description="float training epochs (default: the data set's)"
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
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="seeds data order, initialisation, validation split"
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
    bits_per_layer: dict[str, LayerBits] | None = Field(
        None,
        description="codebook bits of named layers, e.g. fc1=2,conv1=4 (the rest: weight_bits)",
    )
    sparsity_per_layer: dict[str, LayerSparsity] | None = Field(
        None, description="share of each named layer's weights pruned, e.g. fc1=0.95,conv2=0.7"
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

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class QuantizeJobCreate(JobParams):
    """Body of POST /quantize-jobs: the bit widths have no default over HTTP."""

    weight_bits: WeightBits
    activation_bits: ActivationBits

    def to_config(self) -> dict[str, Any]:
        """The job's stored config: only what the caller set."""
        return self.model_dump(exclude_unset=True)


class QuantizeConfig(JobParams):
    """What the pipeline runs: the parameters plus the config version (ConfigError names the
    field of a bad one, through `from_dict`)."""

    version: int = CONFIG_VERSION

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != CONFIG_VERSION:
            raise ValueError(f"config version {value!r} is not {CONFIG_VERSION}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, d: Any) -> QuantizeConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be an object, got {type(d).__name__}")
        try:
            return cls.model_validate(d)
        except ValidationError as exc:
            raise _config_error(exc) from None


def _config_error(exc: ValidationError) -> ConfigError:
    """The first problem as a ConfigError whose `field` names the parameter."""
    first = exc.errors()[0]
    name = ".".join(str(p) for p in first.get("loc", ())) or "config"
    message = first.get("msg", "invalid")
    if first.get("type") == "extra_forbidden":
        message = "unknown parameter (not a job parameter)"
    err = ConfigError(f"{name}: {message}")
    err.field = name  # type: ignore[attr-defined]
    return err


class PhotoAugment(BaseModel):
    """Random resized crop + flip, then colour jitter (server/training/augment.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_area: float = 0.55  # the crop keeps min_area..1 of the image's area
    max_aspect: float = 1.33  # aspect ratio within 1/max_aspect..max_aspect
    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.25  # gain 1 +- brightness
    contrast: float = 0.25  # contrast stretch 1 +- contrast around the image mean


class HandwritingAugment(BaseModel):
    """Digits as other writers and captures give them (server/training/augment_digits.py):
    each transform's size and the probability an image gets it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep: float = 0.15  # share of a batch left as it is
    rotate_deg: float = 12.0  # rotation within +- this
    slant: float = 0.3  # shear (tan of the angle) within +- this
    scale: float = 0.12  # each axis by 1 +- scale (the aspect changes too)
    shift: float = 0.08  # of the half-width (about one pixel)
    p_width: float = 0.6  # thicker or thinner strokes
    thicken: float = 2.0  # 3x3 dilations, up to (fractional: blended)
    thin: float = 0.6  # blend of a 3x3 erosion, up to
    p_lowres: float = 0.5  # down to lowres_min..lowres_max pixels and back up
    lowres_min: int = 10
    lowres_max: int = 16
    p_blur: float = 0.35  # Gaussian blur, sigma up to blur_sigma
    blur_sigma: float = 1.0
    p_noise: float = 0.3  # additive Gaussian noise, level up to noise
    noise: float = 0.08


class Recipe(BaseModel):
    """A data-set family's training defaults. Float training uses `lr` and `weight_decay`;
    SIQ retraining `retrain_lr` (halved each iteration) and no weight decay."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: float
    retrain_epochs: float
    lr: float = 3e-3
    retrain_lr: float = 5e-4
    batch_size: int = 128
    weight_decay: float = 1e-4
    augment_shift: int = 0  # random shifts of up to this many pixels
    photo_augment: PhotoAugment | None = None
    handwriting_augment: HandwritingAugment | None = None

    def for_job(self, params: JobParams) -> Recipe:
        """This recipe with the job's epochs / retrain_epochs where it sets them."""
        update = {
            k: float(v)
            for k, v in (("epochs", params.epochs), ("retrain_epochs", params.retrain_epochs))
            if v is not None
        }
        return self.model_copy(update=update)


RECIPES: dict[str, Recipe] = {
    "mnist": Recipe(
        epochs=6, retrain_epochs=1.0, augment_shift=2, handwriting_augment=HandwritingAugment()
    ),
    "digits": Recipe(
        epochs=20, retrain_epochs=4.0, retrain_lr=1e-3, batch_size=64, augment_shift=2
    ),
    "imagefolder": Recipe(
        epochs=40,
        retrain_epochs=3.0,
        lr=2e-3,
        batch_size=32,
        weight_decay=5e-4,
        photo_augment=PhotoAugment(),
    ),
}
