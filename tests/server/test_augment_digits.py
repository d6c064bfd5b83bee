"""server/training/augment_digits.py: every transform keeps the batch's shape and range, is seeded,
and does what its name says (wider or thinner strokes, lower resolution, blur, slant,
noise); the recipe leaves its `keep` share of a batch untouched."""

from __future__ import annotations

import pytest
import torch

from server.recipes import RECIPES, HandwritingAugment
from server.training.augment import augment_for
from server.training.augment_digits import (
    augment_handwriting,
    gaussian_blur,
    low_resolution,
    random_affine,
    sensor_noise,
    stroke_width,
)


@pytest.fixture
def strokes() -> torch.Tensor:
    """(8, 1, 28, 28): a vertical bar (a '1') and a ring (a '0'), four of each."""
    x = torch.zeros(8, 1, 28, 28)
    x[:4, 0, 4:24, 13:15] = 1.0
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    ring = ((ys - 14) ** 2 + (xs - 14) ** 2).sqrt()
    x[4:, 0] = ((ring > 6.5) & (ring < 9)).float()
    return x


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shape_range_and_seeding(strokes: torch.Tensor) -> None:
    a = augment_handwriting(strokes, gen(1))
    b = augment_handwriting(strokes, gen(1))
    c = augment_handwriting(strokes, gen(2))
    assert a.shape == strokes.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every image still peaks at 1, as the client's preprocessing makes its inputs
    assert torch.allclose(a.amax(dim=(1, 2, 3)), torch.ones(8))


def test_keep_all_is_the_identity_and_the_mnist_recipe_asks_for_it(strokes) -> None:
    assert torch.equal(augment_handwriting(strokes, gen(), HandwritingAugment(keep=1.0)), strokes)
    with pytest.raises(ValueError, match="sharpness"):
        HandwritingAugment(sharpness=2.0)  # type: ignore[call-arg]
    recipe = RECIPES["mnist"]
    assert recipe.handwriting_augment == HandwritingAugment()
    hook = augment_for(recipe)
    assert hook is not None and hook(strokes, gen(1)).shape == strokes.shape
    assert RECIPES["digits"].handwriting_augment is None  # its own 8x8 scans, as they are


def test_stroke_width_thickens_or_thins(strokes: torch.Tensor) -> None:
    thick = stroke_width(strokes, thicken=1.0, thin=0.0, generator=gen())
    thin = stroke_width(strokes, thicken=0.0, thin=1.0, generator=gen())
    mass = strokes.sum(dim=(1, 2, 3))
    assert torch.all(thick.sum(dim=(1, 2, 3)) >= mass)
    assert torch.all(thin.sum(dim=(1, 2, 3)) <= mass)
    assert (thick.sum(dim=(1, 2, 3)) > mass).any() and (thin.sum(dim=(1, 2, 3)) < mass).any()


def test_stroke_width_beyond_one_dilation_thickens_further(strokes: torch.Tensor) -> None:
    # the same draws: amount u thickens by u dilations (thicken=1) or 2u (thicken=2)
    once = stroke_width(strokes, thicken=1.0, thin=0.0, generator=gen(5))
    twice = stroke_width(strokes, thicken=2.0, thin=0.0, generator=gen(5))
    grown = once.sum(dim=(1, 2, 3)) > strokes.sum(dim=(1, 2, 3))
    assert grown.any() and torch.all(
        twice.sum(dim=(1, 2, 3))[grown] > once.sum(dim=(1, 2, 3))[grown]
    )
    # the bar (2 px wide) is at most 6 px wide after two full 3x3 dilations
    assert (twice[:4, 0, 14] > 0).sum(dim=1).max() <= 6
    assert twice.min() >= 0 and twice.max() <= 1


def test_low_resolution_and_blur_soften_edges(strokes: torch.Tensor) -> None:
    for soft in (
        low_resolution(strokes, lowest=8, highest=8, generator=gen()),
        gaussian_blur(strokes, sigma=1.0, generator=gen()),
    ):
        assert soft.shape == strokes.shape
        grey = ((soft > 0.05) & (soft < 0.95)).sum()
        assert grey > ((strokes > 0.05) & (strokes < 0.95)).sum()
        # ink is spread, not made: the total stays close
        assert torch.allclose(soft.sum(), strokes.sum(), rtol=0.15)


def test_affine_and_noise_move_and_speckle_the_ink(strokes: torch.Tensor) -> None:
    plain = dict(rotate_deg=0.0, slant=0.0, scale=0.0, shift=0.0)
    assert torch.allclose(random_affine(strokes, generator=gen(), **plain), strokes, atol=1e-5)
    slanted = random_affine(strokes, generator=gen(), **{**plain, "slant": 0.5})
    assert not torch.allclose(slanted, strokes, atol=1e-3)
    noisy = sensor_noise(strokes, noise=0.2, generator=gen())
    assert noisy.min() >= 0 and noisy.max() <= 1 and (noisy[strokes == 0] > 0).any()
