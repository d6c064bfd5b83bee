"""Batch augmentation for small photo data sets, in plain torch (torchvision is not available).

Everything works on a float batch `x` of shape (B, C, H, W) with values in [0, 1] and returns
a batch of the same shape, so the network's input size never changes. Randomness comes only
from the `torch.Generator` passed in, which keeps training seeded and reproducible.

- `random_resized_crop`: a random sub-window (area fraction and aspect ratio jittered) is
  resampled back to H x W with one `affine_grid` + `grid_sample` for the whole batch;
  the same affine map also does the horizontal flip.
- `color_jitter`: per-image brightness (multiplicative) and contrast (around the image mean).
- `augment_photos`: both, with a recipe's `PhotoAugment` settings (server/recipes.py holds
  the defaults); `augment_for(recipe)` is the batch hook training calls, or None: the
  photos' or, for digits, `augment_digits.augment_handwriting`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import ValidationError

from server.recipes import PhotoAugment, Recipe
from server.training.augment_digits import augment_handwriting

__all__ = ["AugmentFn", "random_resized_crop", "color_jitter", "augment_photos", "augment_for"]

AugmentFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # (B,C,H,W) -> same


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def random_resized_crop(
    x: torch.Tensor,
    *,
    min_area: float,
    max_aspect: float,
    flip: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop a random window of `min_area..1` of the image's area (aspect ratio within
    `1/max_aspect..max_aspect`), resample it to the full size, flip it horizontally with
    probability `flip`. (B, C, H, W) -> (B, C, H, W)."""
    if not 0.0 < min_area <= 1.0 or max_aspect < 1.0 or not 0.0 <= flip <= 1.0:
        raise ValueError("need 0 < min_area <= 1, max_aspect >= 1, 0 <= flip <= 1")
    b = x.shape[0]
    area = _uniform(b, min_area, 1.0, generator)  # (B,)
    log_r = _uniform(b, -math.log(max_aspect), math.log(max_aspect), generator)
    ratio = torch.exp(log_r)  # width / height of the window
    sx = torch.sqrt(area * ratio).clamp(max=1.0)  # window half-extent in normalised coords
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (1.0 - sx) * _uniform(b, -1.0, 1.0, generator)  # keep the window inside the image
    ty = (1.0 - sy) * _uniform(b, -1.0, 1.0, generator)
    mirror = torch.where(torch.rand(b, generator=generator) < flip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, dtype=x.dtype)  # (B, 2, 3) output grid -> input coords
    theta[:, 0, 0] = sx * mirror
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(
    x: torch.Tensor,
    *,
    brightness: float,
    contrast: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scale each image by `1 ± brightness` and stretch its contrast by `1 ± contrast` around
    its own mean; clamp to [0, 1]. (B, C, H, W) -> (B, C, H, W)."""
    b = x.shape[0]
    gain = _uniform(b, 1.0 - brightness, 1.0 + brightness, generator).view(b, 1, 1, 1)
    stretch = _uniform(b, 1.0 - contrast, 1.0 + contrast, generator).view(b, 1, 1, 1)
    x = x * gain.to(x.dtype)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return ((x - mean) * stretch.to(x.dtype) + mean).clamp(0.0, 1.0)


def augment_photos(
    x: torch.Tensor, generator: torch.Generator | None = None, **params: float
) -> torch.Tensor:
    """Random resized crop + flip, then colour jitter; `params` override `PhotoAugment`'s
    defaults (ValueError for an unknown one)."""
    try:
        p = PhotoAugment(**params)
    except ValidationError as exc:
        raise ValueError(f"bad augmentation parameters: {exc}") from None
    x = random_resized_crop(
        x, min_area=p.min_area, max_aspect=p.max_aspect, flip=p.flip, generator=generator
    )
    return color_jitter(x, brightness=p.brightness, contrast=p.contrast, generator=generator)


def augment_for(recipe: Recipe) -> AugmentFn | None:
    """The batch augmentation a recipe asks for (after the random shifts), or None."""
    if recipe.handwriting_augment is not None:
        digits = recipe.handwriting_augment
        return lambda x, gen: augment_handwriting(x, gen, digits)
    if recipe.photo_augment is None:
        return None
    params = recipe.photo_augment.model_dump()
    return lambda x, gen: augment_photos(x, generator=gen, **params)
