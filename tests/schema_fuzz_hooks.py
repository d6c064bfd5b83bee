"""schemathesis hooks (`st` loads them: SCHEMATHESIS_HOOKS, set by tests/schema_fuzz.py) for
what the documents mean but JSON Schema cannot state, so that the data schemathesis calls
valid is what the services take. Every check still runs on every case.

- POST /quantize-sweeps: a grid of more than MAX_RUNS cells (weight bits x activation bits x
  seeds) is refused with 422; a schema bounds each list, not their product. Such positive
  bodies are dropped.
- POST /datasets (the server's one application/octet-stream body) takes an archive of
  images in classes; random bytes are rightly 415. It gets a small zip of two classes.
- POST /networks takes a float ONNX model (its documented media type, application/x-onnx):
  a small one for digits. A job that names it fits digits and mnist only (another data set
  is rightly 422 at submit), and names a network or an `arch`, not both; 0 `epochs` only
  fine-tune a network (a job without one is rightly 422). Such positive bodies
  are dropped.
- POST /recognize takes images of a digit. Left alone, schemathesis sends 1x1 one-colour
  files (no digit to find: rightly 422) or random bytes; the image media types the client
  documents (a raw body, or the multipart parts whose `encoding` names them) get drawn
  digits in that format instead. A positive form with `files` is dropped: schemathesis
  (4.32) sends the parts of an encoded array without a filename, which a multipart parser
  reads as text, not as a file (the form's `file` is tested; negative cases keep `files`).
"""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image

from client.openapi import IMAGE_TYPES
from server.params import MAX_RUNS


def _positive(case) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def _is(case, method: str, path: str) -> bool:
    return case.operation.method.upper() == method and case.operation.path == path


@schemathesis.hook
def filter_case(context, case) -> bool:
    if _positive(case) and _is(case, "POST", "/quantize-sweeps") and isinstance(case.body, dict):
        grid = (case.body.get(k) for k in ("weight_bits", "activation_bits", "seeds"))
        if math.prod(len(v) if isinstance(v, list) else 1 for v in grid) > MAX_RUNS:
            return False
    if _positive(case) and _is(case, "POST", "/quantize-jobs") and isinstance(case.body, dict):
        body = case.body
        if body.get("network") is not None:
            return body.get("arch") is None and body.get("dataset") in ("digits", "mnist")
        return body.get("epochs") != 0
    if _positive(case) and _is(case, "POST", "/recognize") and isinstance(case.body, dict):
        return "files" not in case.body
    return True


def digit(fmt: str, thickness: int) -> bytes:
    """A dark 7 on white paper, 28x28, its strokes `thickness` pixels wide, in PIL's `fmt`."""
    pixels = np.full((28, 28), 255, np.uint8)
    pixels[6 : 6 + thickness, 7:21] = 0
    for row in range(6, 23):
        right = 21 - (row - 6) // 2
        pixels[row, right - thickness : right] = 0
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


for _media in IMAGE_TYPES:
    _fmt = _media.partition("/")[2].upper()
    schemathesis.openapi.media_type(_media, st.sampled_from([digit(_fmt, t) for t in (2, 3, 4)]))


def dataset_zip() -> bytes:
    """A data set archive POST /datasets takes: two classes of 8x8 images, train and test."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            for split, count in (("train", 3), ("test", 1)):
                for i in range(count):
                    image = io.BytesIO()
                    Image.new("RGB", (8, 8), (colour[0] + i, colour[1], colour[2])).save(
                        image, "PNG"
                    )
                    archive.writestr(f"{split}/{name}/{i}.png", image.getvalue())
    return out.getvalue()


schemathesis.openapi.media_type("application/octet-stream", st.just(dataset_zip()))


def digits_onnx() -> bytes:
    """A float ONNX model POST /networks takes, for digits and mnist (1x28x28, 10 classes):
    conv -> relu -> global average pool -> flatten -> gemm."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
        for name, shape in (("w", (4, 1, 3, 3)), ("fc", (10, 4)), ("fcb", (10,)))
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


schemathesis.openapi.media_type("application/x-onnx", st.just(digits_onnx()))
