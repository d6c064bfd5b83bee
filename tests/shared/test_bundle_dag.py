"""Format version 3: a DAG graph is written and read back, and every bad graph of the
contract's list is refused with BundleError (never another exception)."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load as st_load

from shared.bundle import (
    DAG_VERSION,
    MANIFEST_ZLIB_KEY,
    decode_bundle,
    encode_bundle,
    with_checksum,
)
from shared.errors import BundleError
from shared.network import as_dag, check_graph
from tests.factories import GraphBuilder, make_random_network, random_dag_network

Net = tuple[dict[str, Any], dict[str, np.ndarray]]


def _net() -> Net:
    """conv c1 (relu6) -> conv c2 (accumulators) + c1 -> add a -> avgpool p -> global pool g
    -> linear fc (the logits)."""
    b = GraphBuilder(0, (2, 6, 6))
    c1 = b.conv("input", 4, 3, padding=1, activation="relu6", name="c1")
    c2 = b.conv(c1, 4, 3, padding=1, activation="none", name="c2")
    a = b.add(c2, c1, name="a")
    p = b.avgpool(a, 2, name="p")
    g = b.global_avgpool(p, name="g")
    b.linear(g, 3, activation="none", name="fc")
    return b.network()


def _node(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in manifest["graph"] if n["name"] == name)


def _edit(node: str, **fields: Any) -> Callable[[Net], None]:
    return lambda net: _node(net[0], node).update(fields)


def _tensor(key: str, value: Any) -> Callable[[Net], None]:
    return lambda net: net[1].__setitem__(key, np.asarray(value, np.int32))


def _insert(index: int, node: dict[str, Any]) -> Callable[[Net], None]:
    return lambda net: net[0]["graph"].insert(index, node)


def _huge_add(net: Net) -> None:
    """The add's first input may reach ~2^31 and both multipliers are ~2^31: past 2^62."""
    m, t = net
    w = np.abs(t["c2.codebook"].astype(np.int64)).max()
    t["c2.codebook"] = np.full_like(t["c2.codebook"], w)
    t["c2.bias"] = np.full_like(t["c2.bias"], 2**31 - 1 - 15 * int(w) * 36)
    t["a.multiplier"] = np.array([2**31 - 1, 2**31 - 1], np.int32)


RULES: list[tuple[str, Callable[[Net], None], str]] = [
    ("unknown op", _edit("p", op="softmax"), "unknown op"),
    ("node not an object", _insert(0, "conv"), "must be an object"),  # type: ignore[arg-type]
    ("duplicate name", _edit("p", name="c1"), "duplicate"),
    ("reserved name", _edit("c1", name="input"), "reserved"),
    ("bad name", _edit("g", name="g lobal"), "bad"),
    ("input names itself", _edit("p", inputs=["p"]), "its own value"),
    ("input names a later node", _edit("c2", inputs=["p"]), "later node"),
    ("dangling input", _edit("p", inputs=["nowhere"]), "names no node"),
    ("no inputs", lambda net: _node(net[0], "p").pop("inputs"), "inputs"),
    ("add with one input", _edit("a", inputs=["c2"]), "2 name"),
    ("pool with two inputs", _edit("p", inputs=["a", "c1"]), "1 name"),
    ("conv channels", _edit("c2", in_channels=3), "in_channels 3 != incoming 4"),
    ("groups do not divide", _edit("c2", groups=3), "groups 3 must divide"),
    ("add shapes differ", _edit("a", inputs=["c2", "input"]), "adds shapes"),
    ("linear features", _edit("fc", in_features=5), "in_features 5 != incoming 4"),
    ("linear on a map", _edit("fc", inputs=["p"]), "flat input"),
    ("pool window does not fit", _edit("p", kernel_size=7), "does not fit"),
    ("conv kernel does not fit", _edit("c1", kernel_size=9), "does not fit"),
    ("global pool of a vector", _edit("g", inputs=["fc"]), "later node"),
    ("accumulators into a pool", _edit("p", inputs=["c2"]), "accumulators"),
    ("accumulators as an add's second input", _edit("a", inputs=["c1", "c2"]), "accumulators"),
    ("output is codes", _edit("fc", activation="relu"), "output"),
    ("unused node", _edit("p", inputs=["c1"]), "nothing uses the value of a"),
    ("unknown activation", _edit("c1", activation="sigmoid"), "activation"),
    ("add without activation", _edit("a", activation="none"), "activation"),
    ("clamp_max 0", _edit("c1", clamp_max=0), "clamp_max"),
    ("clamp_max above A", _edit("c1", clamp_max=16), "clamp_max"),
    ("clamp_max missing", lambda net: _node(net[0], "c1").pop("clamp_max"), "clamp_max"),
    ("weighted multiplier 0", _tensor("c1.multiplier", [0]), "multiplier"),
    ("weighted shift 63", _tensor("c1.shift", [63]), "shift"),
    ("add multiplier negative", _tensor("a.multiplier", [-1, 5]), "multipliers"),
    ("add multiplier shape", _tensor("a.multiplier", [5]), "shape"),
    ("add shift 0", _tensor("a.shift", [0]), "shift"),
    ("add shift 63", _tensor("a.shift", [63]), "shift"),
    ("add without its tensors", lambda net: net[1].pop("a.shift"), "a.shift"),
    ("accumulators with requantisation tensors", _tensor("c2.shift", [3]), "unexpected"),
    ("accumulator bound", _tensor("c1.bias", [2**31 - 1] * 4), "exact bound"),
    ("add bound", _huge_add, "beyond the bound 2\\^62"),
    ("output size vs classes", _edit("fc", out_features=4), "codes hold"),
]


