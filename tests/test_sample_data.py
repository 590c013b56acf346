"""The quick start's sample data: four real chest films in ``sample_data/``, Secondary Captures of
radiographs that the intended-use gate analyses, made by ``sample_data/make_samples.py`` from
the shared data set (the tests that need ``../shared`` skip without it)."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.uid import SecondaryCaptureImageStorage

from medcam.cli import main
from medcam.gate import check_tags, read_intended_use, tag_notes
from medcam.io import load_image
from medcam.models.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"
SHARED_DATA = REPO.parent / "shared" / "data"
NEEDS_SHARED = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is not there (../shared)")


def _make_samples() -> ModuleType:
    """``sample_data/make_samples.py`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location("sample_data_make_samples", SAMPLE_DATA / "make_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ among the samples
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


MAKE = _make_samples()
FILMS = {film.name: film for film in MAKE.FILMS}


def _read(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(SAMPLE_DATA / name)


def test_the_folder_holds_two_adults_and_two_children_one_pneumonia_and_one_normal_each() -> None:
    assert sorted(p.name for p in SAMPLE_DATA.glob("*.dcm")) == sorted(FILMS)
    kinds = sorted(name.split("_")[:2] for name in FILMS)
    assert kinds == [["adult", "normal"], ["adult", "pneumonia"], ["child", "normal"], ["child", "pneumonia"]]
    assert (SAMPLE_DATA / "ATTRIBUTION.md").is_file()


@pytest.mark.parametrize("name", sorted(FILMS))
def test_each_film_is_a_secondary_capture_of_a_chest_radiograph(name: str) -> None:
    ds = _read(name)
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert (ds.Modality, ds.ConversionType, ds.BodyPartExamined) == ("CR", "WSD", "CHEST")
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored) == (
        "MONOCHROME2", 1, 8, 8)
    assert (ds.WindowCenter, ds.WindowWidth) == (128, 256)  # stored values shown as they are, like the PNG
    assert "ImageType" not in ds and ds.Manufacturer == ""
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    nih = FILMS[name].collection == MAKE.NIH
    assert str(ds.PatientName).startswith("NIH^" if nih else "Kermany^")
    for keyword in ("ViewPosition", "PatientAge", "PixelSpacing"):  # the NIH's labels give them, Kermany's do not
        assert (keyword in ds) == nih, keyword


@NEEDS_SHARED
@pytest.mark.parametrize("name", sorted(FILMS))
def test_the_tags_are_the_source_labels(name: str) -> None:
    ds, film = _read(name), FILMS[name]
    row = MAKE.label_row(SHARED_DATA, film)
    assert ds.PatientID == row["patient_id"]
    if film.collection == MAKE.KERMANY:
        assert ds.PatientSex == "" and ds.LossyImageCompression == "01"
        return
    assert (ds.PatientSex, ds.PatientAge, ds.ViewPosition) == (row["sex"], f"{int(row['age']):03d}Y", "PA")
    width, height = (int(n) for n in row["original_size"].split("x"))
    original = float(row["original_pixel_spacing_mm"])
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing],
                               [original * height / ds.Rows, original * width / ds.Columns], atol=5e-5)


@NEEDS_SHARED
@pytest.mark.parametrize("name", sorted(FILMS))
def test_the_pixels_are_exactly_the_shared_png(name: str) -> None:
    source = SHARED_DATA / FILMS[name].source
    png = np.asarray(PILImage.open(source))
    np.testing.assert_array_equal(_read(name).pixel_array, png)
    np.testing.assert_array_equal(load_image(SAMPLE_DATA / name).pixels, load_image(source).pixels)


@pytest.mark.parametrize("name", sorted(FILMS))
def test_the_bundled_models_tag_gate_analyses_each_film(name: str) -> None:
    use = read_intended_use(load_checkpoint("bundled"))
    ds = pydicom.dcmread(SAMPLE_DATA / name, stop_before_pixels=True)
    assert check_tags(ds, use) is None
    assert tag_notes(ds, use) == ["secondary capture of a radiograph (ConversionType WSD)"]


def test_predict_on_the_folder_analyses_all_four_and_passes_over_the_rest(tmp_path: Path) -> None:
    """The quick start's ``medcam predict sample_data``: four rows ``ok``; the script and the
    attribution are listed as not images, not errors."""
    assert main(["predict", str(SAMPLE_DATA), "--out", str(tmp_path)]) == 0
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(FILMS)
    assert {r["status"] for r in rows.values()} == {"ok"}, {n: r["reason"] for n, r in rows.items()}
    with open(tmp_path / "predictions.skipped.csv", newline="") as f:
        skipped = {Path(r["path"]).name for r in csv.DictReader(f)}
    assert skipped == {"ATTRIBUTION.md", "make_samples.py"}


@NEEDS_SHARED
def test_make_samples_reproduces_the_same_bytes(tmp_path: Path) -> None:
    MAKE.main(["--shared", str(SHARED_DATA), "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILMS)
    for name in FILMS:
        made, kept = (pydicom.dcmread(p, stop_before_pixels=True) for p in (tmp_path / name, SAMPLE_DATA / name))
        writer, committed = made.file_meta.ImplementationVersionName, kept.file_meta.ImplementationVersionName
        if writer != committed:
            pytest.skip(f"the samples were written by {committed}, this is {writer}: their bytes differ by that")
        assert (tmp_path / name).read_bytes() == (SAMPLE_DATA / name).read_bytes(), (
            f"{name} is not what sample_data/make_samples.py makes; run it again")


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy is not on PATH (Debian/Ubuntu: apt-get install dicom3tools)")
@pytest.mark.parametrize("name", sorted(FILMS))
def test_dciodvfy_reports_no_error(name: str) -> None:
    run = subprocess.run(["dciodvfy", str(SAMPLE_DATA / name)], capture_output=True, text=True, timeout=120)
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert errors == []
