"""The served bundle as an Open Inference Protocol v2 model: its name, version and metadata,
and one inference request run through its network (client/oip_codec.py reads and writes the
bytes; client/api/oip.py is the HTTP edge).

- Model name: the bundle's data set (`provenance.dataset`, e.g. `mnist`); version: the bundle
  id (64 hex digits). Unversioned paths serve the current bundle; a versioned path answers
  only for the bundle being served (a swap makes the old version 404).
- Inputs, exactly one per request:
  `images` BYTES [N] (or [N, 1]): encoded image files, decoded and preprocessed as /recognize
  does, under the same limits; sent as JSON, each element is the file's base64 (JSON strings
  cannot carry arbitrary bytes); sent binary, the file's bytes as they are.
  `input` FP32 [N, C, H, W]: preprocessed images in [0, 1] (what shared/preprocess.py
  returns); UINT8 is accepted too, meaning pixel * 255 (lossless: every preprocessed value
  is a multiple of 1/255).
- Outputs (all by default): `label` INT64 [N] (class index), `class_name` BYTES [N],
  `probabilities` FP64 [N, K] (softmax, as /recognize reports before rounding), `logits`
  INT64 [N, K] (the integer network's output).
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from client.manager import LoadedBundle
from client.oip_codec import (
    Budget,
    DeclaredWatch,
    InferRequest,
    ProtocolError,
    Tensor,
    decompress,
    encode_infer_response,
    parse_infer_request,
)
from client.serving.decode import OpenedUploads, decode_images, open_uploads
from shared.errors import ImageTooLargeError, NotFoundError

__all__ = [
    "Limits",
    "INPUT_IMAGES",
    "INPUT_TENSOR",
    "OUTPUTS",
    "model_name",
    "check_model",
    "model_metadata",
    "Prepared",
    "prepare",
    "budget_of",
    "finish",
    "run_inference",
    "infer_bytes",
]

PLATFORM = "siq_integer"
INPUT_IMAGES, INPUT_TENSOR = "images", "input"
OUTPUTS = ("label", "class_name", "probabilities", "logits")


@dataclass(frozen=True)
class Limits:
    """The /recognize limits, applied to inference requests too."""

    max_images: int
    max_pixels: int
    max_request_pixels: int
    max_body_bytes: int


def model_name(loaded: LoadedBundle) -> str:
    return loaded.bundle.dataset or "siq"


def check_model(loaded: LoadedBundle, name: str, version: str | None) -> None:
    """NotFoundError unless `name` (and `version`, when given) is the model being served."""
    served = model_name(loaded)
    if name != served:
        raise NotFoundError(f"unknown model {name!r}; this client serves {served!r}")
    if version is not None and version.lower() != loaded.bundle.id:
        raise NotFoundError(
            f"model {name!r} has no version {version!r}; serving version {loaded.bundle.id}"
        )


def model_metadata(loaded: LoadedBundle) -> dict[str, Any]:
    c, h, w = loaded.network.input_shape
    k = len(loaded.network.class_names)
    return {
        "name": model_name(loaded),
        "versions": [loaded.bundle.id],
        "platform": PLATFORM,
        "inputs": [
            {"name": INPUT_IMAGES, "datatype": "BYTES", "shape": [-1]},
            {"name": INPUT_TENSOR, "datatype": "FP32", "shape": [-1, c, h, w]},
        ],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "class_name", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, k]},
            {"name": "logits", "datatype": "INT64", "shape": [-1, k]},
        ],
    }


@dataclass
class Prepared:
    """An inference request read and checked, nothing decoded or run yet: what running it
    will cost (`images`, `pixels`) is known, so the caller can choose where it runs."""

    request: InferRequest
    input: Tensor
    opened: OpenedUploads | None  # encoded images: their headers read, budgets checked
    images: int
    pixels: int


def prepare(
    loaded: LoadedBundle,
    body: bytes,
    *,
    header_length: str | None,
    content_encoding: str | None,
    limits: Limits,
) -> Prepared:
    """The first half of a request: decompress and parse the body, check the outputs asked
    for and the one input (its images' headers read and their pixel budgets enforced, as
    /recognize does; a tensor's shape checked against the network's). Cheap for a small body;
    what a body declares is checked against the limits before it is inflated or parsed whole."""
    budget = budget_of(loaded, limits)
    body = decompress(
        body,
        content_encoding,
        limits.max_body_bytes,
        watch=DeclaredWatch(budget, header_length),
    )
    request = parse_infer_request(body, header_length, budget)
    wanted = request.outputs
    if wanted is not None:
        unknown = [o.name for o in wanted if o.name not in OUTPUTS]
        if unknown:
            raise ProtocolError(f"unknown output {unknown[0]!r}; outputs: {', '.join(OUTPUTS)}")
    if len(request.inputs) != 1:
        raise ProtocolError(
            f"send exactly one input, {INPUT_IMAGES!r} or {INPUT_TENSOR!r}, "
            f"not {len(request.inputs)}"
        )
    tensor = request.inputs[0]
    if tensor.name == INPUT_IMAGES:
        opened = open_uploads(
            _uploads(tensor, limits),
            max_pixels=limits.max_pixels,
            max_request_pixels=limits.max_request_pixels,
        )
        return Prepared(request, tensor, opened, len(opened.images), opened.pixels)
    if tensor.name == INPUT_TENSOR:
        input_shape = tuple(loaded.network.input_shape)
        _check_tensor(tensor, input_shape, limits)
        n = tensor.shape[0]
        return Prepared(request, tensor, None, n, n * int(np.prod(input_shape[1:])))
    raise ProtocolError(
        f"unknown input {tensor.name!r}; send {INPUT_IMAGES!r} (BYTES, encoded images) or "
        f"{INPUT_TENSOR!r} (FP32 or UINT8, N x C x H x W)"
    )


def budget_of(loaded: LoadedBundle, limits: Limits) -> Budget:
    """The most a request may declare: `max_images` images, as many values as that many of
    the network's input tensors (an `images` input declares one value per image)."""
    per_image = math.prod(loaded.network.input_shape)
    return Budget(limits.max_images, limits.max_images * per_image)


