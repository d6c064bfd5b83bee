"""The publishing rule: whether a succeeded job's bundle becomes `latest` for its data set.

A bundle no better than chance (1/num_classes + `min_over_chance`), or worse than the current
latest of its data set by more than `max_drop`, is kept (downloadable by id, listed in its
job's result) but not promoted, so one bad run cannot replace the model every client pulls.
The job's result says which and why (`published`, `publish_note`). Set a margin to a negative
number to switch that half of the rule off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PublishRule", "publish_decision"]


@dataclass(frozen=True)
class PublishRule:
    min_over_chance: float = 0.05  # SIQ_PUBLISH_MIN_ACCURACY_OVER_CHANCE
    max_drop: float = 0.05  # SIQ_PUBLISH_MAX_DROP

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def publish_decision(
    rule: PublishRule,
    accuracy: float | None,
    num_classes: int,
    current_latest: float | None,
) -> dict[str, Any]:
    """`{"published": bool, "publish_note": str}` for a bundle of quantised test accuracy
    `accuracy` against the data set's current latest (None: there is none)."""
    if accuracy is None:
        return {"published": True, "publish_note": "no accuracy recorded; published unchecked"}
    if rule.min_over_chance >= 0:
        floor = 1.0 / max(num_classes, 1) + rule.min_over_chance
        if accuracy < floor:
            return {
                "published": False,
                "publish_note": f"not published: accuracy {accuracy:.4f} is below chance "
                f"(1/{num_classes}) + {rule.min_over_chance} = {floor:.4f}; "
                "download it by id if you want it anyway",
            }
    dropped = current_latest is not None and accuracy < current_latest - rule.max_drop
    if rule.max_drop >= 0 and dropped:
        return {
            "published": False,
            "publish_note": f"not published: accuracy {accuracy:.4f} is more than "
            f"{rule.max_drop} below the current latest ({current_latest:.4f}); "
            "download it by id if you want it anyway",
        }
    return {"published": True, "publish_note": "published as the data set's latest"}
