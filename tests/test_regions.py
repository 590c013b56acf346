"""medcam.regions on synthetic maps whose regions are known analytically."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from medcam.errors import ConfigError
from medcam.io.image import Image
from medcam.models.predictor import Prediction
from medcam.regions import (
    RegionOptions,
    calibrated_map,
    find_regions,
    parse_threshold,
    regions_from_map,
    resolve_class,
)


def _rect_map(shape: tuple[int, int], rects: list[tuple[int, int, int, int, float]],
              background: float = -1.0) -> np.ndarray:
    """Map with ``value`` inside each ``(row0, col0, row1, col1, value)`` (ends exclusive)."""
    heat = np.full(shape, background, dtype=np.float32)
    for row0, col0, row1, col1, value in rects:
        heat[row0:row1, col0:col1] = value
    return heat


def _prediction(maps: torch.Tensor, *, temperature: float = 1.0,
                spacing: tuple[float, float] | None = None) -> Prediction:
    rows, cols = maps.shape[1:]
    image = Image(pixels=np.zeros((1, rows, cols), np.float32), path="synthetic.png", format="png",
                  spacing=spacing)
    logits = maps.flatten(1).mean(1)
    return Prediction(image=image, probabilities=torch.softmax(logits / temperature, 0), logits=logits,
                      maps=maps, classes=("NORMAL", "PNEUMONIA"), positive_class="PNEUMONIA",
                      threshold=0.5, model_id="synthetic", temperature=temperature)


def test_rectangle_is_measured_exactly_with_anisotropic_spacing() -> None:
    heat = _rect_map((60, 80), [(10, 20, 30, 60, 3.0)])
    heat[12, 25] = 4.0  # the peak
    found = regions_from_map(heat, spacing=(0.5, 0.25), class_name="PNEUMONIA", probability=0.9)
    assert len(found) == 1
    region = found.regions[0]
    assert region.id == 1
    assert region.bbox == (10, 20, 30, 60)  # ends exclusive
    assert region.area_px == 20 * 40
    assert region.area_mm2 == pytest.approx(20 * 40 * 0.5 * 0.25)
    assert region.centroid == pytest.approx((19.5, 39.5))  # mean pixel index
    assert region.bbox_mm == pytest.approx((5.0, 5.0, 15.0, 15.0))  # from the outer corner
    assert region.centroid_mm == pytest.approx((20 * 0.5, 40 * 0.25))  # the box's centre
    assert region.peak == pytest.approx(4.0)
    assert region.peak_position == (12, 25)
    assert region.mean == pytest.approx((3.0 * 799 + 4.0) / 800)
    assert (region.class_name, region.probability) == ("PNEUMONIA", 0.9)
    expected = np.zeros((60, 80), bool)
    expected[10:30, 20:60] = True
    np.testing.assert_array_equal(region.mask, expected)
    np.testing.assert_array_equal(found.mask, expected)
    assert found.labels.dtype == np.int32 and set(np.unique(found.labels)) == {0, 1}
    assert found.peak_position == (12, 25)
    assert region.measurements()["area_mm2"] == pytest.approx(100.0)


def test_unknown_spacing_gives_pixels_only() -> None:
    found = regions_from_map(_rect_map((20, 20), [(2, 3, 5, 9, 1.0)]))
    region = found.regions[0]
    assert (region.area_px, region.area_mm2, region.bbox_mm, region.centroid_mm) == (18, None, None, None)


def test_ids_follow_decreasing_peak_and_fraction_drops_weak_regions() -> None:
    rects = [(2, 2, 8, 8, 1.5), (20, 20, 30, 35, 2.0), (40, 5, 45, 10, 0.8)]
    heat = _rect_map((50, 50), rects)
    found = regions_from_map(heat, options=RegionOptions(rule="fraction", value=0.5))
    assert [r.bbox for r in found] == [(20, 20, 30, 35), (2, 2, 8, 8)]  # 0.8 / 2.0 < 0.5: dropped
    assert [r.id for r in found] == [1, 2]
    assert (found.labels[25, 25], found.labels[5, 5], found.labels[42, 7]) == (1, 2, 0)
    strict = regions_from_map(heat, options=RegionOptions(value=0.8))
    assert [r.bbox for r in strict] == [(20, 20, 30, 35)]


def test_gaussian_blob_at_half_maximum_is_the_expected_disc() -> None:
    sigma, centre = 12.0, (70.0, 90.0)
    rows, cols = np.mgrid[:160, :200]
    heat = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma**2))
    found = regions_from_map(heat, spacing=(0.2, 0.2))
    region = found.regions[0]
    radius = sigma * math.sqrt(2 * math.log(2))  # where the Gaussian falls to half its peak
    assert region.area_px == pytest.approx(math.pi * radius**2, rel=0.02)
    assert region.area_mm2 == pytest.approx(math.pi * radius**2 * 0.04, rel=0.02)
    assert region.centroid == pytest.approx(centre, abs=1e-6)
    assert region.peak_position == (70, 90)
    half = math.floor(radius)
    assert region.bbox == (70 - half, 90 - half, 70 + half + 1, 90 + half + 1)


def test_min_area_is_in_mm2_when_spacing_is_known_else_pixels() -> None:
    heat = _rect_map((40, 40), [(0, 0, 10, 10, 2.0), (20, 20, 24, 24, 2.0)])  # 100 and 16 pixels
    with_mm = regions_from_map(heat, spacing=(0.5, 0.5), options=RegionOptions(min_area=10.0))
    assert [r.area_mm2 for r in with_mm] == [25.0]  # 16 px = 4 mm^2 < 10 mm^2
    in_pixels = regions_from_map(heat, options=RegionOptions(min_area=10.0))
    assert sorted(r.area_px for r in in_pixels) == [16, 100]
    assert sorted(r.area_px for r in regions_from_map(heat, options=RegionOptions(min_area=17.0))) == [100]


def test_connectivity_decides_whether_diagonal_pixels_join() -> None:
    heat = _rect_map((10, 10), [(2, 2, 4, 4, 1.0), (4, 4, 6, 6, 1.0)])
    assert len(regions_from_map(heat, options=RegionOptions(connectivity=2))) == 1
    assert len(regions_from_map(heat, options=RegionOptions(connectivity=1))) == 2


def test_absolute_rule_thresholds_the_calibrated_probability() -> None:
    inside = torch.zeros(30, 40, dtype=torch.bool)
    inside[5:15, 10:30] = True
    pneumonia = torch.where(inside, 2.0, -2.0)
    maps = torch.stack([torch.zeros(30, 40), pneumonia])
    prediction = _prediction(maps, temperature=2.0)
    # sigmoid((2 - 0) / 2) = 0.731 inside, sigmoid(-1) = 0.269 outside
    calibrated = calibrated_map(prediction, "pneumonia")
    assert calibrated[10, 20] == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-6)
    assert calibrated[0, 0] == pytest.approx(1 / (1 + math.exp(1)), abs=1e-6)
    found = find_regions(prediction, "pneumonia", RegionOptions(rule="absolute", value=0.7))
    np.testing.assert_array_equal(found.mask, inside.numpy())
    assert found.class_name == "PNEUMONIA"
    assert found.probability == pytest.approx(prediction.probability("PNEUMONIA"))
    assert len(find_regions(prediction, options=RegionOptions(rule="absolute", value=0.75))) == 0
    hotter = _prediction(maps, temperature=4.0)  # sigmoid(0.5) = 0.62 inside: below 0.7
    assert len(find_regions(hotter, options=RegionOptions(rule="absolute", value=0.7))) == 0
    biased = dataclasses.replace(hotter, class_bias=(0.0, 1.0))  # sigmoid(0.5 + 1) = 0.82 inside
    assert calibrated_map(biased, "pneumonia")[10, 20] == pytest.approx(1 / (1 + math.exp(-1.5)), abs=1e-6)
    np.testing.assert_array_equal(find_regions(biased, options=RegionOptions(rule="absolute", value=0.7)).mask,
                                  inside.numpy())


def test_otsu_splits_a_two_level_map() -> None:
    heat = _rect_map((50, 60), [(10, 10, 30, 40, 5.0)], background=1.0)
    heat += np.random.default_rng(0).normal(0, 0.05, heat.shape).astype(np.float32)
    found = regions_from_map(heat, options=RegionOptions(rule="otsu"))
    assert [r.bbox for r in found] == [(10, 10, 30, 40)]
    assert 0.2 < found.threshold < 1.0  # on the positive-normalised scale


def test_smoothing_sigma_is_in_mm_per_axis() -> None:
    heat = np.zeros((41, 61), np.float32)
    heat[20, 30] = 1.0
    found = regions_from_map(heat, spacing=(1.0, 0.5), options=RegionOptions(smoothing=2.0))
    # sigma 2 mm = 2 px down the rows and 4 px along the columns: an ellipse at half maximum
    rows, cols = np.mgrid[:41, :61]
    expected = np.exp(-((rows - 20) ** 2 / (2 * 2.0**2) + (cols - 30) ** 2 / (2 * 4.0**2))) >= 0.5
    np.testing.assert_array_equal(found.mask, expected)
    assert found.regions[0].peak == pytest.approx(1.0)  # measured on the unsmoothed map
    assert found.regions[0].peak_position == (20, 30)
    in_pixels = regions_from_map(heat, options=RegionOptions(smoothing=2.0))
    assert in_pixels.regions[0].bbox[1] > found.regions[0].bbox[1]  # narrower along the columns


def test_no_positive_evidence_means_no_region() -> None:
    found = regions_from_map(np.full((8, 8), -3.0))
    assert len(found) == 0 and not found.mask.any() and math.isnan(found.threshold)
    assert len(regions_from_map(np.full((8, 8), 2.0), options=RegionOptions(rule="otsu"))) == 0


def test_find_regions_defaults_to_the_positive_class_and_accepts_a_tensor() -> None:
    maps = torch.stack([torch.from_numpy(_rect_map((16, 16), [(0, 0, 4, 4, 2.0)])),
                        torch.from_numpy(_rect_map((16, 16), [(8, 8, 12, 16, 2.0)]))])
    prediction = _prediction(maps, spacing=(0.1, 0.1))
    assert [r.bbox for r in find_regions(prediction)] == [(8, 8, 12, 16)]
    assert [r.bbox for r in find_regions(prediction, "normal")] == [(0, 0, 4, 4)]
    assert find_regions(prediction).regions[0].area_mm2 == pytest.approx(32 * 0.01)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 3, 4)), "2D"),
    (np.array([[0.0, np.nan]]), "non-finite"),
])
def test_bad_maps_are_refused(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        regions_from_map(bad)


def test_bad_spacing_and_missing_calibrated_map_are_refused() -> None:
    with pytest.raises(ValueError, match="spacing"):
        regions_from_map(np.ones((4, 4)), spacing=(0.0, 0.0))
    with pytest.raises(ValueError, match="calibrated"):
        regions_from_map(np.ones((4, 4)), options=RegionOptions(rule="absolute"))


@pytest.mark.parametrize("kwargs, message", [
    ({"rule": "fractoin"}, "did you mean 'fraction'"),
    ({"rule": "fraction", "value": 0.0}, r"\(0, 1\]"),
    ({"rule": "fraction", "value": 1.5}, r"\(0, 1\]"),
    ({"rule": "absolute", "value": 1.0}, r"\(0, 1\)"),
    ({"rule": "otsu", "value": 0.5}, "computes its own"),
    ({"smoothing": -1.0}, "smoothing"),
    ({"min_area": float("inf")}, "min_area"),
    ({"connectivity": 3}, "connectivity"),
])
def test_region_options_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RegionOptions(**kwargs)  # type: ignore[arg-type]


def test_rule_defaults_and_description() -> None:
    assert RegionOptions().value == 0.5
    assert RegionOptions(rule="absolute").value == 0.5
    assert RegionOptions(rule="otsu").value is None
    assert RegionOptions(rule="otsu").describe() == "Otsu's threshold on the positive-normalised map"
    assert RegionOptions(rule="absolute", value=0.7).describe() == "calibrated probability >= 0.7"
    assert RegionOptions(value=0.4, smoothing=2, min_area=10).describe() == (
        "fraction >= 0.4 of the map's maximum; Gaussian sigma 2; min area 10")


@pytest.mark.parametrize("text, expected", [
    ("0.4", ("fraction", 0.4)),
    ("fraction:0.3", ("fraction", 0.3)),
    ("absolute:0.7", ("absolute", 0.7)),
    ("prob:0.6", ("absolute", 0.6)),
    ("OTSU", ("otsu", None)),
    ("absolute", ("absolute", None)),
])
def test_parse_threshold(text: str, expected: tuple[str, float | None]) -> None:
    assert parse_threshold(text) == expected


@pytest.mark.parametrize("text, message", [("otsy", "did you mean 'otsu'"), ("fraction:abc", "not a number")])
def test_parse_threshold_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_threshold(text)


def test_class_names_are_case_insensitive() -> None:
    assert resolve_class(("NORMAL", "PNEUMONIA"), "pneumonia") == "PNEUMONIA"
    with pytest.raises(ConfigError, match="did you mean 'PNEUMONIA'"):
        resolve_class(("NORMAL", "PNEUMONIA"), "pneumona")
