"""Region exports: DICOM SEG and SC (highdicom read-back, dciodvfy), NIfTI, PNG, COCO JSON, CSV.

SR and GSPS: tests/test_export_sr.py and tests/test_export_gsps.py (all four DICOM objects
pass dciodvfy here).

Real files: the RSNA DICOMs in ../shared (skipped when absent) and RG1_UNCR.dcm (Pixel
Spacing 0\\0) from tests/data/rg1. Regions come from synthetic maps with known blobs, so that
every exported mask can be compared with the one that was meant. The lung fields (format
``lungs``) come from the bundled model and segmenter on RG1 (:func:`_served`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import cv2
import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image as PILImage
from pydicom import config as pydicom_config
from pydicom.data import get_testdata_file

import medcam
from medcam.cli import main
from medcam.errors import ConfigError, UnsupportedInputError
from medcam.export import FORMATS, export_regions, parse_formats
from medcam.export.contours import REGION_COLOUR, region_polygons
from medcam.export.lungs import LUNGS_SERIES_NUMBER, lung_mask
from medcam.export.sc import label_box
from medcam.export.table import COLUMNS
from medcam.gate import ServedModel
from medcam.io import Image, load_image
from medcam.models.predictor import Prediction
from medcam.regions import RegionSet, find_regions
from medcam.scoring import output_name, read_results

REPO = Path(__file__).resolve().parents[1]
RSNA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cxr" / "rsna"
RG1 = REPO / "tests" / "data" / "rg1" / "dicom" / "RG1_UNCR.dcm"
RG1_NIFTI = REPO / "tests" / "data" / "rg1" / "nifti" / "RG1.nii.gz"
RG1_PNG = REPO / "tests" / "data" / "rg1" / "png" / "RG1.png"


def _real_dicoms() -> list:
    rsna = sorted((RSNA / "dicom").glob("*.dcm")) if (RSNA / "dicom").is_dir() else []
    params = [pytest.param(p, id=f"rsna-{p.stem[:8]}") for p in rsna]
    if not params:
        params = [pytest.param(None, id="rsna", marks=pytest.mark.skip(
            reason=f"no RSNA DICOMs in {RSNA / 'dicom'} (../shared is not checked out here)"))]
    params.append(pytest.param(RG1, id="RG1_UNCR", marks=pytest.mark.skipif(
        not RG1.is_file(), reason=f"{RG1} is missing; run python tests/data/rg1/make_samples.py")))
    return params


REAL_DICOMS = _real_dicoms()


@cache
def _load(path: Path) -> Image:
    return load_image(path)


@cache
def _served_model() -> ServedModel:
    return ServedModel("bundled")


@cache
def _served(path: Path) -> Prediction:
    """The bundled model's prediction of ``path``, with the bundled lung segmenter's mask and share."""
    if not path.is_file():
        pytest.skip(f"{path} is missing; run python tests/data/rg1/make_samples.py")
    return _served_model().classify([_load(path)])[0]


def _prediction(image: Image, *, empty: bool = False) -> Prediction:
    """Two known blobs (a rectangle and an ellipse) on the image's grid; no region when ``empty``."""
    rows, cols = image.shape
    heat = torch.full((rows, cols), -1.0)
    if not empty:
        heat[rows // 5: rows // 2, cols // 6: cols // 2 - cols // 10] = 2.0
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        heat[((r - 0.65 * rows) / (0.1 * rows)) ** 2 + ((c - 0.7 * cols) / (0.12 * cols)) ** 2 <= 1] = 1.5
    maps = torch.stack([-heat, heat])
    return Prediction(image=image, probabilities=torch.tensor([0.2, 0.8]), logits=torch.tensor([-0.7, 0.7]),
                      maps=maps, classes=("NORMAL", "PNEUMONIA"), positive_class="PNEUMONIA", threshold=0.5,
                      model_id="synthetic-000000000000")


def _export(image: Image, out: Path, formats: tuple[str, ...] = FORMATS, **kwargs: object
            ) -> tuple[Prediction, RegionSet, dict[str, Path]]:
    prediction = _prediction(image, **kwargs)  # type: ignore[arg-type]
    regions = find_regions(prediction, "pneumonia")
    result = export_regions(prediction, regions, out, formats)
    assert not result.errors, result.errors
    return prediction, regions, result.files


def _dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]


