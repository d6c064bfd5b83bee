"""The one job-parameter model: the HTTP body, the CLI flags and the pipeline's config are its
fields; the recipes are each family's defaults."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from server.cli import build_parser
from server.data import BUILTIN_DATASETS
from server.params import MAX_LIMIT, JobParams, QuantizeJobCreate
from server.progress import Reporter, Throttle
from server.recipes import RECIPES
from shared.errors import ConfigError


def test_cli_has_one_flag_per_parameter_with_its_help() -> None:
    actions = {a.dest: a for a in build_parser()._actions}
    for name, info in JobParams.model_fields.items():
        assert name in actions, name
        assert actions[name].option_strings == ["--" + name.replace("_", "-")]
        assert (info.description or "") in (actions[name].help or "")
    assert actions["dataset"].required and not actions["weight_bits"].required


def test_http_body_needs_the_bit_widths_and_stores_only_what_was_sent() -> None:
    with pytest.raises(ValidationError, match="activation_bits"):
        QuantizeJobCreate.model_validate({"dataset": "digits", "weight_bits": 4})
    with pytest.raises(ValidationError, match="version"):
        QuantizeJobCreate.model_validate(
            {"dataset": "digits", "weight_bits": 4, "activation_bits": 4, "version": 1}
        )
    body = QuantizeJobCreate.model_validate(
        {"dataset": "digits", "weight_bits": 2, "activation_bits": 4, "seed": None, "epochs": 3}
    )
    assert body.model_dump(exclude_unset=True) == {
        "dataset": "digits",
        "weight_bits": 2,
        "activation_bits": 4,
        "epochs": 3.0,
    }
    assert body.seed == 0 and body.max_iterations == 5 and body.to_dict()["version"] == 1


@pytest.mark.parametrize("field", ["train_limit", "test_limit"])
def test_limits_are_bounded(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        JobParams.from_dict({"dataset": "digits", field: MAX_LIMIT + 1})


def test_every_family_has_a_recipe_and_jobs_override_epochs() -> None:
    assert set(BUILTIN_DATASETS) | {"imagefolder"} == set(RECIPES)
    assert RECIPES["imagefolder"].photo_augment is not None
    job = JobParams(dataset="mnist", retrain_epochs=0.25)
    recipe = RECIPES["mnist"].for_job(job)
    assert recipe.retrain_epochs == 0.25 and recipe.epochs == RECIPES["mnist"].epochs


def test_reporter_maps_slices_and_throttle_keeps_iterations_and_the_end() -> None:
    events: list[dict] = []
    part = Reporter(events.append).part(0.5, 1.0, "training").part(0.0, 0.5, prefix="x: ")
    part(0.5, "half")
    assert events == [{"stage": "training", "fraction": 0.625, "message": "x: half"}]
    throttle = Throttle(60.0)
    first = {"stage": "training", "fraction": 0.1, "message": ""}
    assert throttle.passes(first)  # type: ignore[arg-type]
    assert not throttle.passes({**first, "fraction": 0.2})  # type: ignore[arg-type]
    assert throttle.passes({**first, "iteration": {"iteration": 1}})  # type: ignore[arg-type]
    assert throttle.passes({**first, "fraction": 1.0})  # type: ignore[arg-type]
    assert throttle.passes({**first, "stage": "packaging"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        {"weight_bits": 4.0},
        {"seed": 7.0, "max_iterations": 2.0},
        {"bits_per_layer": {"fc1": 2.0}, "size_budget_bytes": 4096.0},
    ],
)
def test_whole_number_floats_are_integers_as_json_schema_says(body: dict) -> None:
    job = QuantizeJobCreate.model_validate(
        {"dataset": "mnist", "weight_bits": 4, "activation_bits": 4, **body}
    )
    assert job.model_dump(include=set(body)) == body  # 4 == 4.0: the values kept
    assert json.dumps(job.model_dump(include=set(body))).count(".0") == 0  # as integers


@pytest.mark.parametrize("value", [4.5, "4", True, float("inf")])
def test_integer_knobs_still_refuse_fractions_strings_and_booleans(value: object) -> None:
    with pytest.raises(ValidationError):
        QuantizeJobCreate.model_validate(
            {"dataset": "mnist", "weight_bits": value, "activation_bits": 4}
        )
