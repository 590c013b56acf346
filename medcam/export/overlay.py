"""Overlays: a class activation map in colour over the display image."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

__all__ = ["COLOUR_MAPS", "overlay", "to_uint8_gray"]

COLOUR_MAPS = ("jet", "turbo", "inferno", "magma", "viridis", "hot")


def to_uint8_gray(pixels: np.ndarray) -> np.ndarray:
    """Display pixels ``(1, H, W)`` or ``(H, W)`` in [0, 1] as uint8 RGB ``(H, W, 3)``."""
    gray = np.asarray(pixels, dtype=np.float32).reshape(pixels.shape[-2:])
    return np.repeat((np.clip(gray, 0, 1) * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)


def overlay(pixels: np.ndarray, heat: np.ndarray, *, colour_map: str = "jet",
            opacity: float = 0.5) -> np.ndarray:
    """Blend ``heat`` (``(H, W)``, normalised to [0, 1]) over the display image.

    Each pixel is ``gray * (1 - a) + colour * a`` with ``a = opacity * heat``, so that where
    the map is 0 the radiograph shows unchanged and the strongest evidence is tinted by
    ``opacity``. Returns uint8 RGB ``(H, W, 3)``.

    Raises:
        ValueError: unknown colour map, opacity outside [0, 1], or mismatched shapes.
    """
    if colour_map not in colormaps:
        raise ValueError(f"unknown colour map {colour_map!r}; try one of {', '.join(COLOUR_MAPS)}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity!r}")
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0, 1)
    gray = to_uint8_gray(pixels).astype(np.float32)
    if heat.shape != gray.shape[:2]:
        raise ValueError(f"map shape {heat.shape} does not match image shape {gray.shape[:2]}")
    lut = (colormaps[colour_map](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)
    colour = lut[(heat * 255 + 0.5).astype(np.uint8)]
    alpha = (opacity * heat)[..., None]
    return (gray * (1 - alpha) + colour * alpha + 0.5).astype(np.uint8)
