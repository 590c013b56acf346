"""The viewer's drawing: windows, presets, zoom, overlay and outlines coloured by decision."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from medcam.export.contours import mask_polygons
from medcam.regions import regions_from_map
from medcam.review.display import (
    DECISION_COLOURS,
    LUNG_COLOUR,
    PRESETS,
    View,
    apply_window,
    encode_png,
    preset_window,
    region_rows,
    render,
    zoom_box,
)


def test_window_formula() -> None:
    x = np.array([0.0, 0.2, 0.45, 0.7, 1.0], dtype=np.float32)
    np.testing.assert_allclose(apply_window(x, 0.45, 0.5), [0.0, 0.0, 0.5, 1.0, 1.0])
    default = PRESETS["default (file VOI)"]
    assert default is not None
    np.testing.assert_allclose(apply_window(x, *default), x)
    with pytest.raises(ValueError, match="width must be positive"):
        apply_window(x, 0.5, 0)


def test_presets() -> None:
    pixels = np.linspace(0.2, 0.6, 100, dtype=np.float32).reshape(1, 10, 10)
    assert preset_window("soft", pixels) == (0.45, 0.5)
    assert preset_window("bone", pixels) == (0.7, 0.5)
    level, width = preset_window("full range", pixels)
    assert level == pytest.approx(0.4) and width == pytest.approx(0.4)
    np.testing.assert_allclose(apply_window(pixels, level, width)[0, 0, [0]], [0.0], atol=1e-6)
    with pytest.raises(ValueError, match="unknown window preset 'lung'"):
        preset_window("lung", pixels)


def test_zoom_box_stays_inside() -> None:
    assert zoom_box((100, 200), 1, (0.5, 0.5)) == (0, 0, 100, 200)
    assert zoom_box((100, 200), 2, (0.5, 0.5)) == (25, 50, 75, 150)
    assert zoom_box((100, 200), 4, (0.0, 1.0)) == (0, 150, 25, 200)  # clamped to the corner


def _regions(shape: tuple[int, int] = (400, 300), spacing: tuple[float, float] | None = (0.5, 0.5)):
    heat = np.zeros(shape, np.float32)
    heat[50:100, 40:120] = 2.0
    heat[250:300, 200:260] = 1.5
    return regions_from_map(heat, spacing=spacing, class_name="PNEUMONIA", probability=0.8), heat


def test_render_size_overlay_and_decision_colours() -> None:
    regions, heat = _regions()
    pixels = np.full((1, 400, 300), 0.5, np.float32)
    plain = render(pixels, None, [], View(max_side=200))
    assert plain.shape == (200, 150, 3) and plain.dtype == np.uint8
    assert np.all(plain == 128)  # mid-grey, untouched
    shown = render(pixels, heat / heat.max(), regions.regions, View(max_side=200, opacity=0.6),
                   decisions={1: "accept", 2: "reject"})
    assert shown.shape == (200, 150, 3)
    assert not np.array_equal(shown[37, 40], plain[37, 40])  # the CAM tints region 1's inside

    def has(colour: tuple[int, int, int]) -> bool:
        return bool(np.any(np.all(np.abs(shown.astype(int) - colour) <= 10, axis=-1)))

    assert has(DECISION_COLOURS["accept"]) and has(DECISION_COLOURS["reject"])
    assert not has(DECISION_COLOURS[None])  # every region decided: no yellow outline
    small = render(pixels[:, :40, :30], None, [], View(max_side=200))
    assert small.shape == (40, 30, 3)  # small images are not enlarged unless zoomed
    zoomed = render(pixels, None, [], View(max_side=200, zoom=4, centre=(0.0, 0.0)))
    assert zoomed.shape == (200, 150, 3)


def test_outline_lands_on_the_region_when_zoomed() -> None:
    regions, _ = _regions()
    pixels = np.zeros((1, 400, 300), np.float32)
    view = View(zoom=2, centre=(75 / 400, 80 / 300), max_side=400)  # crop rows 0-200, cols 5-155, x2
    shown = render(pixels, None, regions.regions[:1], view, decisions={1: "accept"})
    green = np.all(np.abs(shown.astype(int) - DECISION_COLOURS["accept"]) <= 10, axis=-1)
    rows, cols = np.nonzero(green)
    row0, col0, _, _ = zoom_box((400, 300), 2, view.centre)
    scale = shown.shape[0] / 200
    # the outline hugs rows 50-99, cols 40-119 of the source (a few pixels of line width and label)
    assert (row0 + rows.max() / scale) == pytest.approx(100, abs=2)
    assert (col0 + cols.min() / scale) == pytest.approx(40, abs=2)
    assert (col0 + cols.max() / scale) == pytest.approx(120, abs=2)


def test_lung_outline_is_drawn_beneath_the_regions_where_the_lungs_end() -> None:
    regions, _ = _regions()
    lungs = np.zeros((400, 300), bool)
    lungs[20:380, 20:140] = True  # two lung fields
    lungs[20:380, 160:280] = True
    polygons = mask_polygons(lungs)
    assert len(polygons) == 2
    pixels = np.full((1, 400, 300), 0.5, np.float32)
    view = View(max_side=400)
    without = render(pixels, None, regions.regions, view)
    shown = render(pixels, None, regions.regions, view, lungs=polygons)
    magenta = np.all(shown == LUNG_COLOUR, axis=-1)
    assert not np.all(without == LUNG_COLOUR, axis=-1).any()
    boundary = lungs & ~np.pad(lungs[1:-1, 1:-1] & lungs[:-2, 1:-1] & lungs[2:, 1:-1] & lungs[1:-1, :-2]
                               & lungs[1:-1, 2:], 1)
    assert magenta[boundary].mean() > 0.95 and magenta.sum() < 2 * boundary.sum()  # on the edge, nowhere else
    np.testing.assert_array_equal(shown[~magenta], without[~magenta])  # nothing else changes
    with pytest.raises(ValueError, match="mask must be 2D"):
        mask_polygons(lungs[None])


def test_region_rows_in_mm_and_in_pixels() -> None:
    regions, _ = _regions()
    first = region_rows(regions.regions, {1: "accept"})[0]
    assert first["decision"] == "accept"
    assert first["area (mm²)"] == pytest.approx(50 * 80 * 0.25)
    assert (first["height (mm)"], first["width (mm)"]) == (25.0, 40.0)
    unknown, _ = _regions(spacing=None)
    row = region_rows(unknown.regions)[1]
    assert (row["decision"], row["area (px)"], row["height (px)"], row["width (px)"]) == ("undecided", 3000, 50, 60)


def test_encode_png_is_lossless() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (30, 20, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(encode_png(rgb)))), rgb)
    assert PILImage.open(io.BytesIO(encode_png(rgb))).info["Software"] == "medcam"  # refused if uploaded again
