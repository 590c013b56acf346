"""Regions from a class activation map: threshold, smooth, label connected components, measure.

Everything happens on the SOURCE image's pixel grid, the grid of
:attr:`~medcam.models.predictor.Prediction.maps`, so that a region's pixels are the pixels a
radiologist sees.

**Threshold rules** (:attr:`RegionOptions.rule`):

- ``"fraction"`` (default, value 0.5): keep pixels where the *positive-normalised* map
  (negative evidence clipped to 0, then divided by the map's maximum; ``positive`` in
  :func:`~medcam.models.grid.normalise_maps`) is ``>= value``, ``0 < value <= 1``. A map with
  no positive evidence has no region.
- ``"absolute"`` (default value 0.5): keep pixels where the *calibrated map* is ``>= value``,
  ``0 < value < 1``. Unlike a fraction of each map's own maximum, this value means the same
  on every image.
- ``"otsu"``: Otsu's threshold (:func:`skimage.filters.threshold_otsu`, on a 256-bin
  histogram) of the positive-normalised map; keep the pixels of the bins above the split.
  It takes no value.

**The calibrated map** of class ``k`` at source pixel ``x`` is

    P_k(x) = softmax_k(M(x) / T + b)

where ``M(x)`` are the raw maps of every class at ``x`` (logit units) and ``T`` and ``b`` the
model's calibration temperature and per-class bias (``b = 0`` without one; see
:mod:`medcam.models.calibration`). A single-pass CAM's spatial mean is the logit, so ``P_k(x)`` is
the calibrated probability the model would give class ``k`` if every position of its feature
grid looked like ``x``; for two classes it is ``sigmoid((M_k(x) - M_j(x)) / T + b_k - b_j)``.

**Smoothing** (optional): a Gaussian of standard deviation :attr:`RegionOptions.smoothing`
in mm (converted per axis with the pixel spacing), or in pixels when the spacing is unknown,
applied to the map that is thresholded, before it is normalised.

**Components**: :func:`skimage.measure.label` (8-connected by default); components smaller
than :attr:`RegionOptions.min_area` (mm^2, or pixels when the spacing is unknown) are dropped.
Region ids run 1..n in order of decreasing peak activation.

**Conventions** for every measurement:

- ``bbox`` is ``(row0, col0, row1, col1)`` in pixels with ``row1``/``col1`` EXCLUSIVE, so
  that ``mask[row0:row1, col0:col1]`` is the box.
- ``centroid`` is ``(row, col)``, the mean pixel index (the centre of pixel ``(r, c)`` is
  ``(r, c)``).
- mm coordinates run from the outer top-left corner of pixel ``(0, 0)``, down the rows and
  right along the columns: pixel ``(r, c)`` covers ``[r dr, (r + 1) dr) x [c dc, (c + 1) dc)``
  for spacing ``(dr, dc)``. ``bbox_mm`` is ``(y0, x0, y1, x1)`` in those coordinates and
  ``centroid_mm`` the centroid's position, ``((r + 0.5) dr, (c + 0.5) dc)``.
- ``peak`` and ``mean`` are taken from the raw, unsmoothed map in logit units.

Example:
    >>> import numpy as np
    >>> heat = np.zeros((64, 64), np.float32)
    >>> heat[10:20, 30:50] = 2.0
    >>> found = regions_from_map(heat, spacing=(0.5, 0.5), class_name="PNEUMONIA")
    >>> region = found.regions[0]
    >>> region.bbox, region.area_px, region.area_mm2
    ((10, 30, 20, 50), 200, 50.0)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch

from medcam.errors import ConfigError

if TYPE_CHECKING:
    from medcam.io.image import Image
    from medcam.models.predictor import Prediction

__all__ = ["Region", "RegionOptions", "RegionSet", "ThresholdRule", "calibrated_map", "find_regions",
           "parse_threshold", "regions_from_map", "resolve_class"]

ThresholdRule = Literal["fraction", "absolute", "otsu"]
_RULES: tuple[str, ...] = get_args(ThresholdRule)
_DEFAULT_VALUES = {"fraction": 0.5, "absolute": 0.5}
_OTSU_BINS = 256
_ALIASES = {"prob": "absolute", "probability": "absolute", "calibrated": "absolute"}


def _did_you_mean(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value.lower(), [c.lower() for c in choices], n=1)
    hint = next((c for c in choices if close and c.lower() == close[0]), None)
    return f"; did you mean {hint!r}?" if hint else f"; choose one of {', '.join(choices)}"


@dataclass(frozen=True)
class RegionOptions:
    """How a map becomes regions (see the module documentation for each rule).

    Attributes:
        rule: ``fraction``, ``absolute`` or ``otsu``.
        value: the threshold; ``None`` takes the rule's default (0.5) and must stay ``None``
            for ``otsu``.
        smoothing: Gaussian sigma in mm (pixels when the spacing is unknown); 0 for none.
        min_area: smallest region kept, in mm^2 (pixels when the spacing is unknown).
        connectivity: 1 (4-neighbour) or 2 (8-neighbour) pixel connectivity.
    """

    rule: ThresholdRule = "fraction"
    value: float | None = None
    smoothing: float = 0.0
    min_area: float = 0.0
    connectivity: int = 2

    def __post_init__(self) -> None:
        if self.rule not in _RULES:
            raise ConfigError(f"threshold rule {self.rule!r} is unknown{_did_you_mean(str(self.rule), _RULES)}")
        if self.rule == "otsu":
            if self.value is not None:
                raise ConfigError(f"the otsu rule computes its own threshold; got value {self.value!r}")
        else:
            value = _DEFAULT_VALUES[self.rule] if self.value is None else self.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"threshold value must be a number, got {value!r}")
            high_ok = value <= 1 if self.rule == "fraction" else value < 1
            if not (value > 0 and high_ok):
                bounds = "(0, 1]" if self.rule == "fraction" else "(0, 1)"
                raise ConfigError(f"a {self.rule} threshold must be in {bounds}, got {value!r}")
            object.__setattr__(self, "value", float(value))
        for name in ("smoothing", "min_area"):
            number = getattr(self, name)
            if not (isinstance(number, (int, float)) and np.isfinite(number) and number >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {number!r}")
        if self.connectivity not in (1, 2):
            raise ConfigError(f"connectivity must be 1 or 2, got {self.connectivity!r}")

    def describe(self) -> str:
        """A one-line account of the rule, e.g. ``"fraction >= 0.5 of the map's maximum"``."""
        if self.rule == "otsu":
            text = "Otsu's threshold on the positive-normalised map"
        elif self.rule == "absolute":
            text = f"calibrated probability >= {self.value:g}"
        else:
            text = f"fraction >= {self.value:g} of the map's maximum"
        if self.smoothing:
            text += f"; Gaussian sigma {self.smoothing:g}"
        if self.min_area:
            text += f"; min area {self.min_area:g}"
        return text


def parse_threshold(text: str) -> tuple[ThresholdRule, float | None]:
    """``"0.5"``, ``"fraction:0.5"``, ``"absolute:0.7"`` (alias ``prob:0.7``) or ``"otsu"``.

    A bare number is a fraction of the map's maximum.

    Raises:
        ConfigError: an unknown rule or a value that is not a number.
    """
    rule, _, value = text.strip().partition(":")
    if not value:
        try:
            return "fraction", float(rule)
        except ValueError:
            pass
    rule = _ALIASES.get(rule.lower(), rule.lower())
    if rule not in _RULES:
        raise ConfigError(f"--threshold {text!r}: rule {rule!r} is unknown{_did_you_mean(rule, _RULES)}")
    if not value:
        return rule, None  # type: ignore[return-value]
    try:
        return rule, float(value)  # type: ignore[return-value]
    except ValueError:
        raise ConfigError(f"--threshold {text!r}: {value!r} is not a number") from None


def resolve_class(classes: Sequence[str], name: str) -> str:
    """The class in ``classes`` named ``name``, compared case-insensitively.

    Raises:
        ConfigError: no such class (with the closest name).
    """
    for candidate in classes:
        if candidate.lower() == name.lower():
            return candidate
    raise ConfigError(f"class {name!r} is not one of the model's classes{_did_you_mean(name, classes)}")


@dataclass(frozen=True, eq=False)
class Region:
    """One connected region, measured on the source pixel grid (conventions: module doc).

    Attributes:
        id: 1-based; the region's value in :attr:`RegionSet.labels`.
        class_name: the class whose map it came from.
        probability: the calibrated probability of that class for the whole image.
        bbox: ``(row0, col0, row1, col1)`` in pixels, ends exclusive.
        bbox_mm: ``(y0, x0, y1, x1)`` in mm, ``None`` when the spacing is unknown.
        area_px: number of pixels.
        area_mm2: area in mm^2, ``None`` when the spacing is unknown.
        centroid: ``(row, col)`` mean pixel index.
        centroid_mm: ``(y, x)`` in mm, ``None`` when the spacing is unknown.
        peak: the largest raw map value inside the region (logit units).
        peak_position: ``(row, col)`` of that value.
        mean: the mean raw map value inside the region (logit units).
        crop: boolean mask of the region inside its bounding box.
        shape: ``(rows, cols)`` of the source image.
    """

    id: int
    class_name: str
    probability: float
    bbox: tuple[int, int, int, int]
    bbox_mm: tuple[float, float, float, float] | None
    area_px: int
    area_mm2: float | None
    centroid: tuple[float, float]
    centroid_mm: tuple[float, float] | None
    peak: float
    peak_position: tuple[int, int]
    mean: float
    crop: np.ndarray = field(repr=False)
    shape: tuple[int, int] = (0, 0)

    @property
    def mask(self) -> np.ndarray:
        """Boolean mask ``(rows, cols)`` of the region on the source grid."""
        full = np.zeros(self.shape, dtype=bool)
        row0, col0, row1, col1 = self.bbox
        full[row0:row1, col0:col1] = self.crop
        return full

    def measurements(self) -> dict[str, Any]:
        """The measurements as a flat dict of plain numbers (for CSV and JSON)."""
        row0, col0, row1, col1 = self.bbox
        y0, x0, y1, x1 = self.bbox_mm or (None,) * 4
        cy, cx = self.centroid_mm or (None, None)
        return {"region_id": self.id, "class": self.class_name, "probability": self.probability,
                "row0": row0, "col0": col0, "row1": row1, "col1": col1,
                "y0_mm": y0, "x0_mm": x0, "y1_mm": y1, "x1_mm": x1,
                "area_px": self.area_px, "area_mm2": self.area_mm2,
                "centroid_row": self.centroid[0], "centroid_col": self.centroid[1],
                "centroid_y_mm": cy, "centroid_x_mm": cx,
                "peak": self.peak, "peak_row": self.peak_position[0], "peak_col": self.peak_position[1],
                "mean": self.mean}


@dataclass(frozen=True, eq=False)
class RegionSet:
    """The regions of one class's map on one image.

    Attributes:
        labels: int32 ``(rows, cols)``: 0 for background, else the region's id.
        regions: the regions, by decreasing peak.
        class_name: the class whose map was used.
        probability: its calibrated probability for the whole image (NaN when unknown).
        options: how the regions were made.
        threshold: the threshold actually applied, on the scale of the rule's map (for
            ``otsu``, the computed one); NaN when the map had no positive evidence.
        spacing: ``(row, col)`` pixel spacing in mm, or ``None``.
        peak_position: ``(row, col)`` of the raw map's maximum over the whole image.
    """

    labels: np.ndarray = field(repr=False)
    regions: tuple[Region, ...]
    class_name: str
    probability: float
    options: RegionOptions
    threshold: float
    spacing: tuple[float, float] | None
    peak_position: tuple[int, int]

    @property
    def mask(self) -> np.ndarray:
        """Boolean union of every region ``(rows, cols)``."""
        return self.labels > 0

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.labels.shape[0]), int(self.labels.shape[1])

    def check_grid(self, image: Image) -> None:
        """Raise ValueError unless these regions lie on ``image``'s pixel grid."""
        if self.shape != image.shape:
            raise ValueError(f"{image.path}: regions are on a {self.shape} grid, the image is {image.shape}")

    def __len__(self) -> int:
        return len(self.regions)

    def without_regions(self) -> RegionSet:
        """The same record with no region: what the report of an image below the operating point
        lists (it says the finding is absent, and outlines nothing)."""
        return replace(self, labels=np.zeros_like(self.labels), regions=())

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions)


