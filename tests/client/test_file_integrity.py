"""A bundle file as SIQ_BUNDLE (issue 11, items 2 and 11): a tampered file is refused at
start with no id or key at hand, a file named by its id is checked against it, with a
signing key a file needs its detached signature `<file>.sig` (written by the client's cache
and by `python -m client sign-bundle`), and temporary files a killed client left are gone."""

from __future__ import annotations

import json
import os
import struct

import pytest
from fastapi.testclient import TestClient

from client.__main__ import main as client_main
from shared.bundle import bundle_id, sign, signature_path
from shared.errors import ConfigError
from tests.client.conftest import FakeServer


def flip_code_byte(data: bytes) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    begin, _ = json.loads(data[8 : 8 + n])["conv1.codes"]["data_offsets"]
    out = bytearray(data)
    out[8 + n + begin] ^= 0x01
    return bytes(out)


def test_a_tampered_file_is_refused_at_start(make_app, tmp_path, bundle_a):
    path = tmp_path / "exported.siq"
    path.write_bytes(flip_code_byte(bundle_a))
    with pytest.raises(ConfigError, match="corrupt"):
        make_app(str(path))


def test_a_file_named_by_its_id_must_hash_to_it(make_app, tmp_path, bundle_a, bundle_b):
    path = tmp_path / f"{bundle_id(bundle_a)}.siq"
    path.write_bytes(bundle_b)  # valid, checksum and all, but not the bundle its name says
    with pytest.raises(ConfigError, match="expected id"):
        make_app(str(path))
    path.write_bytes(bundle_a)
    assert make_app(str(path)).state.manager.current.bundle.id == bundle_id(bundle_a)


def test_with_a_key_a_file_needs_its_detached_signature(
    make_app, tmp_path, bundle_a, monkeypatch, capsys
):
    path = tmp_path / "exported.siq"
    path.write_bytes(bundle_a)
    with pytest.raises(ConfigError, match="sign-bundle"):
        make_app(str(path), bundle_hmac_key="key")
    signature_path(path).write_text(sign(bundle_a, "another key") + "\n")
    with pytest.raises(ConfigError, match="does not verify"):
        make_app(str(path), bundle_hmac_key="key")
    monkeypatch.setenv("SIQ_BUNDLE_HMAC_KEY", "key")
    assert client_main(["sign-bundle", str(path)]) == 0
    assert capsys.readouterr().out.strip() == str(signature_path(path))
    assert make_app(str(path), bundle_hmac_key="key").state.manager.current is not None
    path.write_bytes(bundle_a[:-1] + bytes([bundle_a[-1] ^ 1]))  # changed after signing
    with pytest.raises(ConfigError):
        make_app(str(path), bundle_hmac_key="key")


def test_sign_bundle_refuses_a_corrupt_file_and_a_missing_key(tmp_path, bundle_a, monkeypatch):
    path = tmp_path / "exported.siq"
    path.write_bytes(flip_code_byte(bundle_a))
    monkeypatch.delenv("SIQ_BUNDLE_HMAC_KEY", raising=False)
    assert client_main(["sign-bundle", str(path)]) == 2
    monkeypatch.setenv("SIQ_BUNDLE_HMAC_KEY", "key")
    assert client_main(["sign-bundle", str(path)]) == 2
    assert not signature_path(path).exists()


def test_the_cache_keeps_a_signature_beside_the_file(make_app, tmp_path, bundle_a):
    server = FakeServer(hmac_key="key")
    bid = server.publish(bundle_a)
    assert make_app("latest:digits", server, bundle_hmac_key="key").state.manager.refresh()
    cached = tmp_path / "state" / "bundles" / f"{bid}.siq"
    assert signature_path(cached).read_text().strip() == sign(bundle_a, "key")
    served = make_app(str(cached), bundle_hmac_key="key").state.manager.current
    assert served is not None and served.bundle.id == bid


def test_temporary_files_a_killed_client_left_are_removed_at_start(make_app, tmp_path, bundle_a):
    state = tmp_path / "state"
    (state / "bundles").mkdir(parents=True)
    leftovers = [state / ".tmp-abc.json", state / "bundles" / ".tmp-k1l2.siq"]
    for path in leftovers:
        path.write_bytes(b"")  # what kill -9 between mkstemp and write leaves
    keep = state / "bundles" / "notes.txt"
    keep.write_text("not ours to judge")
    path = tmp_path / "a.siq"
    path.write_bytes(bundle_a)
    http = TestClient(make_app(str(path)))
    assert http.get("/readyz").status_code == 200
    assert [p for p in leftovers if p.exists()] == [] and keep.exists()
    assert os.listdir(state / "bundles") == ["notes.txt"]
