"""PNG exports: the regions' mask, and their outlines over the display image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from medcam.export.contours import draw_regions
from medcam.io.image import Image
from medcam.regions import RegionSet

__all__ = ["write_mask_png", "write_overlay_png"]


def write_mask_png(path: str | Path, regions: RegionSet) -> Path:
    """Write the union of the regions as an 8-bit grayscale PNG: 255 inside, 0 outside.

    The PNG has the source image's rows and columns, pixel for pixel.
    """
    path = Path(path)
    PILImage.fromarray(np.where(regions.mask, 255, 0).astype(np.uint8)).save(path)
    return path


def write_overlay_png(path: str | Path, image: Image, regions: RegionSet) -> Path:
    """Write the display image (as windowed on loading) with the regions' outlines, RGB PNG."""
    path = Path(path)
    PILImage.fromarray(draw_regions(image.pixels, regions.regions)).save(path)
    return path