def calibrated_map(prediction: Prediction, class_name: str) -> np.ndarray:
    """The calibrated map ``softmax_k(M(x) / T + b)`` of ``class_name``, float32 ``(rows, cols)``."""
    index = prediction.classes.index(resolve_class(prediction.classes, class_name))
    probs = prediction.calibration(prediction.maps.float(), dim=0)[index]
    return probs.numpy().astype(np.float32)


def find_regions(prediction: Prediction, class_name: str | None = None,
                 options: RegionOptions | None = None) -> RegionSet:
    """Regions of ``class_name``'s map (default: the positive class) for one prediction.

    ``class_name`` is matched case-insensitively against the model's classes.
    """
    options = options or RegionOptions()
    name = resolve_class(prediction.classes, class_name or prediction.positive_class)
    activation = prediction.maps[prediction.classes.index(name)].numpy()
    calibrated = calibrated_map(prediction, name) if options.rule == "absolute" else None
    return regions_from_map(activation, options=options, spacing=prediction.image.spacing,
                            calibrated=calibrated, class_name=name,
                            probability=prediction.probability(name))


def regions_from_map(
    activation: np.ndarray | torch.Tensor,
    *,
    options: RegionOptions | None = None,
    spacing: tuple[float, float] | None = None,
    calibrated: np.ndarray | torch.Tensor | None = None,
    class_name: str = "",
    probability: float = float("nan"),
) -> RegionSet:
    """Regions of one raw map ``(rows, cols)`` in logit units, on its own pixel grid.

    Args:
        activation: the raw map; thresholded by ``fraction``/``otsu``, and the source of
            every region's peak and mean.
        options: the rule, smoothing and minimum area.
        spacing: ``(row, col)`` pixel spacing in mm, or ``None`` (areas in pixels).
        calibrated: the calibrated map (:func:`calibrated_map`), required by ``absolute``.
        class_name, probability: recorded on every region.

    Raises:
        ValueError: a map that is not 2D or not finite, mismatched shapes, a missing
            calibrated map, or a non-positive spacing.
    """
    options = options or RegionOptions()
    raw = _as_map(activation, "activation")
    if spacing is not None and not (len(spacing) == 2 and all(s > 0 for s in spacing)):
        raise ValueError(f"spacing must be two positive numbers (mm) or None, got {spacing!r}")
    if options.rule == "absolute":
        if calibrated is None:
            raise ValueError("the absolute rule needs the calibrated map (see calibrated_map)")
        score = _as_map(calibrated, "calibrated")
        if score.shape != raw.shape:
            raise ValueError(f"calibrated map has shape {score.shape}, the activation {raw.shape}")
    else:
        score = raw
    score = _smooth(score, options.smoothing, spacing)
    keep, threshold = _threshold(score, options)
    labels, regions = _components(keep, raw, options, spacing, class_name, probability)
    peak = np.unravel_index(int(np.argmax(raw)), raw.shape)
    return RegionSet(labels=labels, regions=regions, class_name=class_name, probability=probability,
                     options=options, threshold=threshold, spacing=spacing,
                     peak_position=(int(peak[0]), int(peak[1])))


