"""The Open Inference Protocol v2 codec (client/oip_codec.py) on bytes, and the /v2 routes in
process: every malformed request is a 4xx in the protocol's `{"error": "..."}` shape, never a
500, and the service keeps serving after it."""

from __future__ import annotations

import base64
import gzip
import json
import struct
import types
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from client import oip_codec
from client.manager import load_network
from client.oip_codec import (
    ProtocolError,
    Tensor,
    decompress,
    encode_infer_response,
    parse_infer_request,
)
from client.oip_model import Limits, prepare
from shared.bundle import bundle_id, decode_bundle
from shared.engine import IntegerNetwork
from shared.errors import ImageTooLargeError
from shared.image import decode_image, preprocess
from tests.client.conftest import build_app, png_bytes

MODEL = "random-lenet"  # the data set of tests.factories' lenet bundles
INFER = f"/v2/models/{MODEL}/infer"


def sketch_digits(n: int, seed: int = 0) -> list[np.ndarray]:
    """n 28x28 uint8 images of dark strokes on white paper, different from each other."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = Image.new("L", (28, 28), 255)
        points = [tuple(int(v) for v in rng.integers(4, 24, size=2)) for _ in range(4)]
        ImageDraw.Draw(image).line(points, fill=0, width=3)
        out.append(np.asarray(image))
    return out


def engine_outputs(bundle: bytes, images: list[bytes]):
    """What the engine gives for these image files: (x, labels, probabilities, logits)."""
    net = IntegerNetwork(decode_bundle(bundle))
    x = np.stack([preprocess(decode_image(b), {"kind": "digit"}) for b in images])
    labels, probs = net.predict(x)
    return x, labels, probs, net.forward_int(net.quantize_input(x))


def binary_request(inputs: list[tuple[dict, bytes]], **extra) -> tuple[bytes, dict[str, str]]:
    """A body in Triton's binary tensor form: JSON header, then each input's bytes."""
    head = {"inputs": [dict(meta, parameters={"binary_data_size": len(b)}) for meta, b in inputs]}
    head.update(extra)
    text = json.dumps(head).encode()
    return text + b"".join(b for _, b in inputs), {
        "Inference-Header-Content-Length": str(len(text))
    }


def bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


# --- the codec -------------------------------------------------------------------------------


def test_binary_and_json_inputs_parse_to_the_same_tensors():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    body, headers = binary_request(
        [({"name": "a", "datatype": "FP32", "shape": [2, 3, 4]}, x.tobytes())],
        outputs=[{"name": "y", "parameters": {"binary_data": True}}],
    )
    req = parse_infer_request(body, headers["Inference-Header-Content-Length"])
    nested = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 3, 4], "data": x.tolist()}]}
    same = parse_infer_request(json.dumps(nested).encode(), None)
    assert np.array_equal(req.inputs[0].data, x) and np.array_equal(same.inputs[0].data, x)
    assert req.inputs[0].encoding == "binary" and same.inputs[0].encoding == "json"
    assert req.outputs is not None and req.outputs[0].binary and same.outputs is None


def test_bytes_elements_are_length_prefixed():
    body, headers = binary_request(
        [({"name": "images", "datatype": "BYTES", "shape": [3]}, bytes_elements(b"ab", b"", b"c"))]
    )
    req = parse_infer_request(body, headers["Inference-Header-Content-Length"])
    assert req.inputs[0].data == [b"ab", b"", b"c"]


def test_response_binary_outputs_follow_the_json_header():
    outputs = [
        (Tensor("label", "INT64", (2,), np.array([3, 1])), True),
        (Tensor("class_name", "BYTES", (2,), [b"three", b"one"]), True),
        (Tensor("probabilities", "FP64", (2, 2), np.array([[0.25, 0.75], [1.0, 0.0]])), False),
    ]
    body, headers = encode_infer_response("m", "v1", "id7", outputs)
    n = int(headers["inference-header-content-length"])
    head = json.loads(body[:n])
    assert head["id"] == "id7" and head["model_version"] == "v1"
    sizes = [o.get("parameters", {}).get("binary_data_size") for o in head["outputs"]]
    assert sizes == [16, 16, None]
    assert head["outputs"][2]["data"] == [0.25, 0.75, 1.0, 0.0]
    assert np.frombuffer(body[n : n + 16], "<i8").tolist() == [3, 1]
    assert body[n + 16 :] == bytes_elements(b"three", b"one")
    json_only, headers = encode_infer_response("m", "v1", None, outputs[2:])
    assert headers["content-type"] == "application/json" and "id" not in json.loads(json_only)


def test_decompression_is_bounded():
    raw = b'{"inputs": []}'
    assert decompress(gzip.compress(raw), "gzip", 100) == raw
    assert decompress(zlib.compress(raw), "deflate", 100) == raw
    with pytest.raises(ImageTooLargeError):
        decompress(gzip.compress(b"0" * 10_000), "gzip", 1000)
    with pytest.raises(ProtocolError):
        decompress(b"not gzip", "gzip", 1000)
    with pytest.raises(ProtocolError):
        decompress(raw, "br", 1000)


# --- what a request declares, checked before it is inflated or parsed ---------------------------

BIG_LIMITS = Limits(max_images=64, max_pixels=16_000_000, max_request_pixels=64_000_000,
                    max_body_bytes=20 * 1024 * 1024)  # fmt: skip


def tensor_json(shape: list[int], values: int) -> bytes:
    """A JSON FP32 `input` tensor of `values` zeros declaring `shape` (before its data)."""
    head = json.dumps({"name": "input", "datatype": "FP32", "shape": shape})[:-1]
    return b'{"inputs": [' + head.encode() + b', "data": [' + b"0," * (values - 1) + b"0]}]}"


@pytest.fixture
def inflated(monkeypatch) -> list[int]:
    """How many bytes the codec's inflaters have put out."""
    out: list[int] = []
    real = zlib.decompressobj

    class Counting:
        def __init__(self, *args, **kwargs):
            self._inner = real(*args, **kwargs)

        def decompress(self, data, max_length=0):
            chunk = self._inner.decompress(data, max_length)
            out.append(len(chunk))
            return chunk

        def __getattr__(self, name):
            return getattr(self._inner, name)

    monkeypatch.setattr(oip_codec.zlib, "decompressobj", Counting)
    return out


