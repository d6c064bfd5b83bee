"""Pipeline: config validation, the model graph, and one tiny real run whose bundle decodes
and whose reported accuracy is the integer engine's, recomputed from the file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from server.cli import quantize_main
from server.data import load_dataset
from server.params import JobParams
from server.training.export import engine_predictions
from server.training.models import build_model, graph_of
from server.training.pipeline import JobCancelled, run_pipeline
from server.training.quantsim import QuantSimNet, calibrate, choose_activation_scale
from shared.bundle import read_bundle_file
from shared.errors import ConfigError
from shared.network import as_chain


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("weight_bits", 0),
        ("weight_bits", 9),
        ("weight_bits", "4"),
        ("activation_bits", 1),
        ("max_iterations", 0),
        ("tolerance", -0.1),
        ("codebook_tolerance", 0),
        ("epochs", 0),
        ("kmeans", "median"),
        ("weight_quantizer", "log"),
        ("train_limit", 0),
        ("version", 2),
    ],
)
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        JobParams.from_dict({"dataset": "digits", field: value})
    assert getattr(info.value, "field", None) == field


def test_config_round_trip_and_unknown_keys() -> None:
    cfg = JobParams(dataset="mnist", weight_bits=2, epochs=3, kmeans="lloyd")
    assert JobParams.from_dict(cfg.to_dict()) == cfg
    assert JobParams.from_dict({"dataset": "digits", "seed": None}).seed == 0
    with pytest.raises(ConfigError, match="colour"):
        JobParams.from_dict({"dataset": "digits", "colour": "red"})
    with pytest.raises(ConfigError, match="dataset"):
        JobParams.from_dict({"weight_bits": 4})


def test_lenet_graph_uses_only_engine_ops() -> None:
    model = build_model("lenet", 1, 10, 28)
    graph = graph_of(model, 4)
    assert [g["op"] for g in graph] == [
        "conv2d", "maxpool2d", "conv2d", "maxpool2d", "flatten", "linear", "linear",
    ]  # fmt: skip
    assert [g["activation"] for g in graph if "activation" in g] == ["relu"] * 3 + ["none"]
    assert [g["inputs"] for g in graph][:2] == [["input"], ["conv1"]]
    chain = as_chain(graph)  # what its bundles hold: the version-2 chain form
    assert chain is not None and [g.get("relu") for g in chain if "relu" in g] == [
        True, True, True, False,
    ]  # fmt: skip
    assert all("inputs" not in g and "groups" not in g for g in chain)
    assert graph[5]["in_features"] == 512
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError):
        build_model("alexnet", 1, 10, 28)


def test_activation_scale_clips_outliers() -> None:
    acc = torch.cat([torch.rand(10000), torch.tensor([50.0])])
    s = choose_activation_scale(acc, 4)
    assert 0.5 / 15 < s < 50.0 / 15  # clips the outlier instead of wasting levels on it


def test_tiny_run_bundle_matches_engine(tiny_run: dict) -> None:
    result, out_dir = tiny_run["result"], tiny_run["out_dir"]
    path = Path(result.bundle_path)
    assert path.parent == out_dir and path.name == f"{result.bundle_id}.siq"
    assert result.bundle_bytes == path.stat().st_size
    bundle = read_bundle_file(path, expected_id=result.bundle_id)
    m = bundle.manifest
    assert m["weight_bits"] == 3 and m["activation_bits"] == 4 and m["codebook_bits"] == 8
    assert m["provenance"]["dataset"] == "digits" and m["provenance"]["job_id"] == "job-test"
    assert m["provenance"]["config"]["weight_bits"] == 3
    assert m["metrics"]["quantized_accuracy"] == pytest.approx(result.quantized_accuracy, abs=1e-6)
    assert m["input"]["preprocess"] == {"kind": "digit"}
    assert len(bundle.tensors["conv1.codebook"]) == 8
    ds = load_dataset("digits", None, train_limit=500, test_limit=200)
    recomputed = float((engine_predictions(bundle, ds.test_x) == ds.test_y).mean())
    assert recomputed == result.quantized_accuracy
    assert result.quantized_accuracy > 0.6 and result.float_accuracy > 0.6
    assert result.float_bytes > 7 * result.bundle_bytes / 1.2


def test_tiny_run_reports_iterations_and_progress(tiny_run: dict) -> None:
    result, events = tiny_run["result"], tiny_run["events"]
    assert 1 <= len(result.iterations) <= 2
    first = result.iterations[0]
    assert set(first) >= {
        "iteration", "accuracy_after_kmeans", "accuracy_after_retrain", "codebook_change",
    }  # fmt: skip
    stages = {e["stage"] for e in events}
    assert {"loading", "training", "quantizing", "retraining", "evaluating", "packaging"} <= stages
    fractions = [e["fraction"] for e in events]
    assert all(0.0 <= f <= 1.0 for f in fractions) and fractions == sorted(fractions)
    assert [e["iteration"]["iteration"] for e in events if "iteration" in e] == [
        it["iteration"] for it in result.iterations
    ]
    json.dumps(result.to_dict())  # JSON-clean (no NaN objects, numpy types)


def test_cancellation_stops_the_job(tmp_path: Path) -> None:
    calls = {"n": 0}

    def should_cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 1

    cfg = JobParams(dataset="digits", epochs=50, train_limit=300, test_limit=50)
    with pytest.raises(JobCancelled):
        run_pipeline(cfg, None, tmp_path, should_cancel=should_cancel)
    assert not list(tmp_path.glob("*.siq"))


def test_calibration_gives_every_relu_layer_a_scale() -> None:
    from server.recipes import RECIPES
    from server.training.siq import SIQSettings, quantize_layers

    model = build_model("lenet", 1, 10, 28)
    config = JobParams(dataset="digits", weight_bits=2)
    layers = quantize_layers(model, SIQSettings.for_job(config, RECIPES["digits"]))
    sim = QuantSimNet(model, layers, activation_bits=4)
    calibrate(sim, np.random.default_rng(0).integers(0, 256, (64, 1, 28, 28), dtype=np.uint8))
    assert all((lq.output_scale or 0) > 0 for lq in layers.values() if lq.relu)
    assert all(len(np.unique(lq.codebook_int)) <= 4 for lq in layers.values())


def test_cli_prints_one_json_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = quantize_main(
        ["--dataset", "digits", "--weight-bits", "2", "--activation-bits", "3", "--out",
         str(tmp_path), "--epochs", "1", "--retrain-epochs", "0.2", "--max-iterations", "1",
         "--train-limit", "200", "--test-limit", "50"]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0
    result = json.loads(out.out.strip().splitlines()[-1])
    for key in ("float_accuracy", "quantized_accuracy", "bundle_path", "bundle_bytes",
                "float_bytes", "iterations", "seconds", "bundle_id", "converged"):  # fmt: skip
        assert key in result
    assert Path(result["bundle_path"]).is_file()
    assert "training" in out.err


def test_cli_bad_input_exits_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.data import mnist as mnist_source

    monkeypatch.setattr(mnist_source, "MNIST_MIRRORS", ("http://127.0.0.1:9/",))
    assert (
        quantize_main(["--dataset", "digits", "--weight-bits", "12", "--out", str(tmp_path)]) == 2
    )
    assert "weight_bits" in capsys.readouterr().err
    code = quantize_main(
        ["--dataset", "mnist", "--out", str(tmp_path), "--data-dir", str(tmp_path)]
    )
    assert code == 2
    assert "mnist" in capsys.readouterr().err


def test_every_model_family_fits_the_per_layer_maps_bound() -> None:
    """A per-layer map of a job may name MAX_LAYERS layers: more than any family has."""
    from server.params import MAX_LAYERS
    from server.training.models import MODEL_BUILDERS, weighted_layers

    for arch in MODEL_BUILDERS:
        for channels in (1, 3):
            model = build_model(arch, channels, 10, 64)
            assert len(weighted_layers(model)) <= MAX_LAYERS, arch


def test_a_job_names_its_network_family_and_gets_that_familys_recipe() -> None:
    from server.params import ARCHS
    from server.recipes import RECIPES
    from server.training.models import MODEL_BUILDERS
    from server.training.pipeline import load_job_dataset

    assert set(ARCHS) == set(MODEL_BUILDERS)
    ds = load_job_dataset(JobParams(dataset="digits", arch="dsnet", test_limit=10), None)
    assert ds.arch == "dsnet" and ds.recipe == RECIPES["digits"].archs["dsnet"]
    assert load_job_dataset(JobParams(dataset="digits", test_limit=10), None).arch == "lenet"
    with pytest.raises(ConfigError, match="arch") as info:
        JobParams.from_dict({"dataset": "digits", "arch": "alexnet"})
    assert getattr(info.value, "field", None) == "arch"


@pytest.mark.parametrize("arch", ["mobilenet", "resnet"])
def test_photo_recipes_of_the_new_families_train(arch: str) -> None:
    """A few batches of each photo family's recipe (augmentation, rates) on random photos."""
    from server.data import Dataset
    from server.data.dataset import DIGIT_CLASSES
    from server.recipes import RECIPES
    from server.training.pipeline import train_float

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (70, 3, 64, 64), dtype=np.uint8)
    y = rng.integers(0, 10, 70)
    photo = {"kind": "photo", "resize": 64, "crop": 64}
    ds = Dataset("p", x, y, x[:8], y[:8], DIGIT_CLASSES, photo, "photonet", RECIPES["imagefolder"])
    ds = ds.with_arch(arch)
    recipe = ds.recipe
    assert recipe.photo_augment is not None and recipe.epochs > RECIPES["imagefolder"].epochs
    if arch == "resnet":  # and with mixup (bench_office10 --mixup)
        ds = dataclasses.replace(ds, recipe=recipe.model_copy(update={"mixup": 0.4}))
    fm = train_float(ds, JobParams(dataset="p", epochs=2 * recipe.batch_size / 63))
    assert 0 <= fm.float_accuracy <= 1 and len(fm.model.norms) > 0
