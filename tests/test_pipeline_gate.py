"""The intended-use gate in the pipeline: refused images are not analysed, with the reason, in
every front end; the research flag analyses them and says so."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

import medcam.scoring.dataset
from medcam.cli import main
from medcam.gate import OODStats, ServedModel, write_ood
from medcam.io import load_image
from medcam.models.preprocess import prepare
from medcam.scoring import ScoreOptions, read_results, score, studies_path


def _corpus(name: str) -> Path:
    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"pydicom-data's {name} is not installed")
    return Path(str(found))


@pytest.fixture()
def mixed(tmp_path: Path) -> Path:
    """A chest PA CR (RG1), an extremity CR (RG3), a CT and an MR slice, in one study."""
    folder = tmp_path / "in"
    folder.mkdir()
    study = pydicom.uid.generate_uid()
    for name in ("RG1_UNCR.dcm", "RG3_UNCR.dcm", "CT_small.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(_corpus(name))
        ds.StudyInstanceUID = study
        ds.save_as(folder / name)
    return folder


def _rows(path: Path) -> dict[str, dict[str, str]]:
    return {Path(r["path"]).name: r for r in read_results(path)}


def test_the_tag_gate_refuses_what_the_model_was_not_made_for(tiny_checkpoint: Path, mixed: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    summary = score([mixed], ServedModel(str(tiny_checkpoint)), ScoreOptions(out=out, workers=0, progress=False))
    rows = _rows(out)
    assert rows["RG1_UNCR.dcm"]["status"] == "ok" and rows["RG1_UNCR.dcm"]["reason"] == ""
    assert "EXTREMITY" in rows["RG3_UNCR.dcm"]["reason"]
    assert "modality CT" in rows["CT_small.dcm"]["reason"] and "modality MR" in rows["MR_small.dcm"]["reason"]
    for name in ("RG3_UNCR.dcm", "CT_small.dcm", "MR_small.dcm"):
        assert rows[name]["status"] == "not_analysed"
        assert rows[name]["prob_PNEUMONIA"] == rows[name]["label"] == rows[name]["flagged"] == ""
    assert (summary.refused, summary.errors, summary.complete) == (3, 0, False)
    with open(studies_path(out), newline="") as f:
        (study,) = list(csv.DictReader(f))
    assert (study["n_images"], study["n_ok"], study["n_not_analysed"], study["n_error"]) == ("4", "1", "3", "0")


def test_a_reader_failing_unexpectedly_before_the_gate_is_that_files_row(
        tiny_checkpoint: Path, mixed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate reads the data set that is then decoded; whatever that read raises stays in the row."""
    real = medcam.scoring.dataset.read_dataset

    def read_dataset(path: str | Path) -> pydicom.Dataset:
        if Path(path).name == "MR_small.dcm":
            raise RuntimeError("a reader bug")
        return real(path)

    monkeypatch.setattr(medcam.scoring.dataset, "read_dataset", read_dataset)
    out = tmp_path / "r.csv"
    score([mixed], ServedModel(str(tiny_checkpoint)), ScoreOptions(out=out, workers=0, progress=False))
    rows = _rows(out)
    assert rows["MR_small.dcm"]["status"] == "error"
    assert rows["MR_small.dcm"]["reason"] == "could not be read (RuntimeError: a reader bug)"
    assert rows["RG1_UNCR.dcm"]["status"] == "ok" and rows["CT_small.dcm"]["status"] == "not_analysed"


