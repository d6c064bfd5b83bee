"""The numpy engine on DAG graphs (format version 3): equal to the reference interpreter on
hundreds of random DAGs, chains of version 3 on the fast plan. (The ONNX Runtime backend on
DAGs: test_onnx_engine.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from shared.bundle import decode_bundle
from shared.engine import IntegerNetwork
from shared.engine.reference import run_reference
from tests.factories import GraphBuilder, make_random_bundle, random_codes, random_dag_bundle


@pytest.mark.parametrize("start", range(0, 300, 50))
def test_engine_equals_reference_on_random_dags(start: int) -> None:
    for seed in range(start, start + 50):
        bits = (2, 4, 5, 8)[seed % 4]
        bundle = random_dag_bundle(seed, activation_bits=bits, saturate=seed % 7 == 0)
        q = random_codes(bundle, 3, seed)
        got = IntegerNetwork(bundle).forward_int(q)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, run_reference(bundle.manifest, bundle.tensors, q))


def test_wide_codebooks_on_a_dag_use_exact_carriers() -> None:
    bundle = random_dag_bundle(3, activation_bits=8, weight_bits=8, codebook_bits=16)
    net = IntegerNetwork(bundle)
    assert net._dag is not None
    assert {s.dtype for s in net._dag.steps if s.dtype is not None} & {
        np.dtype(np.float64),
        np.dtype(np.int64),
    }
    q = random_codes(bundle, 4, 3)
    np.testing.assert_array_equal(
        net.forward_int(q), run_reference(bundle.manifest, bundle.tensors, q)
    )


def test_saturating_adds_clip_at_their_top() -> None:
    seen = 0
    for seed in range(10):
        bundle = random_dag_bundle(seed, saturate=True)
        adds = [n for n in bundle.manifest["graph"] if n["op"] == "add"]
        seen += len(adds)
        q = random_codes(bundle, 4, seed)
        np.testing.assert_array_equal(
            IntegerNetwork(bundle).forward_int(q), run_reference(bundle.manifest, bundle.tensors, q)
        )
    assert seen > 0


def test_predict_and_threads_on_a_dag() -> None:
    bundle = random_dag_bundle(11)
    serial, threaded = IntegerNetwork(bundle), IntegerNetwork(bundle, threads=2)
    x = np.random.default_rng(0).random((7, *serial.input_shape))
    labels, probs = serial.predict(x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    q = serial.quantize_input(x)
    np.testing.assert_array_equal(labels, serial.forward_int(q).argmax(axis=1))
    np.testing.assert_array_equal(threaded.forward_int(q), serial.forward_int(q))


def test_a_version_three_chain_runs_on_the_fast_plan() -> None:
    b = GraphBuilder(5, (1, 9, 9))
    x = b.conv("input", 4, 3, stride=2, padding=1)
    x = b.conv(b.maxpool(x, 2), 5, 1)
    bundle = b.bundle(b.linear(b.flatten(x), 3, activation="none"))
    net = IntegerNetwork(bundle)
    assert net._dag is None and net._layers
    q = random_codes(bundle, 6, 5)
    np.testing.assert_array_equal(
        net.forward_int(q), run_reference(bundle.manifest, bundle.tensors, q)
    )


@pytest.mark.parametrize("dag", [True, False])
def test_an_empty_batch_gives_no_logits(dag: bool) -> None:
    bundle = random_dag_bundle(2) if dag else decode_bundle(make_random_bundle(0))
    net = IntegerNetwork(bundle)
    empty = np.zeros((0, *net.input_shape))
    assert net.forward_int(empty.astype(np.int64)).shape == (0, len(net.class_names))
    labels, probs = net.predict(empty)
    assert labels.shape == (0,) and probs.shape == (0, len(net.class_names))