# --- DICOM Segmentation -------------------------------------------------------------------


@pytest.mark.parametrize("source", REAL_DICOMS)
def test_seg_reads_back_to_the_identical_mask(source: Path, tmp_path: Path) -> None:
    image = _load(source)
    _, regions, files = _export(image, tmp_path, ("seg",))
    assert len(regions) == 2
    seg = hd.seg.segread(files["seg"])
    uid = image.identity.sop_instance_uid  # type: ignore[union-attr]
    pixels = seg.get_pixels_by_source_instance([uid], segment_numbers=[1])
    assert pixels.shape == (1, *image.shape, 1)
    np.testing.assert_array_equal(pixels[0, ..., 0].astype(bool), regions.mask)
    header = image.dicom
    assert header is not None
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "AccessionNumber"):
        assert seg.get(keyword) == header.get(keyword), keyword
    assert seg.SeriesInstanceUID != header.SeriesInstanceUID
    assert seg.SegmentationType == "BINARY"
    assert (uid, header.SOPClassUID) in {(ref.ReferencedSOPInstanceUID, ref.ReferencedSOPClassUID)
                                         for s in seg.ReferencedSeriesSequence for ref in s.ReferencedInstanceSequence}
    segment = seg.SegmentSequence[0]
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Opacity"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("medcam", medcam.__version__)
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"


def test_seg_of_a_zero_spacing_source_has_no_zero_spacing(tmp_path: Path) -> None:
    if not RG1.is_file():
        pytest.skip(f"{RG1} is missing; run python tests/data/rg1/make_samples.py")
    image = _load(RG1)
    assert image.spacing is None  # Pixel Spacing 0\0
    prediction = _prediction(image)
    regions = find_regions(prediction)
    assert all(r.area_mm2 is None and r.bbox_mm is None for r in regions)
    result = export_regions(prediction, regions, tmp_path, ("seg", "sc"))
    assert any("PixelSpacing" in note for note in result.notes)
    for path in result.files.values():
        ds = pydicom.dcmread(path)
        assert "PixelSpacing" not in ds
        assert all("PixelSpacing" not in item for item in ds.get("SharedFunctionalGroupsSequence", []))


def test_empty_regions_give_an_empty_seg_and_no_annotations(tmp_path: Path) -> None:
    if not RG1.is_file():
        pytest.skip(f"{RG1} is missing")
    image = _load(RG1)
    _, regions, files = _export(image, tmp_path, ("seg", "json", "csv"), empty=True)
    assert len(regions) == 0
    seg = hd.seg.segread(files["seg"])
    assert not seg.get_pixels_by_source_instance([image.identity.sop_instance_uid]).any()  # type: ignore[union-attr]
    assert json.loads(files["json"].read_text())["annotations"] == []
    assert files["csv"].read_text().strip() == ",".join(COLUMNS)


def test_seg_of_a_source_with_a_frame_of_reference(tmp_path: Path) -> None:
    image = load_image(str(get_testdata_file("CT_small.dcm")))
    _, regions, files = _export(image, tmp_path, ("seg",))
    seg = hd.seg.segread(files["seg"])
    assert len(regions) == 2
    assert seg.FrameOfReferenceUID == image.dicom.FrameOfReferenceUID  # type: ignore[union-attr]
    pixels = seg.get_pixels_by_source_instance([image.identity.sop_instance_uid])  # type: ignore[union-attr]
    np.testing.assert_array_equal(pixels[0, ..., 0].astype(bool), regions.mask)


# --- DICOM Secondary Capture --------------------------------------------------------------


@pytest.mark.parametrize("source", REAL_DICOMS)
def test_sc_is_the_overlay_in_the_source_study(source: Path, tmp_path: Path) -> None:
    image = _load(source)
    _, _, files = _export(image, tmp_path, ("sc", "png"))
    sc = pydicom.dcmread(files["sc"])
    header = image.dicom
    assert header is not None
    assert sc.PhotometricInterpretation == "RGB" and (sc.Rows, sc.Columns) == image.shape
    assert (sc.StudyInstanceUID, sc.PatientID) == (header.StudyInstanceUID, header.PatientID)
    assert sc.SeriesInstanceUID != header.SeriesInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == header.SOPInstanceUID
    overlay = np.asarray(PILImage.open(files["overlay_png"]))
    label = label_box(image.shape)[3]  # the burned-in "AI result" label (tests/test_export_gsps.py)
    np.testing.assert_array_equal(sc.pixel_array[label:], overlay[label:])


