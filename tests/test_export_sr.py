"""SR Measurement Reports, the 'not analysed' report, derived-object identity and containment.

Real sources: RG1_UNCR.dcm (tests/data/rg1; Pixel Spacing 0\\0, MONOCHROME1), the RSNA DICOMs in
../shared when present, CT_small.dcm from pydicom's corpus. Every SR is read back with
highdicom and checked with dciodvfy when it is installed.
"""

from __future__ import annotations

import dataclasses
import errno
import shutil
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes
from test_export import REAL_DICOMS, RG1, _dciodvfy, _load, _prediction, _served

import medcam
from medcam.export import export_regions
from medcam.export.equipment import ModelInfo
from medcam.export.sr import LUNG_EVIDENCE, PNEUMONIA, write_not_analysed_sr
from medcam.io import load_image
from medcam.regions import find_regions

needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy is not on PATH (Debian/Ubuntu: apt-get install dicom3tools)")
DICOM_KINDS = ("seg", "sc", "sr", "gsps")


def _evaluation(group: hd.sr.MeasurementsAndQualitativeEvaluations, name: hd.sr.CodedConcept) -> str:
    (item,) = [q for q in group.get_qualitative_evaluations() if q.name == name]
    return str(item.value.meaning)


def _texts(group: hd.sr.MeasurementsAndQualitativeEvaluations, *code_values: str) -> dict[str, list[str]]:
    """The values of the group's TEXT items by concept code value."""
    found: dict[str, list[str]] = {value: [] for value in code_values}
    for item in group[0].ContentSequence:
        code = item.ConceptNameCodeSequence[0].CodeValue
        if item.ValueType == "TEXT" and code in found:
            found[code].append(item.TextValue)
    return found


@pytest.mark.parametrize("source", REAL_DICOMS)
def test_sr_reports_the_probability_the_finding_and_each_region(source: Path, tmp_path: Path) -> None:
    image = _load(source)
    prediction = _prediction(image)
    regions = find_regions(prediction, "pneumonia")
    result = export_regions(prediction, regions, tmp_path, ("sr",))
    assert not result.errors, result.errors
    sr = hd.sr.srread(result.files["sr"])
    header = image.dicom
    assert header is not None
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert (sr.StudyInstanceUID, sr.PatientID) == (header.StudyInstanceUID, header.PatientID)
    assert sr.SeriesInstanceUID != header.SeriesInstanceUID
    assert sr.SeriesDescription == "medcam AI result (not for diagnostic use)"
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert [e.ReferencedSOPInstanceUID for e in evidence] == [header.SOPInstanceUID]

    (group,) = sr.content.get_image_measurement_groups()
    assert group.source_images[0].referenced_sop_instance_uid == header.SOPInstanceUID
    (probability,) = group.get_measurements(name=codes.DCM.Probability)
    assert probability.value == pytest.approx(0.8, abs=1e-6)
    assert probability.unit == codes.UCUM.NoUnits
    assert _evaluation(group, PNEUMONIA) == "Present"
    assert group.get_measurements(name=LUNG_EVIDENCE) == []  # no lung segmenter: no share, no caution
    assert _texts(group, "121106")["121106"] == []
    algorithm = _texts(group, "111001", "111003", "111002")  # TID 4019 name, version, parameters
    assert algorithm["111001"] == ["medcam"] and algorithm["111003"] == ["synthetic-000000000000"]
    assert {"threshold=0.5", "temperature=1", "class=PNEUMONIA"} <= set(algorithm["111002"])

    rois = sr.content.get_planar_roi_measurement_groups()
    assert len(rois) == len(regions) == 2
    for roi, region in zip(rois, regions, strict=True):
        assert roi.roi is not None and roi.roi.GraphicType == "POLYLINE"
        (selected_from,) = roi.roi.ContentSequence
        assert selected_from.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == header.SOPInstanceUID
        points = roi.roi.value
        np.testing.assert_array_equal(points[0], points[-1])  # closed
        filled = np.zeros(image.shape, np.uint8)
        cv2.fillPoly(filled, [np.round(points - 0.5).astype(np.int32)], 1)
        assert (filled.astype(bool) == region.mask).mean() > 0.999  # the outline encloses the region
        areas = roi.get_measurements(name=codes.SCT.Area)
        if region.area_mm2 is None:
            assert areas == []
        else:
            assert areas[0].value == pytest.approx(region.area_mm2) and areas[0].unit == codes.UCUM.SquareMillimeter


