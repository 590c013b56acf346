"""PNG exports: the regions' mask, and their outlines over the display image.

Every PNG medcam writes goes through :func:`save_png`, which marks it as medcam's own
(the text chunk ``Software=medcam``, :data:`medcam.io.provenance.PNG_TEXT`), so that
:func:`medcam.io.load_image` refuses to score it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from medcam.export.contours import draw_regions
from medcam.io.image import Image
from medcam.io.provenance import PNG_TEXT
from medcam.regions import RegionSet

__all__ = ["save_png", "write_mask_png", "write_overlay_png"]


def save_png(target: str | Path | IO[bytes], picture: np.ndarray, **options: Any) -> None:
    """Write ``picture`` (uint8 ``(H, W)`` grey or ``(H, W, 3)`` RGB) to ``target`` (a path or a
    binary file) as a PNG marked as medcam's; ``options`` go to Pillow (``compress_level=1``)."""
    info = PngInfo()
    for key, value in PNG_TEXT.items():
        info.add_text(key, value)
    PILImage.fromarray(picture).save(target, format="PNG", pnginfo=info, **options)


def write_mask_png(path: str | Path, regions: RegionSet) -> Path:
    """Write the union of the regions as an 8-bit grayscale PNG: 255 inside, 0 outside.

    The PNG has the source image's rows and columns, pixel for pixel.
    """
    path = Path(path)
    save_png(path, np.where(regions.mask, 255, 0).astype(np.uint8))
    return path


def write_overlay_png(path: str | Path, image: Image, regions: RegionSet) -> Path:
    """Write the display image (as windowed on loading) with the regions' outlines, RGB PNG."""
    path = Path(path)
    save_png(path, draw_regions(image.pixels, regions.regions))
    return path
