"""The lung segmenter's figures for the model card: its worst held-out films and films it was not trained on.

    python docs/make_lung_figures.py --lungs ../shared/data/lungs/labels.csv --frontal runs/frontal/test.csv \\
        --laterals ../shared/data/views/lateral

Writes ``docs/lungs_worst.png`` (the four test-split films of the lung-mask collections with the
lowest Dice: the manual mask's outline green, the segmenter's red, Dice in the title) and
``docs/lungs_other.png`` (the segmenter's outline on two films of each other frontal population
of the split, chosen at random with seed 0, and on two lateral films, which the frontal-view
check should refuse).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image as PILImage
from skimage.segmentation import find_boundaries

from medcam.gate import ServedModel
from medcam.io import load_image
from medcam.io.provenance import PNG_TEXT
from medcam.models.lungs import load_segmenter
from medcam.models.preprocess import prepare
from medcam.training.data import read_samples
from medcam.training.lungs import dice, predict_lungs, read_lung_samples, split_lung_samples

ROOT = Path(__file__).resolve().parents[1]


def _outlined(image: np.ndarray, masks: list[tuple[np.ndarray, tuple[int, int, int]]]) -> np.ndarray:
    rgb = np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    for mask, colour in masks:
        edge = find_boundaries(mask, mode="thick")
        rgb[edge] = colour
    return rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lungs", required=True, help="the lung-mask list (labels.csv)")
    parser.add_argument("--frontal", required=True, help="a split CSV with a population column")
    parser.add_argument("--laterals", required=True, help="a folder of lateral films")
    args = parser.parse_args()
    segmenter = load_segmenter()
    _, _, test = split_lung_samples(read_lung_samples(args.lungs), seed=0)
    images = torch.stack([torch.from_numpy(np.array(PILImage.open(s.image).convert("L")))[None] for s in test])
    masks = torch.stack([torch.from_numpy(np.array(PILImage.open(s.mask).convert("L")) >= 128)[None] for s in test])
    found = predict_lungs(segmenter.network, images, segmenter.config.size)
    scores = dice(found, masks.float())
    worst = torch.argsort(scores)[:4].tolist()
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    for ax, i in zip(axes, worst, strict=True):
        picture = _outlined(images[i, 0].numpy() / 255, [(masks[i, 0].numpy(), (0, 200, 0)),
                                                        ((found[i, 0] >= 0.5).numpy(), (230, 0, 0))])
        ax.imshow(picture)
        ax.set_title(f"{test[i].source} {Path(test[i].image).stem}\nDice {scores[i]:.3f}", fontsize=8)
        ax.axis("off")
    fig.suptitle("Lowest Dice on held-out patients: manual mask green, segmenter red", fontsize=10)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "lungs_worst.png", dpi=90, metadata=PNG_TEXT)

    served = ServedModel("bundled")
    rng = random.Random(0)
    frontal = read_samples(args.frontal, ("NORMAL", "PNEUMONIA"))
    picks = [(p, s.path) for p in ("pediatric", "adult", "rsna")
             for s in rng.sample([s for s in frontal if s.population == p], 2)]
    laterals = sorted(Path(args.laterals).iterdir())
    picks += [("lateral", str(path)) for path in rng.sample(laterals, 2)]
    fig, axes = plt.subplots(2, 4, figsize=(12, 6.4))
    for ax, (population, path) in zip(axes.flat, picks, strict=True):
        image = load_image(path)
        prediction = served.classify([image])[0]
        assert prediction.lungs is not None
        ax.imshow(_outlined(image.pixels[0], [(prediction.lungs.numpy(), (230, 0, 0))]))
        x, _ = prepare(image, served.checkpoint.preprocess)
        reason = served.view_reasons(served.forward(x[None]), x[None])[0]
        ax.set_title(f"{population}: {'refused by the view check' if reason else 'frontal'}", fontsize=8)
        ax.axis("off")
    fig.suptitle("The segmenter's lung fields (red) on films of populations it was not trained on", fontsize=10)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "lungs_other.png", dpi=90, metadata=PNG_TEXT)
    print("wrote docs/lungs_worst.png and docs/lungs_other.png;",
          "lowest test Dice:", ", ".join(f"{Path(test[i].image).stem} {scores[i]:.3f}" for i in worst))


if __name__ == "__main__":
    main()
