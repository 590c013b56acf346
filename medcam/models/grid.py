"""The exact geometry between a source image and the model's input grid, and back.

Preprocessing maps each source axis affinely onto the model grid (a resize, then a pad or a
crop). :class:`GridTransform` records that map per axis as ``model = scale * source + shift``
in pixel-centre coordinates, so that a map computed on the model grid (or on any coarser
feature grid that tiles the same extent) is brought back onto the source pixels with ONE
bilinear interpolation (:func:`maps_to_source`), rather than an upsample followed by an
un-pad and a second resize.

Conventions: pixel ``i`` of an axis of length ``n`` covers ``[i, i + 1)`` and its centre is
``i + 0.5``; a feature map of length ``m`` tiles the model extent ``[0, size)`` evenly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["GridTransform", "Normalisation", "maps_to_source", "normalise_maps", "resize_to_model"]

ResizeMode = Literal["stretch", "letterbox"]
Normalisation = Literal["raw", "positive", "minmax"]


@dataclass(frozen=True)
class GridTransform:
    """Per-axis affine map from source pixel edges to model pixel edges.

    Attributes:
        source_shape: spatial shape of the source image (rows, cols[, ...]).
        model_shape: spatial shape of the model input.
        scale: model pixels per source pixel, per axis.
        shift: model coordinate of the source's edge 0, per axis (> 0 for padding,
            < 0 for cropping).
    """

    source_shape: tuple[int, ...]
    model_shape: tuple[int, ...]
    scale: tuple[float, ...]
    shift: tuple[float, ...]

    @classmethod
    def fit(cls, source_shape: tuple[int, ...], size: int, mode: ResizeMode) -> GridTransform:
        """The transform that brings ``source_shape`` onto a ``size``-cube model grid.

        ``stretch`` resizes every axis to ``size`` (the aspect ratio changes, as in the
        training data); ``letterbox`` keeps the aspect ratio and pads symmetrically.
        """
        if mode == "stretch":
            resized = (size,) * len(source_shape)
        elif mode == "letterbox":
            factor = size / max(source_shape)
            resized = tuple(max(1, min(size, round(n * factor))) for n in source_shape)
        else:
            raise ValueError(f"resize mode must be 'stretch' or 'letterbox', got {mode!r}")
        scale = tuple(r / n for r, n in zip(resized, source_shape, strict=True))
        shift = tuple((size - r) // 2 for r in resized)
        return cls(tuple(source_shape), (size,) * len(source_shape), scale, tuple(map(float, shift)))

    def from_full_resolution(self, full_shape: tuple[int, ...], reduction: int) -> GridTransform:
        """This transform of a reduced decode, seen from the full-resolution source.

        A pixel of an image decoded at ``1/reduction`` covers ``reduction`` source pixels
        along each axis, so a continuous reduced coordinate is the source coordinate over
        ``reduction``; the model grid is unchanged. Maps brought back with the result land on
        the full source pixels.
        """
        if reduction == 1:
            return self
        return GridTransform(tuple(full_shape), self.model_shape, tuple(s / reduction for s in self.scale), self.shift)

    @property
    def resized_shape(self) -> tuple[int, ...]:
        return tuple(round(n * s) for n, s in zip(self.source_shape, self.scale, strict=True))

    def source_to_model(self, coords: torch.Tensor) -> torch.Tensor:
        """Continuous source coordinates ``(..., ndim)`` to model coordinates."""
        scale = coords.new_tensor(self.scale)
        return coords * scale + coords.new_tensor(self.shift)

    def model_to_source(self, coords: torch.Tensor) -> torch.Tensor:
        """Continuous model coordinates ``(..., ndim)`` to source coordinates."""
        return (coords - coords.new_tensor(self.shift)) / coords.new_tensor(self.scale)


def resize_to_model(image: torch.Tensor, transform: GridTransform) -> torch.Tensor:
    """Apply ``transform`` to ``image`` of shape ``(C, *source_shape)``: resize, then pad.

    Resizing uses antialiased bilinear (2D) or trilinear (3D) interpolation.
    """
    spatial = image.shape[1:]
    if tuple(spatial) != transform.source_shape:
        raise ValueError(
            f"image has spatial shape {tuple(spatial)}, the transform expects "
            f"{transform.source_shape}"
        )
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    resized_shape = transform.resized_shape
    x = image[None]
    if resized_shape != tuple(spatial):
        x = F.interpolate(x, size=resized_shape, mode=mode, align_corners=False,
                          antialias=len(spatial) == 2)
    pad: list[int] = []
    for size, resized, shift in zip(reversed(transform.model_shape), reversed(resized_shape),
                                    reversed(transform.shift), strict=True):
        before = int(shift)
        pad += [before, size - resized - before]
    if any(pad):
        x = F.pad(x, pad)
    return x[0]


def maps_to_source(maps: torch.Tensor, transform: GridTransform) -> torch.Tensor:
    """Resample maps ``(B, K, *grid)`` that tile the model extent onto the source grid.

    Each source pixel centre is mapped into model coordinates and the map is sampled there
    bilinearly (trilinearly in 3D); centres beyond the outermost cell centres take the edge
    value. The result has shape ``(B, K, *transform.source_shape)``.
    """
    ndim = len(transform.source_shape)
    if maps.ndim != ndim + 2:
        raise ValueError(f"maps must have shape (B, K, {ndim} spatial dims), got {tuple(maps.shape)}")
    axes = []
    for n, size, scale, shift in zip(transform.source_shape, transform.model_shape,
                                     transform.scale, transform.shift, strict=True):
        centres = torch.arange(n, device=maps.device, dtype=torch.float64) + 0.5
        model = centres * scale + shift
        axes.append((model / size * 2 - 1).to(maps.dtype))  # align_corners=False convention
    mesh = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack(mesh[::-1], dim=-1)  # grid_sample wants (x, y[, z]) order
    grid = grid.expand(maps.shape[0], *grid.shape)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)


def normalise_maps(maps: torch.Tensor, how: Normalisation = "positive") -> torch.Tensor:
    """Normalise each map of ``(B, K, *spatial)`` on its own.

    - ``raw``: unchanged, in logit units (the spatial mean of a single-pass CAM on the
      feature grid is the class logit).
    - ``positive`` (default): negative evidence clipped to 0, then divided by the map's
      maximum, so 1 marks the strongest evidence FOR the class and a map with no positive
      evidence stays 0 everywhere (min-max scaling would inflate it).
    - ``minmax``: ``(m - min) / (max - min)`` per map, 0 where the map is constant.
    """
    if how == "raw":
        return maps
    flat = maps.flatten(2)
    if how == "positive":
        flat = flat.clamp_min(0)
        peak = flat.amax(-1, keepdim=True)
        out = torch.where(peak > 0, flat / peak.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
    elif how == "minmax":
        low = flat.amin(-1, keepdim=True)
        span = flat.amax(-1, keepdim=True) - low
        out = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
    else:
        raise ValueError(f"normalisation must be 'raw', 'positive' or 'minmax', got {how!r}")
    return out.reshape(maps.shape)
