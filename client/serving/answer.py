"""Stage 6, answer: /recognize's JSON body from the network's labels and probabilities.
(The Open Inference Protocol's answer is encoded by client/oip_model.py's `finish`.)"""

from __future__ import annotations

from typing import Any

import numpy as np

from client.manager import LoadedBundle

__all__ = ["recognition_body"]


def recognition_body(
    loaded: LoadedBundle,
    names: list[str],
    labels: np.ndarray,
    probs: np.ndarray,
    timings_ms: dict[str, float],
) -> dict[str, Any]:
    """Each image's label, class name, confidence and probabilities, with the bundle and the
    timings."""
    classes = loaded.network.class_names
    bundle = loaded.bundle.id
    # Python floats once (tolist), not one numpy scalar per probability: numpy scalars made
    # building the answer as costly as the network for a digit
    rows = probs.tolist()
    results = [
        {
            "index": i,
            "filename": names[i],
            "label": label,
            "class_name": classes[label],
            "confidence": rows[i][label],
            "probabilities": [round(p, 6) for p in rows[i]],
            "bundle_id": bundle,
        }
        for i, label in enumerate(labels.tolist())
    ]
    return {
        "bundle_id": bundle,
        "class_names": classes,
        "results": results,
        "timings_ms": timings_ms,
    }