@pytest.mark.parametrize("threshold", [None, 0.99], ids=["no-caution", "caution"])
def test_sr_reports_the_lung_evidence_share_and_the_caution(threshold: float | None, tmp_path: Path) -> None:
    prediction = dataclasses.replace(_served(RG1), evidence_threshold=threshold)
    assert prediction.flagged and prediction.lung_evidence is not None
    assert bool(prediction.quality) == (threshold is not None)
    result = export_regions(prediction, find_regions(prediction), tmp_path, ("sr",))
    assert not result.errors, result.errors
    sr = hd.sr.srread(result.files["sr"])
    (group,) = sr.content.get_image_measurement_groups()
    (share,) = group.get_measurements(name=LUNG_EVIDENCE)
    assert share.value == pytest.approx(prediction.lung_evidence, abs=1e-6)
    assert share.unit == codes.UCUM.Ratio
    (scheme,) = sr.CodingSchemeIdentificationSequence  # the private code is declared
    assert scheme.CodingSchemeDesignator == LUNG_EVIDENCE.scheme_designator == "99MEDCAM"
    comments = _texts(group, "121106")["121106"]
    assert comments == ([f"Caution: {prediction.quality}"] if threshold else [])
    if threshold:
        assert "evidence outside the lungs" in comments[0]
    parameters = set(_texts(group, "111002")["111002"])
    assert f"segmenter={prediction.segmenter_id}" in parameters
    assert ("lung_evidence_threshold=0.99" in parameters) == (threshold is not None)
    if shutil.which("dciodvfy"):
        assert _dciodvfy(result.files["sr"])[0] == []


def test_sr_says_absent_below_the_operating_point_and_lists_no_region_when_there_is_none(tmp_path: Path) -> None:
    image = _load(RG1)
    prediction = _prediction(image, empty=True)
    below = type(prediction)(**{**prediction.__dict__, "threshold": 0.9})
    regions = find_regions(below, "pneumonia")
    assert len(regions) == 0
    result = export_regions(below, regions, tmp_path, ("sr",))
    sr = hd.sr.srread(result.files["sr"])
    (group,) = sr.content.get_image_measurement_groups()
    assert _evaluation(group, PNEUMONIA) == "Absent"
    assert sr.content.get_planar_roi_measurement_groups() == []


@needs_dciodvfy
@pytest.mark.parametrize("source", REAL_DICOMS)
def test_sr_passes_dciodvfy_with_no_error(source: Path, tmp_path: Path) -> None:
    prediction = _prediction(_load(source))
    result = export_regions(prediction, find_regions(prediction), tmp_path, ("sr",))
    errors, _ = _dciodvfy(result.files["sr"])
    assert errors == []


# --- Identity -----------------------------------------------------------------------------


def test_every_derived_object_has_stable_uids_in_the_source_study(tmp_path: Path) -> None:
    image = _load(RG1)
    prediction = _prediction(image)
    regions = find_regions(prediction)
    first = export_regions(prediction, regions, tmp_path / "a", DICOM_KINDS)
    again = export_regions(prediction, regions, tmp_path / "b", DICOM_KINDS)
    assert not first.errors and not again.errors
    header = image.dicom
    assert header is not None
    series, instances, devices = set(), set(), set()
    for kind in DICOM_KINDS:
        one, two = pydicom.dcmread(first.files[kind]), pydicom.dcmread(again.files[kind])
        assert one.SOPInstanceUID == two.SOPInstanceUID, kind
        assert one.SeriesInstanceUID == two.SeriesInstanceUID, kind
        assert one.StudyInstanceUID == header.StudyInstanceUID, kind
        assert one.Manufacturer == "medcam"
        assert list(one.SoftwareVersions) == [medcam.__version__, "synthetic-000000000000"]
        assert any(e.Manufacturer == "medcam" for e in one.ContributingEquipmentSequence)
        series.add(one.SeriesInstanceUID)
        instances.add(one.SOPInstanceUID)
        devices.add(one.DeviceUID)
    assert len(series) == len(instances) == len(DICOM_KINDS)  # one series per object type
    assert len(devices) == 1  # one device: the model
    other = export_regions(type(prediction)(**{**prediction.__dict__, "model_id": "other-model"}), regions,
                           tmp_path / "c", ("sr",))
    assert pydicom.dcmread(other.files["sr"]).SOPInstanceUID not in instances


# --- Not analysed -------------------------------------------------------------------------


