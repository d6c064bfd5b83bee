"""bench/bench_http.py's report: its section of client.md is replaced in place, kept when
bench_client rewrites the rest, and says the ratio of each image kind."""

from __future__ import annotations

from bench.bench_http import PEER, SECTION, disagreements, section
from bench.sections import kept_sections, replace_section


def fake_result() -> dict:
    def side(rps: float, cpu: float, ratio: float | None = None) -> dict:
        row = {"requests_per_s": rps, "round_requests_per_s": [rps, rps], "p50_ms": 1.0,
               "p99_ms": 2.0, "errors": 0, "server_cpu_ms_per_request": cpu}  # fmt: skip
        if ratio is not None:
            row |= {"ratio_to_bare": ratio, "round_ratios": [ratio, ratio],
                    "cpu_ratio_to_bare": ratio}  # fmt: skip
        return row

    kinds = {"png": {"bare": side(1000, 0.5), "client_w1": side(610, 0.8, 0.61),
                     "client_w2": side(700, 0.9, 0.7)}}  # fmt: skip
    return {"rounds": 2, "requests_per_round": 10, "concurrency": 4, "workers": [1, 2],
            "kinds": kinds, "labels": {"png": "PNG"}, "bundles": {"png": "b"},
            "load": "lean", "machine": "m", "note": "n"}  # fmt: skip


def test_section_is_written_in_place_and_kept(tmp_path):
    text = section(fake_result())
    assert "**0.61**" in text and "1.15x" in text  # the ratio, and 2 workers / 1
    md = tmp_path / "client.md"
    md.write_text("# Client benchmark\n\nengine table\n")
    replace_section(md, SECTION, text)
    replace_section(md, SECTION, text.replace("0.61", "0.62"))  # replaced, not appended twice
    body = md.read_text()
    begin = f"<!-- section: {SECTION} -->"
    assert body.count(begin) == 1 and "**0.62**" in body and body.startswith("# Client")
    assert kept_sections(md).count(begin) == 1
    assert kept_sections(tmp_path / "missing.md") == ""


def test_bench_client_keeps_the_section_it_does_not_write():
    """client.md as committed: bench_client's rewrite keeps bench_http's section."""
    from tests.conftest import REPO_ROOT

    kept = kept_sections(REPO_ROOT / "bench" / "results" / "client.md")
    assert kept.count(f"<!-- section: {SECTION} -->") == 1 and "## HTTP" in kept


def test_the_inference_process_client_gets_its_own_row():
    result = fake_result()
    row = dict(result["kinds"]["png"]["client_w1"], ratio_to_bare=0.66, round_ratios=[0.66])
    result["kinds"]["png"]["client_w1_p1"] = row
    result["processes"] = 1
    text = section(result)
    assert "| PNG | in the server process |" in text and "**0.61**" in text
    assert "| PNG | 1 inference process |" in text and "**0.66**" in text
    assert "inference process |" not in section(fake_result())  # only when measured


def with_peer(result: dict, agreement: float = 0.97) -> dict:
    """fake_result with the thirty-line service measured beside the client."""
    kinds = result["kinds"]["png"]
    kinds["peer"] = dict(kinds["bare"], requests_per_s=500.0, ratio_to_bare=0.5,
                         round_ratios=[0.5, 0.5], cpu_ratio_to_bare=0.5,
                         label_agreement=agreement)  # fmt: skip
    for who in ("client_w1", "client_w2"):
        ratio = kinds[who]["requests_per_s"] / 500.0
        kinds[who] |= {"ratio_to_peer": ratio, "round_ratios_to_peer": [ratio, ratio]}
    return result


def test_the_thirty_line_service_gets_a_row_and_its_ratio():
    text = section(with_peer(fake_result()))
    assert f"| PNG | {PEER} | 1000 | 500 | **0.50** |" in text  # beside the bare route
    assert "| PNG | in the server process | 500 | 610 | **1.22** | 1.22-1.22 | 97.0% |" in text
    assert PEER not in section(fake_result())  # only when measured
    assert disagreements(with_peer(fake_result()), 0.85) == []
    (problem,) = disagreements(with_peer(fake_result(), agreement=0.5), 0.85)
    assert "50.0%" in problem and "PNG" in problem


def test_the_thirty_line_service_answers_the_label_of_the_same_network(tmp_path):
    """bench/peer_service.py on an ONNX model of a bundle's own network: its label is the
    integer engine's on the same PNG, by the same preprocessing."""
    from fastapi.testclient import TestClient

    from bench.bench_client import load_images
    from bench.peer_service import make_app
    from shared.bundle import decode_bundle
    from shared.engine import IntegerNetwork
    from shared.image import decode_image, preprocess
    from shared.onnx import to_onnx
    from tests.factories import make_random_bundle

    data = make_random_bundle(0)
    bundle = decode_bundle(data)
    (tmp_path / "b.siq").write_bytes(data)
    (tmp_path / "m.onnx").write_bytes(to_onnx(bundle, inputs="images"))
    spec = bundle.manifest["input"]["preprocess"]
    engine = IntegerNetwork(bundle)
    with TestClient(make_app(tmp_path / "m.onnx", tmp_path / "b.siq")) as http:
        for png in load_images(4):
            answer = http.post("/recognize", files={"file": ("d.png", png, "image/png")})
            expected = engine.predict(preprocess(decode_image(png), spec)[None])[0][0]
            assert answer.status_code == 200 and answer.json() == {"label": int(expected)}
        assert http.get("/healthz").json() == {"status": "ok"}
