"""The runtimes the client's engine is measured against, all on the bundle's own network: its
graph with dequantised weights (`bench_client.float_model`) in PyTorch float32 eager, the same
exported to ONNX (`torch.onnx.export(..., dynamo=False)`) in ONNX Runtime float32, that ONNX
model statically quantised to int8 QDQ by `onnxruntime.quantization` (calibrated on MNIST or
the bundle's own images), and torch.ao int8 (FX graph mode, x86 backend, same calibration).

Each peer is a function from float32 images (N, C, H, W) to (labels, probabilities), as the
engine's `predict` is: the ONNX Runtime peers' logits get the engine's own numpy softmax.
Torch stays here, never in client/.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shared.engine import IntegerNetwork, load_engine, softmax

__all__ = ["Predict", "build_peers", "export_float_onnx", "quantize_qdq"]

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def export_float_onnx(model: Any, shape: tuple[int, ...], path: Path) -> Path:
    """The torch float network as an ONNX file with a dynamic batch axis."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (torch.zeros(1, *shape),),
            str(path),
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
            dynamo=False,
        )
    return path


def quantize_qdq(float_path: Path, calibration: np.ndarray, path: Path) -> Path:
    """ONNX Runtime int8 static quantisation (QDQ format, its defaults: int8 activations
    and weights, per tensor, MinMax calibration) of the float model."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [{"x": calibration[i : i + 32]} for i in range(0, len(calibration), 32)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    prepared = path.with_suffix(".pre.onnx")
    quant_pre_process(str(float_path), str(prepared))
    quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ)
    return path


def _torch_ao_int8(model: Any, calibration: np.ndarray) -> Any:
    """torch.ao static int8 (FX graph mode, x86 qconfig), calibrated like the QDQ model."""
    import copy

    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    example = (torch.from_numpy(calibration[:1]),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao is deprecated in favour of torchao
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), example)
        with torch.inference_mode():
            for i in range(0, len(calibration), 32):
                prepared(torch.from_numpy(calibration[i : i + 32]))
        return convert_fx(prepared)


def _ort_session(path: Path | bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(path) if isinstance(path, Path) else path, options, providers=["CPUExecutionProvider"]
    )


def build_peers(
    bundle: Any,
    float_torch: Any,
    calibration: np.ndarray,
    threads: int,
    work: Path,
) -> dict[str, Predict]:
    """name -> predict function, each using `threads` threads (the caller sets torch's)."""
    import torch

    float_path = work / "float.onnx"
    if not float_path.exists():
        export_float_onnx(float_torch, tuple(calibration.shape[1:]), float_path)
        quantize_qdq(float_path, calibration, work / "int8_qdq.onnx")
    ort_float = _ort_session(float_path, threads)
    ort_int8 = _ort_session(work / "int8_qdq.onnx", threads)
    ao_int8 = _torch_ao_int8(float_torch, calibration)

    def ort_predict(session: Any) -> Predict:
        def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            logits = session.run(None, {"x": x})[0]
            return logits.argmax(axis=1), softmax(logits.astype(np.float64))

        return predict

    def torch_predict(model: Any) -> Predict:
        def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                probs = torch.softmax(model(torch.from_numpy(x)), dim=1)
            return probs.argmax(dim=1).numpy(), probs.numpy()

        return predict

    return {
        "engine": load_engine(bundle, threads=threads).predict,
        "numpy_engine": IntegerNetwork(bundle, threads=threads).predict,
        "ort_float32": ort_predict(ort_float),
        "ort_int8_qdq": ort_predict(ort_int8),
        "torch_ao_int8": torch_predict(ao_int8),
        "torch_float32": torch_predict(float_torch),
    }
