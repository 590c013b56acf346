"""The one pipeline behind predict, export and score: contained failures, honest discovery, rows
that mean one thing, exit statuses, each input once."""

from __future__ import annotations

import csv
import errno
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import highdicom
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from medcam.cli import main
from medcam.gate import ServedModel
from medcam.scoring import ModelInfo, ScoreOptions, label_of, read_results, score, skipped_path

CT = Path(str(get_testdata_file("CT_small.dcm")))
MR = Path(str(get_testdata_file("MR_small.dcm")))


@pytest.fixture(scope="module")
def classifier(tiny_checkpoint: Path) -> ServedModel:
    return ServedModel(str(tiny_checkpoint))


def _rows(path: Path) -> dict[str, dict[str, str]]:
    return {Path(r["path"]).name: r for r in read_results(path)}


def _options(out: Path, **kwargs: object) -> ScoreOptions:
    """The inputs here are CT and MR slices: the intended-use gate (test_pipeline_gate.py) lets them through."""
    return ScoreOptions(out=out, workers=0, progress=False, ignore_intended_use=True, **kwargs)  # type: ignore[arg-type]


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CT, folder / "ct.dcm")
    shutil.copy(MR, folder / "mr.dcm")
    return folder


# --- output-side failures become rows -----------------------------------------------------------


def test_a_full_disk_while_writing_is_that_images_row_and_the_run_goes_on(
        classifier: ServedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path)
    real = __import__("medcam.scoring.outputs", fromlist=["write_cams"]).write_cams

    def write_cams(prediction, folder_, name, **kwargs):  # type: ignore[no-untyped-def]
        if name.startswith("ct"):
            raise OSError(errno.ENOSPC, "No space left on device", str(folder_ / f"{name}_overlay.png"))
        return real(prediction, folder_, name, **kwargs)

    monkeypatch.setattr("medcam.scoring.outputs.write_cams", write_cams)
    out = tmp_path / "r.csv"
    summary = score([folder], classifier, _options(out, cams=tmp_path / "cams"))
    rows = _rows(out)
    assert (summary.scored, summary.errors) == (2, 1)
    assert rows["ct.dcm"]["status"] == "error"
    assert "No space left on device" in rows["ct.dcm"]["reason"] and "CAM files" in rows["ct.dcm"]["reason"]
    assert rows["ct.dcm"]["prob_PNEUMONIA"] == ""
    assert rows["mr.dcm"]["status"] == "ok" and Path(rows["mr.dcm"]["overlay"]).is_file()
    again = score([folder], classifier, _options(out, cams=tmp_path / "cams"))  # resumes without meeting it again
    assert (again.scored, again.resumed) == (0, 2)


@pytest.fixture()
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder on a file system mounted read-only (root ignores chmod, not a read-only mount)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here (needs root in a namespace that allows it)")
    try:
        (folder / "cams").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder / "cams"
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_read_only_output_folder_gives_error_rows_not_a_crash(
        classifier: ServedModel, tmp_path: Path, read_only_folder: Path) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "r.csv"
    summary = score([folder], classifier, _options(out, cams=read_only_folder))
    rows = _rows(out)
    assert summary.errors == 2
    assert all("Read-only file system" in r["reason"] for r in rows.values()), rows