@pytest.fixture
def no_parse(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the request was parsed")

    monkeypatch.setattr(oip_codec, "json", types.SimpleNamespace(loads=refuse))


def test_a_gzip_of_too_many_images_is_refused_at_its_header(loaded_a, inflated, no_parse):
    """15 KB of gzip, 15.7 MB of JSON, 10,000 images: 413 after the first 64 KB inflated."""
    body = gzip.compress(tensor_json([10_000, 1, 28, 28], 10_000 * 784))
    assert len(body) < 100_000
    with pytest.raises(ImageTooLargeError, match="too many images"):
        prepare(loaded_a, body, header_length=None, content_encoding="gzip", limits=BIG_LIMITS)
    assert sum(inflated) <= oip_codec.PEEK_BYTES


def test_a_shape_declared_after_the_data_is_checked_before_the_parse(loaded_a, no_parse):
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "data": [0] * 1000,
                       "shape": [1000, 1, 1, 1]}]}  # fmt: skip
    body = gzip.compress(json.dumps(doc).encode())
    with pytest.raises(ImageTooLargeError, match="too many images"):
        prepare(loaded_a, body, header_length=None, content_encoding="gzip", limits=BIG_LIMITS)
    with pytest.raises(ImageTooLargeError, match="values"):  # first dimension fine, size not
        parse_infer_request(json.dumps({"inputs": [{"shape": [1, 10**40]}]}).encode(), None,
                            oip_codec.Budget(64, 50_176))  # fmt: skip


def test_more_values_than_the_shape_declares_are_refused_unparsed(loaded_a, inflated, no_parse):
    """One image declared, 10,000 sent: refused where the values pass the count, at once."""
    body = gzip.compress(tensor_json([1, 1, 28, 28], 10_000 * 784))
    with pytest.raises(ProtocolError, match="more values than"):
        prepare(loaded_a, body, header_length=None, content_encoding="gzip", limits=BIG_LIMITS)
    assert sum(inflated) <= oip_codec.PEEK_BYTES
    plain = tensor_json([1, 1, 28, 28], 10_000 * 784)  # uncompressed: counted before parsing
    with pytest.raises(ProtocolError, match="more values than"):
        prepare(loaded_a, plain, header_length=None, content_encoding=None, limits=BIG_LIMITS)


