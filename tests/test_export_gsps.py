"""Grayscale Softcopy Presentation States and the labelled Secondary Capture, on real DICOMs.

Read back with pydicom (highdicom has no GSPS reader) and checked with dciodvfy when it is
installed. RG1_UNCR.dcm is MONOCHROME1 with a window (15000/30000); the RSNA images are
MONOCHROME2 without one.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.uid import GrayscaleSoftcopyPresentationStateStorage
from test_export import REAL_DICOMS, RG1, _dciodvfy, _load, _prediction, _served

from medcam.export import export_regions
from medcam.export.contours import region_polygons
from medcam.export.sc import label_box
from medcam.regions import find_regions


@pytest.mark.parametrize("source", REAL_DICOMS)
def test_gsps_outlines_the_regions_and_states_the_result(source: Path, tmp_path: Path) -> None:
    image = _load(source)
    prediction = _prediction(image)
    regions = find_regions(prediction, "pneumonia")
    result = export_regions(prediction, regions, tmp_path, ("gsps",))
    assert not result.errors, result.errors
    gsps = pydicom.dcmread(result.files["gsps"])
    header = image.dicom
    assert header is not None
    assert gsps.SOPClassUID == GrayscaleSoftcopyPresentationStateStorage and gsps.Modality == "PR"
    assert (gsps.StudyInstanceUID, gsps.PatientID) == (header.StudyInstanceUID, header.PatientID)
    assert gsps.SeriesInstanceUID != header.SeriesInstanceUID
    (series,) = gsps.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == header.SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in series.ReferencedImageSequence] == [header.SOPInstanceUID]
    (annotation,) = gsps.GraphicAnnotationSequence
    assert annotation.GraphicLayer == gsps.GraphicLayerSequence[0].GraphicLayer == "MEDCAM_AI"
    assert annotation.ReferencedImageSequence[0].ReferencedSOPInstanceUID == header.SOPInstanceUID
    objects = annotation.GraphicObjectSequence
    assert len(objects) == len(regions) == 2
    for graphic, region in zip(objects, regions, strict=True):
        assert (graphic.GraphicType, graphic.GraphicAnnotationUnits) == ("POLYLINE", "PIXEL")
        points = np.asarray(graphic.GraphicData, dtype=np.float64).reshape(-1, 2)
        np.testing.assert_array_equal(points[0], points[-1])
        (polygon,) = region_polygons(region)
        np.testing.assert_allclose(points[:-1], polygon + 0.5)  # pixel centres, DICOM origin at the corner
    (text,) = annotation.TextObjectSequence
    assert "AI result - not for diagnostic use" in text.UnformattedTextValue
    assert "PNEUMONIA probability 0.80 (positive at 0.5)" in text.UnformattedTextValue
    assert "synthetic-000000000000" in text.UnformattedTextValue
    if "WindowCenter" in header:
        voi = gsps.SoftcopyVOILUTSequence[0]
        assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (float(header.WindowCenter),
                                                                     float(header.WindowWidth))
    else:
        assert "SoftcopyVOILUTSequence" not in gsps
    inverse = header.PhotometricInterpretation == "MONOCHROME1"
    assert gsps.PresentationLUTShape == ("INVERSE" if inverse else "IDENTITY")
    if shutil.which("dciodvfy"):
        errors, _ = _dciodvfy(result.files["gsps"])
        assert errors == []


@pytest.mark.parametrize("source", REAL_DICOMS)
def test_sc_is_the_overlay_labelled_as_an_ai_result(source: Path, tmp_path: Path) -> None:
    image = _load(source)
    result = export_regions(_prediction(image), find_regions(_prediction(image)), tmp_path, ("sc", "png"))
    sc = pydicom.dcmread(result.files["sc"])
    assert sc.BurnedInAnnotation == "YES"
    assert sc.SeriesDescription == "medcam AI result (not for diagnostic use)"
    overlay = np.asarray(PILImage.open(result.files["overlay_png"]))
    _, _, right, bottom = label_box(image.shape)
    assert 0 < bottom < image.shape[0] // 4 and right == image.shape[1]
    np.testing.assert_array_equal(sc.pixel_array[bottom:], overlay[bottom:])  # unchanged below the label
    band = sc.pixel_array[:bottom]
    assert (band == 0).all(axis=-1).mean() > 0.5  # a black band ...
    assert (band == 255).all(axis=-1).sum() > 100  # ... with white text on it


@pytest.mark.parametrize("threshold", [None, 0.99], ids=["no-caution", "caution"])
def test_gsps_and_sc_state_the_lung_evidence_or_the_caution(threshold: float | None, tmp_path: Path) -> None:
    prediction = dataclasses.replace(_served(RG1), evidence_threshold=threshold)
    assert prediction.lung_evidence is not None
    regions = find_regions(prediction)
    result = export_regions(prediction, regions, tmp_path, ("gsps", "sc", "png"))
    assert not result.errors, result.errors
    gsps = pydicom.dcmread(result.files["gsps"])
    first, second = gsps.GraphicAnnotationSequence[0].TextObjectSequence
    assert "AI result - not for diagnostic use" in first.UnformattedTextValue
    if threshold:
        assert second.UnformattedTextValue == f"CAUTION: {prediction.quality}"
        assert "evidence outside the lungs" in second.UnformattedTextValue
    else:
        assert second.UnformattedTextValue.startswith(f"lung evidence share {prediction.lung_evidence:.2f}")
    assert second.BoundingBoxTopLeftHandCorner[1] >= first.BoundingBoxBottomRightHandCorner[1]  # below it

    sc = pydicom.dcmread(result.files["sc"])
    overlay = np.asarray(PILImage.open(result.files["overlay_png"]))
    two, three = label_box(prediction.image.shape, 2)[3], label_box(prediction.image.shape, 3)[3]
    np.testing.assert_array_equal(sc.pixel_array[three:], overlay[three:])  # unchanged below a 3-line label
    third_line = sc.pixel_array[two:three]
    assert (third_line == 255).all(axis=-1).sum() > 100  # the lung line is written in white on black
    assert (third_line == 0).all(axis=-1).mean() > 0.5
    if shutil.which("dciodvfy"):
        for kind in ("gsps", "sc"):
            assert _dciodvfy(result.files[kind])[0] == [], kind
