"""The one preprocessing path, shared by training, evaluation and inference.

Resize onto the model grid (:class:`~medcam.models.grid.GridTransform`, which records the
exact map back to the source pixels) and standardise intensities.
"""

from __future__ import annotations

import torch

from medcam.config import PreprocessConfig
from medcam.io.image import Image
from medcam.models.grid import GridTransform, resize_to_model

__all__ = ["prepare", "prepare_tensor", "resize", "standardise"]


def resize(pixels: torch.Tensor, config: PreprocessConfig) -> tuple[torch.Tensor, GridTransform]:
    """Pixels ``(1, H, W)`` resized onto the model grid, and the transform that did it."""
    transform = GridTransform.fit(tuple(pixels.shape[1:]), config.size, config.resize)  # type: ignore[arg-type]
    return resize_to_model(pixels, transform), transform


def standardise(x: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """The intensity step: per-image mean 0 / std 1 (``zscore``) or unchanged (``unit``)."""
    if config.intensity == "zscore":
        return (x - x.mean()) / x.std().clamp_min(1e-6)
    return x


def prepare_tensor(pixels: torch.Tensor, config: PreprocessConfig) -> tuple[torch.Tensor, GridTransform]:
    """Model input ``(1, size, size)`` and its grid transform, from pixels ``(1, H, W)`` in [0, 1]."""
    x, transform = resize(pixels, config)
    return standardise(x, config), transform


def prepare(image: Image, config: PreprocessConfig) -> tuple[torch.Tensor, GridTransform]:
    """:func:`prepare_tensor` for a loaded :class:`~medcam.io.Image`."""
    return prepare_tensor(torch.from_numpy(image.pixels), config)
