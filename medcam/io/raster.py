"""PNG and JPEG radiographs, read with Pillow.

8- and 16-bit grayscale are scaled by their full range to [0, 1]. Colour images (RGB,
palette, with or without alpha) are converted to luminance (ITU-R 601-2, Pillow's ``"L"``
mode): radiographs exported as PNG/JPEG are often stored as three equal channels. PNG/JPEG
carry no trustworthy pixel spacing (a DPI tag describes printing), so ``spacing`` is None.
A PNG that medcam wrote (text chunk ``Software=medcam``, :mod:`medcam.io.provenance`) is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from medcam.errors import UnsupportedInputError
from medcam.io.image import Image
from medcam.io.provenance import own_png

__all__ = ["read_raster"]

_FULL_SCALE = {"L": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "1": 1.0}


def read_raster(path: str | Path) -> Image:
    """Read a PNG or JPEG file as a single-channel image in [0, 1]."""
    path = Path(path)
    try:
        with PILImage.open(path) as img:
            fmt = (img.format or "").lower()
            if fmt not in ("png", "jpeg"):
                raise UnsupportedInputError(path, f"{img.format or 'unknown'} image; expected PNG or JPEG")
            frames = int(getattr(img, "n_frames", 1))
            if frames > 1:
                raise UnsupportedInputError(path, f"animated image with {frames} frames")
            img.load()  # text chunks after the pixels are read too
            own = own_png(img.info)
            if own:
                raise UnsupportedInputError(path, own)
            mode = img.mode
            if mode in _FULL_SCALE:
                array = np.asarray(img, dtype=np.float32) / np.float32(_FULL_SCALE[mode])
            elif mode in ("I", "F"):
                array = np.asarray(img, dtype=np.float32)
                low, high = float(array.min()), float(array.max())
                array = (array - low) / (high - low) if high > low else np.zeros_like(array)
            else:
                array = np.asarray(img.convert("L"), dtype=np.float32) / np.float32(255.0)
    except UnsupportedInputError:
        raise
    except UnidentifiedImageError as err:
        raise UnsupportedInputError(path, "not a readable PNG or JPEG image") from err
    except OSError as err:
        raise UnsupportedInputError(path, f"corrupt or truncated image ({err})") from err
    if not np.isfinite(array).all():
        raise UnsupportedInputError(path, "pixel values are not finite (NaN or Inf)")
    return Image(pixels=array[None], path=str(path), format="png" if fmt == "png" else "jpeg",
                 display=f"{mode} scaled to [0, 1]" + (" (luminance)" if mode not in _FULL_SCALE else ""))