def test_inflation_goes_on_past_the_first_piece(loaded_a):
    """A body within its budget but larger than the first piece inflates whole, in pieces."""
    raw = tensor_json([64, 1, 28, 28], 64 * 784).replace(b"0,", b"0.003921568627450980392,")
    assert len(raw) > oip_codec.PEEK_BYTES + (1 << 20)  # three pieces
    assert decompress(gzip.compress(raw), "gzip", 20 << 20) == raw
    assert decompress(zlib.compress(raw), "deflate", 20 << 20) == raw
    with pytest.raises(ImageTooLargeError):
        decompress(gzip.compress(raw), "gzip", len(raw) - 1)
    assert decompress(gzip.compress(raw), "gzip", len(raw)) == raw
    with pytest.raises(ProtocolError, match="truncated"):
        decompress(gzip.compress(raw)[:-100_000], "gzip", 20 << 20)
    assert decompress(gzip.compress(b""), "gzip", 10) == b""


def test_requests_within_the_budget_still_parse(loaded_a):
    body = gzip.compress(tensor_json([64, 1, 28, 28], 64 * 784))
    prepared = prepare(loaded_a, body, header_length=None, content_encoding="gzip",
                       limits=BIG_LIMITS)  # fmt: skip
    assert prepared.images == 64
    nested = {"inputs": [tensor_input(np.zeros((3, 1, 28, 28), np.float32))]}
    nested["inputs"][0]["data"] = np.zeros((3, 1, 28, 28)).tolist()  # "]," between rows too
    assert prepare(loaded_a, json.dumps(nested).encode(), header_length=None,
                   content_encoding=None, limits=BIG_LIMITS).images == 3  # fmt: skip


# --- the routes --------------------------------------------------------------------------------


LIMITS = {"max_images": 4, "max_upload_bytes": 64 * 1024}


@pytest.fixture(scope="module")
def child_http(tmp_path_factory, bundle_a):
    """A client whose inference requests run in its inference process: the serving
    process's worker-thread path is broken, so an answer can only come from the child."""
    root = tmp_path_factory.mktemp("oip-child")
    path = root / "a.siq"
    path.write_bytes(bundle_a)
    app = build_app(root, str(path), inference_processes=1, **LIMITS)

    async def no_thread(work):
        raise AssertionError("an inference request ran in the serving process")

    app.state.pipeline.runner.local.in_thread = no_thread
    with TestClient(app) as http:
        yield http


@pytest.fixture(params=["thread", "child"])
def http(request, make_app, tmp_path, bundle_a):
    """Every route test twice: in a worker thread of the serving process, and in an
    inference process (SIQ_INFERENCE_PROCESSES=1): the same answers, the same errors."""
    if request.param == "child":
        return request.getfixturevalue("child_http")
    path = tmp_path / "a.siq"
    path.write_bytes(bundle_a)
    return TestClient(make_app(str(path), **LIMITS))


@pytest.fixture(scope="module")
def loaded_a(bundle_a):
    return load_network(decode_bundle(bundle_a), "file")


def tensor_input(x: np.ndarray, datatype: str = "FP32", name: str = "input") -> dict:
    return {"name": name, "datatype": datatype, "shape": list(x.shape), "data": x.ravel().tolist()}


def test_json_images_are_base64_and_answers_equal_the_engine(http, bundle_a):
    images = [png_bytes(d) for d in sketch_digits(2, seed=3)]
    _, labels, probs, logits = engine_outputs(bundle_a, images)
    encoded = [base64.b64encode(b).decode() for b in images]
    body = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2], "data": encoded}]}
    answer = http.post(INFER, json=body)
    assert answer.status_code == 200, answer.text
    out = {o["name"]: o for o in answer.json()["outputs"]}
    assert out["label"]["data"] == labels.tolist()
    assert out["class_name"]["data"] == [f"class{i}" for i in labels]
    assert np.array_equal(np.array(out["probabilities"]["data"]).reshape(2, 10), probs)
    assert out["logits"]["data"] == logits.ravel().tolist()


def test_a_gzip_request_is_read(http):
    body = json.dumps({"inputs": [tensor_input(np.zeros((1, 1, 28, 28), np.float32))]})
    answer = http.post(INFER, content=gzip.compress(body.encode()),
                       headers={"Content-Encoding": "gzip"})  # fmt: skip
    assert answer.status_code == 200, answer.text


def test_metrics_count_v2_requests_by_template(http, bundle_a):
    assert http.get(f"/v2/models/{MODEL}/versions/{bundle_id(bundle_a)}/ready").status_code == 200
    text = http.get("/metrics").text
    assert 'endpoint="/v2/models/{name}/versions/{version}/ready",status="200"' in text


