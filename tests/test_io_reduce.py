"""Reduced-resolution decoding (``load_image(..., min_size=...)``) on real files.

The check that matters: the reduced image, resized to the model's 320 x 320, is the full image
resized to 320 x 320. Both are resized over the same source extent: reduced pixel ``j`` stands
for the source block ``[f j, f (j + 1))``, so ``m`` reduced pixels cover ``f m`` source pixels,
a few more or fewer than the image has (``f - 1`` at most); the full image is cut or
edge-padded to that extent first. The plain stretch of both (extent ignored) is reported too.

The tolerance is for the two resizes, not the decoders: an antialiased 1024 -> 320 and a
512 -> 320 resize low-pass differently, by up to 13 grey levels of 255 (0.05) at the burnt-in
letters of an RSNA file even when the 512 x 512 image is the exact block mean of the stored
values; the mean difference is what a decoder error would move.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

import medcam.io.reduce
from medcam.io import Image, load_image
from medcam.io.openjpeg import decoded_levels, library_version
from medcam.io.reduce import MAX_BLOCK_FACTOR, block_mean, reduction_factor

DataPath = Callable[[str], Path]
SIZE = 320
MAX_DIFFERENCE = 0.08  # display units in [0, 1], anywhere on the 320 x 320 grid
MEAN_DIFFERENCE = 0.005


def stretch(pixels: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Antialiased bilinear resize to ``size x size``, as ``medcam.models.grid`` resizes."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0, 0].numpy()


def on_reduced_extent(full: Image, reduced: Image) -> np.ndarray:
    """The full image's pixels over the source extent of the reduced image's pixels."""
    rows, cols = (reduced.reduction * n for n in reduced.shape)
    pixels = full.pixels[0, :rows, :cols]
    return np.pad(pixels, ((0, rows - pixels.shape[0]), (0, cols - pixels.shape[1])), mode="edge")


def compare(full: Image, reduced: Image) -> tuple[float, float, str]:
    """``(max, mean)`` absolute difference at 320 x 320 over the same extent, and a report."""
    same_extent = np.abs(stretch(on_reduced_extent(full, reduced)) - stretch(reduced.pixels[0]))
    plain = np.abs(stretch(full.pixels[0]) - stretch(reduced.pixels[0]))
    report = (f"{Path(full.path).name}: 1/{reduced.reduction} ({reduced.display.split(';')[0]}), "
              f"{full.shape} -> {reduced.shape}; at {SIZE}x{SIZE} over the same extent max "
              f"{same_extent.max():.4f} mean {same_extent.mean():.5f}; plain stretch max "
              f"{plain.max():.4f} mean {plain.mean():.5f}")
    return float(same_extent.max()), float(same_extent.mean()), report


def assert_close_at_model_size(path: Path, expected_method: str, expected_factor: int) -> Image:
    full = load_image(path)
    reduced = load_image(path, min_size=SIZE)
    assert reduced.reduction == expected_factor, reduced.display
    assert reduced.display.startswith(expected_method), reduced.display
    assert reduced.full_shape == full.shape and full.full_shape == full.shape and full.reduction == 1
    assert min(reduced.shape) >= 1.25 * SIZE
    assert reduced.pixels.dtype == np.float32
    worst, mean, report = compare(full, reduced)
    assert worst <= MAX_DIFFERENCE and mean <= MEAN_DIFFERENCE, report
    print(report)
    return reduced


@pytest.mark.parametrize(("name", "method", "factor"), [
    ("RG1_UNCR.dcm", "block mean 2x2", 2),  # block means stop at MAX_BLOCK_FACTOR
    ("RG1_J2KR.dcm", "JPEG 2000 decoded 1 resolution levels down", 2),  # MAX_LEVELS
    ("RG1_J2KI.dcm", "JPEG 2000 decoded 1 resolution levels down", 2),
    ("RG3_J2KR.dcm", "JPEG 2000 decoded 1 resolution levels down", 2),
    ("MR2_J2KR.dcm", "JPEG 2000 decoded 1 resolution levels down", 2),
])
def test_pydicom_data_files_reduced_match_the_full_image_at_model_size(
    name: str, method: str, factor: int, testdata: DataPath
) -> None:
    if "J2K" in name and library_version() is None:
        pytest.skip("no OpenJPEG library: JPEG 2000 falls back to block means")
    assert_close_at_model_size(testdata(name), method, factor)


@pytest.mark.parametrize("name", ["RG1_RLE.dcm", "RG1_JLSL.dcm"])
def test_rle_and_jpeg_ls_reduce_by_block_means(name: str, rg1_data: Path) -> None:
    assert_close_at_model_size(rg1_data / "dicom" / name, "block mean 2x2", MAX_BLOCK_FACTOR)


def test_rsna_jpeg_baseline_at_half_size_is_decoded_in_full_and_block_averaged(rsna_dicoms: list[Path]) -> None:
    """DCT scaling at 1/2 moved an RSNA film beyond the probability budget (medcam.io.reduce)."""
    for path in rsna_dicoms:
        assert_close_at_model_size(path, "block mean 2x2", 2)


def test_a_jpeg_baseline_dicom_made_from_rg1_reduces_by_dct_scaling(
    rg1: Image, testdata: DataPath, tmp_path: Path
) -> None:
    """pydicom's corpus has no grayscale JPEG baseline radiograph: encode RG1's display."""
    ds = pydicom.dcmread(testdata("RG1_UNCR.dcm"))
    values = np.rint(rg1.pixels[0] * 255).astype(np.uint8)
    buffer = tmp_path / "rg1.jpg"
    PILImage.fromarray(values).save(buffer, quality=90)
    ds.PixelData = encapsulate([buffer.read_bytes()])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.WindowCenter, ds.WindowWidth = 128, 256
    path = tmp_path / "RG1_JPEG.dcm"
    ds.save_as(path)
    reduced = assert_close_at_model_size(path, "JPEG DCT scaled 1/4", 4)
    assert reduced.shape == (math.ceil(1955 / 4), math.ceil(1841 / 4))


def test_jpeg_2000_samples_are_moved_onto_the_block_centres(
    testdata: DataPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A level-r JPEG 2000 sample is centred on source f j, half a block before the block's
    centre: without the move the reduced image is further from the full one."""
    if library_version() is None:
        pytest.skip("no OpenJPEG library")
    path = testdata("RG3_J2KR.dcm")
    full = load_image(path)
    _, moved, _ = compare(full, load_image(path, min_size=SIZE))
    monkeypatch.setattr(medcam.io.reduce, "_onto_blocks", lambda samples, factor, precision: samples)
    _, unmoved, _ = compare(full, load_image(path, min_size=SIZE))
    assert moved < 0.6 * unmoved, (moved, unmoved)


