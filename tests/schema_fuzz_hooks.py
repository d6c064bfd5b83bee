"""schemathesis hooks (`st` loads them: SCHEMATHESIS_HOOKS, set by tests/schema_fuzz.py) for
a rule the server keeps that JSON Schema cannot state, so that the data schemathesis calls
valid is what the document means. Every check still runs on every case; only these positive
cases are dropped:

- POST /quantize-sweeps: a grid of more than MAX_RUNS cells (weight bits x activation bits x
  seeds) is refused with 422; a schema bounds each list, not their product.
"""

from __future__ import annotations

import math

import schemathesis

from server.params import MAX_RUNS


def _positive(case) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def _is(case, method: str, path: str) -> bool:
    return case.operation.method.upper() == method and case.operation.path == path


@schemathesis.hook
def filter_case(context, case) -> bool:
    if _positive(case) and _is(case, "POST", "/quantize-sweeps") and isinstance(case.body, dict):
        grid = (case.body.get(k) for k in ("weight_bits", "activation_bits", "seeds"))
        return math.prod(len(v) if isinstance(v, list) else 1 for v in grid) <= MAX_RUNS
    return True