ZEROS = np.zeros((1, 1, 28, 28), np.float32)
PNG = png_bytes(sketch_digits(1)[0])
MALFORMED = [
    ("not json", b"{", {}, 400, "not JSON"),
    ("not an object", b"[1]", {}, 400, "JSON object"),
    ("no inputs", b'{"inputs": []}', {}, 400, "non-empty"),
    ("deep nesting", b"[" * 50_000, {}, 400, "not JSON"),
    ("not utf-8", b'{"inputs": "\xff"}', {}, 400, "not JSON"),
    ("bad datatype", {"inputs": [dict(tensor_input(ZEROS), datatype="FP99")]}, {}, 400, "FP99"),
    (
        "negative dim",
        {"inputs": [dict(tensor_input(ZEROS), shape=[-1, 1, 28, 28])]},
        {},
        400,
        "sizes",
    ),  # fmt: skip
    (
        "count mismatch",
        {"inputs": [dict(tensor_input(ZEROS), shape=[2, 1, 28, 28])]},
        {},
        400,
        "784 values",
    ),  # fmt: skip
    (
        "wrong shape",
        {"inputs": [tensor_input(np.zeros((1, 28, 28, 1), np.float32))]},
        {},
        400,
        "shape [N, 1, 28, 28]",
    ),  # fmt: skip
    (
        "NaN",
        b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], '
        b'"data": [NaN' + b", 0" * 783 + b"]}]}",
        {},
        400,
        "finite",
    ),  # fmt: skip
    ("out of range", {"inputs": [tensor_input(ZEROS + 2)]}, {}, 400, "in [0, 1]"),
    (
        "uint8 overflow",
        {"inputs": [tensor_input(ZEROS.astype(int) + 256, "UINT8")]},
        {},
        400,
        "do not fit",
    ),  # fmt: skip
    (
        "strings as numbers",
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": ["a"]}]},
        {},
        400,
        "numbers",
    ),  # fmt: skip
    (
        "int64 input",
        {"inputs": [tensor_input(ZEROS.astype(int), "INT64")]},
        {},
        400,
        "FP32 or UINT8",
    ),  # fmt: skip
    ("unknown input", {"inputs": [tensor_input(ZEROS, name="x")]}, {}, 400, "unknown input"),
    (
        "two inputs",
        {"inputs": [tensor_input(ZEROS), tensor_input(ZEROS)]},
        {},
        400,
        "exactly one",
    ),  # fmt: skip
    (
        "unknown output",
        {"inputs": [tensor_input(ZEROS)], "outputs": [{"name": "z"}]},
        {},
        400,
        "unknown output",
    ),  # fmt: skip
    (
        "classification",
        {
            "inputs": [tensor_input(ZEROS)],
            "outputs": [{"name": "label", "parameters": {"classification": 3}}],
        },
        {},
        400,
        "classification",
    ),  # fmt: skip
    (
        "too many images",
        {"inputs": [tensor_input(np.zeros((5, 1, 28, 28), np.float32))]},
        {},
        413,
        "too many",
    ),  # fmt: skip
    (
        "empty batch",
        {"inputs": [tensor_input(np.zeros((0, 1, 28, 28), np.float32))]},
        {},
        400,
        "empty",
    ),  # fmt: skip
    (
        "bad base64",
        {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]},
        {},
        400,
        "base64",
    ),  # fmt: skip
    (
        "not an image",
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(b"hello").decode()],
                }
            ]
        },
        {},
        415,
        "images[0]",
    ),  # fmt: skip
    (
        "header length past the body",
        b"{}",
        {"Inference-Header-Content-Length": "99"},
        400,
        "within",
    ),  # fmt: skip
    (
        "header length not a number",
        b"{}",
        {"Inference-Header-Content-Length": "-1"},
        400,
        "within",
    ),  # fmt: skip
    (
        "header length a superscript digit",  # '²'.isdigit() is true, int('²') raises
        b"{}",
        {"Inference-Header-Content-Length": "\u00b2".encode("latin-1")},
        400,
        "within",
    ),  # fmt: skip
    (
        "lone surrogate in a BYTES element",  # no UTF-8 for it
        {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["\ud800"]}]},
        {},
        400,
        "Unicode",
    ),  # fmt: skip
    ("unknown encoding", b"{}", {"Content-Encoding": "br"}, 400, "Content-Encoding"),
    ("corrupt gzip", b"{}", {"Content-Encoding": "gzip"}, 400, "decompressed"),
]