def finish(loaded: LoadedBundle, prepared: Prepared) -> tuple[bytes, dict[str, str], int]:
    """The second half: decode the images (or convert the tensor), run the network, encode
    the answer's (body, headers); with the image count. Decoding and the network take CPU."""
    if prepared.opened is not None:
        x, _ = decode_images(loaded, prepared.opened)  # the /recognize recipe, one image at a time
    else:
        x = _tensor_values(prepared.input)
    outputs = run_inference(loaded, prepared.request, x)
    content, headers = encode_infer_response(
        model_name(loaded), loaded.bundle.id, prepared.request.id, outputs
    )
    return content, headers, prepared.images


def infer_bytes(
    loaded: LoadedBundle,
    body: bytes,
    *,
    header_length: str | None,
    content_encoding: str | None,
    limits: Limits,
    max_pixels: int | None = None,
) -> tuple[bytes, dict[str, str], int] | None:
    """One `infer` request's body to the answer's (body, headers) and its image count:
    `prepare` then `finish`, in one call (an inference process runs it so). With
    `max_pixels`, a request whose input decodes to more is not run: None, for the caller to
    run it elsewhere (the serving process's heavy lane, as /recognize does)."""
    prepared = prepare(
        loaded, body, header_length=header_length, content_encoding=content_encoding, limits=limits
    )
    if max_pixels is not None and prepared.pixels > max_pixels:
        if prepared.opened is not None:
            prepared.opened.close()
        return None
    return finish(loaded, prepared)


def run_inference(
    loaded: LoadedBundle, request: InferRequest, x: np.ndarray
) -> list[tuple[Tensor, bool]]:
    """The requested outputs (each with whether to send it binary) for the network's input
    `x` (N, C, H, W) float32 in [0, 1]."""
    net = loaded.network
    labels, probs = net.predict(x)  # exactly what /recognize answers from
    names = net.class_names
    n, k = len(labels), len(names)
    tensors = {
        "label": Tensor("label", "INT64", (n,), labels.astype(np.int64)),
        "class_name": Tensor("class_name", "BYTES", (n,), [names[int(i)].encode() for i in labels]),
        # FP64 whatever the engine's float type: a float32 value is exact in float64
        "probabilities": Tensor("probabilities", "FP64", (n, k), probs.astype(np.float64)),
    }
    wanted = request.outputs
    names_out = OUTPUTS if wanted is None else [o.name for o in wanted]
    if "logits" in names_out:  # a second pass, only when asked: predict does not return them
        logits = net.forward_int(net.quantize_input(x))  # (N, K) int64
        tensors["logits"] = Tensor("logits", "INT64", (n, k), logits.astype(np.int64))
    if wanted is None:
        return [(tensors[name], request.binary_output) for name in OUTPUTS]
    return [(tensors[o.name], o.binary) for o in wanted]


def _count(n: int, limits: Limits) -> None:
    if n < 1:
        raise ProtocolError("the batch is empty: send at least one image")
    if n > limits.max_images:
        raise ImageTooLargeError(f"too many images: {n}, at most {limits.max_images}")


def _uploads(tensor: Tensor, limits: Limits) -> list[tuple[str, bytes]]:
    """The encoded images of an `images` input, named images[i]."""
    if (
        tensor.datatype != "BYTES"
        or len(tensor.shape) not in (1, 2)
        or tensor.shape[1:]
        not in (
            (),
            (1,),
        )
    ):
        raise ProtocolError(f"input {INPUT_IMAGES!r} must be BYTES of shape [N] or [N, 1]")
    assert isinstance(tensor.data, list)
    _count(len(tensor.data), limits)
    uploads = []
    for index, element in enumerate(tensor.data):
        data = element
        if tensor.encoding == "json":
            try:
                data = base64.b64decode(element, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ProtocolError(
                    f"{INPUT_IMAGES}[{index}]: JSON elements must be the base64 of an image "
                    f"file ({exc})"
                ) from exc
        uploads.append((f"{INPUT_IMAGES}[{index}]", data))
    return uploads


def _check_tensor(tensor: Tensor, shape: tuple[int, ...], limits: Limits) -> None:
    if len(tensor.shape) != 4 or tensor.shape[1:] != shape:
        raise ProtocolError(
            f"input {INPUT_TENSOR!r} must have shape [N, {', '.join(map(str, shape))}], "
            f"not {list(tensor.shape)}"
        )
    _count(tensor.shape[0], limits)
    if tensor.datatype not in ("FP32", "UINT8"):
        raise ProtocolError(f"input {INPUT_TENSOR!r} must be FP32 or UINT8, not {tensor.datatype}")


def _tensor_values(tensor: Tensor) -> np.ndarray:
    """A checked `input` tensor as the network's float32 input."""
    assert isinstance(tensor.data, np.ndarray)
    if tensor.datatype == "UINT8":
        # the same float32 values preprocess() makes: integer / 255 in float32
        return tensor.data.astype(np.float32) / np.float32(255.0)
    x = tensor.data
    if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
        raise ProtocolError(f"input {INPUT_TENSOR!r}: FP32 values must be finite, in [0, 1]")
    return x
