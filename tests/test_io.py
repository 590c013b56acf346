"""medcam.io on real files: DICOM display pipeline, transfer syntaxes, NIfTI, PNG/JPEG, refusals."""

from __future__ import annotations

import filecmp
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, get_decoder, pixel_array
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    SegmentationStorage,
    generate_uid,
)

import medcam.io.dicom
from medcam.errors import UnsupportedInputError
from medcam.io import (
    DICOMDIR_REASON,
    Image,
    detect_format,
    is_dicomdir,
    load_image,
    read_dicom,
    read_nifti,
)
from medcam.io.discover import iter_images

DataPath = Callable[[str], Path]


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, written out by hand, output range [0, 1]."""
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def refused(path: Path, reason: str, **kwargs: object) -> UnsupportedInputError:
    """Load ``path``, expect a refusal whose message names the file and contains ``reason``."""
    with pytest.raises(UnsupportedInputError) as caught:
        load_image(path, **kwargs)  # type: ignore[arg-type]
    err = caught.value
    assert err.path == str(path)
    assert str(path) in str(err)
    assert reason in str(err)
    return err


# --- RG1: a real chest PA CR, MONOCHROME1 --------------------------------------------------------


def test_rg1_uncompressed_and_j2k_lossless_decode_identically(
    rg1: Image, testdata: DataPath
) -> None:
    j2k = load_image(testdata("RG1_J2KR.dcm"))
    assert rg1.shape == (1955, 1841)
    assert pydicom.dcmread(j2k.path, stop_before_pixels=True).file_meta.TransferSyntaxUID == (
        pydicom.uid.JPEG2000Lossless
    )
    np.testing.assert_array_equal(j2k.pixels, rg1.pixels)


def test_rg1_monochrome1_is_windowed_then_inverted(rg1: Image) -> None:
    ds = pydicom.dcmread(rg1.path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (15000.0, 30000.0)
    expected = 1.0 - linear_window(ds.pixel_array.astype(np.float64), 15000.0, 30000.0)
    np.testing.assert_allclose(rg1.pixels[0], expected, atol=1e-6)
    assert rg1.display.endswith("MONOCHROME1 inverted")


def test_rg1_air_is_darker_than_the_mediastinum(rg1: Image) -> None:
    pixels = rg1.pixels[0]
    rows, cols = rg1.shape
    mediastinum = pixels[rows // 2 - 50 : rows // 2 + 50, cols // 2 - 50 : cols // 2 + 50].mean()
    for corner in (pixels[:50, :50], pixels[:50, -50:]):  # air above the shoulders
        assert corner.mean() < mediastinum - 0.3
    assert pixels.dtype == np.float32
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0


def test_rg1_zero_pixel_spacing_means_unknown_spacing(rg1: Image) -> None:
    ds = pydicom.dcmread(rg1.path, stop_before_pixels=True)
    assert [float(v) for v in ds.PixelSpacing] == [0.0, 0.0]
    assert "ImagerPixelSpacing" not in ds
    assert rg1.spacing is None
    assert rg1.affine is not None
    np.testing.assert_array_equal(rg1.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))  # 1 mm, LPS -> RAS


def test_rg1_identity_and_header(rg1: Image) -> None:
    ds = pydicom.dcmread(rg1.path, stop_before_pixels=True)
    assert rg1.identity is not None
    assert rg1.identity.sop_instance_uid == ds.SOPInstanceUID
    assert rg1.identity.sop_class_uid == pydicom.uid.ComputedRadiographyImageStorage
    assert rg1.identity.patient_id == "9RG1"
    assert rg1.dicom is not None and "PixelData" not in rg1.dicom


# --- transfer syntaxes ---------------------------------------------------------------------------

MR_SMALL_TWINS = (
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_padded.dcm",
)


@pytest.mark.parametrize("name", MR_SMALL_TWINS)
def test_mr_small_transfer_syntaxes_give_identical_pixels(name: str, testdata: DataPath) -> None:
    reference = load_image(testdata("MR_small.dcm"))
    with pytest.warns(UserWarning, match="excess padding") if "padded" in name else nullcontext():
        twin = load_image(testdata(name))
    np.testing.assert_array_equal(twin.pixels, reference.pixels)
    assert twin.spacing == reference.spacing == (0.3125, 0.3125)
    assert twin.display == reference.display


def test_deflated_transfer_syntax_gives_identical_pixels(
    testdata: DataPath, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(testdata("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "MR_small_deflate.dcm"
    ds.save_as(path)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    reference = load_image(testdata("MR_small.dcm"))
    np.testing.assert_array_equal(load_image(path).pixels, reference.pixels)


def test_j2k_lossless_with_rescale_matches_uncompressed(testdata: DataPath) -> None:
    uncompressed = load_image(testdata("MR2_UNCR.dcm"))
    np.testing.assert_array_equal(load_image(testdata("MR2_J2KR.dcm")).pixels, uncompressed.pixels)
    assert uncompressed.display.startswith("rescale x3.77")


@pytest.mark.parametrize("name", ["JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "image_dfl.dcm"])
def test_jpeg_lossless_and_deflate_files_without_a_twin_load(name: str, testdata: DataPath) -> None:
    ds = pydicom.dcmread(testdata(name))
    image = load_image(testdata(name))
    assert image.shape == (ds.Rows, ds.Columns)
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0
    assert np.unique(image.pixels).size > 10


@pytest.mark.parametrize("name", ["RG1_JLSL.dcm", "RG1_RLE.dcm"])
def test_rg1_fixture_reencodings_match_rg1(name: str, rg1_data: Path, rg1: Image) -> None:
    path = rg1_data / "dicom" / name
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert syntax == (pydicom.uid.JPEGLSLossless if "JLSL" in name else pydicom.uid.RLELossless)
    np.testing.assert_array_equal(load_image(path).pixels, rg1.pixels)


def test_rg1_fixture_originals_are_pydicom_data_copies(rg1_data: Path, testdata: DataPath) -> None:
    for name in ("RG1_UNCR.dcm", "RG1_J2KR.dcm"):
        assert filecmp.cmp(rg1_data / "dicom" / name, testdata(name), shallow=False)


# --- modality LUT and VOI ------------------------------------------------------------------------


def test_ct_rescale_is_applied_before_the_window(testdata: DataPath) -> None:
    ds = pydicom.dcmread(testdata("CT_small.dcm"))
    assert float(ds.RescaleIntercept) == -1024.0
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    image = load_image(testdata("CT_small.dcm"), voi=(40.0, 400.0))
    np.testing.assert_allclose(image.pixels[0], linear_window(hu, 40.0, 400.0), atol=1e-6)
    assert image.display == "rescale x1 -1024; window C=40 W=400"


def test_ct_without_voi_uses_percentiles_of_hounsfield_units(testdata: DataPath) -> None:
    ds = pydicom.dcmread(testdata("CT_small.dcm"))
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    low, high = np.percentile(hu, [0.5, 99.5])
    image = load_image(testdata("CT_small.dcm"))
    np.testing.assert_allclose(image.pixels[0], np.clip((hu - low) / (high - low), 0, 1), atol=1e-6)
    assert "no VOI" in image.display


def test_modality_lut_sequence_is_applied(testdata: DataPath) -> None:
    ds = pydicom.dcmread(testdata("mlut_18.dcm"))
    assert "ModalityLUTSequence" in ds
    lut_values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    assert lut_values.min() >= 0 > ds.pixel_array.min()  # the LUT maps signed stored values
    image = load_image(testdata("mlut_18.dcm"), voi=(32768.0, 65536.0))
    expected = linear_window(lut_values, 32768.0, 65536.0)
    np.testing.assert_allclose(image.pixels[0], expected, atol=1e-6)
    assert image.display.startswith("modality LUT")


def test_voi_lut_sequence_uses_the_full_output_range(testdata: DataPath) -> None:
    ds = pydicom.dcmread(testdata("vlut_04.dcm"))
    lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)  # 256 entries, 0 ... 65535
    image = load_image(testdata("vlut_04.dcm"))
    assert "VOI LUT" in image.display
    expected = (lut[ds.pixel_array] - lut[0]) / (lut[-1] - lut[0])
    np.testing.assert_allclose(image.pixels[0], expected, atol=1e-6)
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0
    asked = load_image(testdata("vlut_04.dcm"), voi="lut")
    np.testing.assert_array_equal(asked.pixels, image.pixels)


def test_a_non_linear_voi_lut_is_followed(testdata: DataPath, tmp_path: Path) -> None:
    ds = pydicom.dcmread(testdata("vlut_04.dcm"))
    lut = 1000 + np.rint(59000 * (np.arange(256) / 255) ** 2)  # vlut_04's own LUT is linear
    ds.VOILUTSequence[0].LUTData = lut.astype(np.uint16).tolist()
    path = tmp_path / "vlut_squared.dcm"
    ds.save_as(path)
    image = load_image(path)
    np.testing.assert_allclose(image.pixels[0], (lut[ds.pixel_array] - 1000) / 59000, atol=1e-6)
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0
    assert not np.allclose(image.pixels[0], ds.pixel_array / 255.0, atol=0.05)


def test_values_beyond_a_voi_luts_inputs_take_its_last_entry(
    testdata: DataPath, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(testdata("MR_small.dcm"))
    stored = ds.pixel_array.astype(np.float64)
    assert stored.max() > 1000  # far beyond the LUT's 256 inputs
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [256, 0, 8])
    item.add_new("LUTData", "US", list(range(256)))
    ds.VOILUTSequence = [item]
    path = tmp_path / "short_voi_lut.dcm"
    ds.save_as(path)
    # pydicom's apply_voi keeps value - first in the LUT's uint8, where 256 wraps to entry 0
    image = load_image(path)
    np.testing.assert_allclose(image.pixels[0], np.clip(stored, 0, 255) / 255, atol=1e-6)
    assert (image.pixels == 1.0).mean() > 0.5


def test_explicit_window_matches_file_window_and_narrow_window_saturates(
    testdata: DataPath,
) -> None:
    path = testdata("MR_small.dcm")
    ds = pydicom.dcmread(path)
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    auto = load_image(path)
    np.testing.assert_array_equal(load_image(path, voi=(center, width)).pixels, auto.pixels)
    np.testing.assert_array_equal(load_image(path, voi="window").pixels, auto.pixels)
    narrow = load_image(path, voi=(center, 100.0))

    def saturated(image: Image) -> int:
        return int(((image.pixels == 0) | (image.pixels == 1)).sum())

    assert saturated(narrow) > saturated(auto) + 1000
    assert narrow.display.endswith("window C=600 W=100")


@pytest.mark.parametrize(("name", "voi"), [
    ("CT_small.dcm", "auto"),  # signed, rescaled, windowed
    ("CT_small.dcm", "none"),  # percentiles of Hounsfield units
    ("CT_small.dcm", (40.0, 400.0)),
    ("mlut_18.dcm", (32768.0, 65536.0)),  # modality LUT sequence on signed values
    ("vlut_04.dcm", "auto"),  # VOI LUT sequence
    ("MR_small.dcm", "auto"),
    ("RG1_UNCR.dcm", "auto"),  # MONOCHROME1
])
def test_the_lookup_table_gives_exactly_the_pixels_of_the_steps_on_the_whole_image(
    name: str, voi: object, testdata: DataPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = testdata(name)
    index, table = medcam.io.dicom._lookup(pixel_array(path))
    assert index is not None and table.size < index.size  # the table is used for this file
    fast = load_image(path, voi=voi)  # type: ignore[arg-type]
    monkeypatch.setattr(medcam.io.dicom, "_lookup", lambda stored: (None, stored))
    whole = load_image(path, voi=voi)  # type: ignore[arg-type]
    assert fast.pixels.dtype == whole.pixels.dtype == np.float32
    if voi == "none":  # percentiles from value counts: the same up to float64 rounding
        np.testing.assert_allclose(fast.pixels, whole.pixels, rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(fast.pixels, whole.pixels)
    assert fast.display == whole.display


def test_percentiles_from_value_counts_match_numpy_on_the_image() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        table = rng.normal(size=int(rng.integers(1, 60))) * 1000
        table[::3] = np.round(table[::3])
        index = rng.integers(0, table.size, size=int(rng.integers(1, 5000)))
        q = [0.0, 0.5, float(rng.uniform(0, 100)), 99.5, 100.0]
        np.testing.assert_allclose(medcam.io.dicom._percentiles(table, index, q),
                                   np.percentile(table[index], q), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(("photometric", "shape", "inverted", "step"), [
    ("MONOCHROME2", None, False, ""),
    ("MONOCHROME2", "IDENTITY", False, ""),
    ("MONOCHROME2", "INVERSE", True, "inverted (Presentation LUT Shape INVERSE)"),
    ("MONOCHROME1", None, True, "MONOCHROME1 inverted"),
    # PS3.3 C.8.11.3: INVERSE is what MONOCHROME1 requires, one inversion, not two
    ("MONOCHROME1", "INVERSE", True, "MONOCHROME1 inverted (Presentation LUT Shape INVERSE)"),
    ("MONOCHROME1", "IDENTITY", False, "not inverted (Presentation LUT Shape IDENTITY)"),
])
def test_presentation_lut_shape_and_monochrome1_set_the_polarity(
    photometric: str, shape: str | None, inverted: bool, step: str, testdata: DataPath,
    tmp_path: Path,
) -> None:
    plain = load_image(testdata("MR_small.dcm"))
    ds = pydicom.dcmread(testdata("MR_small.dcm"))
    ds.PhotometricInterpretation = photometric
    if shape is not None:
        ds.PresentationLUTShape = shape
    path = tmp_path / "shaped.dcm"
    ds.save_as(path)
    image = load_image(path)
    expected = 1.0 - plain.pixels if inverted else plain.pixels
    np.testing.assert_allclose(image.pixels, expected, rtol=0, atol=1e-7)
    assert image.display == "; ".join(part for part in (plain.display, step) if part)


def test_a_signed_image_spanning_more_than_32767_values_uses_a_correct_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    stored = rng.integers(-1000, 32001, (512, 512)).astype(np.int16)
    stored[0, :2] = -1000, 32000
    index, table = medcam.io.dicom._lookup(stored)
    assert index is not None and table.size == 33001 < stored.size  # the table is used
    np.testing.assert_array_equal(table[index], stored)


@pytest.mark.parametrize(("name", "voi"), [("CT_small.dcm", "window"), ("vlut_04.dcm", "window"),
                                           ("MR_small.dcm", "lut")])
def test_asking_for_a_missing_voi_is_refused(name: str, voi: str, testdata: DataPath) -> None:
    refused(testdata(name), f"voi='{voi}' asked for, but the file has no", voi=voi)


def test_window_width_must_be_positive(testdata: DataPath) -> None:
    with pytest.raises(ValueError, match="window width must be positive"):
        load_image(testdata("MR_small.dcm"), voi=(600.0, 0.0))


# --- RSNA pneumonia DICOMs (../shared) -----------------------------------------------------------


def test_rsna_dicoms_load_with_spacing_and_identity(rsna_dicoms: list[Path]) -> None:
    for path in rsna_dicoms:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
        image = load_image(path)
        assert image.pixels.shape == (1, 1024, 1024)
        assert image.format == "dicom"
        assert image.spacing == (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
        assert image.identity is not None
        assert image.identity.sop_instance_uid == ds.SOPInstanceUID
        assert image.identity.series_instance_uid == ds.SeriesInstanceUID
        assert image.identity.study_instance_uid == ds.StudyInstanceUID
        assert image.identity.sop_class_uid == ds.SOPClassUID
        assert image.identity.patient_id == ds.PatientID
        assert image.identity.frame_of_reference_uid == str(ds.get("FrameOfReferenceUID", ""))
        assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0


def _every_plugin(path: Path) -> dict[str, np.ndarray]:
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    return {plugin: pixel_array(path, decoding_plugin=plugin) for plugin in get_decoder(syntax).available_plugins}


def test_rsna_jpeg_baseline_decodes_the_same_with_every_installed_plugin(
    rsna_dicoms: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # read_dicom prefers Pillow (libjpeg-turbo) to pydicom's first choice, GDCM, for speed
    fast = [read_dicom(path).pixels for path in rsna_dicoms]
    monkeypatch.setattr(medcam.io.dicom, "_FAST_PLUGINS", {})
    for path, pixels in zip(rsna_dicoms, fast, strict=True):
        decoded = _every_plugin(path)
        assert {"gdcm", "pillow"} <= decoded.keys()
        for plugin, stored in decoded.items():
            np.testing.assert_array_equal(stored, decoded["gdcm"], err_msg=f"{path.name}: {plugin}")
        np.testing.assert_array_equal(pixels, read_dicom(path).pixels)


def test_jpeg_ls_decodes_the_same_with_every_installed_plugin(rg1_data: Path) -> None:
    decoded = _every_plugin(rg1_data / "dicom" / "RG1_JLSL.dcm")
    assert {"gdcm", "pyjpegls"} <= decoded.keys()
    for plugin, pixels in decoded.items():
        np.testing.assert_array_equal(pixels, decoded["gdcm"], err_msg=plugin)


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "693_J2KR.dcm", "MR2_J2KI.dcm", "JPEG2000.dcm"])
def test_jpeg_2000_lossless_and_lossy_decode_the_same_with_every_installed_plugin(
    name: str, testdata: DataPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    # read_dicom prefers OpenJPEG (pylibjpeg) to GDCM, which spends more CPU on its threads
    path = testdata(name)
    preferred = read_dicom(path).pixels
    decoded = _every_plugin(path)
    assert {"gdcm", "pylibjpeg"} <= decoded.keys()
    for plugin, pixels in decoded.items():
        np.testing.assert_array_equal(pixels, decoded["gdcm"], err_msg=plugin)
    monkeypatch.setattr(medcam.io.dicom, "_FAST_PLUGINS", {})
    np.testing.assert_array_equal(preferred, read_dicom(path).pixels)


# --- refusals ------------------------------------------------------------------------------------


def test_empty_files_are_refused_as_empty(tmp_path: Path) -> None:
    for name in ("empty.dcm", "empty.png", "IM0001"):
        path = tmp_path / name
        path.write_bytes(b"")
        assert refused(path, "empty file").reason == "empty file"
    with pytest.raises(UnsupportedInputError, match="empty file"):
        read_dicom(tmp_path / "empty.dcm")


def test_random_bytes_and_text_files_are_refused(tmp_path: Path) -> None:
    junk = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for name in ("junk.dcm", "junk.DICOM"):  # named as DICOM: say it is not one
        (tmp_path / name).write_bytes(junk)
        assert detect_format(tmp_path / name) is None
        refused(tmp_path / name, "not a DICOM file (no DICM preamble and no DICOM data set)")
    (tmp_path / "junk.bin").write_bytes(junk)
    text = tmp_path / "notes.txt"
    text.write_text("Chest PA: no consolidation.\n" * 20)
    for path in (tmp_path / "junk.bin", text):
        refused(path, "unknown format; expected DICOM, NIfTI (.nii/.nii.gz), PNG or JPEG")
    with pytest.raises(UnsupportedInputError, match="not a DICOM file"):
        read_dicom(text)


def test_rg1_cut_at_half_its_size_is_refused_as_truncated(testdata: DataPath, tmp_path: Path) -> None:
    whole = testdata("RG1_UNCR.dcm").read_bytes()
    path = tmp_path / "RG1_half.dcm"
    path.write_bytes(whole[: len(whole) // 2])
    err = refused(path, "truncated file: PixelData has ")
    assert err.reason.endswith(f"of its {1955 * 1841 * 2} bytes")


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # a UID cut in the middle
def test_a_dicom_cut_anywhere_is_refused_as_truncated(testdata: DataPath, tmp_path: Path) -> None:
    """Every cut of MR_small.dcm past its preamble, inside the header byte by byte and inside
    the pixel data, is refused; the reason says truncated, or (for a cut that falls exactly
    between two elements, which no reader can tell from a whole file) that an image object
    has no pixels because the file is cut short or its pixels were removed."""
    whole = testdata("MR_small.dcm").read_bytes()
    ds = pydicom.dcmread(testdata("MR_small.dcm"))
    pixel_start = ds.get_item("PixelData").value_tell
    cuts = [*range(132, pixel_start + 16), *range(pixel_start + 16, len(whole), 197), len(whole) - 1]
    path = tmp_path / "cut.dcm"
    reasons: dict[str, int] = {}
    for cut in cuts:
        path.write_bytes(whole[:cut])
        reason = refused(path, "").reason
        kind = "truncated" if reason.startswith("truncated file") else reason
        reasons[kind] = reasons.get(kind, 0) + 1
    between = "no pixel data in a MR Image Storage object (the file is cut short, or its pixels were removed)"
    assert set(reasons) == {"truncated", between}, reasons
    assert reasons[between] < len(ds) + 8  # one per element boundary at most (and File Meta's)
    assert reasons["truncated"] > 0.9 * len(cuts)


def test_a_dicom_cut_before_its_sequence_delimiter_is_refused_as_truncated(testdata: DataPath) -> None:
    with pytest.warns(UserWarning, match="End of file reached before delimiter"):
        err = refused(testdata("emri_small_jpeg_2k_lossless_too_short.dcm"), "truncated file: ")
    assert "undefined-length value is not closed by its delimiter" in err.reason


def test_dicomdirs_are_recognised_and_refused(testdata: DataPath, tmp_path: Path) -> None:
    dicomdir = testdata("DICOMDIR")
    assert is_dicomdir(dicomdir) and detect_format(dicomdir) == "dicom"
    refused(dicomdir, DICOMDIR_REASON)
    assert DICOMDIR_REASON == "DICOMDIR (a media directory, not an image)"
    assert not is_dicomdir(testdata("MR_small.dcm"))
    assert not is_dicomdir(testdata("rtplan.dcm"))
    junk = tmp_path / "DICOMDIR"
    junk.write_bytes(b"\0" * 300)
    assert not is_dicomdir(junk)


def test_a_dicomdir_among_images_is_skipped_unless_named(testdata: DataPath, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "DICOMDIR").write_bytes(testdata("DICOMDIR").read_bytes())
    (folder / "IM0001").write_bytes(testdata("MR_small.dcm").read_bytes())
    assert list(iter_images([folder])) == [folder / "IM0001"]
    assert list(iter_images([folder / "DICOMDIR"])) == [folder / "DICOMDIR"]


@pytest.mark.parametrize(("name", "reason"), [
    ("rtplan.dcm", "no pixel data (RT Plan Storage), not an image"),
    ("test-SR.dcm", "a structured report (Comprehensive SR Storage), not an image"),
    ("rtdose_1frame.dcm", "an RT dose grid"),
    ("SC_rgb.dcm", "colour image (Photometric Interpretation RGB)"),
    ("examples_palette.dcm", "colour image (Photometric Interpretation PALETTE COLOR)"),
    ("emri_small.dcm", "multi-frame image (10 frames)"),
    ("MR_truncated.dcm", "truncated file: PixelData has 8130 of its 8192 bytes"),
    ("rtstruct.dcm", "no pixel data (RT Structure Set Storage), not an image"),
])
def test_corpus_files_that_are_not_single_grayscale_images_are_refused(
    name: str, reason: str, testdata: DataPath
) -> None:
    refused(testdata(name), reason)


def test_segmentation_with_pixel_data_is_refused(tmp_path: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SegmentationStorage
    ds.SOPClassUID = SegmentationStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "SEG"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 4, 4, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(16))
    path = tmp_path / "seg.dcm"
    ds.save_as(path, enforce_file_format=True)
    refused(path, "segmentation/registration/raw-data object (Segmentation Storage), not an image")


def test_dicom_with_half_its_pixel_data_is_refused(testdata: DataPath, tmp_path: Path) -> None:
    ds = pydicom.dcmread(testdata("MR_small.dcm"))
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    path = tmp_path / "half.dcm"
    ds.save_as(path)
    err = refused(path, "truncated pixel data")
    assert "4096 vs 8192 bytes" in err.reason


def test_nifti_with_three_non_singleton_dimensions_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 6, 3), dtype=np.float32), np.eye(4)), path)
    refused(path, "unsupported NIfTI dimensions (8, 6, 3)")


def test_nifti_with_nan_is_refused(tmp_path: Path) -> None:
    data = np.ones((8, 6), dtype=np.float32)
    data[2, 3] = np.nan
    path = tmp_path / "nan.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    refused(path, "pixel values are not finite (NaN or Inf)")


def test_corrupt_nifti_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(b"not gzip at all" * 30)
    with pytest.raises(UnsupportedInputError, match="not a readable NIfTI file") as caught:
        read_nifti(path)
    assert str(path) in str(caught.value)


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    whole = tmp_path / "whole.png"
    PILImage.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert detect_format(cut) == "png"
    refused(cut, "corrupt or truncated image")


def test_missing_path_and_folder_are_refused(tmp_path: Path) -> None:
    refused(tmp_path / "nowhere.dcm", "no such file")
    refused(tmp_path, "is a folder, not a file")


# --- NIfTI ---------------------------------------------------------------------------------------


def _oblique_affine() -> np.ndarray:
    angle = np.deg2rad(20)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.25, 0.5, 2.0])
    affine[:3, 3] = [-12.0, 30.5, 7.0]
    return affine


def test_2d_nifti_keeps_affine_spacing_and_calibrated_scale(tmp_path: Path) -> None:
    data = np.random.default_rng(2).uniform(-50, 150, (7, 5)).astype(np.float32)
    nii = nib.Nifti1Image(data, _oblique_affine())
    nii.header["cal_min"], nii.header["cal_max"] = 0.0, 100.0
    path = tmp_path / "plane.nii.gz"
    nib.save(nii, path)
    image = load_image(path)
    assert image.format == "nifti" and image.shape == (5, 7) and image.affine is not None
    np.testing.assert_allclose(image.affine, _oblique_affine(), atol=1e-6)
    assert image.spacing == pytest.approx((0.5, 0.25))  # (row, col) = (zoom j, zoom i)
    np.testing.assert_allclose(image.pixels[0], np.clip(data.T / 100.0, 0, 1), atol=1e-6)
    assert image.display == "cal_min/cal_max"


def test_nifti_without_calibration_uses_percentiles_and_trailing_singletons(tmp_path: Path) -> None:
    data = np.arange(48, dtype=np.float32).reshape(8, 6, 1, 1)
    path = tmp_path / "plane.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    image = load_image(path)
    plane = data[:, :, 0, 0].T.astype(np.float64)
    low, high = np.percentile(plane, [0.5, 99.5])
    expected = np.clip((plane - low) / (high - low), 0, 1)
    np.testing.assert_allclose(image.pixels[0], expected, atol=1e-6)
    assert image.spacing == (1.0, 1.0)


def test_rg1_fixture_nifti_is_rg1_downsampled_with_its_affine(rg1_data: Path, rg1: Image) -> None:
    image = load_image(rg1_data / "nifti" / "RG1.nii.gz")
    assert rg1.affine is not None and image.affine is not None
    expected_affine = rg1.affine.copy()
    expected_affine[:3, :2] *= 4
    expected_affine[:3, 3] += rg1.affine[:3, :2] @ [1.5, 1.5]  # centre of the first 4x4 block
    np.testing.assert_allclose(image.affine, expected_affine)
    assert image.spacing == (4.0, 4.0)
    cropped = rg1.pixels[0, :1952, :1840].astype(np.float64)  # whole 4x4 blocks only
    blocks = cropped.reshape(488, 4, 460, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(image.pixels[0], blocks, atol=1e-6)
    header = nib.load(image.path).header
    assert isinstance(header, nib.Nifti1Header)
    assert "RG1_UNCR" in str(header["descrip"])


def test_rg1_fixture_png_is_rg1_downsized(rg1_data: Path, rg1: Image) -> None:
    image = load_image(rg1_data / "png" / "RG1.png")
    assert image.format == "png" and image.shape == (512, 482)
    assert abs(float(image.pixels.mean()) - float(rg1.pixels.mean())) < 0.01


# --- PNG / JPEG ----------------------------------------------------------------------------------


def test_8bit_gray_png(tmp_path: Path) -> None:
    values = np.array([[0, 51, 102], [153, 204, 255]], dtype=np.uint8)
    path = tmp_path / "gray8.png"
    PILImage.fromarray(values).save(path)
    image = load_image(path)
    assert image.format == "png" and image.spacing is None and image.affine is None
    np.testing.assert_allclose(image.pixels[0], values / 255.0, atol=1e-7)


def test_16bit_gray_png_uses_the_full_16_bit_range(tmp_path: Path) -> None:
    values = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    path = tmp_path / "gray16.png"
    PILImage.fromarray(values).save(path)
    assert PILImage.open(path).mode.startswith("I;16")
    np.testing.assert_allclose(load_image(path).pixels[0], values / 65535.0, atol=1e-7)


def test_rgb_png_is_converted_to_luminance(tmp_path: Path) -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [100, 100, 100]]], dtype=np.uint8)
    path = tmp_path / "rgb.png"
    PILImage.fromarray(rgb).save(path)
    image = load_image(path)
    # ITU-R 601-2: L = 0.299 R + 0.587 G + 0.114 B, as Pillow rounds it
    np.testing.assert_allclose(image.pixels[0], np.array([[76, 150], [29, 100]]) / 255.0, atol=1e-7)
    assert "luminance" in image.display


def test_jpeg_loads(tmp_path: Path) -> None:
    gradient = np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8)
    path = tmp_path / "gradient.jpeg"
    PILImage.fromarray(gradient).save(path, quality=95)
    image = load_image(path)
    assert image.format == "jpeg" and image.shape == (48, 64)
    np.testing.assert_allclose(image.pixels[0], gradient / 255.0, atol=4 / 255)


def test_format_is_judged_by_content_not_extension(tmp_path: Path, testdata: DataPath) -> None:
    png = tmp_path / "really_a_png.jpg"
    PILImage.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(png, format="PNG")
    assert detect_format(png) == "png"
    dicom = tmp_path / "IM0001"
    dicom.write_bytes(testdata("MR_small.dcm").read_bytes())
    assert detect_format(dicom) == "dicom"
    reference = load_image(testdata("MR_small.dcm"))
    np.testing.assert_array_equal(load_image(dicom).pixels, reference.pixels)


@pytest.mark.parametrize(("source", "file_meta", "implicit_vr", "little_endian"), [
    ("MR_small.dcm", True, False, True),
    ("MR_small.dcm", False, False, True),
    ("MR_small_implicit.dcm", False, True, True),
    ("MR_small_bigendian.dcm", False, False, False),
])
def test_dicom_without_preamble_loads(
    source: str, file_meta: bool, implicit_vr: bool, little_endian: bool, testdata: DataPath,
    tmp_path: Path,
) -> None:
    ds = pydicom.dcmread(testdata(source))
    ds.preamble = None
    if not file_meta:
        del ds.file_meta
    path = tmp_path / "no_preamble"
    ds.save_as(path, enforce_file_format=False, implicit_vr=implicit_vr,
               little_endian=little_endian)
    assert path.read_bytes()[128:132] != b"DICM"
    assert detect_format(path) == "dicom"
    reference = load_image(testdata("MR_small.dcm"))
    np.testing.assert_array_equal(load_image(path).pixels, reference.pixels)