def test_ignore_intended_use_analyses_them_and_says_so(tiny_checkpoint: Path, mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    code = main(["score", str(mixed), "--out", str(out), "--model", str(tiny_checkpoint), "--workers", "0",
                 "--ignore-intended-use"])
    assert code == 0
    rows = _rows(out)
    assert all(r["status"] == "ok" and r["prob_PNEUMONIA"] for r in rows.values())
    assert "--ignore-intended-use" in rows["CT_small.dcm"]["reason"] and "modality CT" in rows["CT_small.dcm"]["reason"]
    assert rows["RG1_UNCR.dcm"]["reason"] == ""


def test_rsna_secondary_captures_are_scored_as_they_are(tiny_checkpoint: Path, rsna_dicoms: list[Path],
                                                        tmp_path: Path) -> None:
    """The RSNA Pneumonia Challenge's chest CRs, stored as Secondary Capture, unchanged."""
    out = tmp_path / "r.csv"
    summary = score(rsna_dicoms, ServedModel(str(tiny_checkpoint)), ScoreOptions(out=out, workers=0, progress=False))
    rows = _rows(out)
    assert set(rows) == {p.name for p in rsna_dicoms}
    assert all(r["status"] == "ok" and r["prob_PNEUMONIA"] for r in rows.values()), rows
    assert all("secondary capture of a radiograph (ConversionType WSD)" in r["reason"] for r in rows.values())
    assert (summary.scored, summary.refused, summary.errors) == (len(rsna_dicoms), 0, 0)


@pytest.mark.parametrize("ignore", [False, True], ids=["gate", "ignore-intended-use"])
def test_medcams_own_results_are_refused_when_scored_back(tiny_checkpoint: Path, own_results: dict[str, Path],
                                                         ignore: bool, tmp_path: Path) -> None:
    """Its Secondary Capture, region overlay, mask and CAM overlay of RG1, in a folder with RG1 itself:
    only RG1 is analysed, even when the run ignores the intended use."""
    folder = tmp_path / "back"
    folder.mkdir()
    for kind, path in own_results.items():
        shutil.copy(path, folder / f"{kind}{path.suffix}")
    shutil.copy(_corpus("RG1_UNCR.dcm"), folder / "rg1.dcm")
    out = tmp_path / "r.csv"
    main(["score", str(folder), "--out", str(out), "--model", str(tiny_checkpoint), "--workers", "0",
          *(["--ignore-intended-use"] if ignore else [])])
    rows = _rows(out)
    assert set(rows) == {"rg1.dcm", "sc.dcm", "overlay.png", "mask.png", "cam_overlay.png"}
    assert rows["rg1.dcm"]["status"] == "ok" and rows["rg1.dcm"]["prob_PNEUMONIA"]
    # the tag gate refuses the SC before decoding; ignoring it, the DICOM reader still does
    assert rows["sc.dcm"]["status"] == ("error" if ignore else "not_analysed")
    assert "medcam's own output (Manufacturer medcam), not a radiograph" in rows["sc.dcm"]["reason"]
    for name in ("overlay.png", "mask.png", "cam_overlay.png"):
        assert rows[name]["status"] == "error" and rows[name]["prob_PNEUMONIA"] == ""
        assert rows[name]["reason"] == ("medcam's own output (PNG Software=medcam), not a radiograph; "
                                        "score the original image instead")


@pytest.fixture()
def gated_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The tiny model with image-gate statistics centred on one PNG: a second, different PNG is
    out of distribution. Returns the checkpoint and the two PNGs."""
    inside, outside = tmp_path / "chest.png", tmp_path / "other.png"
    rng = np.random.default_rng(0)
    PILImage.fromarray(np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (80, 1))).save(inside)
    PILImage.fromarray(rng.integers(0, 255, (80, 96), dtype=np.uint8)).save(outside)
    classifier = ServedModel(str(tiny_checkpoint))
    x = torch.stack([prepare(load_image(p), classifier.checkpoint.preprocess)[0] for p in (inside, outside)])
    features = classifier.forward(x).features
    assert features is not None
    distance = float((features[1] - features[0]).norm())
    stats = OODStats(means=features[:1].clone(), precision=torch.eye(features.shape[1]), threshold=distance / 2)
    gated = tmp_path / "gated.pt"
    write_ood(tiny_checkpoint, stats, out=gated)
    return gated, inside, outside


def test_the_image_gate_refuses_from_the_same_forward_pass(gated_checkpoint: tuple[Path, Path, Path],
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, inside, outside = gated_checkpoint
    out = tmp_path / "p"
    assert main(["predict", str(inside), str(outside), "--model", str(model), "--out", str(out)]) == 3
    printed = capsys.readouterr().out
    assert "other.png  not analysed: the image does not resemble" in printed
    rows = _rows(out / "predictions.csv")
    assert rows["chest.png"]["status"] == "ok" and float(rows["chest.png"]["ood_score"]) == pytest.approx(0, abs=1e-3)
    refused = rows["other.png"]
    assert refused["status"] == "not_analysed" and refused["prob_PNEUMONIA"] == "" and refused["overlay"] == ""
    assert float(refused["ood_score"]) > 0
    assert not list(out.glob("other-*"))  # no overlay, no maps for a refused image

    exported = tmp_path / "e"
    assert main(["export", str(inside), str(outside), "--model", str(model), "--out", str(exported),
                 "--formats", "png,json"]) == 3
    assert not list(exported.glob("other-*")) and list(exported.glob("chest-*_mask.png"))


def test_a_refused_dicom_gets_a_not_analysed_report_when_sr_is_asked_for(tiny_checkpoint: Path, mixed: Path,
                                                                         tmp_path: Path) -> None:
    shutil.copy(mixed / "CT_small.dcm", tmp_path / "ct.dcm")
    out = tmp_path / "e"
    assert main(["export", str(tmp_path / "ct.dcm"), "--model", str(tiny_checkpoint), "--out", str(out),
                 "--formats", "sr,png"]) == 3
    row = next(read_results(out / "exports.csv"))
    assert row["status"] == "not_analysed"
    (report,) = [Path(p) for p in row["exports"].split(";")]
    sr = pydicom.dcmread(report)
    assert sr.Modality == "SR" and sr.StudyInstanceUID == pydicom.dcmread(mixed / "CT_small.dcm").StudyInstanceUID
    texts: list[str] = []
    sr.walk(lambda _, element: texts.append(str(element.value)) if element.keyword == "TextValue" else None)
    assert any("modality CT" in text for text in texts), texts
    assert not list(out.glob("*.png"))
