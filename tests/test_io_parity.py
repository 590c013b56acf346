"""medcam's DICOM display pipeline against pydicom's own, on every corpus file it accepts.

The reference runs pydicom's functions on every pixel of ``pixel_array`` (decoded by pydicom's
default plugins, not medcam's preferred ones): :func:`~pydicom.pixels.apply_modality_lut`, then
:func:`~pydicom.pixels.apply_voi_lut` scaled by its full output range (or, without a VOI, the
0.5th-99.5th percentiles that :mod:`medcam.io.dicom` documents), then
:func:`~pydicom.pixels.apply_presentation_lut` with the shape medcam's polarity rule gives
(the file's Presentation LUT Shape, else INVERSE for MONOCHROME1). Agreement is asked to 8-bit
display precision: at most 1/255 apart anywhere.

Every file of pydicom's corpus and pydicom-data's is tried (files over 20 MB are skipped, none
is today); files that ``load_image`` refuses are skipped with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset, FileMetaDataset
from pydicom.data import get_testdata_files
from pydicom.pixels import apply_modality_lut, apply_presentation_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

import medcam.io.dicom
from medcam.errors import UnsupportedInputError
from medcam.io import Image, load_image

DataPath = Callable[[str], Path]
MAX_BYTES = 20_000_000
TOLERANCE = 1 / 255


def _corpus() -> list[Path]:
    files = {Path(f) for f in get_testdata_files()}
    return sorted(f for f in files if f.is_file() and f.stat().st_size <= MAX_BYTES)


def _corpus_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


CORPUS = _corpus()


def _window_output_range(ds: Dataset) -> tuple[float, float]:
    """The output range of pydicom's :func:`apply_windowing`, as its documentation gives it."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** ds.ModalityLUTSequence[0].LUTDescriptor[2] - 1)
    bits = int(ds.BitsStored)
    low, high = (0, 2**bits - 1) if ds.PixelRepresentation == 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    return float(low), float(high)


def reference_display(ds: Dataset) -> np.ndarray:
    """pydicom's pipeline on every pixel, in [0, 1] (see the module documentation)."""
    modality = apply_modality_lut(ds.pixel_array, ds)
    if ds.get("VOILUTSequence"):
        values = apply_voi_lut(modality, ds).astype(np.float64)
        lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
        low, high = float(lut.min()), float(lut.max())
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        values = apply_voi_lut(modality, ds).astype(np.float64)
        low, high = _window_output_range(ds)
    else:
        values = modality.astype(np.float64)
        low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    unit = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
    shape = str(ds.get("PresentationLUTShape", "")).strip().upper()
    inverse = shape == "INVERSE" or (shape != "IDENTITY" and ds.PhotometricInterpretation == "MONOCHROME1")
    presentation = Dataset()
    presentation.PresentationLUTShape = "INVERSE" if inverse else "IDENTITY"
    # pydicom inverts about the array's maximum: append the range's ends so that it is 1
    ends = np.append(unit.ravel(), [0.0, 1.0])
    return np.asarray(apply_presentation_lut(ends, presentation)[:-2]).reshape(unit.shape)


def assert_parity(image: Image, path: Path) -> None:
    expected = reference_display(pydicom.dcmread(path))
    assert image.pixels.shape == (1, *expected.shape)
    difference = float(np.abs(image.pixels[0].astype(np.float64) - expected).max())
    assert difference <= TOLERANCE, (
        f"{path.name}: medcam and pydicom differ by up to {difference:.5f} "
        f"(> 1/255) with display {image.display!r}"
    )


@pytest.mark.filterwarnings("ignore")  # the corpus holds files that pydicom warns about on purpose
@pytest.mark.parametrize("path", CORPUS, ids=_corpus_id)
def test_corpus_file_matches_pydicoms_pipeline(path: Path) -> None:
    try:
        image = load_image(path)
    except UnsupportedInputError as err:
        pytest.skip(f"refused by load_image: {err.reason[:120]}")
    assert image.format == "dicom"
    assert_parity(image, path)


def test_the_corpus_holds_the_files_this_test_is_about() -> None:
    names = {path.name for path in CORPUS}
    assert len(CORPUS) > 200
    assert {"RG1_UNCR.dcm", "CT_small.dcm", "mlut_18.dcm", "vlut_04.dcm", "MR_small.dcm",
            "JPEG2000.dcm", "SC_jpeg_no_color_transform.dcm"} <= names


# --- crafted edge cases ----------------------------------------------------------------------


