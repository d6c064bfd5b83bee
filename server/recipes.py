"""The per-data-set recipes: each model family's training defaults (epochs, learning
rates, batch size, augmentation), one `Recipe` per family in `RECIPES` (mnist, digits,
imagefolder), for the family's own network; `Recipe.archs` holds the recipes of the other
networks a job may name (`arch`: mobilenet and resnet for photos, dsnet for digits), taken
with `for_arch`. A job's `epochs` / `retrain_epochs` override the recipe's (`Recipe.for_job`).
Torch-free: the data registry (server/data/) names each data set's recipe.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from server.params import JobKnobs

__all__ = ["PhotoAugment", "HandwritingAugment", "Recipe", "RECIPES"]


class PhotoAugment(BaseModel):
    """Random resized crop + flip, then colour jitter (server/training/augment.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_area: float = 0.55  # the crop keeps min_area..1 of the image's area
    max_aspect: float = 1.33  # aspect ratio within 1/max_aspect..max_aspect
    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.25  # gain 1 +- brightness
    contrast: float = 0.25  # contrast stretch 1 +- contrast around the image mean


class HandwritingAugment(BaseModel):
    """Digits as other writers and captures give them (server/training/augment_digits.py):
    each transform's size and the probability an image gets it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep: float = 0.15  # share of a batch left as it is
    rotate_deg: float = 12.0  # rotation within +- this
    slant: float = 0.3  # shear (tan of the angle) within +- this
    scale: float = 0.12  # each axis by 1 +- scale (the aspect changes too)
    shift: float = 0.08  # of the half-width (about one pixel)
    p_width: float = 0.6  # thicker or thinner strokes
    thicken: float = 2.0  # 3x3 dilations, up to (fractional: blended)
    thin: float = 0.6  # blend of a 3x3 erosion, up to
    p_lowres: float = 0.5  # down to lowres_min..lowres_max pixels and back up
    lowres_min: int = 10
    lowres_max: int = 16
    p_blur: float = 0.35  # Gaussian blur, sigma up to blur_sigma
    blur_sigma: float = 1.0
    p_noise: float = 0.3  # additive Gaussian noise, level up to noise
    noise: float = 0.08


class Recipe(BaseModel):
    """A data-set family's training defaults. Float training uses `lr` and `weight_decay`;
    SIQ retraining `retrain_lr` (halved each iteration) and no weight decay."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: float
    retrain_epochs: float
    lr: float = 3e-3
    retrain_lr: float = 5e-4
    batch_size: int = 128
    weight_decay: float = 1e-4
    augment_shift: int = 0  # random shifts of up to this many pixels
    photo_augment: PhotoAugment | None = None
    handwriting_augment: HandwritingAugment | None = None
    mixup: float = 0.0  # float training mixes batch pairs, lam ~ Beta(mixup, mixup); 0: off
    # the recipes of other network families than the data set's own, by arch
    archs: dict[str, Recipe] = {}

    def for_arch(self, arch: str) -> Recipe:
        """The recipe of network family `arch` (this one where it names none)."""
        return self.archs.get(arch, self)

    def for_job(self, params: JobKnobs) -> Recipe:
        """This recipe with the job's epochs / retrain_epochs where it sets them."""
        update = {
            k: float(v)
            for k, v in (("epochs", params.epochs), ("retrain_epochs", params.retrain_epochs))
            if v is not None
        }
        return self.model_copy(update=update)


# Batch-norm networks train longer at a higher rate; docs/MACHINE.md's reference run of
# MobileNetV1-0.5 on office10 took 200 epochs. These are starting points: the accuracy runs
# that choose between them are bench/bench_office10.py / bench_mnist.py --arch (bench/results/).
RECIPES: dict[str, Recipe] = {
    "mnist": Recipe(
        epochs=6,
        retrain_epochs=1.0,
        augment_shift=2,
        handwriting_augment=HandwritingAugment(),
        archs={
            "dsnet": Recipe(
                epochs=8,
                retrain_epochs=1.0,
                lr=5e-3,
                augment_shift=2,
                handwriting_augment=HandwritingAugment(),
            ),
            # the Cortex-M0's net (issue 29): 14 k weights learn longer at a higher rate, with
            # shifts only (with the handwriting transforms too, the 10 k-weight version reached
            # 99.16 % float on MNIST's test set: too little capacity left for clean digits)
            "m0net": Recipe(epochs=12, retrain_epochs=1.0, lr=8e-3, augment_shift=2),
        },
    ),
    "digits": Recipe(
        epochs=20,
        retrain_epochs=4.0,
        retrain_lr=1e-3,
        batch_size=64,
        augment_shift=2,
        archs={
            "dsnet": Recipe(
                epochs=40,
                retrain_epochs=4.0,
                lr=5e-3,
                retrain_lr=1e-3,
                batch_size=64,
                augment_shift=2,
            )  # fmt: skip
        },
    ),
    "imagefolder": Recipe(
        epochs=40,
        retrain_epochs=3.0,
        lr=2e-3,
        batch_size=32,
        weight_decay=5e-4,
        photo_augment=PhotoAugment(),
        archs={
            arch: Recipe(
                epochs=epochs,
                retrain_epochs=20.0,
                lr=4e-3,
                retrain_lr=5e-4,
                batch_size=64,
                weight_decay=5e-4,
                photo_augment=PhotoAugment(),
            )
            for arch, epochs in (("mobilenet", 200), ("resnet", 120))
        },
    ),
}
