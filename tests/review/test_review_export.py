"""Exports of accepted regions through medcam.export, on a real radiograph."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medcam.export import export_regions
from medcam.gate import ServedModel
from medcam.io import load_image
from medcam.models import Prediction
from medcam.regions import RegionOptions, find_regions, regions_from_map
from medcam.review.export import accepted_regions, export_accepted, export_folder, zip_files


@pytest.fixture(scope="module")
def prediction(tiny_classifier: ServedModel, chest_dicom: Path) -> Prediction:
    return tiny_classifier.classify([load_image(chest_dicom)])[0]


def test_accepted_regions_keep_their_ids() -> None:
    heat = np.zeros((60, 60), np.float32)
    heat[5:15, 5:15], heat[30:40, 30:40], heat[50:55, 5:10] = 3.0, 2.0, 1.0
    regions = regions_from_map(heat, options=RegionOptions(value=0.2), class_name="PNEUMONIA")
    assert len(regions) == 3
    kept = accepted_regions(regions, [3, 1])
    assert [r.id for r in kept.regions] == [1, 3]
    assert set(np.unique(kept.labels)) == {0, 1, 3}
    assert kept.mask.sum() == 100 + 25
    with pytest.raises(ValueError, match=r"regions \[7\] are not among the 3 regions"):
        accepted_regions(regions, [7])


def test_export_writes_a_seg_of_the_accepted_regions_only(prediction: Prediction, tmp_path: Path) -> None:
    regions = find_regions(prediction, "PNEUMONIA", RegionOptions(value=0.3))
    assert len(regions) >= 1
    with pytest.raises(ValueError, match="accept at least one region"):
        export_accepted(prediction, regions, [], tmp_path, ["seg"])
    folder = export_folder(tmp_path / "exports", "chest.dcm", "f" * 64)
    assert folder.parent.name == "chest.dcm-ffffffffffff"
    result = export_accepted(prediction, regions, [1], folder, ["seg", "png", "json"])
    assert set(result.files) == {"seg", "mask_png", "overlay_png", "json"}
    assert all(Path(p).parent == folder for p in result.files.values())
    seg = pydicom.dcmread(result.files["seg"])
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == \
        prediction.image.identity.sop_instance_uid  # type: ignore[union-attr]
    mask = seg.pixel_array.astype(bool)
    assert mask.shape == prediction.image.shape
    assert np.array_equal(mask, regions.regions[0].mask)
    archive = zipfile.ZipFile(io.BytesIO(zip_files(result.files)))
    assert sorted(archive.namelist()) == sorted(Path(p).name for p in result.files.values())
    again = export_folder(tmp_path / "exports", "chest.dcm", "f" * 64)
    assert again != folder  # a later export never overwrites an earlier one


def test_a_png_source_gets_no_seg(tiny_classifier: ServedModel, tmp_path: Path) -> None:
    png = Path(__file__).resolve().parents[1] / "data" / "rg1" / "png" / "RG1.png"
    pred = tiny_classifier.classify([load_image(png)])[0]
    regions = find_regions(pred, "PNEUMONIA", RegionOptions(value=0.3))
    result = export_accepted(pred, regions, [regions.regions[0].id], tmp_path, ["seg", "png"])
    assert "seg" in result.skipped and set(result.files) == {"mask_png", "overlay_png"}


def test_the_reviewers_sr_records_each_decision_and_the_reviewer(prediction: Prediction, tmp_path: Path) -> None:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    rows, cols = prediction.image.shape
    heat = np.zeros((rows, cols), np.float32)  # three known blobs on the radiograph's grid
    heat[rows // 5: rows // 3, cols // 6: cols // 3] = 3.0
    heat[rows // 2: rows // 2 + rows // 8, cols // 2: cols // 2 + cols // 6] = 2.0
    heat[rows - rows // 6: rows - rows // 10, cols // 10: cols // 5] = 1.0
    regions = regions_from_map(heat, options=RegionOptions(value=0.2), spacing=prediction.image.spacing,
                               class_name="PNEUMONIA", probability=prediction.probability("PNEUMONIA"))
    assert len(regions) == 3
    first, second = regions.regions[0].id, regions.regions[1].id
    with pytest.raises(ValueError, match="give the reviewer's name"):
        export_accepted(prediction, regions, [first], tmp_path / "none", ["sr"])
    with pytest.raises(ValueError, match="both accepted and rejected"):
        export_accepted(prediction, regions, [first], tmp_path / "both", ["sr"], reviewer="Ada Lovelace",
                        rejected=[first])
    result = export_accepted(prediction, regions, [first], tmp_path / "a", ["sr", "seg"],
                             reviewer="Lovelace^Ada", rejected=[second])
    assert not result.errors, result.errors
    sr = hd.sr.srread(result.files["sr"])
    source_uid = prediction.image.identity.sop_instance_uid  # type: ignore[union-attr]
    assert sr.StudyInstanceUID == prediction.image.dicom.StudyInstanceUID  # type: ignore[union-attr]
    context = sr.content.get_observer_contexts(observer_type=codes.DCM.Person)
    assert [str(c.observer_identifying_attributes.name) for c in context] == ["Lovelace^Ada"]
    assert sr.content.get_observer_contexts(observer_type=codes.DCM.Device)  # medcam made the regions
    rois = sr.content.get_planar_roi_measurement_groups()
    assert len(rois) == len(regions)  # the report lists every region, the other formats the accepted only
    decisions = {}
    for roi, region in zip(rois, regions, strict=True):
        (selected_from,) = roi.roi.ContentSequence  # type: ignore[union-attr]
        assert selected_from.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source_uid
        evaluations = [q.value.meaning for q in roi.get_qualitative_evaluations() if q.value.meaning in
                       ("Present", "Absent")]
        decisions[region.id] = evaluations
    assert decisions[first] == ["Present"] and decisions[second] == ["Absent"]
    assert all(decisions[r.id] == [] for r in regions.regions[2:])  # undecided
    seg = pydicom.dcmread(result.files["seg"])
    assert np.array_equal(seg.pixel_array.astype(bool), regions.regions[0].mask)
    again = export_accepted(prediction, regions, [first], tmp_path / "b", ["sr"], reviewer="Lovelace^Ada",
                            rejected=[second])
    ai_only = export_regions(prediction, regions, tmp_path / "c", ["sr"])
    uids = [pydicom.dcmread(r.files["sr"]).SOPInstanceUID for r in (result, again, ai_only)]
    assert uids[0] == uids[1] != uids[2]  # the same review replaces; it never replaces the AI's own report
