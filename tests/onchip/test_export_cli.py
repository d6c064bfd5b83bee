"""`python -m client export-c BUNDLE --out DIR` writes the library's two files and the example
program and says so in JSON, with the arena siq_model.h declares; a bad bundle path is a clear
error and exit status 2."""

from __future__ import annotations

import json
import re

from client.__main__ import main
from shared.bundle import decode_bundle
from shared.cgen import generate_bundle_c
from tests.factories import make_random_bundle


def test_export_c_writes_the_library(tmp_path, capsys):
    data = make_random_bundle(4, arch="gray_strided")
    path = tmp_path / "b.siq"
    path.write_bytes(data)
    assert main(["export-c", str(path), "--out", str(tmp_path / "c")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = sorted(p.rsplit("/", 1)[-1] for p in out["files"])
    assert names == ["siq_example.c", "siq_model.c", "siq_model.h"]
    model = generate_bundle_c(decode_bundle(data))
    for name, text in {**model.files, **model.example}.items():
        assert (tmp_path / "c" / name).read_text() == text
    # one truth about the static arena: the JSON says what the header declares
    header = (tmp_path / "c" / "siq_model.h").read_text()
    declared = int(re.search(r"#define SIQ_ARENA_BYTES (\d+)", header).group(1))  # type: ignore[union-attr]
    assert out["arena_bytes"] == declared == model.arena_bytes
    arena = out["activation_bytes"] + out["patch_bytes"] + out["accumulator_bytes"]
    assert arena + out["decoded_weight_bytes"] == declared
    source = (tmp_path / "c" / "siq_model.c").read_text()
    assert f"static uint32_t siq_arena[{arena // 4}];" in source
    # a convolution's weights decoded into RAM (lenet's conv1: all 16 rows of 4 words)
    assert out["decoded_weight_bytes"] > 0
    assert f"static uint64_t siq_dec[{out['decoded_weight_bytes'] // 8}];" in source
    assert out["build"] == "cc -std=c99 -O2 -o siq_example siq_example.c siq_model.c"


def test_export_c_bad_bundle(tmp_path, capsys):
    path = tmp_path / "bad.siq"
    path.write_bytes(b"not a bundle")
    assert main(["export-c", str(path), "--out", str(tmp_path / "c")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
