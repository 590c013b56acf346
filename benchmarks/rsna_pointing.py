"""Smoke figure: do the CAM regions land on RSNA's pneumonia boxes? (4 images, not an evaluation)

For each DICOM in ``DATA/dicom`` (the RSNA Pneumonia Detection Challenge sample in
../shared/data/cxr/rsna) the model classifies the image, :func:`medcam.regions.find_regions`
finds the regions of the positive class, and they are exported (PNG overlay) with
:func:`medcam.export.export_regions`. Against ``DATA/boxes.csv`` (boxes in the images'
1024-pixel coordinates: ``x, y, width, height``), for the images that have boxes:

- **pointing game**: a hit when the raw map's maximum lies inside a ground-truth box, with
  5% of the image side as tolerance (:func:`medcam.training.localisation.pointing_hit`, as
  ``medcam evaluate --boxes``);
- **box IoU**: the best intersection-over-union between a region's bounding box and a
  ground-truth box (pixel edges, ends exclusive).

With ``--out`` the exported overlay of the first image with boxes is redrawn with the boxes
(green) and the map's peak (red cross) over the region outlines (yellow).

    python benchmarks/rsna_pointing.py --out docs/rsna_region.png
    python benchmarks/rsna_pointing.py --model runs/pneumonia/best.pt --threshold absolute:0.5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage

from medcam.errors import CheckpointError
from medcam.export import export_regions
from medcam.gate.served import ServedModel
from medcam.io import load_image
from medcam.models.checkpoint import BUNDLED_MODEL, bundled_checkpoint_path
from medcam.regions import RegionOptions, RegionSet, find_regions, parse_threshold
from medcam.training.localisation import Box, best_iou, boxes_for, pointing_hit, read_boxes

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cxr" / "rsna"


def draw_picture(overlay_png: Path, boxes: list[Box], regions: RegionSet, out: Path) -> None:
    rgb = np.array(PILImage.open(overlay_png).convert("RGB"))
    width = max(2, round(max(rgb.shape[:2]) / 400))
    for row0, col0, row1, col1 in boxes:
        cv2.rectangle(rgb, (round(col0), round(row0)), (round(col1) - 1, round(row1) - 1), (0, 200, 0), width)
    row, col = regions.peak_position
    cv2.drawMarker(rgb, (col, row), (255, 0, 0), cv2.MARKER_CROSS, 12 * width, width)
    scale = max(rgb.shape[:2]) / 1024
    for i, (text, colour) in enumerate([("medcam region", (255, 215, 0)), ("RSNA box", (0, 200, 0)),
                                        ("CAM peak", (255, 0, 0))]):
        origin = (round(16 * scale), round((36 + 30 * i) * scale))
        cv2.putText(rgb, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (0, 0, 0), 4 * width // 2 + 2)
        cv2.putText(rgb, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, colour, max(1, width // 2 + 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(rgb).save(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help=f"RSNA sample folder (default: {DATA})")
    parser.add_argument("--model", default=BUNDLED_MODEL, help="checkpoint path, or 'bundled' (default)")
    parser.add_argument("--threshold", default="fraction:0.5", help="region rule, as in medcam export")
    parser.add_argument("--smooth", type=float, default=0.0, help="Gaussian sigma in mm")
    parser.add_argument("--min-area", type=float, default=0.0, help="smallest region in mm^2")
    parser.add_argument("--out", type=Path, help="write the picture (PNG) here")
    args = parser.parse_args()

    if args.model == BUNDLED_MODEL and not bundled_checkpoint_path().is_file():
        print(f"pending bundled model: {bundled_checkpoint_path()} does not exist yet; "
              "pass --model CHECKPOINT to use another one")
        return 2
    files = sorted((args.data / "dicom").glob("*.dcm"))
    if not files or not (args.data / "boxes.csv").is_file():
        print(f"no RSNA DICOMs or boxes.csv under {args.data}", file=sys.stderr)
        return 2
    try:
        classifier = ServedModel(args.model)
    except CheckpointError as err:
        print(f"cannot load the model: {err}", file=sys.stderr)
        return 2
    rule, value = parse_threshold(args.threshold)
    options = RegionOptions(rule=rule, value=value, smoothing=args.smooth, min_area=args.min_area)
    images = [load_image(f) for f in files]
    boxes = read_boxes(args.data / "boxes.csv")  # RSNA's boxes are in the images' own 1024-pixel grid
    ckpt = classifier.checkpoint
    positive = ckpt.model.positive_class
    print(f"SMOKE FIGURE on {len(images)} RSNA images (not an evaluation): model {ckpt.model_id}"
          f"{'' if ckpt.trained else ' (UNTRAINED)'}, class {positive}, regions: {options.describe()}")
    print(f"{'image':<10} {'GT boxes':>8} {f'p({positive})':>16} {'regions':>7} {'peak in box':>11} "
          f"{'best box IoU':>12}")
    hits, ious, picture_done = [], [], False
    with tempfile.TemporaryDirectory() as tmp:
        for image, prediction in zip(images, classifier.classify(images), strict=True):
            pid = Path(image.path).stem
            regions = find_regions(prediction, positive, options)
            gt = boxes_for(image.path, boxes)
            hit = iou = "-"
            if gt:
                is_hit = pointing_hit(prediction.maps[prediction.classes.index(positive)], gt)
                best = best_iou([r.bbox for r in regions], gt)
                hits.append(is_hit)
                ious.append(best)
                hit, iou = ("yes" if is_hit else "no"), f"{best:.3f}"
                if args.out and not picture_done:
                    files_out = export_regions(prediction, regions, tmp, ("png",), name=pid).files
                    draw_picture(files_out["overlay_png"], gt, regions, args.out)
                    picture_done = True
            print(f"{pid[:8]:<10} {len(gt):>8} {prediction.probability(positive):>16.3f} {len(regions):>7} "
                  f"{hit:>11} {iou:>12}")
    if hits:
        print(f"pointing game: {sum(hits)}/{len(hits)} image(s) with boxes; "
              f"mean best box IoU {np.mean(ious):.3f} (n={len(ious)})")
    else:
        print("no image has ground-truth boxes: nothing to score")
    if picture_done:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
