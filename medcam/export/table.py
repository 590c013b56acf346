"""A CSV of region measurements: one row per region (conventions: :mod:`medcam.regions`)."""

from __future__ import annotations

import csv
from pathlib import Path

from medcam.io.image import Image
from medcam.regions import RegionSet

__all__ = ["COLUMNS", "write_table"]

COLUMNS = ("image", "sop_instance_uid", "model_id", "threshold", "region_id", "class", "probability",
           "row0", "col0", "row1", "col1", "y0_mm", "x0_mm", "y1_mm", "x1_mm", "area_px", "area_mm2",
           "centroid_row", "centroid_col", "centroid_y_mm", "centroid_x_mm", "peak", "peak_row",
           "peak_col", "mean")


def write_table(path: str | Path, image: Image, regions: RegionSet, *, model_id: str = "") -> Path:
    """Write the regions' measurements to ``path``; a header only when there is no region.

    Empty cells stand for unknown values (mm when the spacing is unknown).
    """
    path = Path(path)
    uid = image.identity.sop_instance_uid if image.identity else ""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for region in regions:
            row = {k: "" if v is None else v for k, v in region.measurements().items()}
            writer.writerow({"image": image.path, "sop_instance_uid": uid, "model_id": model_id,
                             "threshold": regions.options.describe(), **row})
    return path