@pytest.mark.parametrize(("precision", "signed"), [(8, False), (12, False), (15, False), (16, False), (16, True),
                                                 (20, False)])
@pytest.mark.parametrize("factor", [2, 4, 8, 16])
def test_moving_onto_block_centres_is_exact(precision: int, signed: bool, factor: int) -> None:
    """OpenJPEG hands over int32 samples of ``precision`` bits; the interpolation equals its
    exact rational value, in float32 up to 16 bits at factors up to 8, else in float64."""
    low, high = (-(2 ** (precision - 1)), 2 ** (precision - 1) - 1) if signed else (0, 2**precision - 1)
    samples = np.random.default_rng(factor).integers(low, high, (37, 29), endpoint=True).astype(np.int32)
    samples[:2, :2] = high  # the largest values take the most bits
    moved = medcam.io.reduce._onto_blocks(samples, factor, precision)
    assert moved.dtype == (np.float32 if precision <= 16 and factor <= 8 else np.float64)
    w = Fraction(factor - 1, 2 * factor)

    def at(r: int, c: int) -> Fraction:
        return Fraction(int(samples[min(r, 36), min(c, 28)]))

    for i, j in [(0, 0), (5, 7), (36, 3), (12, 28), (36, 28)]:
        top = (1 - w) * at(i, j) + w * at(i + 1, j)
        bottom = (1 - w) * at(i, j + 1) + w * at(i + 1, j + 1)
        assert Fraction(float(moved[i, j])) == (1 - w) * top + w * bottom, (i, j)