# --- dciodvfy -------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy is not on PATH (Debian/Ubuntu: apt-get install dicom3tools)")
@pytest.mark.parametrize("source", REAL_DICOMS)
def test_dicom_objects_pass_dciodvfy_with_no_error(source: Path, tmp_path: Path) -> None:
    _, _, files = _export(_load(source), tmp_path, ("seg", "sc", "sr", "gsps"))
    for kind in ("seg", "sc", "sr", "gsps"):
        errors, _ = _dciodvfy(files[kind])
        assert errors == [], f"{kind}: {errors}"


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy is not on PATH (Debian/Ubuntu: apt-get install dicom3tools)")
def test_dicom_objects_with_lung_fields_and_a_caution_pass_dciodvfy(tmp_path: Path) -> None:
    prediction = dataclasses.replace(_served(RG1), evidence_threshold=0.99)
    assert prediction.quality  # a flagged image, its share below the threshold
    result = export_regions(prediction, find_regions(prediction), tmp_path, ("seg", "sc", "sr", "gsps", "lungs"))
    assert not result.errors, result.errors
    for kind in ("seg", "sc", "sr", "gsps", "lungs_seg"):
        errors, _ = _dciodvfy(result.files[kind])
        assert errors == [], f"{kind}: {errors}"


# --- NIfTI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [*REAL_DICOMS, pytest.param(RG1_NIFTI, id="nifti", marks=pytest.mark.skipif(
    not RG1_NIFTI.is_file(), reason=f"{RG1_NIFTI} is missing"))])
def test_nifti_mask_carries_the_source_geometry(source: Path, tmp_path: Path) -> None:
    image = _load(source)
    _, regions, files = _export(image, tmp_path, ("nifti",))
    nii = nib.load(files["nifti"])
    assert image.affine is not None
    np.testing.assert_allclose(nii.affine, image.affine, atol=1e-5)
    assert not np.allclose(nii.affine, np.eye(4))
    if source.name.endswith(".nii.gz"):
        np.testing.assert_allclose(nii.affine, nib.load(source).affine, atol=1e-5)
    data = np.asarray(nii.dataobj)
    assert data.shape == (image.shape[1], image.shape[0], 1)
    np.testing.assert_array_equal(data[:, :, 0].T, regions.labels)


# --- Lung fields --------------------------------------------------------------------------


def test_lungs_format_writes_the_mask_as_png_nifti_and_seg_of_a_dicom(tmp_path: Path) -> None:
    prediction = _served(RG1)
    image = prediction.image
    assert prediction.lungs is not None and prediction.segmenter_id.startswith("lungunet-")
    expected = prediction.lungs.numpy()
    assert 0.1 < expected.mean() < 0.7  # two lung fields, not an empty or a full mask
    result = export_regions(prediction, find_regions(prediction), tmp_path, ("seg", "lungs"))
    assert not result.errors and not result.skipped, (result.errors, result.skipped)
    stem = image.identity.sop_instance_uid  # type: ignore[union-attr]
    assert {k: p.name for k, p in result.files.items() if k.startswith("lungs")} == {
        "lungs_png": f"{stem}_lungs.png", "lungs_nifti": f"{stem}_lungs.nii.gz", "lungs_seg": f"{stem}_lungs_seg.dcm"}

    png = np.asarray(PILImage.open(result.files["lungs_png"]))
    assert png.dtype == np.uint8 and png.shape == image.shape and set(np.unique(png)) == {0, 255}
    np.testing.assert_array_equal(png, lung_mask(prediction))
    np.testing.assert_array_equal(png == 255, expected)
    with pytest.raises(UnsupportedInputError, match="medcam's own output"):  # never scored again
        load_image(result.files["lungs_png"])

    nii = nib.load(result.files["lungs_nifti"])
    np.testing.assert_allclose(nii.affine, image.affine, atol=1e-5)  # type: ignore[arg-type]
    np.testing.assert_array_equal(np.asarray(nii.dataobj)[:, :, 0].T.astype(bool), expected)

    seg = hd.seg.segread(result.files["lungs_seg"])
    uid = image.identity.sop_instance_uid  # type: ignore[union-attr]
    pixels = seg.get_pixels_by_source_instance([uid], segment_numbers=[1])
    np.testing.assert_array_equal(pixels[0, ..., 0].astype(bool), expected)
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "Lung fields" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"  # SCT Lung
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # Anatomical structure
    parameters = segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters
    assert f"segmenter={prediction.segmenter_id}" in parameters
    regions_seg = pydicom.dcmread(result.files["seg"])
    assert seg.StudyInstanceUID == regions_seg.StudyInstanceUID == image.dicom.StudyInstanceUID  # type: ignore[union-attr]
    assert seg.SeriesInstanceUID != regions_seg.SeriesInstanceUID and seg.SeriesNumber == LUNGS_SERIES_NUMBER
    again = export_regions(prediction, find_regions(prediction), tmp_path / "again", ("lungs",))
    assert pydicom.dcmread(again.files["lungs_seg"]).SOPInstanceUID == seg.SOPInstanceUID  # a PACS replaces it