def write_dicom(path: Path, stored: np.ndarray, **attributes: object) -> Path:
    """A single-frame grayscale Secondary Capture holding ``stored``, with ``attributes``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = stored.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = int(stored.dtype.kind == "i")
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _signed_wide() -> np.ndarray:
    stored = np.random.default_rng(11).integers(-1000, 32001, (512, 512)).astype(np.int16)
    stored[0, :2] = -1000, 32000  # values span 33,001 > 32,767 entries, a table of them
    return stored


def _ramp(shape: tuple[int, int], low: int, high: int, dtype: type) -> np.ndarray:
    values = np.linspace(low, high, shape[0] * shape[1]).reshape(shape)
    return np.rint(values).astype(dtype)


def _lut_item(descriptor: list[int], data: np.ndarray) -> Dataset:
    item = Dataset()  # the VRs are ambiguous in the dictionary: say which
    item.add_new("LUTDescriptor", "SS" if descriptor[1] < 0 else "US", descriptor)
    item.add_new("LUTData", "US", [int(v) for v in data])
    return item


CRAFTED: dict[str, Callable[[Path], Path]] = {
    "signed wide range, window": lambda p: write_dicom(
        p, _signed_wide(), WindowCenter=15500, WindowWidth=33000),
    "signed wide range, no VOI": lambda p: write_dicom(p, _signed_wide()),
    "signed wide range, MONOCHROME1 with rescale": lambda p: write_dicom(
        p, _signed_wide(), PhotometricInterpretation="MONOCHROME1", RescaleSlope=2,
        RescaleIntercept=-100, WindowCenter=20000, WindowWidth=50000),
    "Presentation LUT Shape INVERSE": lambda p: write_dicom(
        p, _ramp((64, 80), 0, 4095, np.uint16), BitsStored=12, HighBit=11, WindowCenter=2048,
        WindowWidth=4096, PresentationLUTShape="INVERSE"),
    "Presentation LUT Shape IDENTITY": lambda p: write_dicom(
        p, _ramp((64, 80), 0, 4095, np.uint16), BitsStored=12, HighBit=11, WindowCenter=1000,
        WindowWidth=3000, PresentationLUTShape="IDENTITY"),
    "MONOCHROME1 with Presentation LUT Shape INVERSE": lambda p: write_dicom(
        p, _ramp((64, 80), 0, 4095, np.uint16), BitsStored=12, HighBit=11, WindowCenter=2048,
        WindowWidth=4096, PhotometricInterpretation="MONOCHROME1", PresentationLUTShape="INVERSE"),
    "MONOCHROME1 with Presentation LUT Shape IDENTITY": lambda p: write_dicom(
        p, _ramp((64, 80), 0, 4095, np.uint16), BitsStored=12, HighBit=11,
        PhotometricInterpretation="MONOCHROME1", PresentationLUTShape="IDENTITY"),
    "Modality LUT Sequence on signed values": lambda p: write_dicom(
        p, _ramp((100, 90), -600, 3000, np.int16),
        ModalityLUTSequence=[_lut_item([4096, -512, 16],
                                       np.rint(65535 * (np.arange(4096) / 4095) ** 0.5))],
        WindowCenter=30000, WindowWidth=50000),
    "VOI LUT Sequence, 12-bit, MONOCHROME1 after a rescale": lambda p: write_dicom(
        p, _ramp((100, 90), 0, 4000, np.uint16), BitsStored=12, HighBit=11, RescaleSlope=1,
        RescaleIntercept=-200, PhotometricInterpretation="MONOCHROME1",
        VOILUTSequence=[_lut_item([3000, -100, 12],
                                  np.rint(4095 * (np.arange(3000) / 2999) ** 2))]),
    "SIGMOID window": lambda p: write_dicom(
        p, _ramp((64, 80), 0, 4095, np.uint16), BitsStored=12, HighBit=11, WindowCenter=1500,
        WindowWidth=800, VOILUTFunction="SIGMOID"),
    "LINEAR_EXACT window": lambda p: write_dicom(
        p, _ramp((64, 80), 0, 255, np.uint8), WindowCenter=100, WindowWidth=50,
        VOILUTFunction="LINEAR_EXACT"),
}


@pytest.mark.filterwarnings("ignore:Applying a VOI LUT on a float input")  # the reference's
@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_edge_case_matches_pydicoms_pipeline(case: str, tmp_path: Path) -> None:
    path = CRAFTED[case](tmp_path / "crafted.dcm")
    image = load_image(path)
    assert_parity(image, path)


def test_the_signed_wide_case_goes_through_the_lookup_table(tmp_path: Path) -> None:
    path = CRAFTED["signed wide range, window"](tmp_path / "wide.dcm")
    index, table = medcam.io.dicom._lookup(pydicom.dcmread(path).pixel_array)
    assert index is not None and table.size == 33001


def test_inverse_shape_and_monochrome1_are_one_inversion_not_two(tmp_path: Path) -> None:
    inverse = load_image(CRAFTED["Presentation LUT Shape INVERSE"](tmp_path / "inverse.dcm"))
    both = load_image(CRAFTED["MONOCHROME1 with Presentation LUT Shape INVERSE"](tmp_path / "both.dcm"))
    np.testing.assert_array_equal(both.pixels, inverse.pixels)
    ramp = inverse.pixels[0].ravel()
    assert ramp[0] == 1.0 and ramp[-1] == 0.0  # the lowest stored value is displayed white
