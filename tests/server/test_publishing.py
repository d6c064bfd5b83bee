"""The publishing rule (a bundle no better than chance, or much worse than the current latest,
is kept by id but not made latest), the bound on queued jobs, and the parameter ranges a
small server can finish."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from server.params import QuantizeJobCreate
from server.service.bundles import BundleStore
from server.service.jobs import JobStore
from server.service.publishing import PublishRule, publish_decision
from shared.bundle import encode_bundle, write_bundle_atomic
from shared.errors import ConflictError, QueueFullError
from tests.factories import make_random_network
from tests.server.api_helpers import plain_job

CONFIG = {"dataset": "digits", "weight_bits": 4, "activation_bits": 4}


def test_rule_refuses_chance_and_big_drops_only() -> None:
    rule = PublishRule(min_over_chance=0.05, max_drop=0.05)
    assert not publish_decision(rule, 0.12, 10, None)["published"]  # chance is 0.10
    assert publish_decision(rule, 0.2, 10, None)["published"]
    dropped = publish_decision(rule, 0.80, 10, 0.90)
    assert not dropped["published"] and "current latest" in dropped["publish_note"]
    assert publish_decision(rule, 0.86, 10, 0.90)["published"]
    off = PublishRule(min_over_chance=-1, max_drop=-1)
    assert publish_decision(off, 0.0, 10, 0.99)["published"]


def _bundle(directory: Path, seed: int, accuracy: float) -> Path:
    manifest, tensors = make_random_network(seed)
    manifest["provenance"] = {"dataset": "digits"}
    manifest["metrics"] = {"quantized_accuracy": accuracy, "float_accuracy": accuracy}
    return write_bundle_atomic(directory, encode_bundle(manifest, tensors))


def test_refused_bundle_is_kept_by_id_but_not_latest(tmp_path: Path) -> None:
    JobStore(tmp_path / "siq.db").init_schema()
    store = BundleStore(tmp_path / "siq.db", tmp_path / "bundles")
    store.init_schema()
    rule = PublishRule()
    good = _bundle(store.bundle_dir, 1, 0.9)
    assert store.judge(good, rule)["published"]
    store.register(good)
    bad = _bundle(store.bundle_dir, 2, 0.5)
    verdict = store.judge(bad, rule)
    assert not verdict["published"], verdict
    store.register(bad, published=False)
    assert store.latest("digits").id == good.stem
    assert store.get(bad.stem).id == bad.stem  # still downloadable by id
    assert [r.id for r in store.list()] == [good.stem]


def test_queue_is_bounded_but_replays_still_answer(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "siq.db")
    store.init_schema()
    first, _ = store.create(plain_job(CONFIG), "k", max_queued=2)
    store.create(plain_job({**CONFIG, "seed": 1}), max_queued=2)
    with pytest.raises(QueueFullError) as raised:
        store.create(plain_job({**CONFIG, "seed": 2}), max_queued=2)
    assert raised.value.http_status == 429 and raised.value.retry_after > 0
    again, created = store.create(plain_job(CONFIG), "k", max_queued=2)
    assert again.id == first.id and not created


def test_idempotency_conflict_does_not_name_the_other_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "siq.db")
    store.init_schema()
    theirs, _ = store.create(plain_job(CONFIG), "shared-key")
    with pytest.raises(ConflictError) as raised:
        store.create(plain_job({**CONFIG, "weight_bits": 2}), "shared-key")
    assert theirs.id not in str(raised.value)


@pytest.mark.parametrize(
    "field, value", [("epochs", 101), ("retrain_epochs", 21), ("max_iterations", 21)]
)
def test_parameters_a_small_server_cannot_finish_are_refused(field: str, value: int) -> None:
    with pytest.raises(ValidationError):
        QuantizeJobCreate.model_validate({**CONFIG, field: value})