def _as_map(values: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"the {what} map must be 2D (rows, cols), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"the {what} map has non-finite values (NaN or Inf)")
    return array


def _smooth(values: np.ndarray, sigma: float, spacing: tuple[float, float] | None) -> np.ndarray:
    if not sigma:
        return values
    from skimage.filters import gaussian

    sigmas = (sigma / spacing[0], sigma / spacing[1]) if spacing else (sigma, sigma)
    return np.asarray(gaussian(values, sigma=sigmas, mode="nearest", preserve_range=True))


def _positive(values: np.ndarray) -> np.ndarray | None:
    """``positive`` normalisation; None when the map has no positive evidence."""
    peak = float(values.max())
    return np.clip(values, 0, None) / peak if peak > 0 else None


def _threshold(score: np.ndarray, options: RegionOptions) -> tuple[np.ndarray, float]:
    if options.rule == "absolute":
        assert options.value is not None
        return score >= options.value, options.value
    unit = _positive(score)
    if unit is None:
        return np.zeros(score.shape, dtype=bool), float("nan")
    if options.rule == "fraction":
        assert options.value is not None
        return unit >= options.value, options.value
    from skimage.filters import threshold_otsu

    if float(unit.min()) == float(unit.max()):  # a constant map has no two classes to split
        return np.zeros(score.shape, dtype=bool), float("nan")
    # Otsu splits a histogram between two bins; skimage reports the centre of the last bin of
    # the lower class, which would put the upper half of that bin in the wrong class. Cut at
    # the bin's upper edge instead, so that pixels are classed exactly as their bins were.
    counts, edges = np.histogram(unit, bins=_OTSU_BINS)
    centres = (edges[:-1] + edges[1:]) / 2
    split = int(np.searchsorted(centres, threshold_otsu(hist=(counts, centres))))
    threshold = float(edges[split + 1])
    return unit >= threshold, threshold


def _components(keep: np.ndarray, raw: np.ndarray, options: RegionOptions,
                spacing: tuple[float, float] | None, class_name: str,
                probability: float) -> tuple[np.ndarray, tuple[Region, ...]]:
    from skimage.measure import label, regionprops

    found = label(keep, connectivity=options.connectivity)
    pixel_mm2 = spacing[0] * spacing[1] if spacing else None
    measured = []
    for prop in regionprops(found, intensity_image=raw):
        area_px = int(prop.area)
        if (area_px * pixel_mm2 if pixel_mm2 else area_px) < options.min_area:
            continue
        measured.append(prop)
    measured.sort(key=lambda p: (-float(p.intensity_max), p.label))
    lookup = np.zeros(int(found.max()) + 1, dtype=np.int32)
    regions = []
    for new_id, prop in enumerate(measured, start=1):
        lookup[prop.label] = new_id
        regions.append(_region(new_id, prop, raw, spacing, class_name, probability))
    labels = lookup[found]
    labels.flags.writeable = False  # results are immutable
    return labels, tuple(regions)


def _region(region_id: int, prop: Any, raw: np.ndarray, spacing: tuple[float, float] | None,
            class_name: str, probability: float) -> Region:
    row0, col0, row1, col1 = (int(v) for v in prop.bbox)
    crop = np.array(prop.image, dtype=bool)
    crop.flags.writeable = False
    inside = np.where(crop, raw[row0:row1, col0:col1], -np.inf)
    peak_r, peak_c = np.unravel_index(int(np.argmax(inside)), inside.shape)
    centroid = (float(prop.centroid[0]), float(prop.centroid[1]))
    bbox_mm = centroid_mm = area_mm2 = None
    if spacing is not None:
        dr, dc = spacing
        bbox_mm = (row0 * dr, col0 * dc, row1 * dr, col1 * dc)
        centroid_mm = ((centroid[0] + 0.5) * dr, (centroid[1] + 0.5) * dc)
        area_mm2 = int(prop.area) * dr * dc
    return Region(
        id=region_id, class_name=class_name, probability=float(probability),
        bbox=(row0, col0, row1, col1), bbox_mm=bbox_mm, area_px=int(prop.area), area_mm2=area_mm2,
        centroid=centroid, centroid_mm=centroid_mm, peak=float(prop.intensity_max),
        peak_position=(row0 + int(peak_r), col0 + int(peak_c)), mean=float(prop.intensity_mean),
        crop=crop, shape=(int(raw.shape[0]), int(raw.shape[1])),
    )