def test_a_highdicom_refusal_is_the_rows_reason_and_other_formats_are_written(
        classifier: ServedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("Segment descriptions are invalid")

    monkeypatch.setattr(highdicom.seg.Segmentation, "__init__", refuse)
    out = tmp_path / "r.csv"
    regions = tmp_path / "regions"
    summary = score([folder], classifier, _options(out, regions=regions, regions_of="all",
                                                   region_formats=("seg", "png")))
    rows = _rows(out)
    assert summary.errors == 2
    for row in rows.values():
        assert row["status"] == "error" and "seg:" in row["reason"] and "Segment descriptions" in row["reason"]
    assert len(list(regions.glob("*_mask.png"))) == 2  # the PNG format was still written


# --- discovery tells the truth ------------------------------------------------------------------


def test_image_named_files_that_cannot_be_read_get_rows_others_are_listed(
        classifier: ServedModel, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "x.dcm").write_bytes(b"")
    (folder / "y.dcm").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "half.dcm").write_bytes(CT.read_bytes()[: CT.stat().st_size // 2])
    (folder / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (folder / "readme.txt").write_text("notes")
    ds = pydicom.dcmread(get_testdata_file("DICOMDIR"))
    ds.save_as(folder / "DICOMDIR")
    out = tmp_path / "r.csv"
    summary = score([folder], classifier, _options(out))
    rows = _rows(out)
    assert set(rows) == {"ct.dcm", "mr.dcm", "x.dcm", "y.dcm", "half.dcm", "scan.png"}
    assert rows["x.dcm"]["reason"] == "empty file"
    assert "not a DICOM file" in rows["y.dcm"]["reason"] or "unknown format" in rows["y.dcm"]["reason"]
    assert "truncated" in rows["half.dcm"]["reason"]
    assert rows["scan.png"]["status"] == "error"
    with open(skipped_path(out), newline="") as f:
        skipped = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}
    assert set(skipped) == {"readme.txt", "DICOMDIR"}
    assert skipped["DICOMDIR"].startswith("DICOMDIR") and "not an image" in skipped["readme.txt"]
    assert summary.skipped == 2


# --- rows mean one thing ------------------------------------------------------------------------


@pytest.mark.parametrize(("probabilities", "expected"), [
    ([0.7, 0.3], ("NORMAL", False)),
    ([0.6, 0.4], ("PNEUMONIA", True)),  # below 0.5 but above the operating threshold: flagged
    ([0.1, 0.35, 0.55], ("EFFUSION", False)),  # most probable of the others
    ([0.2, 0.2, 0.6], ("EFFUSION", False)),
])
def test_label_is_the_positive_class_exactly_when_flagged(probabilities: list[float],
                                                          expected: tuple[str, bool]) -> None:
    classes = ("NORMAL", "PNEUMONIA", "EFFUSION")[:len(probabilities)]
    info = ModelInfo("m", classes, "PNEUMONIA", threshold=0.4 if len(classes) == 2 else 0.5)
    assert label_of(info, probabilities) == expected


# --- each input once, the same names, the same exit statuses ------------------------------------


def test_predict_and_export_process_an_input_named_twice_once(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    for command, table in (("predict", "predictions.csv"), ("export", "exports.csv")):
        out = tmp_path / command
        code = main([command, str(folder), str(folder / "ct.dcm"), "--model", str(tiny_checkpoint),
                     "--out", str(out), "--ignore-intended-use"])
        assert code == 0
        rows = list(read_results(out / table))
        assert sorted(Path(r["path"]).name for r in rows) == ["ct.dcm", "mr.dcm"], command


def test_exit_status_0_all_analysed_3_some_refused_1_fatal(tiny_checkpoint: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "r.csv"
    base = ["--model", str(tiny_checkpoint), "--workers", "0", "--ignore-intended-use"]
    assert main(["score", str(folder), "--out", str(out), *base]) == 0
    PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "later.png")
    (folder / "broken.dcm").write_bytes(b"")
    assert main(["score", str(folder), "--out", str(out), *base]) == 3
    other = tmp_path / "other.pt"
    shutil.copy(tiny_checkpoint, other)
    with open(other, "ab") as f:
        f.write(b"\0")  # another file, another model id
    assert main(["score", str(folder), "--out", str(out), "--model", str(other), "--ignore-intended-use"]) == 1
    assert "scored by model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad_arguments:
        main(["score", str(folder), "--out", str(out), "--no-such-flag"])
    assert bad_arguments.value.code == 1
    assert main(["predict", str(folder), "--out", str(tmp_path / "p"), *base[:2], "--ignore-intended-use"]) == 3


def test_predict_with_another_method_writes_the_same_outputs(tiny_checkpoint: Path, tmp_path: Path) -> None:
    maps = {}
    for method in ("cam", "gradcam", "gradcam++"):
        out = tmp_path / method
        assert main(["predict", str(CT), "--model", str(tiny_checkpoint), "--out", str(out),
                     "--method", method, "--ignore-intended-use"]) == 0
        row = next(read_results(out / "predictions.csv"))
        maps[method] = (float(row["prob_PNEUMONIA"]), np.load(row["cam"]))
        assert Path(row["overlay"]).is_file()
    for method in ("gradcam", "gradcam++"):  # the same forward pass gives the probabilities
        assert maps[method][0] == pytest.approx(maps["cam"][0], abs=1e-5)
        assert maps[method][1].shape == maps["cam"][1].shape
        assert not np.allclose(maps[method][1], maps["cam"][1])
