"""Where training runs (`device`: auto, cpu, cuda; SIQ_DEVICE): auto is the CPU on a machine
without a GPU, cuda without one is a clear ConfigError (a failed job, exit 2 from the CLI),
never a silent fall-back; the server's setting is recorded in a job that does not say.
tests/server/test_gpu.py runs the same on CUDA where there is one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from server.cli import quantize_main
from server.params import JobParams
from server.service.app import create_app
from server.training.device import resolve_device
from shared.errors import ConfigError
from tests.server.api_helpers import REAL_PIPELINE, make_settings, wait_job


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_the_cpu_without_a_gpu(no_gpu: None) -> None:
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_without_a_gpu_is_a_config_error(no_gpu: None) -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="device"):
        JobParams.from_dict({"dataset": "digits", "device": "gpu"})


def test_the_cli_exits_2_for_cuda_without_a_gpu(
    no_gpu: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--dataset", "digits", "--device", "cuda", "--train-limit", "50", "--out"]
    assert quantize_main([*argv, str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_cuda_job_on_a_server_without_a_gpu_fails_saying_so(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, REAL_PIPELINE, device="cuda")
    (tmp_path / "data").mkdir()
    with TestClient(create_app(settings)) as client:
        body = {"dataset": "digits", "weight_bits": 4, "activation_bits": 4, "train_limit": 50}
        resp = client.post("/quantize-jobs", json=body)
        assert resp.status_code == 202, resp.text
        assert resp.json()["config"]["device"] == "cuda"  # the server's SIQ_DEVICE, recorded
        job = wait_job(client, resp.json()["id"], timeout=120)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "bad_config" and "no CUDA GPU" in job["error"]["message"]