@pytest.mark.parametrize("as_dataset", [False, True], ids=["image", "dataset"])
def test_not_analysed_sr_says_the_ai_declined_and_why(as_dataset: bool, tmp_path: Path) -> None:
    image = _load(RG1)
    source = pydicom.dcmread(RG1, stop_before_pixels=True) if as_dataset else image
    model = ModelInfo("synthetic-000000000000", threshold=0.5, temperature=1.0)
    reason = "the image is a lateral view; medcam screens frontal chest radiographs only"
    path = write_not_analysed_sr(source, reason, model, tmp_path)
    assert path.parent == tmp_path.resolve()
    sr = hd.sr.srread(path)
    header = image.dicom
    assert header is not None
    assert sr.StudyInstanceUID == header.StudyInstanceUID
    (group,) = sr.content.get_image_measurement_groups()
    assert group.source_images[0].referenced_sop_instance_uid == header.SOPInstanceUID
    assert _evaluation(group, PNEUMONIA) == "Undetermined"
    assert group.get_measurements() == []
    (comment,) = _texts(group, "121106")["121106"]  # DCM Comment
    assert reason in comment and "Not analysed by medcam model synthetic-000000000000" in comment
    # an analysed image's report replaces it: same file name, same SOP Instance UID
    prediction = _prediction(image)
    analysed = export_regions(prediction, find_regions(prediction), tmp_path, ("sr",))
    assert analysed.files["sr"] == path
    assert pydicom.dcmread(path).SOPInstanceUID == sr.SOPInstanceUID
    if shutil.which("dciodvfy"):
        assert _dciodvfy(write_not_analysed_sr(source, reason, model, tmp_path / "again"))[0] == []
    with pytest.raises(ValueError, match="a reason is required"):
        write_not_analysed_sr(source, "  ", model, tmp_path)


# --- Containment --------------------------------------------------------------------------


def test_a_full_disk_or_a_refused_folder_is_that_formats_error(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    image = _load(RG1)
    prediction = _prediction(image)
    regions = find_regions(prediction)

    def full_disk(dataset: object, path: Path) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    def no_permission(*args: object, **kwargs: object) -> Path:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x_regions.json"))

    monkeypatch.setattr("medcam.export.sr.save_dicom", full_disk)
    monkeypatch.setattr("medcam.export.formats.write_coco", no_permission)
    result = export_regions(prediction, regions, tmp_path, ("seg", "sr", "gsps", "json", "csv"))
    assert set(result.errors) == {"sr", "json"}
    assert "No space left on device" in result.errors["sr"] and "SR" in result.errors["sr"]
    assert "Permission denied" in result.errors["json"]
    assert set(result.files) == {"seg", "gsps", "csv"}  # the batch goes on
    assert not list(tmp_path.glob("*_sr.dcm"))


def test_a_source_highdicom_refuses_is_that_formats_error(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Modality = "SR"  # highdicom refuses to reference an SR as the source of a measurement
    source = tmp_path / "odd.dcm"
    ds.save_as(source)
    prediction = _prediction(load_image(source))
    result = export_regions(prediction, find_regions(prediction), tmp_path / "out", ("sr", "png", "csv"))
    assert set(result.errors) == {"sr"}
    assert result.errors["sr"].startswith("the SR was refused:") and "modality" in result.errors["sr"].lower()
    assert set(result.files) == {"mask_png", "overlay_png", "csv"}


def test_sr_names_the_calibration_bias_when_the_model_has_one(tmp_path: Path) -> None:
    image = _load(RG1)
    prediction = dataclasses.replace(_prediction(image), temperature=0.8, class_bias=(0.0, 0.5))
    assert ModelInfo.of(prediction).class_bias == (0.0, 0.5)
    result = export_regions(prediction, find_regions(prediction, "pneumonia"), tmp_path / "analysed", ("sr",))
    assert not result.errors, result.errors
    (group,) = hd.sr.srread(result.files["sr"]).content.get_image_measurement_groups()
    assert {"temperature=0.8", "class_bias=0,0.5"} <= set(_texts(group, "111002")["111002"])
    model = ModelInfo("synthetic-000000000000", threshold=0.45, temperature=0.8, class_bias=(0.0, 0.5))
    refused = hd.sr.srread(write_not_analysed_sr(image, "a lateral view", model, tmp_path / "refused"))
    (group,) = refused.content.get_image_measurement_groups()
    assert "class_bias=0,0.5" in _texts(group, "111002")["111002"]
    assert "class_bias" not in " ".join(ModelInfo("m", temperature=1.0).parameters())