def test_lungs_of_a_nifti_and_of_a_png_write_what_applies(tmp_path: Path) -> None:
    nifti = _served(RG1_NIFTI)
    result = export_regions(nifti, find_regions(nifti), tmp_path / "nifti", ("lungs",))
    assert set(result.files) == {"lungs_png", "lungs_nifti"} and not result.errors
    assert result.skipped == {"lungs seg": "a nifti source has no DICOM study to add a lung SEG to"}
    nii = nib.load(result.files["lungs_nifti"])
    np.testing.assert_allclose(nii.affine, nib.load(RG1_NIFTI).affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(nii.dataobj)[:, :, 0].T.astype(bool), nifti.lungs.numpy())  # type: ignore[union-attr]

    png = _served(RG1_PNG)
    result = export_regions(png, find_regions(png), tmp_path / "png", ("lungs", "png"))
    assert set(result.files) == {"lungs_png", "mask_png", "overlay_png"} and not result.errors
    assert set(result.skipped) == {"lungs nifti", "lungs seg"}
    assert result.skipped["lungs nifti"] == "a png source has no geometry for NIfTI"
    assert np.asarray(PILImage.open(result.files["lungs_png"])).shape == png.image.shape


def test_a_lung_writer_that_fails_is_that_parts_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("no room for lungs")

    monkeypatch.setattr("medcam.export.lungs.write_nifti", refuse)
    prediction = _served(RG1)
    result = export_regions(prediction, find_regions(prediction), tmp_path, ("lungs",))
    assert result.errors == {"lungs nifti": "the lung NIfTI was refused: no room for lungs"}
    assert set(result.files) == {"lungs_png", "lungs_seg"}  # the other parts go on


# --- PNG, COCO JSON, CSV --------------------------------------------------------------------


