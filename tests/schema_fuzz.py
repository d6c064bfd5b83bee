"""Run schemathesis (the `st` CLI of the dev extra) against a running service's OpenAPI,
bounded in examples and time, with every check: any 5xx (not_a_server_error), any status or
content type the spec does not document, answers that do not match their schema,
schema-invalid requests accepted, schema-valid requests refused (positive_data_acceptance),
unsupported methods not answered 405. tests/schema_fuzz_hooks.py gives schemathesis what
the documents mean and a schema cannot state (images of a digit, a data set archive, a
sweep grid of at most MAX_RUNS cells)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["schemathesis_cli", "run_schemathesis"]


def schemathesis_cli() -> str | None:
    """The `st` executable beside this interpreter (the venv's), or on PATH, or None."""
    beside = Path(sys.executable).with_name("st")
    return str(beside) if beside.is_file() else shutil.which("st")


def run_schemathesis(
    base_url: str,
    *,
    max_examples: int = 25,
    timeout_s: float = 240,
    exclude_checks: tuple[str, ...] = (),
    headers: tuple[str, ...] = (),
    seed: int = 1,
) -> subprocess.CompletedProcess[str]:
    """`st run <base_url>/openapi.json` with every check but `exclude_checks` (none unless
    given), the hooks of tests/schema_fuzz_hooks.py loaded; returns the
    finished process (returncode 0 when nothing failed; its output says what did)."""
    cli = schemathesis_cli()
    if cli is None:
        raise FileNotFoundError("schemathesis is not installed (the dev extra has it)")
    command = [
        cli, "run", f"{base_url}/openapi.json",
        "--checks", "all",
        "--max-examples", str(max_examples), "--phases", "examples,coverage,fuzzing",
        "--request-timeout", "20", "--seed", str(seed), "--generation-deterministic",
        "--no-color", "--output-truncate", "true", "--workers", "1",
    ]  # fmt: skip
    if exclude_checks:
        command += ["--exclude-checks", ",".join(exclude_checks)]
    for header in headers:
        command += ["--header", header]
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "SCHEMATHESIS_HOOKS": "tests.schema_fuzz_hooks"}
    with tempfile.TemporaryDirectory() as cwd:  # st keeps a .schemathesis/ folder where it runs
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, cwd=cwd, env=env
        )
