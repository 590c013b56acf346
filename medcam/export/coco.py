"""COCO-style JSON of the regions: boxes, outline polygons and measurements.

One file per image and class, in the layout of the COCO detection format
(https://cocodataset.org/#format-data) that CVAT, Label Studio and FiftyOne import:

- ``images``: one entry (``id`` 1) with the source file name, ``width``/``height`` in pixels
  and, for DICOM, the SOP Instance UID;
- ``categories``: one entry (``id`` 1) named after the class;
- ``annotations``: one per region, ``id`` = the region id, with ``bbox`` ``[x, y, w, h]`` in
  pixel edges (``x = col0``, ``y = row0``, ``w = col1 - col0``, ``h = row1 - row0``; the
  box covers exactly the region's pixels), ``area`` (pixels), ``segmentation`` (outline
  polygons ``[x1, y1, x2, y2, ...]`` from :func:`~medcam.export.contours.region_polygons`),
  ``iscrowd`` 0, ``score`` (the class probability) and ``attributes`` (every measurement of
  :meth:`~medcam.regions.Region.measurements`, mm included).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import medcam
from medcam.export.contours import region_polygons
from medcam.io.image import Image
from medcam.regions import RegionSet

__all__ = ["coco_document", "write_coco"]


def coco_document(image: Image, regions: RegionSet, *, model_id: str = "") -> dict[str, Any]:
    """The COCO-style document of ``regions`` on ``image``, as plain JSON-able data."""
    rows, cols = image.shape
    entry: dict[str, Any] = {"id": 1, "file_name": Path(image.path).name, "width": cols, "height": rows,
                             "pixel_spacing_mm": list(image.spacing) if image.spacing else None}
    if image.identity is not None:
        entry["sop_instance_uid"] = image.identity.sop_instance_uid
    annotations = []
    for region in regions:
        row0, col0, row1, col1 = region.bbox
        annotations.append({
            "id": region.id, "image_id": 1, "category_id": 1,
            "bbox": [col0, row0, col1 - col0, row1 - row0],
            "area": region.area_px,
            "segmentation": [[int(v) for v in polygon.reshape(-1)] for polygon in region_polygons(region)],
            "iscrowd": 0,
            "score": _number(region.probability),
            "attributes": {k: _number(v) for k, v in region.measurements().items()},
        })
    return {
        "info": {"description": f"medcam CAM regions of {regions.class_name}", "version": medcam.__version__,
                 "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "model_id": model_id, "threshold": regions.options.describe(),
                 "applied_threshold": _number(regions.threshold)},
        "licenses": [],
        "images": [entry],
        "categories": [{"id": 1, "name": regions.class_name, "supercategory": "finding"}],
        "annotations": annotations,
    }


def write_coco(path: str | Path, image: Image, regions: RegionSet, *, model_id: str = "") -> Path:
    """Write :func:`coco_document` as JSON (UTF-8) to ``path``."""
    path = Path(path)
    path.write_text(json.dumps(coco_document(image, regions, model_id=model_id), indent=1,
                               ensure_ascii=True, allow_nan=False))
    return path


def _number(value: Any) -> Any:
    """Non-finite floats become null (JSON has no NaN)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
