"""The reference interpreter for a decoded bundle (shared.engine.reference holds it)."""

from __future__ import annotations

import numpy as np

from shared.bundle import Bundle
from shared.engine.reference import run_reference


def reference_logits(bundle: Bundle, q: np.ndarray) -> np.ndarray:
    return run_reference(bundle.manifest, bundle.tensors, q)
