"""Make the README and model-card figures, and measure where the CAMs put their mass.

    python docs/make_figures.py --split runs/pneumonia/test.csv

Writes ``docs/overlay_sample.png`` (the bundled model on the sample pneumonia film of a child,
sample_data/child_pneumonia_kermany_person1001_bacteria_2932.dcm) and, per population of the split (its
``population`` column), ``docs/cam_grid_<population>.png`` (pneumonia maps on the first 8
pneumonia and 8 negative images of the split, in its order; with ``--boxes``, the reference
boxes drawn in green and the map's peak as a red cross), and prints, over each population, the
share of each positive-normalised pneumonia map that falls in the central box (rows and
columns 15-85%) where the lungs are, against the share expected if the map were spread
evenly (49%).

    python docs/make_figures.py --split runs/three-long/test.csv --boxes ../shared/data/rsna/boxes.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image as PILImage

from medcam.export import overlay
from medcam.io import load_image
from medcam.models import Classifier, normalise_maps
from medcam.models.checkpoint import bundled_checkpoint_path
from medcam.training.localisation import boxes_for, read_boxes

ROOT = Path(__file__).resolve().parents[1]


SOURCES = {"pediatric": "(Kermany et al. 2018, CC BY 4.0)", "adult": "(NIH ChestX-ray14, NIH Clinical Center)",
           "rsna": "(RSNA Pneumonia Challenge; boxes: radiologists')"}
SAMPLE = ROOT / "sample_data" / "child_pneumonia_kermany_person1001_bacteria_2932.dcm"


def _heat(prediction: object, classifier: Classifier) -> np.ndarray:
    k = classifier.classes.index(classifier.checkpoint.model.positive_class)
    maps = prediction.maps  # type: ignore[attr-defined]
    return normalise_maps(maps[None, k:k + 1])[0, 0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", required=True, help="CSV written by medcam train (e.g. runs/pneumonia/test.csv)")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--boxes", help="reference boxes (CSV: file, x, y, width, height) to draw")
    args = parser.parse_args()
    out = Path(args.out)
    classifier = Classifier(args.model)
    reference = read_boxes(args.boxes) if args.boxes else {}

    sample = load_image(SAMPLE)
    prediction = classifier.classify([sample])[0]
    picture = PILImage.fromarray(overlay(sample.pixels, _heat(prediction, classifier), opacity=0.5))
    picture.thumbnail((640, 640))
    picture.save(out / "overlay_sample.png")
    print(f"{SAMPLE.name}: p(pneumonia) = {prediction.positive_probability:.3f}")

    with open(args.split, newline="") as f:
        rows = list(csv.DictReader(f))
    populations = sorted({r.get("population", "") for r in rows})
    written = [out / "overlay_sample.png"]
    for population in populations:
        chosen = [r for r in rows if r.get("population", "") == population]
        centre_share: dict[int, list[float]] = {0: [], 1: []}
        shown: dict[int, list[tuple[np.ndarray, np.ndarray, float, list]]] = {0: [], 1: []}
        for start in range(0, len(chosen), 32):
            chunk = chosen[start:start + 32]
            images = [load_image(r["file"]) for r in chunk]
            for row, image, pred in zip(chunk, images, classifier.classify(images, batch_size=32), strict=True):
                heat = _heat(pred, classifier)
                h, w = heat.shape
                inner = heat[int(0.15 * h):int(0.85 * h), int(0.15 * w):int(0.85 * w)].sum()
                label = int(row["label"])
                if heat.sum() > 0:
                    centre_share[label].append(inner / heat.sum())
                if len(shown[label]) < 8:
                    shown[label].append((image.pixels, heat, pred.positive_probability,
                                         boxes_for(row["file"], reference)))
        for label, name in ((1, "pneumonia"), (0, "normal")):
            share = np.array(centre_share[label])
            print(f"{population or 'all'} {name}: {len(share)} maps with positive evidence; share of map mass in "
                  f"the central box: median {np.median(share):.2f}, 10th percentile {np.percentile(share, 10):.2f} "
                  "(even spread: 0.49)")
        fig, axes = plt.subplots(4, 4, figsize=(10, 10.6), dpi=100)
        for ax in axes.flat:
            ax.axis("off")
        for i, (label, (pixels, heat, p, boxes)) in enumerate((lab, item) for lab in (1, 0) for item in shown[lab]):
            ax = axes.flat[i]
            ax.imshow(overlay(pixels, heat, opacity=0.5))
            for row0, col0, row1, col1 in boxes:
                ax.add_patch(plt.Rectangle((col0, row0), col1 - col0, row1 - row0, fill=False, color="lime", lw=1.2))
            if boxes:
                peak = int(np.argmax(heat))
                ax.plot(peak % heat.shape[1], peak // heat.shape[1], "r+", markersize=12, mew=2)
            ax.set_title(f"{'pneumonia' if label else 'negative'}, p = {p:.2f}", fontsize=9)
        source = SOURCES.get(population, "")
        who = "the bundled model" if classifier.checkpoint.path == str(bundled_checkpoint_path()) else \
            classifier.checkpoint.model_id
        fig.suptitle(f"Pneumonia CAMs of {who} on {population or 'test'} test-split images {source}",
                     fontsize=10)
        fig.tight_layout()
        name = f"cam_grid_{population}.png" if population else "cam_grid.png"
        fig.savefig(out / name)
        plt.close(fig)
        written.append(out / name)
    print(f"wrote {', '.join(map(str, written))}")


if __name__ == "__main__":
    main()
