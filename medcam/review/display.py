"""What the viewer draws: a window on the display pixels, a zoomed crop, the CAM and region outlines.

**Windowing** works on the *display* pixels of :class:`~medcam.io.Image`, already in [0, 1]
after the file's own display pipeline (modality LUT, the file's VOI LUT or window, else the
0.5-99.5th percentiles, MONOCHROME1 inverted: see :mod:`medcam.io.dicom`). A window of level
``L`` and width ``W``, both in those display units, maps a pixel ``x`` to
``clip((x - (L - W / 2)) / W, 0, 1)``. The chest presets (:data:`PRESETS`) are starting
points for projection radiographs, not tissue calibrations: CR/DX pixels have no Hounsfield
scale, so CT windows such as lung W1500/L-600 do not apply.

- ``default (file VOI)``: L 0.5, W 1 - the image exactly as the file's own VOI made it.
- ``soft``: L 0.45, W 0.5 - contrast stretched over the mid-greys (lung parenchyma, vessels,
  mediastinal and chest-wall soft tissue); air and dense bone saturate.
- ``bone``: L 0.7, W 0.5 - the bright range (ribs, clavicles, spine, lines and tubes); air and
  most of the lung go black.
- ``full range``: from the image's darkest to its brightest display value, for images that
  the file's VOI left dim or flat.

**Zoom** ``z >= 1`` shows a ``1/z`` crop of each axis around a centre given as fractions of
the image; the crop is resampled to at most :attr:`View.max_side` pixels on its long side
(area averaging when shrinking, bilinear when enlarging), so what goes to the browser stays
small whatever the source size.

**Outlines** are the regions' outer contours (:func:`medcam.export.contours.region_polygons`),
moved onto the displayed crop, coloured by the reviewer's decision: yellow undecided, green
accepted, red rejected, each labelled with its region id. The lung fields, when asked for, are
outlined beneath them in :data:`LUNG_COLOUR` (the contours of the lung segmenter's mask,
:func:`medcam.export.contours.mask_polygons`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from medcam.export.contours import REGION_COLOUR, region_polygons
from medcam.export.overlay import overlay, to_uint8_gray
from medcam.export.png import save_png
from medcam.regions import Region

__all__ = ["DECISION_COLOURS", "LUNG_COLOUR", "PRESETS", "View", "apply_window", "encode_png", "preset_window",
           "region_rows", "render", "zoom_box"]

PRESETS: dict[str, tuple[float, float] | None] = {
    "default (file VOI)": (0.5, 1.0),
    "soft": (0.45, 0.5),
    "bone": (0.7, 0.5),
    "full range": None,  # computed from the image
}
DECISION_COLOURS: dict[str | None, tuple[int, int, int]] = {
    None: REGION_COLOUR, "accept": (40, 200, 60), "reject": (235, 50, 50)}
LUNG_COLOUR = (255, 64, 255)  # RGB magenta: in no colour map's usual range and no decision's colour


@dataclass(frozen=True)
class View:
    """How to draw one image.

    Attributes:
        level, width: the window, in display units (see the module documentation).
        zoom: magnification, 1 = whole image.
        centre: ``(row, col)`` of the zoomed crop's centre, as fractions of the image.
        colour_map: a matplotlib colour map for the CAM.
        opacity: the CAM's opacity where it is strongest; 0 shows no CAM.
        max_side: the longest side of the picture sent to the browser, in pixels.
    """

    level: float = 0.5
    width: float = 1.0
    zoom: float = 1.0
    centre: tuple[float, float] = (0.5, 0.5)
    colour_map: str = "jet"
    opacity: float = 0.4
    max_side: int = 1024

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ValueError(f"window width must be positive, got {self.width!r}")
        if not self.zoom >= 1:
            raise ValueError(f"zoom must be at least 1, got {self.zoom!r}")
        if self.max_side < 16:
            raise ValueError(f"max_side must be at least 16 pixels, got {self.max_side!r}")


def preset_window(name: str, pixels: np.ndarray) -> tuple[float, float]:
    """``(level, width)`` of a preset of :data:`PRESETS` for these display pixels."""
    if name not in PRESETS:
        raise ValueError(f"unknown window preset {name!r}; choose one of {', '.join(PRESETS)}")
    fixed = PRESETS[name]
    if fixed is not None:
        return fixed
    low, high = float(np.min(pixels)), float(np.max(pixels))
    return (low + high) / 2, max(high - low, 1e-3)


def apply_window(pixels: np.ndarray, level: float, width: float) -> np.ndarray:
    """``clip((x - (level - width / 2)) / width, 0, 1)``, float32."""
    if not width > 0:
        raise ValueError(f"window width must be positive, got {width!r}")
    low = np.float32(level - width / 2)
    return np.clip((np.asarray(pixels, dtype=np.float32) - low) / np.float32(width), 0, 1)


def zoom_box(shape: tuple[int, int], zoom: float, centre: tuple[float, float]) -> tuple[int, int, int, int]:
    """``(row0, col0, row1, col1)`` (ends exclusive) of the crop shown at ``zoom``, inside the image."""
    box = []
    for n, fraction in zip(shape, centre, strict=True):
        size = max(1, min(n, round(n / zoom)))
        start = round(min(max(fraction, 0.0), 1.0) * n - size / 2)
        box.append(min(max(start, 0), n - size))
        box.append(size)
    row0, rows, col0, cols = box
    return row0, col0, row0 + rows, col0 + cols


def render(pixels: np.ndarray, heat: np.ndarray | None, regions: Sequence[Region], view: View,
           decisions: Mapping[int, str] | None = None, *, lungs: Sequence[np.ndarray] = ()) -> np.ndarray:
    """The picture for the browser: uint8 RGB ``(h, w, 3)``, long side ``view.max_side`` at most
    (exactly, when zoomed in).

    Args:
        pixels: display pixels ``(1, H, W)`` or ``(H, W)`` in [0, 1].
        heat: the CAM normalised to [0, 1] on the same grid, or None for none.
        regions: regions on the same grid, outlined.
        decisions: region id -> ``accept`` / ``reject`` (undecided when absent).
        lungs: the lung fields' outlines on the same grid (:func:`~medcam.export.contours.mask_polygons`
            of the lung mask), drawn in :data:`LUNG_COLOUR`; empty for none.
    """
    gray = np.asarray(pixels, dtype=np.float32)
    gray = gray.reshape(gray.shape[-2], gray.shape[-1])
    shape = (int(gray.shape[0]), int(gray.shape[1]))
    row0, col0, row1, col1 = zoom_box(shape, view.zoom, view.centre)
    rows, cols = row1 - row0, col1 - col0
    scale = view.max_side / max(rows, cols)
    if view.zoom == 1 and scale > 1:
        scale = 1.0  # a small image is not enlarged unless zoomed
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))  # cv2 wants (width, height)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    crop = cv2.resize(gray[row0:row1, col0:col1], size, interpolation=interpolation)
    shown = apply_window(crop, view.level, view.width)
    if heat is not None and view.opacity > 0:
        heat_crop = cv2.resize(np.asarray(heat, dtype=np.float32)[row0:row1, col0:col1], size,
                               interpolation=interpolation)
        rgb = overlay(shown, heat_crop, colour_map=view.colour_map, opacity=view.opacity)
    else:
        rgb = to_uint8_gray(shown)
    rgb = np.ascontiguousarray(rgb)
    sx, sy = size[0] / cols, size[1] / rows
    thickness = max(1, round(max(size) / 400))

    def shown_polygons(polygons: Sequence[np.ndarray]) -> list[np.ndarray]:
        # vertices are source pixel centres: centre + 0.5 is the continuous coordinate
        return [np.round((p + 0.5 - (col0, row0)) * (sx, sy) - 0.5).astype(np.int32).reshape(-1, 1, 2)
                for p in polygons]

    if len(lungs):
        cv2.polylines(rgb, shown_polygons(lungs), True, LUNG_COLOUR, thickness, lineType=cv2.LINE_8)
    for region in regions:
        colour = DECISION_COLOURS.get((decisions or {}).get(region.id), REGION_COLOUR)
        cv2.polylines(rgb, shown_polygons(region_polygons(region)), True, colour, thickness, lineType=cv2.LINE_8)
        label = str(region.id)
        (text_w, text_h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thickness, thickness)
        top, left = (region.bbox[0] - row0) * sy, (region.bbox[1] - col0) * sx
        y = top - 2 * thickness if top - 2 * thickness >= text_h else top + text_h + 3 * thickness  # above, else inside
        x = int(min(max(left + 2 * thickness, 2), size[0] - text_w - 2))
        cv2.putText(rgb, label, (x, int(min(y, size[1] - 2))), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thickness, colour,
                    thickness, cv2.LINE_AA)
    return rgb


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 RGB picture, with fast (level 1) compression, marked as
    medcam's own (:func:`~medcam.export.png.save_png`): saved from the browser and uploaded again,
    it is refused.

    Faster than Pillow's default level, for a somewhat larger file: on a local connection the
    encoding, not the transfer, is the cost.
    """
    buffer = io.BytesIO()
    save_png(buffer, rgb, compress_level=1)
    return buffer.getvalue()


def region_rows(regions: Sequence[Region], decisions: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
    """A table row per region: id, decision, area and extent (mm and mm^2 when the spacing
    is known, else pixels), centroid and peak activation."""
    rows = []
    for region in regions:
        row0, col0, row1, col1 = region.bbox
        row: dict[str, Any] = {"region": region.id, "decision": (decisions or {}).get(region.id, "undecided")}
        if region.area_mm2 is not None and region.bbox_mm is not None and region.centroid_mm is not None:
            y0, x0, y1, x1 = region.bbox_mm
            row.update({"area (mm²)": round(region.area_mm2, 1), "height (mm)": round(y1 - y0, 1),
                        "width (mm)": round(x1 - x0, 1),
                        "centroid (mm, y x)": f"{region.centroid_mm[0]:.1f} {region.centroid_mm[1]:.1f}"})
        else:
            row.update({"area (px)": region.area_px, "height (px)": row1 - row0, "width (px)": col1 - col0,
                        "centroid (px, row col)": f"{region.centroid[0]:.0f} {region.centroid[1]:.0f}"})
        row["peak (logit)"] = round(region.peak, 3)
        rows.append(row)
    return rows
