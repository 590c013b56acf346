"""Does the map point at the finding? The pointing game and region IoU against reference boxes.

Boxes are ``(row0, col0, row1, col1)`` in source pixels, ends exclusive (pixel edges), the
convention of :attr:`medcam.regions.Region.bbox`. A boxes file (``medcam evaluate --boxes``)
is a CSV with ``file, x, y, width, height`` in source pixels (``x`` along columns); ``file`` is
matched to an image by its path, its name or its name without extension (so RSNA's
``patient_id`` column works too).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from medcam.errors import ConfigError

__all__ = ["Box", "best_iou", "box_iou", "boxes_for", "pointing_hit", "read_boxes"]

Box = tuple[float, float, float, float]


def read_boxes(path: str | Path) -> dict[str, list[Box]]:
    """The boxes of a CSV, keyed by the ``file`` (or ``patient_id``) value as written.

    Raises:
        ConfigError: the file is missing or lacks a column.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such boxes file")
    boxes: dict[str, list[Box]] = defaultdict(list)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        key = "file" if "file" in (reader.fieldnames or []) else "patient_id"
        missing = {key, "x", "y", "width", "height"} - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(f"{path}: the boxes CSV lacks the column(s) {', '.join(sorted(missing))}")
        for row in reader:
            x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
            boxes[row[key]].append((y, x, y + h, x + w))
    return dict(boxes)


def boxes_for(path: str, boxes: dict[str, list[Box]]) -> list[Box]:
    """The boxes of the image at ``path``: by full path, file name, or name without extension.

    A key written as a relative path (``images/x.jpg``, as RSNA's ``boxes.csv``) matches by its
    file name.
    """
    if path in boxes:
        return boxes[path]
    name = Path(path).name
    stem = name.removesuffix(".gz").rsplit(".", 1)[0]
    for key, found in boxes.items():
        if key in (name, stem) or Path(key).name == name:
            return found
    return []


def pointing_hit(heat: torch.Tensor, boxes: Iterable[Box], tolerance: float = 0.05) -> bool:
    """The map's maximum lies inside a box grown by ``tolerance`` times the image's longer side.

    ``heat`` is one class's map ``(rows, cols)`` on the source grid; the pixel's centre
    (``index + 0.5``) is tested.
    """
    rows, cols = heat.shape
    peak = int(torch.argmax(heat))
    row, col = peak // cols + 0.5, peak % cols + 0.5
    margin = tolerance * max(rows, cols)
    return any(b[0] - margin <= row < b[2] + margin and b[1] - margin <= col < b[3] + margin for b in boxes)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    rows = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    cols = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = rows * cols
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def best_iou(region_boxes: Sequence[Box], boxes: Sequence[Box]) -> float:
    """The best IoU between any region's box and any reference box (0 when either is empty)."""
    return max((box_iou(r, b) for r in region_boxes for b in boxes), default=0.0)
