"""Open Inference Protocol v2 (KServe v2 / Triton HTTP) requests and responses, as bytes.

Pure functions, no HTTP and no network: `parse_infer_request` turns the body of
`POST /v2/models/{name}/infer` into tensors, `encode_infer_response` turns output tensors into
the answer's body and headers.

Both JSON tensors and Triton's binary tensor extension are read and written:

- request: the header `Inference-Header-Content-Length: n` says the first n bytes of the body
  are the JSON inference header; the bytes after it are the binary data of the inputs whose
  `parameters.binary_data_size` is set, in the order of the inputs;
- response: an output is binary when it asks `parameters.binary_data: true`, or when the
  request's `parameters.binary_data_output` is true and the output does not say otherwise;
  binary outputs carry `parameters.binary_data_size`, and the answer then has the header
  `Inference-Header-Content-Length` and the type application/octet-stream.

Numeric tensors are little-endian, row-major. A BYTES tensor's binary form is each element as a
4-byte little-endian length and its bytes; in JSON its elements are strings (UTF-8).

Every malformed request raises ProtocolError (400), never anything else.

What a request costs is checked before it is paid: with a `Budget`, the shapes a request
declares are read from its JSON text (`declared_shapes`, a scan, no parse) and checked against
the budget before the text is parsed; the JSON text may hold no more values than those shapes
declare (counted by its commas), so a small declared shape cannot smuggle a large parse. A
compressed body is inflated a piece at a time and watched as it comes out (`DeclaredWatch`):
the shapes in its first `PEEK_BYTES` are checked before anything more is inflated (a gzip of a
10,000-image tensor is refused at its header), and more values than they declare stop the
inflation where they pass the count.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from shared.errors import ImageTooLargeError, SIQError

__all__ = [
    "DATATYPES",
    "ProtocolError",
    "Tensor",
    "RequestedOutput",
    "InferRequest",
    "Budget",
    "declared_shapes",
    "check_declared",
    "DeclaredWatch",
    "decompress",
    "parse_infer_request",
    "encode_infer_response",
    "HEADER_LENGTH",
]

HEADER_LENGTH = "inference-header-content-length"

# protocol datatype -> numpy dtype (little-endian); BYTES has none
DATATYPES: dict[str, np.dtype | None] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": None,
}
_MAX_RANK = 16
PEEK_BYTES = 64 * 1024  # of a compressed body, inflated and checked before the rest
_INFLATE_STEP = 1 << 20  # then inflated this much at a time, each piece watched
# JSON text per declared value: "0," and a "],[" between nested lists at most; plus slack for
# the rest of the header (names, parameters, an id)
_COMMAS_PER_VALUE, _SPARE_COMMAS = 2, 1024
_SHAPE = re.compile(rb'"shape"\s*:\s*\[([^\[\]]{0,400})\]')
_MAX_DIGITS = 18  # a dimension longer than this is over any budget (and int() stays cheap)


class ProtocolError(SIQError):
    """A request the protocol cannot read (bad JSON, shapes, sizes, names): 400."""

    code = "bad_inference_request"
    http_status = 400


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    # numeric: an array of `shape`; BYTES: a flat list of the elements
    data: np.ndarray | list[bytes]
    encoding: Literal["json", "binary"] = "json"  # how the request carried it


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None  # None: every output the model has
    binary_output: bool  # the default of outputs not listed (`binary_data_output`)


@dataclass(frozen=True)
class Budget:
    """What one request may declare: at most `max_batch` in an input's first dimension and
    `max_values` elements in any input (the /recognize limits, in the model's units)."""

    max_batch: int
    max_values: int


def declared_shapes(text: bytes) -> list[tuple[int, ...]]:
    """The shapes a JSON inference header declares (every `"shape": [d, ...]` of plain
    integers), found by a scan, without parsing it; a dimension too long to read counts as
    over any budget. What is not a plain list of integers is left to the parser."""
    shapes = []
    for match in _SHAPE.finditer(text):
        parts = match.group(1).split(b",")
        dims = [p.strip() for p in parts] if match.group(1).strip() else []
        if not all(d.isdigit() for d in dims):
            continue
        shapes.append(tuple(int(d) if len(d) <= _MAX_DIGITS else 1 << 62 for d in dims))
    return shapes


def check_declared(text: bytes, budget: Budget, *, complete: bool) -> None:
    """413 (ImageTooLargeError) when a shape declared in `text` is over `budget`; with
    `complete` (the whole JSON header), also 400 when the text holds more values than its
    shapes declare. Costs a scan of the text, never a parse."""
    shapes = declared_shapes(text)
    for shape in shapes:
        values = math.prod(shape)
        if shape and shape[0] > budget.max_batch:
            raise ImageTooLargeError(
                f"too many images: an input declares shape {list(shape)}, at most "
                f"{budget.max_batch} in its first dimension"
            )
        if values > budget.max_values:
            raise ImageTooLargeError(
                f"an input declares shape {list(shape)}: {values} values, at most "
                f"{budget.max_values}"
            )
    if complete:
        _check_values(text.count(b","), shapes)


def _check_values(commas: int, shapes: list[tuple[int, ...]]) -> None:
    declared = sum(math.prod(shape) for shape in shapes)
    if commas > _COMMAS_PER_VALUE * declared + _SPARE_COMMAS:
        raise ProtocolError(
            f"the inference header holds more values than its inputs' shapes declare "
            f"({declared} in all)"
        )


class DeclaredWatch:
    """Watches a body as it is inflated, piece by piece (`decompress(watch=...)`): the shapes
    declared in the first piece are checked against `budget` at once, and once they are
    known the JSON header's values are counted as they come, so a body carrying more than
    they declare stops inflating there. `header_length`: the Inference-Header-Content-Length
    (None: the whole body is JSON); only that many bytes are counted."""

    def __init__(self, budget: Budget, header_length: str | None) -> None:
        self.budget = budget
        text = (header_length or "").strip()
        valid = text.isascii() and text.isdigit()
        self.json_left = None if header_length is None else int(text) if valid else 0
        self.shapes: list[tuple[int, ...]] | None = None
        self.commas = 0

    def __call__(self, piece: bytes) -> None:
        if self.shapes is None:
            check_declared(piece, self.budget, complete=False)
            self.shapes = declared_shapes(piece)
        if self.json_left is not None:
            piece = piece[: self.json_left]
            self.json_left -= len(piece)
        self.commas += piece.count(b",")
        if self.shapes:  # (a header whose shapes come after its data is counted when parsed)
            _check_values(self.commas, self.shapes)


def decompress(
    body: bytes,
    encoding: str | None,
    max_bytes: int,
    *,
    watch: Callable[[bytes], None] | None = None,
) -> bytes:
    """Undo a request's Content-Encoding (gzip, deflate, identity), at most `max_bytes` out.
    Inflates the first PEEK_BYTES, then _INFLATE_STEP at a time; `watch` sees each piece
    before the next is inflated (it raises to stop there)."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(f"unsupported Content-Encoding {encoding!r} (gzip, deflate)")
    pieces, total, data, step = [], 0, body, PEEK_BYTES
    try:
        inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        while not inflater.eof and total <= max_bytes:
            # (max_length is >= 1 here: 0 would mean no limit)
            piece = inflater.decompress(data, min(step, max_bytes + 1 - total))
            if not piece:  # the input ran out before the stream's end
                break
            if watch is not None:
                watch(piece)
            pieces.append(piece)
            total += len(piece)
            data, step = inflater.unconsumed_tail, _INFLATE_STEP
    except zlib.error as exc:
        raise ProtocolError(f"the {encoding} body cannot be decompressed: {exc}") from exc
    if total > max_bytes:
        raise ImageTooLargeError(f"the decompressed body is over the {max_bytes}-byte limit")
    if not inflater.eof:
        raise ProtocolError(f"the {encoding} body is truncated")
    return b"".join(pieces)


def parse_infer_request(
    body: bytes, header_length: str | None, budget: Budget | None = None
) -> InferRequest:
    """The inference request in `body`; `header_length` is the Inference-Header-Content-Length
    header (None when absent: the whole body is JSON). With `budget`, the JSON header's
    declared shapes and its size are checked against it before it is parsed."""
    if header_length is None:
        head, binary = body, b""
    else:
        text = header_length.strip()
        # isascii: str.isdigit() also takes digits int() refuses, such as the superscript '²'
        if not (text.isascii() and text.isdigit()) or int(text) > len(body):
            raise ProtocolError(
                f"Inference-Header-Content-Length {header_length!r} is not a length within "
                f"the {len(body)}-byte body"
            )
        head, binary = body[: int(text)], body[int(text) :]
    if budget is not None:
        check_declared(head, budget, complete=True)
    try:
        doc = json.loads(head)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"the inference header is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ProtocolError("the inference header must be a JSON object")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    params = _parameters(doc, "the request")
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise ProtocolError("parameter 'binary_data_output' must be true or false")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    inputs, offset = [], 0
    for item in raw_inputs:
        tensor, offset = _read_input(item, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary) - offset} bytes of binary data follow the inputs' binary_data_size"
        )
    outputs = None
    if "outputs" in doc:
        if not isinstance(doc["outputs"], list):
            raise ProtocolError("'outputs' must be a list")
        outputs = [_read_output(item, binary_output) for item in doc["outputs"]]
        names = [o.name for o in outputs]
        if len(set(names)) != len(names):
            raise ProtocolError(f"an output is requested twice: {names}")
    return InferRequest(request_id, inputs, outputs, binary_output)


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: list[tuple[Tensor, bool]],
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of the answer: each output tensor with whether to send it binary."""
    entries, chunks = [], []
    for tensor, binary in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if binary:
            chunk = _tensor_bytes(tensor)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        elif tensor.datatype == "BYTES":
            assert isinstance(tensor.data, list)
            entry["data"] = [b.decode("utf-8", "replace") for b in tensor.data]
        else:
            assert isinstance(tensor.data, np.ndarray)
            entry["data"] = tensor.data.reshape(-1).tolist()
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = entries
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return head, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return b"".join([head, *chunks]), headers


def _parameters(doc: dict, what: str) -> dict:
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        raise ProtocolError(f"'parameters' of {what} must be an object")
    return params


def _read_input(item: Any, binary: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise ProtocolError("each input must be an object with name, datatype and shape")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError("an input has no 'name'")
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise ProtocolError(
            f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}"
        )
    shape = item.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ProtocolError(f"input {name!r}: 'shape' must be a list of sizes >= 0")
    count = math.prod(shape)
    params = _parameters(item, f"input {name!r}")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(f"input {name!r}: binary_data_size must be a byte count")
        if "data" in item:
            raise ProtocolError(f"input {name!r} has both 'data' and binary_data_size")
        if offset + size > len(binary):
            raise ProtocolError(
                f"input {name!r}: binary_data_size {size} runs past the body's "
                f"{len(binary) - offset} remaining binary bytes"
            )
        chunk = binary[offset : offset + size]
        data = _from_binary(name, datatype, shape, count, chunk)
        return Tensor(name, datatype, tuple(shape), data, "binary"), offset + size
    if "data" not in item:
        raise ProtocolError(f"input {name!r} has neither 'data' nor binary_data_size")
    data = _from_json(name, datatype, shape, count, item["data"])
    return Tensor(name, datatype, tuple(shape), data, "json"), offset


def _from_binary(
    name: str, datatype: str, shape: list[int], count: int, chunk: bytes
) -> np.ndarray | list[bytes]:
    dtype = DATATYPES[datatype]
    if dtype is None:
        elements = _split_bytes(name, chunk)
        if len(elements) != count:
            raise ProtocolError(f"input {name!r}: {len(elements)} BYTES elements for shape {shape}")
        return elements
    if len(chunk) != count * dtype.itemsize:
        raise ProtocolError(
            f"input {name!r}: {len(chunk)} bytes of binary data, but shape {shape} of "
            f"{datatype} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _split_bytes(name: str, chunk: bytes) -> list[bytes]:
    """Elements of a binary BYTES tensor: each a 4-byte little-endian length, then the bytes."""
    elements, at = [], 0
    while at < len(chunk):
        if at + 4 > len(chunk):
            raise ProtocolError(f"input {name!r}: a BYTES element's length is cut off")
        (length,) = struct.unpack_from("<I", chunk, at)
        at += 4
        if at + length > len(chunk):
            raise ProtocolError(f"input {name!r}: a BYTES element runs past its data")
        elements.append(chunk[at : at + length])
        at += length
    return elements


def _from_json(
    name: str, datatype: str, shape: list[int], count: int, data: Any
) -> np.ndarray | list[bytes]:
    flat = _flatten(name, data)
    if len(flat) != count:
        raise ProtocolError(f"input {name!r}: {len(flat)} values for shape {shape}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise ProtocolError(f"input {name!r}: BYTES data must be strings")
        try:
            return [v.encode("utf-8") for v in flat]
        except UnicodeEncodeError as exc:  # a lone surrogate such as "\ud800" has no UTF-8
            raise ProtocolError(
                f"input {name!r}: a BYTES element is not valid Unicode text ({exc.reason})"
            ) from None
    dtype = DATATYPES[datatype]
    assert dtype is not None
    if not all(isinstance(v, int | float) for v in flat):  # bool is an int
        raise ProtocolError(f"input {name!r}: {datatype} data must be numbers")
    if dtype.kind in "biu":
        if not all(isinstance(v, int) for v in flat):
            raise ProtocolError(f"input {name!r}: {datatype} data must be integers")
        if dtype.kind != "b" and flat:
            info = np.iinfo(dtype)
            low, high = min(flat), max(flat)
            if low < info.min or high > info.max:
                raise ProtocolError(f"input {name!r}: values {low}..{high} do not fit {datatype}")
    try:
        with np.errstate(over="ignore"):  # a float too large for FP16/FP32 becomes inf
            return np.array(flat, dtype=dtype).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise ProtocolError(f"input {name!r}: {exc}") from exc


def _flatten(name: str, data: Any) -> list:
    """A tensor's JSON data, flat or nested row-major lists, as one flat list."""
    if not isinstance(data, list):
        raise ProtocolError(f"input {name!r}: 'data' must be a list")
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list = []
    stack = [iter(data)]
    while stack:  # iterative: nesting depth is the caller's to choose
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _read_output(item: Any, default_binary: bool) -> RequestedOutput:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ProtocolError("each requested output must be an object with a 'name'")
    params = _parameters(item, f"output {item['name']!r}")
    if "classification" in params:
        raise ProtocolError("the classification extension is not supported; ask for 'label'")
    binary = params.get("binary_data", default_binary)
    if not isinstance(binary, bool):
        raise ProtocolError(f"output {item['name']!r}: binary_data must be true or false")
    return RequestedOutput(item["name"], binary)


def _tensor_bytes(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        assert isinstance(tensor.data, list)
        return b"".join(struct.pack("<I", len(b)) + b for b in tensor.data)
    dtype = DATATYPES[tensor.datatype]
    assert isinstance(tensor.data, np.ndarray) and dtype is not None
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()
