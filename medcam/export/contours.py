"""Region outlines: polygons for JSON, and contours drawn over the display image.

Outlines come from :func:`cv2.findContours` on each region's mask (or on any binary mask,
:func:`mask_polygons`: the lung fields' outline in the reviewer): the outer boundary only
(holes are not outlined), with vertices ``(x, y) = (col, row)`` at the centres of boundary
pixels, the convention of OpenCV and of most COCO tools. The masks themselves (PNG, NIfTI,
SEG) are exact.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from medcam.export.overlay import to_uint8_gray
from medcam.regions import Region

__all__ = ["REGION_COLOUR", "draw_regions", "line_width", "mask_polygons", "region_polygons"]

REGION_COLOUR = (255, 215, 0)  # RGB: a yellow that stands out on a grayscale radiograph


def region_polygons(region: Region) -> list[np.ndarray]:
    """The outer outline(s) of ``region``: int32 arrays ``(n, 2)`` of ``(col, row)`` vertices.

    Every polygon has at least three vertices; a region too thin for that (a single pixel or
    a straight line of pixels) is outlined by its bounding box's edges instead.
    """
    row0, col0, row1, col1 = region.bbox
    polygons = _outlines(region.crop, (col0, row0))
    if not polygons:
        polygons = [np.array([[col0, row0], [col1, row0], [col1, row1], [col0, row1]], dtype=np.int32)]
    return polygons


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """The outer outline of each connected part of a binary ``mask`` ``(rows, cols)``: int32 arrays
    ``(n, 2)`` of ``(col, row)`` vertices; parts too thin for three vertices are left out."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D (rows, cols), got shape {mask.shape}")
    return _outlines(mask, (0, 0))


def _outlines(mask: np.ndarray, offset: tuple[int, int]) -> list[np.ndarray]:
    found, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                cv2.CHAIN_APPROX_SIMPLE, offset=offset)
    return [c.reshape(-1, 2).astype(np.int32) for c in found if len(c) >= 3]


def line_width(shape: tuple[int, int]) -> int:
    """Contour thickness in pixels: 1 up to 512 pixels, then 1 more per 512."""
    return max(1, round(max(shape) / 512))


def draw_regions(pixels: np.ndarray, regions: Iterable[Region], *,
                 colour: tuple[int, int, int] = REGION_COLOUR, width: int | None = None) -> np.ndarray:
    """The display image ``(1, H, W)`` or ``(H, W)`` in [0, 1] as uint8 RGB with outlines drawn."""
    rgb = np.ascontiguousarray(to_uint8_gray(pixels))
    thickness = width or line_width((rgb.shape[0], rgb.shape[1]))
    for region in regions:
        if region.shape != rgb.shape[:2]:
            raise ValueError(f"region {region.id} is on a {region.shape} grid, the image is {rgb.shape[:2]}")
        polygons = [p.reshape(-1, 1, 2) for p in region_polygons(region)]
        cv2.drawContours(rgb, polygons, -1, colour, thickness, lineType=cv2.LINE_8)
    return rgb
