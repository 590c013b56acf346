"""Fixtures of the reviewer's tests: a tiny seeded checkpoint and folders of real images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from medcam.gate import ServedModel

REPO = Path(__file__).resolve().parents[2]
RG1_DATA = REPO / "tests" / "data" / "rg1"
SPACING_MM = 0.175



@pytest.fixture(scope="session")
def tiny_classifier(tiny_checkpoint: Path) -> ServedModel:
    return ServedModel(str(tiny_checkpoint))


@pytest.fixture(scope="session")
def rg1_dicom() -> Path:
    path = RG1_DATA / "dicom" / "RG1_UNCR.dcm"
    if not path.is_file():
        pytest.skip(f"{path} is missing; run python tests/data/rg1/make_samples.py")
    return path


def with_spacing(source: Path, target: Path, spacing: float = SPACING_MM) -> Path:
    """A copy of a DICOM radiograph with a Pixel Spacing (RG1's is 0\\0, unknown), so that
    regions are measured in mm; it gets its own SOP Instance UID."""
    ds = pydicom.dcmread(source)
    ds.PixelSpacing = [spacing, spacing]
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[str(source), "spacing"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(target)
    return target


@pytest.fixture(scope="session")
def chest_dicom(rg1_dicom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RG1 with a 0.175 mm pixel spacing (see :func:`with_spacing`); do not modify it."""
    return with_spacing(rg1_dicom, tmp_path_factory.mktemp("dicom") / "chest_pa.dcm")


@pytest.fixture()
def review_folder(tmp_path: Path, chest_dicom: Path) -> Path:
    """A data folder: RG1 with a pixel spacing (DICOM), RG1 as PNG, and a non-image file."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(chest_dicom, folder / "chest_pa.dcm")
    shutil.copy(RG1_DATA / "png" / "RG1.png", folder / "chest.png")
    (folder / "notes.txt").write_text("not an image")
    return folder
