"""Exports of accepted regions through medcam.export, on a real radiograph."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medcam.io import load_image
from medcam.models import Classifier, Prediction
from medcam.regions import RegionOptions, find_regions, regions_from_map
from medcam.review.export import accepted_regions, export_accepted, export_folder, zip_files


@pytest.fixture(scope="module")
def prediction(tiny_classifier: Classifier, chest_dicom: Path) -> Prediction:
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


def test_a_png_source_gets_no_seg(tiny_classifier: Classifier, tmp_path: Path) -> None:
    png = Path(__file__).resolve().parents[2] / "sample_data" / "png" / "RG1.png"
    pred = tiny_classifier.classify([load_image(png)])[0]
    regions = find_regions(pred, "PNEUMONIA", RegionOptions(value=0.3))
    result = export_accepted(pred, regions, [regions.regions[0].id], tmp_path, ["seg", "png"])
    assert "seg" in result.skipped and set(result.files) == {"mask_png", "overlay_png"}