def _send(http, body, headers):
    if isinstance(body, dict):
        return http.post(INFER, content=json.dumps(body).encode(), headers=headers)
    return http.post(INFER, content=body, headers=headers)


@pytest.mark.parametrize(
    "body, headers, status, words", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_requests_are_4xx_in_the_protocols_shape(http, body, headers, status, words):
    answer = _send(http, body, headers)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert isinstance(error, str) and words in error
    assert http.get("/v2/health/ready").status_code == 200


BINARY_MALFORMED = [
    (
        "size past the data",
        [({"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28]}, ZEROS.tobytes()[:-4])],
        400,
        "needs 3136",
    ),  # fmt: skip
    (
        "bytes length cut off",
        [({"name": "images", "datatype": "BYTES", "shape": [1]}, b"\x05\x00")],
        400,
        "cut off",
    ),  # fmt: skip
    (
        "bytes element past its data",
        [({"name": "images", "datatype": "BYTES", "shape": [1]}, b"\x09\x00\x00\x00abc")],
        400,
        "runs past",
    ),  # fmt: skip
    (
        "bytes count mismatch",
        [({"name": "images", "datatype": "BYTES", "shape": [2]}, bytes_elements(PNG))],
        400,
        "1 BYTES elements",
    ),  # fmt: skip
    (
        "truncated image",
        [({"name": "images", "datatype": "BYTES", "shape": [1]}, bytes_elements(PNG[:-40]))],
        422,
        "images[0]",
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    "inputs, status, words", [c[1:] for c in BINARY_MALFORMED], ids=[c[0] for c in BINARY_MALFORMED]
)
def test_malformed_binary_requests_are_4xx(http, inputs, status, words):
    body, headers = binary_request(inputs)
    answer = http.post(INFER, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]


def test_leftover_binary_data_and_both_data_forms_are_refused(http):
    body, headers = binary_request([({"name": "input", "datatype": "FP32",
                                      "shape": [1, 1, 28, 28]}, ZEROS.tobytes())])  # fmt: skip
    answer = http.post(INFER, content=body + b"xx", headers=headers)
    assert answer.status_code == 400 and "2 bytes" in answer.json()["error"]
    both = {"inputs": [dict(tensor_input(ZEROS), parameters={"binary_data_size": 3136})]}
    assert _send(http, both, {}).status_code == 400


def test_body_over_the_limit_is_413(http):
    answer = http.post(INFER, content=b"0" * (65 * 1024))
    assert answer.status_code == 413 and "limit" in answer.json()["error"]


def test_unknown_models_and_versions_are_404(http):
    assert http.get("/v2/models/mnist").status_code == 404
    assert http.get(f"/v2/models/{MODEL}/versions/1").status_code == 404
    answer = http.post(f"/v2/models/{MODEL}/versions/1/infer", json={"inputs": []})
    assert answer.status_code == 404 and "no version" in answer.json()["error"]


def test_a_request_too_heavy_for_the_child_runs_in_the_serving_process(make_app, tmp_path, bundle_a):  # fmt: skip
    """As /recognize: an inference process hands back a request whose images decode to more
    than its pixel bound (seconds of decoding would hold up everyone's batch), and the
    serving process runs it, with the same answer."""
    path = tmp_path / "a.siq"
    path.write_bytes(bundle_a)
    app = make_app(str(path), inference_processes=1, **LIMITS)
    ran_here: list[int] = []
    original = app.state.pipeline.runner.local.call

    async def recording(work, *, key, images, pixels):
        ran_here.append(pixels)
        return await original(work, key=key, images=images, pixels=pixels)

    app.state.pipeline.runner.local.call = recording
    big = np.full((1100, 1000), 255, np.uint8)  # 1.1 M pixels, over the child's 1 M
    big[300:800, 450:550] = 0
    small = sketch_digits(1)[0]
    with TestClient(app) as http:
        for image, here in ((small, []), (big, [1100 * 1000])):
            data = png_bytes(image)
            _, labels, probs, _ = engine_outputs(bundle_a, [data])
            body, headers = binary_request(
                [({"name": "images", "datatype": "BYTES", "shape": [1]}, bytes_elements(data))]
            )
            answer = http.post(INFER, content=body, headers=headers)
            assert answer.status_code == 200, answer.text
            out = {o["name"]: o for o in answer.json()["outputs"]}
            assert out["label"]["data"] == labels.tolist()
            assert ran_here == here  # the small one ran in the child, the big one here
