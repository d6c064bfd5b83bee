"""Digits as pen strokes, for drawing on the client's pad with pointer events.

Each digit is a few strokes through control points in pad units (0..1, y down), smoothed by a
Catmull-Rom spline the way a hand moves. `digit_strokes(d, ...)` places, scales and slants
them, so a test can draw the same digit the way different people would."""

from __future__ import annotations

import math

__all__ = ["DIGIT_PATHS", "digit_strokes"]

Point = tuple[float, float]

DIGIT_PATHS: dict[int, list[list[Point]]] = {
    0: [
        [(0.5, 0.17), (0.33, 0.27), (0.28, 0.5), (0.34, 0.74), (0.5, 0.83), (0.66, 0.73)]
        + [(0.71, 0.5), (0.65, 0.26), (0.5, 0.17), (0.45, 0.2)]
    ],
    1: [[(0.47, 0.22), (0.54, 0.16), (0.53, 0.5), (0.52, 0.84)]],
    2: [
        [(0.3, 0.32), (0.4, 0.2), (0.56, 0.17), (0.68, 0.28), (0.64, 0.45), (0.45, 0.64)]
        + [(0.29, 0.81), (0.5, 0.79), (0.73, 0.8)]
    ],
    3: [
        [(0.3, 0.24), (0.46, 0.16), (0.64, 0.22), (0.64, 0.38), (0.47, 0.48), (0.64, 0.56)]
        + [(0.69, 0.72), (0.54, 0.84), (0.3, 0.78)]
    ],
    4: [
        [(0.56, 0.16), (0.42, 0.38), (0.27, 0.6), (0.5, 0.6), (0.76, 0.59)],
        [(0.62, 0.34), (0.62, 0.6), (0.61, 0.86)],
    ],
    5: [
        [(0.7, 0.18), (0.5, 0.18), (0.36, 0.19)],
        [(0.36, 0.19), (0.34, 0.34), (0.33, 0.47), (0.5, 0.43), (0.66, 0.5), (0.69, 0.67)]
        + [(0.58, 0.81), (0.42, 0.83), (0.29, 0.76)],
    ],
    6: [
        [(0.63, 0.17), (0.46, 0.3), (0.35, 0.5), (0.35, 0.72), (0.5, 0.84), (0.65, 0.74)]
        + [(0.65, 0.58), (0.5, 0.51), (0.37, 0.6)]
    ],
    7: [[(0.27, 0.2), (0.5, 0.2), (0.73, 0.19), (0.58, 0.48), (0.45, 0.84)]],
    8: [
        [(0.62, 0.24), (0.5, 0.16), (0.37, 0.24), (0.4, 0.38), (0.5, 0.47), (0.64, 0.58)]
        + [(0.65, 0.76), (0.5, 0.84), (0.35, 0.76), (0.37, 0.59), (0.5, 0.47), (0.61, 0.37)]
        + [(0.62, 0.24)]
    ],
    9: [
        [(0.65, 0.28), (0.5, 0.18), (0.35, 0.28), (0.38, 0.45), (0.54, 0.47), (0.65, 0.34)],
        [(0.65, 0.26), (0.64, 0.55), (0.6, 0.84)],
    ],
}


def _catmull_rom(points: list[Point], samples: int = 8) -> list[Point]:
    """A smooth curve through `points` (uniform Catmull-Rom, ends repeated)."""
    if len(points) < 3:
        a, b = points[0], points[-1]
        return [
            (a[0] + (b[0] - a[0]) * t / samples, a[1] + (b[1] - a[1]) * t / samples)
            for t in range(samples + 1)
        ]
    padded = [points[0], *points, points[-1]]
    out: list[Point] = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1], padded[i], padded[i + 1], padded[i + 2]
        for s in range(samples):
            t = s / samples
            out.append(
                tuple(  # type: ignore[arg-type]
                    0.5
                    * (
                        2 * p1[k]
                        + (p2[k] - p0[k]) * t
                        + (2 * p0[k] - 5 * p1[k] + 4 * p2[k] - p3[k]) * t * t
                        + (3 * p1[k] - p0[k] - 3 * p2[k] + p3[k]) * t**3
                    )
                    for k in range(2)
                )
            )
    out.append(points[-1])
    return out


def digit_strokes(
    digit: int, *, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0, slant: float = 0.0
) -> list[list[Point]]:
    """The digit's smoothed strokes in pad units, scaled about the centre, shifted by
    (dx, dy) and slanted (`slant` radians: positive leans the top to the right)."""
    shear = math.tan(slant)
    strokes = []
    for stroke in DIGIT_PATHS[digit]:
        placed = []
        for x, y in _catmull_rom(stroke):
            x, y = 0.5 + (x - 0.5) * scale, 0.5 + (y - 0.5) * scale
            x -= (y - 0.5) * shear
            placed.append((x + dx, y + dy))
        strokes.append(placed)
    return strokes