def test_jpeg_2000_reduced_decode_moves_samples_in_float32(
    testdata: DataPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RG1 (15 bits), reduced for the model, takes the float32 path: OpenJPEG's int32 samples do not force float64."""
    if library_version() is None:
        pytest.skip("no OpenJPEG library")
    seen: list[np.dtype] = []
    original = medcam.io.reduce._onto_blocks

    def spy(samples: np.ndarray, factor: int, precision: int) -> np.ndarray:
        seen.append(original(samples, factor, precision).dtype)
        return original(samples, factor, precision)

    monkeypatch.setattr(medcam.io.reduce, "_onto_blocks", spy)
    load_image(testdata("RG1_J2KR.dcm"), min_size=SIZE)
    assert seen == [np.dtype(np.float32)]


def test_reduced_geometry_spacing_affine_and_full_shape(testdata: DataPath) -> None:
    path = testdata("CT_small.dcm")  # 128 x 128, 0.66 mm, with a patient position/orientation
    full = load_image(path)
    reduced = load_image(path, min_size=32)  # 1.25 * 32 = 40 <= 128 // 3, but block means stop at 2
    f = MAX_BLOCK_FACTOR
    assert reduced.reduction == f and reduced.shape == (64, 64) and reduced.full_shape == (128, 128)
    assert full.spacing is not None and reduced.spacing == pytest.approx(
        (full.spacing[0] * f, full.spacing[1] * f))
    assert full.affine is not None and reduced.affine is not None
    for col, row in [(0, 0), (63, 0), (7, 30)]:
        source = [f * col + (f - 1) / 2, f * row + (f - 1) / 2, 0, 1]  # the block's centre
        np.testing.assert_allclose(reduced.affine @ [col, row, 0, 1], full.affine @ source)
    stored = pydicom.dcmread(path).pixel_array
    expected = load_image(path, voi=(40.0, 400.0)).pixels[0].reshape(64, 2, 64, 2)
    windowed = load_image(path, voi=(40.0, 400.0), min_size=32).pixels[0]
    assert np.abs(windowed - expected.mean(axis=(1, 3))).mean() < 0.01
    assert block_mean(stored, 3).shape == (42, 42)


def test_without_min_size_or_when_too_small_nothing_is_reduced(testdata: DataPath) -> None:
    full = load_image(testdata("MR_small.dcm"))
    same = load_image(testdata("MR_small.dcm"), min_size=320)
    assert same.reduction == 1 and same.full_shape == (64, 64)
    np.testing.assert_array_equal(same.pixels, full.pixels)
    assert same.display == full.display


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_min_size_must_be_a_positive_integer(bad: object, testdata: DataPath) -> None:
    with pytest.raises(ValueError, match="min_size must be a positive integer or None"):
        load_image(testdata("MR_small.dcm"), min_size=bad)  # type: ignore[arg-type]


def test_reduction_factor_keeps_both_sides_above_the_margin() -> None:
    assert reduction_factor((1955, 1841), 320) == 4  # 1841 // 4 = 460 >= 400 > 1841 // 5
    assert reduction_factor((1955, 1841), 320, powers_of_two=True, rounding=math.ceil) == 4
    assert reduction_factor((1024, 1024), 320) == 2
    assert reduction_factor((3000, 2500), 224) == 8  # 2500 // 8 = 312 >= 280 > 2500 // 9
    assert reduction_factor((3000, 2500), 224, powers_of_two=True) == 8
    assert reduction_factor((399, 5000), 320) == 1
    assert reduction_factor((5000, 5000), None) == 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_block_mean_rounds_whole_blocks_in_the_stored_type(dtype: type, factor: int) -> None:
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else np.finfo(dtype)
    low, high = max(int(info.min), -40000), min(int(info.max), 70000)
    stored = np.random.default_rng(factor).integers(low, high, (53, 71), endpoint=True).astype(dtype)
    stored[:factor, :factor] = high  # a block at the type's top does not overflow
    means = block_mean(stored, factor)
    rows, cols = 53 // factor, 71 // factor
    exact = stored[: rows * factor, : cols * factor].astype(np.float64).reshape(rows, factor, cols, factor).mean(
        axis=(1, 3))
    assert means.dtype == dtype and means.shape == (rows, cols)
    if np.issubdtype(dtype, np.integer):
        np.testing.assert_array_equal(means, np.rint(exact))  # halves to even
    else:
        np.testing.assert_allclose(means, exact, rtol=1e-6)


def test_decoded_levels_reads_the_cod_marker(testdata: DataPath) -> None:
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(testdata("RG1_J2KR.dcm"))
    assert decoded_levels(next(generate_frames(ds.PixelData, number_of_frames=1))) == 5
    assert decoded_levels(b"\xff\xd8\xff\xe0 not a J2K codestream") == 0