def test_png_mask_and_overlay(tmp_path: Path) -> None:
    if not RG1.is_file():
        pytest.skip(f"{RG1} is missing")
    image = _load(RG1)
    _, regions, files = _export(image, tmp_path, ("png",))
    for kind in ("mask_png", "overlay_png"):  # marked, so that medcam never scores them (tests/test_io_provenance.py)
        assert PILImage.open(files[kind]).info["Software"] == "medcam"
    mask = np.asarray(PILImage.open(files["mask_png"]))
    np.testing.assert_array_equal(mask, np.where(regions.mask, 255, 0))
    overlay = np.asarray(PILImage.open(files["overlay_png"]))
    assert overlay.shape == (*image.shape, 3)
    outline = np.all(overlay == REGION_COLOUR, axis=-1)
    boundary = regions.mask & ~cv2.erode(regions.mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert outline[boundary].mean() > 0.95  # the outline runs along the region's edge
    far = cv2.dilate(regions.mask.astype(np.uint8), np.ones((15, 15), np.uint8)) == 0
    gray = np.round(np.clip(image.pixels[0], 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(overlay[far][:, 0], gray[far])  # untouched away from the regions


@pytest.mark.parametrize("source", REAL_DICOMS[:1] + REAL_DICOMS[-1:])
def test_coco_json_boxes_and_polygons_match_the_mask(source: Path, tmp_path: Path) -> None:
    image = _load(source)
    _, regions, files = _export(image, tmp_path, ("json", "csv"))
    doc = json.loads(files["json"].read_text())
    assert set(doc) == {"info", "licenses", "images", "categories", "annotations"}
    assert doc["images"][0]["width"] == image.shape[1] and doc["images"][0]["height"] == image.shape[0]
    assert doc["categories"] == [{"id": 1, "name": "PNEUMONIA", "supercategory": "finding"}]
    assert len(doc["annotations"]) == len(regions) == 2
    for annotation, region in zip(doc["annotations"], regions, strict=True):
        ys, xs = np.nonzero(regions.labels == annotation["id"])
        assert annotation["bbox"] == [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        assert annotation["area"] == len(xs) == region.area_px
        assert annotation["image_id"] == 1 and annotation["category_id"] == 1 and annotation["iscrowd"] == 0
        filled = np.zeros(image.shape, np.uint8)
        for flat in annotation["segmentation"]:
            assert len(flat) >= 6 and len(flat) % 2 == 0
            cv2.fillPoly(filled, [np.asarray(flat, np.int32).reshape(-1, 2)], 1)
        assert (filled.astype(bool) == region.mask).mean() > 0.999  # the outline encloses the region
        assert annotation["attributes"]["area_mm2"] == region.area_mm2
    rows = files["csv"].read_text().splitlines()
    assert rows[0] == ",".join(COLUMNS) and len(rows) == 1 + len(regions)


def test_polygons_of_thin_regions_fall_back_to_the_box() -> None:
    from medcam.regions import regions_from_map

    heat = np.zeros((10, 10))
    heat[4, 2:7] = 1.0
    (region,) = regions_from_map(heat).regions
    (polygon,) = region_polygons(region)
    assert polygon.tolist() == [[2, 4], [7, 4], [7, 5], [2, 5]]


# --- Formats and sources ------------------------------------------------------------------


def test_formats_that_do_not_apply_are_skipped_with_a_reason(tmp_path: Path) -> None:
    if not RG1_PNG.is_file():
        pytest.skip(f"{RG1_PNG} is missing")
    prediction = _prediction(_load(RG1_PNG))
    result = export_regions(prediction, find_regions(prediction), tmp_path)
    assert set(result.skipped) == {"seg", "sc", "sr", "gsps", "nifti", "lungs"}
    assert "png source" in result.skipped["seg"]
    assert result.skipped["lungs"] == "no lung mask: the model was served without a lung segmenter"
    assert set(result.files) == {"mask_png", "overlay_png", "json", "csv"}
    assert all(p.name.startswith("RG1_PNEUMONIA_") for p in result.files.values())


def test_parse_formats() -> None:
    assert parse_formats("png, SEG") == ("seg", "png")
    assert parse_formats("all") == FORMATS and "lungs" in FORMATS
    assert parse_formats("Lungs,seg") == ("seg", "lungs")
    with pytest.raises(ConfigError, match="did you mean 'nifti'"):
        parse_formats("nifty")


# --- Hostile tag values -------------------------------------------------------------------

HOSTILE = [
    ("SOPInstanceUID", "../../x"),
    ("SOPInstanceUID", "/tmp/medcam-escape"),
    ("SOPInstanceUID", "1.2\x00/../../x"),
    ("SOPInstanceUID", "9" * 10_000),
    ("SOPInstanceUID", ".."),
    ("StudyInstanceUID", "../../study"),
    ("PatientID", "../../../etc/passwd"),
    ("PatientID", "a\x00b"),
    ("PatientID", "p" * 10_000),
    ("PatientName", "Ünïcødé^名前/../.."),
    ("SeriesDescription", "../../x\x00"),
    ("SeriesDescription", "s" * 10_000),
]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("keyword, value", HOSTILE, ids=[f"{k}-{i}" for i, (k, _) in enumerate(HOSTILE)])
def test_hostile_tag_values_write_nothing_outside_the_output_folder(
        keyword: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pydicom_config.settings, "writing_validation_mode", pydicom_config.IGNORE)
    monkeypatch.setattr(pydicom_config.settings, "reading_validation_mode", pydicom_config.IGNORE)
    deep = tmp_path / "a" / "b"
    for folder in ("src", "out", "cwd"):
        (deep / folder).mkdir(parents=True)
    monkeypatch.chdir(deep / "cwd")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    setattr(ds, keyword, value)
    source = deep / "src" / "hostile.dcm"
    ds.save_as(source)
    before = set(tmp_path.rglob("*"))
    image = load_image(source)
    prediction = _prediction(image)
    out = deep / "out"
    result = export_regions(prediction, find_regions(prediction), out)
    hostile_name = export_regions(prediction, find_regions(prediction), out, ("json",), name=value)
    written = set(tmp_path.rglob("*")) - before
    assert written and all(p.resolve().parent == out.resolve() for p in written), written
    for path in [*result.files.values(), *hostile_name.files.values()]:
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,120}", path.name), path.name
    assert {"nifti", "mask_png", "overlay_png", "json", "csv"} <= set(result.files)
    for fmt in ("seg", "sc", "sr", "gsps"):  # written, or refused with the reason: never silently missing
        assert (fmt in result.files) != (fmt in result.errors)
    if keyword in ("SOPInstanceUID", "StudyInstanceUID") or (keyword == "PatientID" and "/" not in value):
        assert all(keyword in result.errors[fmt] for fmt in ("seg", "sc", "sr", "gsps"))
    if "seg" in result.files:
        seg = hd.seg.segread(result.files["seg"])
        assert seg.PatientID == ds.PatientID
        assert (seg.get_pixels_by_source_instance([ds.SOPInstanceUID])[0, ..., 0] > 0).sum() > 0


# --- Command line -------------------------------------------------------------------------



def test_cli_export(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (RG1.is_file() and RG1_PNG.is_file()):
        pytest.skip("tests/data/rg1 is missing; run python tests/data/rg1/make_samples.py")
    out = tmp_path / "out"
    code = main(["export", str(RG1), str(RG1_PNG), "--model", str(tiny_checkpoint), "--class", "pneumonia",
                 "--formats", "seg,png,json", "--threshold", "otsu", "--min-area", "50", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "UNTRAINED" in printed and "Otsu" in printed and "seg skipped" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class"] == "PNEUMONIA" and manifest["options"]["region_formats"] == ["seg", "png", "json"]
    assert manifest["options"]["region_options"]["rule"] == "otsu"
    table = (out / "exports.csv").read_text()
    assert table.count(",ok,") == 2
    assert sorted(p.suffix for p in out.glob(f"{output_name(str(RG1))}*")) == [".dcm", ".json", ".png", ".png"]
    png_row = next(r for r in read_results(out / "exports.csv") if r["path"] == str(RG1_PNG))
    assert png_row["not_exported"].startswith("seg:")


def test_cli_export_of_the_lung_fields(tiny_checkpoint: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    if not (RG1.is_file() and RG1_PNG.is_file()):
        pytest.skip("tests/data/rg1 is missing; run python tests/data/rg1/make_samples.py")
    out = tmp_path / "out"
    assert main(["export", str(RG1), str(RG1_PNG), "--model", str(tiny_checkpoint), "--formats", "lungs",
                 "--out", str(out)]) == 0
    assert "lungs nifti skipped: a png source has no geometry for NIfTI" in capsys.readouterr().out
    rows = {Path(r["path"]).name: r for r in read_results(out / "exports.csv")}
    assert rows["RG1_UNCR.dcm"]["not_exported"] == "" and rows["RG1_UNCR.dcm"]["segmenter"].startswith("lungunet-")
    assert sorted(Path(p).name.split("_lungs")[1] for p in rows["RG1_UNCR.dcm"]["exports"].split(";")) == [
        ".nii.gz", ".png", "_seg.dcm"]
    assert rows["RG1.png"]["exports"] == str(out.resolve() / f"{output_name(str(RG1_PNG))}_lungs.png")
    bare = tmp_path / "bare"
    assert main(["export", str(RG1_PNG), "--model", str(tiny_checkpoint), "--formats", "lungs", "--segmenter",
                 "none", "--out", str(bare)]) == 0
    (row,) = read_results(bare / "exports.csv")
    assert row["not_exported"] == "lungs: no lung mask: the model was served without a lung segmenter"
    assert row["exports"] == "" and row["lung_evidence"] == "" and row["segmenter"] == ""


def test_cli_export_refuses_an_unknown_class(tiny_checkpoint: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", str(RG1), "--model", str(tiny_checkpoint), "--class", "pneumona",
                 "--out", str(tmp_path)])
    assert code == 1
    assert "did you mean 'PNEUMONIA'" in capsys.readouterr().err