def test_a_dag_bundle_round_trips() -> None:
    manifest, tensors = _net()
    bundle = decode_bundle(encode_bundle(manifest, tensors))
    assert bundle.manifest["format_version"] == DAG_VERSION
    assert [n["name"] for n in bundle.manifest["graph"]] == ["c1", "c2", "a", "p", "g", "fc"]
    assert set(bundle.tensors) == set(tensors)
    assert "c2.multiplier" not in bundle.tensors  # accumulators: no requantisation
    for key, value in tensors.items():
        np.testing.assert_array_equal(bundle.tensors[key], value)


def test_the_net_is_valid_as_built() -> None:
    manifest, _ = _net()
    values = check_graph(as_dag(manifest["graph"]), (2, 6, 6), 4)
    assert values["c2"].kind == "accumulators" and values["a"].kind == "codes"
    assert values["p"].shape == (4, 3, 3) and values["fc"].shape == (3,)


@pytest.mark.parametrize("rule,edit,message", RULES, ids=[r[0] for r in RULES])
def test_each_bad_graph_is_refused(rule: str, edit: Callable[[Net], None], message: str) -> None:
    net = _net()
    edit(net)
    with pytest.raises(BundleError, match=message):
        encode_bundle(*net)


def test_version_one_cannot_hold_dag_ops_or_fields() -> None:
    manifest, tensors = make_random_network(0)
    manifest["graph"][1]["op"] = "avgpool2d"
    with pytest.raises(BundleError, match="format version 3"):
        encode_bundle(manifest, tensors)
    manifest, tensors = make_random_network(0)
    manifest["graph"][0]["groups"] = 1
    with pytest.raises(BundleError, match="groups need format version 3"):
        encode_bundle(manifest, tensors)
    manifest, tensors = _net()
    manifest["format_version"] = 2
    with pytest.raises(BundleError, match="version 3"):
        encode_bundle(manifest, tensors)


def test_a_version_three_node_needs_inputs() -> None:
    manifest, tensors = make_random_network(0)
    manifest["format_version"] = 3
    with pytest.raises(BundleError, match="'inputs'"):
        encode_bundle(manifest, tensors)


def _mutations(rng: np.random.Generator, manifest: dict[str, Any]) -> None:
    node = manifest["graph"][rng.integers(len(manifest["graph"]))]
    key = rng.choice(sorted(node))
    junk = [None, -1, 0, 1, 2, 10**9, "x", [], {}, ["input"], [0], 1.5, True, "relu6"]
    node[str(key)] = junk[rng.integers(len(junk))]


@pytest.mark.parametrize("seed", range(60))
def test_any_mutated_graph_is_refused_as_a_bundle_error_or_read(seed: int) -> None:
    rng = np.random.default_rng(seed)
    manifest, tensors = random_dag_network(seed)
    for _ in range(1 + seed % 3):
        _mutations(rng, manifest)
    with contextlib.suppress(BundleError):  # refused as a bundle error, or a valid graph
        encode_bundle(copy.deepcopy(manifest), tensors)


def test_a_dag_bundle_is_stored_packed_with_plain_add_constants() -> None:
    manifest, tensors = _net()
    data = encode_bundle(manifest, tensors)
    stored = st_load(data)
    assert set(stored) == {"c1.packed", "c2.packed", "fc.packed", "a.multiplier", "a.shift"}
    np.testing.assert_array_equal(stored["a.multiplier"], tensors["a.multiplier"])
    assert set(decode_bundle(data).manifest["storage"]) == {"c1", "c2", "fc"}


def _restored(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The bundle with its stored (compressed) manifest edited and the checksum made
    consistent again, so that the validator, not the checksum, judges it."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header["__metadata__"]
    manifest = json.loads(zlib.decompress(base64.b64decode(meta[MANIFEST_ZLIB_KEY])))
    edit(manifest)
    text = with_checksum(manifest, st_load(data))
    meta[MANIFEST_ZLIB_KEY] = base64.b64encode(zlib.compress(text.encode())).decode()
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


@pytest.mark.parametrize("seed", range(40))
def test_a_stored_dag_with_a_mutated_graph_reads_as_a_bundle_error(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = _restored(encode_bundle(*random_dag_network(seed)), lambda m: _mutations(rng, m))
    with contextlib.suppress(BundleError):
        decode_bundle(data)
