"""A job that starts from a network the user brought (POST /networks; server/networks/): the
stored graph and float weights as a `GraphNet`, optional fine-tuning, then the SIQ loop,
calibration and export like any job (server/training/pipeline.py's `quantize_model`).

The network sees what the server's own families see: the data set's preprocessed images,
(N, C, H, W) floats in [0, 1] at the recipe's size. Its input shape and class count must be
the data set's (a ConfigError naming both otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from server.data import Dataset
from server.networks import StoredNetwork, decode_network
from server.params import JobParams
from server.progress import ProgressFn, Reporter
from server.training.compress import check_layer_names
from server.training.models import GraphNet, Node
from server.training.pipeline import (
    FloatModel,
    PipelineResult,
    load_job_dataset,
    quantize_model,
    train_float,
)
from server.training.train import CancelCheck
from shared.errors import ConfigError

__all__ = ["build_network", "check_fits", "network_float_model", "run_network_pipeline"]


def build_network(net: StoredNetwork) -> GraphNet:
    """The stored network as a `GraphNet` with its float weights (and batch norms)."""
    modules: dict[str, nn.Module] = {}
    norms: dict[str, nn.BatchNorm2d] = {}
    nodes = []
    for e in net.graph:
        op, name = e["op"], e["name"]
        if op == "conv2d":
            modules[name] = nn.Conv2d(
                e["in_channels"],
                e["out_channels"],
                e["kernel_size"],
                e["stride"],
                e["padding"],
                groups=e.get("groups", 1),
                bias=bool(e.get("bias")),
            )
            if "batchnorm_eps" in e:
                norms[name] = nn.BatchNorm2d(e["out_channels"], eps=e["batchnorm_eps"])
        elif op == "linear":
            modules[name] = nn.Linear(e["in_features"], e["out_features"])
        elif op == "maxpool2d":
            modules[name] = nn.MaxPool2d(e["kernel_size"], e["stride"])
        elif op == "avgpool2d":
            modules[name] = nn.AvgPool2d(e["kernel_size"], e["stride"])
        nodes.append(Node(op, name, tuple(e["inputs"]), e.get("activation", "none")))
    model = GraphNet(nodes, modules, norms)
    state = {k: torch.from_numpy(v.copy()) for k, v in net.weights.items()}
    for name in norms:  # not in ONNX; the running statistics are given
        state[f"norms.{name}.num_batches_tracked"] = torch.tensor(0)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"the stored network's weights do not fit its graph: {exc}") from None
    return model


def check_fits(net: StoredNetwork, ds: Dataset, name: str) -> None:
    """ConfigError unless the network takes the data set's images and has its classes."""
    if tuple(net.input_shape) != tuple(ds.input_shape):
        raise ConfigError(
            f"network {name!r} takes images of shape {tuple(net.input_shape)} (C, H, W); data "
            f"set {ds.name!r} has {tuple(ds.input_shape)}"
        )
    if net.num_classes != ds.num_classes:
        raise ConfigError(
            f"network {name!r} has {net.num_classes} outputs; data set {ds.name!r} has "
            f"{ds.num_classes} classes"
        )


def network_float_model(
    network: bytes,
    ds: Dataset,
    config: JobParams,
    *,
    report: Reporter | None = None,
    cancel: CancelCheck | None = None,
) -> FloatModel:
    """The brought network, fine-tuned for `config.epochs` epochs (none when unset or 0)
    with the data set's recipe, as the float model SIQ starts from."""
    net = decode_network(network)
    check_fits(net, ds, config.network or "")
    tune = config if config.epochs else config.model_copy(update={"epochs": 0.0})
    return train_float(ds, tune, report=report, cancel=cancel, model=build_network(net))


def run_network_pipeline(
    config: JobParams,
    data_dir: Path | None,
    out_dir: Path,
    network: bytes,
    *,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    job_id: str | None = None,
) -> PipelineResult:
    """`run_pipeline` for a job that names a network: its weights instead of training."""
    started = time.perf_counter()
    cancel = CancelCheck(should_cancel)
    report = Reporter(progress)
    report.part(0.0, 0.02, "loading")(0.0, f"loading data set {config.dataset}")
    ds = load_job_dataset(config, data_dir)
    fm = network_float_model(network, ds, config, report=report.part(0.02, 0.3), cancel=cancel)
    check_layer_names(config, fm.model)
    cancel(force=True)
    result = quantize_model(
        fm, ds, config, Path(out_dir), report=report.part(0.3, 1.0), cancel=cancel, job_id=job_id
    )
    result.seconds = time.perf_counter() - started
    return result
