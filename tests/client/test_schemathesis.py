"""A schema fuzzer over the client's OpenAPI (issues 11 and 28): a real `python -m client`
serving a bundle file, in the serving process and with one inference child, schemathesis with
every check and nothing excluded, bounded to a few dozen examples per operation: not one
5xx, undocumented status or content type, schema-valid request refused (the images it sends
are digits: tests/schema_fuzz_hooks.py), and HEAD on the GET routes answered."""

from __future__ import annotations

import pytest

from tests.conftest import start_service
from tests.schema_fuzz import run_schemathesis, schemathesis_cli


@pytest.mark.slow
@pytest.mark.parametrize("processes", ["0", "1"])  # in the serving process, in a child
def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(tmp_path, service_env, bundle_a, processes):  # fmt: skip
    if schemathesis_cli() is None:
        pytest.skip("schemathesis is not installed (make install installs the dev extra)")
    path = tmp_path / "a.siq"
    path.write_bytes(bundle_a)
    env = dict(
        service_env, SIQ_BUNDLE=str(path), SIQ_STATE_DIR=str(tmp_path / "state"),
        SIQ_BODY_TIMEOUT_S="5", SIQ_INFERENCE_PROCESSES=processes,
    )  # fmt: skip
    client = start_service("client", env, tmp_path / "client.log")
    try:
        client.wait_ready("/readyz")
        assert client.alive(), client.log_tail()
        run = run_schemathesis(client.url, max_examples=25)
    finally:
        client.stop()
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "passed" in run.stdout and "5 selected" in run.stdout, report
