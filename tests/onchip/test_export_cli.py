"""`python -m client export-c BUNDLE --out DIR` writes the two files and says so in JSON; a bad
bundle path is a clear error and exit status 2."""

from __future__ import annotations

import json

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
    assert sorted(p.rsplit("/", 1)[-1] for p in out["files"]) == ["siq_model.c", "siq_model.h"]
    expected = generate_bundle_c(decode_bundle(data)).files
    for name, text in expected.items():
        assert (tmp_path / "c" / name).read_text() == text


def test_export_c_bad_bundle(tmp_path, capsys):
    path = tmp_path / "bad.siq"
    path.write_bytes(b"not a bundle")
    assert main(["export-c", str(path), "--out", str(tmp_path / "c")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
