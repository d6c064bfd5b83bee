"""`python -m bench.office10_recipe_tries`: float-only recipe tries for office10 (issue 25's
80 % goal), one line of JSON per seed: test and validation accuracy. Each try is a recipe the
product does not (yet) have, made here by overriding it, so that a try costs one float
training and no product change; bench/results/office10_recipes.md lists every try made
against the 147 test photos (they stop being a held-out set for the recipe choice).

    python -m bench.office10_recipe_tries --arch mobilenet --seeds 0 \\
        --size 96 --optimizer sgd --label-smoothing 0.1 --recipe '{"lr": 0.05}'

--size: the photos' side (the product's image folders use 64); --optimizer sgd: SGD with
Nesterov momentum 0.9 in place of the recipe's AdamW (same one-cycle schedule, same weight
decay); --label-smoothing: cross-entropy's label smoothing; --recipe: recipe fields (and
`photo_augment` fields) to override.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import server.data.imagefolder as imagefolder
from server.data import load_dataset
from server.params import JobParams
from server.recipes import PhotoAugment
from server.training.pipeline import train_float


def _override(size: int, optimizer: str, label_smoothing: float) -> None:
    """Process-wide overrides of what the recipe cannot say yet (this script only)."""
    if size != imagefolder.INPUT_SIZE:
        spec = imagefolder.photo_spec
        imagefolder.photo_spec = lambda s=size, r=size, draft=True: spec(s, r, draft)  # type: ignore[assignment]
    if optimizer == "sgd":
        torch.optim.AdamW = lambda params, lr, weight_decay: torch.optim.SGD(  # type: ignore[assignment,misc]
            params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
        )
    if label_smoothing > 0:
        ce = F.cross_entropy
        F.cross_entropy = lambda a, b, **k: ce(a, b, label_smoothing=label_smoothing, **k)  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="mobilenet")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=imagefolder.INPUT_SIZE)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--recipe", type=json.loads, default={})
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    _override(args.size, args.optimizer, args.label_smoothing)
    ds = load_dataset("office10", Path(os.environ["SIQ_DATA_DIR"])).with_arch(args.arch)
    update = dict(args.recipe)
    augment = update.pop("photo_augment", None)
    recipe = ds.recipe.model_copy(update=update)
    if augment and recipe.photo_augment is not None:
        merged = {**recipe.photo_augment.model_dump(), **augment}
        recipe = recipe.model_copy(update={"photo_augment": PhotoAugment(**merged)})
    ds = dataclasses.replace(ds, recipe=recipe)
    for seed in args.seeds:
        started = time.perf_counter()
        fm = train_float(ds, JobParams(dataset="office10", arch=args.arch, seed=seed))
        row = {**vars(args), "seed": seed, "test": fm.float_accuracy, "val": fm.val_accuracy}
        row["seconds"] = round(time.perf_counter() - started)
        print(json.dumps({k: v for k, v in row.items() if k != "seeds"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
