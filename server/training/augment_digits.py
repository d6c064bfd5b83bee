"""Batch augmentation for handwritten digits: MNIST as other people write and capture digits.

MNIST's digits come from one population of writers, scanned one way. A digit drawn with a
mouse or a finger, photographed with a phone or scanned at low resolution differs in stroke
width, slant, proportions, sharpness, noise and resolution. The client's `digit`
preprocessing (shared/image/preprocessing.py) already crops to the ink, fits it into 20x20 and
centres it by mass, so what remains to learn is what survives that crop: this module makes
each variation on a float batch `x` (B, 1, 28, 28) in [0, 1], in plain torch, seeded by the
`torch.Generator` passed in.

- `random_affine`: rotation, slant (shear), per-axis scale (aspect) and a small shift in
  one `affine_grid` + `grid_sample` for the whole batch;
- `stroke_width`: thicker (up to a few 3x3 dilations: the thick pen strokes of low-resolution
  scans) or thinner (erosion) strokes, blended by a random amount so the width varies
  continuously;
- `low_resolution`: down to 10..16 pixels and back up (bilinear), like an 8x8 scan enlarged;
- `gaussian_blur`: per-image sigma (a defocused camera, a soft pen);
- `sensor_noise`: additive Gaussian noise, then ink renormalised to a maximum of 1 exactly as
  the preprocessing does, so the network always sees inputs of the served range.

`augment_handwriting` applies each with its own probability (`HandwritingAugment` in
server/recipes.py, the MNIST recipe's); a share of every batch (`keep`) stays as it is, so
MNIST itself is still learnt as well as before.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from server.recipes import HandwritingAugment

__all__ = [
    "augment_handwriting",
    "gaussian_blur",
    "low_resolution",
    "random_affine",
    "sensor_noise",
    "stroke_width",
]


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _chosen(n: int, p: float, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p  # (B,) bool


def random_affine(
    x: torch.Tensor,
    *,
    rotate_deg: float,
    slant: float,
    scale: float,
    shift: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate, shear, scale each axis and shift every image by its own random amounts.
    (B, C, H, W) -> (B, C, H, W); outside the image is background (0)."""
    b = x.shape[0]
    angle = torch.deg2rad(_uniform(b, -rotate_deg, rotate_deg, generator))
    shear = _uniform(b, -slant, slant, generator)
    sx = 1.0 + _uniform(b, -scale, scale, generator)
    sy = 1.0 + _uniform(b, -scale, scale, generator)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output -> input map: inverse of (rotate . shear . scale), written out per image
    a = torch.stack([cos, -sin, sin, cos], 1).view(b, 2, 2)  # rotation
    s = torch.zeros(b, 2, 2)
    s[:, 0, 0], s[:, 0, 1], s[:, 1, 1] = 1.0, shear, 1.0  # x += shear * y
    k = torch.diag_embed(torch.stack([sx, sy], 1))  # scale
    forward = a @ s @ k  # (B, 2, 2)
    theta = torch.zeros(b, 2, 3)
    theta[:, :, :2] = torch.linalg.inv(forward)
    theta[:, 0, 2] = _uniform(b, -shift, shift, generator)
    theta[:, 1, 2] = _uniform(b, -shift, shift, generator)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def stroke_width(
    x: torch.Tensor, *, thicken: float, thin: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per image, thicker or thinner strokes by a random amount: thicker by up to `thicken`
    3x3 dilations (2.5: two dilations and half of a third, blended, so the width varies
    continuously), or thinner by a blend of up to `thin` of one 3x3 erosion."""
    b = x.shape[0]
    levels = [x]
    for _ in range(max(1, math.ceil(thicken))):
        levels.append(F.max_pool2d(levels[-1], 3, stride=1, padding=1))
    dilated = torch.stack(levels)  # (L + 1, B, C, H, W): 0, 1, 2... dilations
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    amount = torch.rand(b, generator=generator).view(b, 1, 1, 1).to(x.dtype)
    thicker = torch.rand(b, generator=generator).view(b, 1, 1, 1) < 0.5
    grow = thicken * amount  # (B, 1, 1, 1) dilations, fractional
    step = grow.floor().clamp(max=len(levels) - 2)
    below = dilated.gather(0, step.long()[None].expand_as(x[None]))[0]
    above = dilated.gather(0, (step.long() + 1)[None].expand_as(x[None]))[0]
    return torch.where(
        thicker, below + (grow - step) * (above - below), x + thin * amount * (eroded - x)
    )


def low_resolution(
    x: torch.Tensor, *, lowest: int, highest: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shrink to a random side in `lowest..highest` (area average) and enlarge back (bilinear):
    one side for the whole batch (the caller picks which images)."""
    h, w = x.shape[-2:]
    side = int(torch.randint(lowest, highest + 1, (1,), generator=generator))
    small = F.interpolate(x, size=(side, side), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def gaussian_blur(
    x: torch.Tensor, *, sigma: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Blur each image with its own sigma in (0.3, `sigma`) (separable 7-tap kernels)."""
    b, c, h, w = x.shape
    sigmas = _uniform(b, 0.3, sigma, generator).to(x.dtype)  # (B,)
    taps = torch.arange(-3, 4, dtype=x.dtype)  # (7,)
    kernel = torch.exp(-0.5 * (taps[None, :] / sigmas[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # (B, 7)
    y = x.reshape(1, b * c, h, w)
    kx = kernel.repeat_interleave(c, 0).view(b * c, 1, 1, 7)
    y = F.conv2d(y, kx, padding=(0, 3), groups=b * c)
    y = F.conv2d(y, kx.transpose(2, 3), padding=(3, 0), groups=b * c)
    return y.view(b, c, h, w)


def sensor_noise(
    x: torch.Tensor, *, noise: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Additive Gaussian noise of a random level up to `noise`, clamped to [0, 1]."""
    b = x.shape[0]
    level = _uniform(b, 0.0, noise, generator).view(b, 1, 1, 1).to(x.dtype)
    return (x + level * torch.randn(x.shape, generator=generator, dtype=x.dtype)).clamp(0.0, 1.0)


def _renormalise(x: torch.Tensor) -> torch.Tensor:
    # the preprocessing divides ink by its maximum: a faint or blurred digit still peaks at 1
    top = x.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-3)
    return (x / top).clamp(0.0, 1.0)


def augment_handwriting(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    params: HandwritingAugment | None = None,
) -> torch.Tensor:
    """All of the above, each image drawing its own, sized by `params` (the MNIST recipe's,
    server/recipes.py). (B, 1, H, W) in [0, 1] -> (B, 1, H, W) in [0, 1]."""
    p = (params or HandwritingAugment()).model_dump()
    b = x.shape[0]
    out = random_affine(
        x,
        rotate_deg=p["rotate_deg"],
        slant=p["slant"],
        scale=p["scale"],
        shift=p["shift"],
        generator=generator,
    )

    def some(mask: torch.Tensor, y: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.view(b, 1, 1, 1), transformed, y)

    out = some(
        _chosen(b, p["p_width"], generator),
        out,
        stroke_width(out, thicken=p["thicken"], thin=p["thin"], generator=generator),
    )
    lowest, highest = int(p["lowres_min"]), int(p["lowres_max"])
    out = some(
        _chosen(b, p["p_lowres"], generator),
        out,
        low_resolution(out, lowest=lowest, highest=highest, generator=generator),
    )
    out = some(
        _chosen(b, p["p_blur"], generator),
        out,
        gaussian_blur(out, sigma=p["blur_sigma"], generator=generator),
    )
    out = some(
        _chosen(b, p["p_noise"], generator),
        out,
        sensor_noise(out, noise=p["noise"], generator=generator),
    )
    out = _renormalise(out)
    keep = _chosen(b, p["keep"], generator)
    return some(keep, out, x)
