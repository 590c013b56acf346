"""``medcam score``: discovery, error rows, durable resumable results, per-study file, CAM files,
and the Ray engine against the local one. Crash safety is tested by killing real processes."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image as PILImage
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from medcam.cli import main
from medcam.config import ModelConfig, PreprocessConfig
from medcam.errors import MedcamError
from medcam.gate import ServedModel
from medcam.io import load_image
from medcam.models import build_network, save_checkpoint
from medcam.models.lungs import load_segmenter
from medcam.scoring import (
    ModelInfo,
    ResultsFile,
    ScoreOptions,
    ScoreSummary,
    iter_items,
    make_row,
    ray_engine,
    read_results,
    results_columns,
    score,
    score_ray,
    skipped_path,
    studies_path,
)
from medcam.scoring.dataset import Record, ScoringDataset, make_loader
from medcam.scoring.discover import Item
from medcam.scoring.options import output_name

REPO = Path(__file__).resolve().parents[1]
RG1_DICOM = REPO / "tests" / "data" / "rg1" / "dicom"


# --- fixtures and helpers --------------------------------------------------------------------



@pytest.fixture(scope="module")
def classifier(tiny_checkpoint: Path) -> ServedModel:
    return ServedModel(str(tiny_checkpoint))


def write_dicom(source: str | Path, path: Path, *, study: str | None = None, series: str | None = None,
                transform: Callable[[pydicom.Dataset], None] | None = None) -> pydicom.Dataset:
    """Copy a DICOM file to ``path`` with a new SOP Instance UID (and the given study/series)."""
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    if transform is not None:
        transform(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def pydicom_file(name: str) -> Path:
    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(str(found))


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(read_results(path))


def by_name(path: Path) -> dict[str, dict[str, str]]:
    return {Path(r["path"]).name: r for r in rows_of(path)}


def options(out: Path, **kwargs: object) -> ScoreOptions:
    """Options for these tests, whose inputs are mostly CT and MR slices: the intended-use gate
    (tested in test_pipeline_gate.py) lets them through with a note."""
    kwargs.setdefault("workers", 0)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("ignore_intended_use", True)
    return ScoreOptions(out=out, **kwargs)  # type: ignore[arg-type]


def many_dicoms(folder: Path, n: int) -> list[Path]:
    """``n`` small DICOMs (CT_small / MR_small copies, no extension) in 4 studies."""
    sources = [pydicom_file("CT_small.dcm"), pydicom_file("MR_small.dcm")]
    studies = [generate_uid() for _ in range(4)]
    paths = []
    for i in range(n):
        path = folder / f"img{i:04d}"
        write_dicom(sources[i % 2], path, study=studies[i % 4])
        paths.append(path)
    return paths


# --- discovery ---------------------------------------------------------------------------------


def test_discovery_by_content_skips_non_images_and_survives_a_symlink_loop(
        classifier: ServedModel, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_dicom(pydicom_file("CT_small.dcm"), folder / "no_extension")
    write_dicom(pydicom_file("MR_small_RLE.dcm"), folder / "deep" / "er" / "rle.bin")
    PILImage.fromarray(np.tile(np.arange(80, dtype=np.uint8), (60, 1))).save(folder / "chest.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "random.dat").write_bytes(np.random.default_rng(0).bytes(4000))
    (folder / ".hidden.png").write_bytes((folder / "chest.png").read_bytes())
    os.symlink(folder, folder / "deep" / "loop")  # a loop back to the top
    named_junk = tmp_path / "named_junk.bin"
    named_junk.write_bytes(np.random.default_rng(1).bytes(3000))
    missing = tmp_path / "missing.dcm"

    out = tmp_path / "results.csv"
    summary = score([folder, named_junk, missing, folder / "chest.png"], classifier, options(out))

    rows = by_name(out)
    assert set(rows) == {"no_extension", "rle.bin", "chest.png", "named_junk.bin", "missing.dcm"}
    assert len(rows_of(out)) == 5  # chest.png named and found in the folder: one row
    assert summary.skipped == 2 and summary.scored == 5 and summary.errors == 2
    for ok in ("no_extension", "rle.bin", "chest.png"):
        assert rows[ok]["status"] == "ok", rows[ok]
    assert rows["named_junk.bin"]["status"] == "error"
    assert "unknown format" in rows["named_junk.bin"]["reason"]
    assert "no such file" in rows["missing.dcm"]["reason"]
    with open(skipped_path(out), newline="") as f:
        skipped = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}
    assert set(skipped) == {"notes.txt", "random.dat"} and all("not an image" in r for r in skipped.values())
    assert rows["chest.png"]["study_instance_uid"] == ""


def test_unreadable_folder_gets_an_error_row_and_the_rest_is_scored(
        classifier: ServedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, where chmod 000 does not stop reading: make scandir refuse instead.
    folder = tmp_path / "in"
    write_dicom(pydicom_file("CT_small.dcm"), folder / "a")
    write_dicom(pydicom_file("CT_small.dcm"), folder / "locked" / "b")
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr("medcam.io.discover.os.scandir", scandir)
    out = tmp_path / "r.csv"
    score([folder], classifier, options(out))
    rows = by_name(out)
    assert rows["a"]["status"] == "ok"
    assert rows["locked"]["status"] == "error"
    assert "cannot read folder (Permission denied)" in rows["locked"]["reason"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_chmod_000_folder_is_reported(classifier: ServedModel, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_dicom(pydicom_file("CT_small.dcm"), folder / "locked" / "b")
    (folder / "locked").chmod(0)
    try:
        out = tmp_path / "r.csv"
        score([folder], classifier, options(out))
        assert "cannot read folder" in by_name(out)["locked"]["reason"]
    finally:
        (folder / "locked").chmod(0o755)


def test_iter_items_is_streamed_absolute_and_unique(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").write_bytes(b"x")
    (tmp_path / "b").write_bytes(b"y")
    monkeypatch.chdir(tmp_path)
    items = list(iter_items([".", "a", "a"], skip={str(tmp_path / "b")}))
    assert [(Path(i.path), i.named) for i in items] == [(tmp_path / "a", True)]


# --- rows ---------------------------------------------------------------------------------------


def test_columns_and_probabilities_agree_with_the_classifier(classifier: ServedModel, tmp_path: Path) -> None:
    ct = tmp_path / "in" / "ct"
    ds = write_dicom(pydicom_file("CT_small.dcm"), ct)
    out = tmp_path / "r.csv"
    score([ct.parent], classifier, options(out, batch_size=3))
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["path", "status", "reason", "sop_instance_uid", "series_instance_uid",
                      "study_instance_uid", "prob_NORMAL", "prob_PNEUMONIA", "label", "flagged", "ood_score",
                      "lung_evidence", "quality", "model", "segmenter", "calibration", "scored_at", "study_date",
                      "manufacturer",
                      "manufacturer_model", "station_name", "view_position", "body_part", "photometric",
                      "bits_stored"]
    row = by_name(out)["ct"]
    assert row["path"] == str(ct)
    assert (row["sop_instance_uid"], row["series_instance_uid"], row["study_instance_uid"]) == (
        ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID)
    direct = classifier.classify([load_image(ct)])[0]
    p = float(row["prob_PNEUMONIA"])
    assert p == pytest.approx(direct.probability("PNEUMONIA"), abs=1e-5)
    assert float(row["prob_NORMAL"]) == pytest.approx(direct.probability("NORMAL"), abs=1e-5)
    assert row["flagged"] == str(p >= classifier.checkpoint.threshold).lower()
    assert row["label"] == ("PNEUMONIA" if p >= classifier.checkpoint.threshold else "NORMAL")
    assert row["model"] == classifier.checkpoint.model_id


def test_bad_files_get_error_rows_with_reasons_and_do_not_stop_the_batch(
        classifier: ServedModel, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    study = generate_uid()
    write_dicom(pydicom_file("CT_small.dcm"), folder / "0_good", study=study)
    good = (folder / "0_good").read_bytes()
    (folder / "1_truncated").write_bytes(good[:-5000])
    (folder / "2_corrupt").write_bytes(good[:132] + np.random.default_rng(2).bytes(3000))

    def mpeg2(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder
        ds.PixelData = encapsulate([ds.PixelData])
        ds["PixelData"].VR = "OB"

    write_dicom(pydicom_file("CT_small.dcm"), folder / "3_mpeg2", study=study, transform=mpeg2)
    write_dicom(pydicom_file("SC_rgb.dcm"), folder / "4_colour")
    write_dicom(pydicom_file("rtplan.dcm"), folder / "5_plan")
    write_dicom(pydicom_file("MR_small.dcm"), folder / "6_good_after", study=study)
    random_bytes = tmp_path / "random.bin"
    random_bytes.write_bytes(np.random.default_rng(3).bytes(2048))

    out = tmp_path / "r.csv"
    code = main(["score", str(folder), str(random_bytes), "--out", str(out), "--model",
                 str(Path(classifier.checkpoint.path)), "--workers", "2", "--batch-size", "3", "--ignore-intended-use"])
    assert code == 3  # finished, some rows are errors
    rows = by_name(out)
    assert rows["0_good"]["status"] == rows["6_good_after"]["status"] == "ok"
    reasons = {name: r["reason"] for name, r in rows.items() if r["status"] == "error"}
    assert set(reasons) == {"1_truncated", "2_corrupt", "3_mpeg2", "4_colour", "5_plan", "random.bin"}
    assert reasons["1_truncated"].startswith("truncated")
    assert "corrupt DICOM" in reasons["2_corrupt"] or "not an image" in reasons["2_corrupt"]
    assert "cannot decode the pixel data (MPEG2" in reasons["3_mpeg2"]
    assert "not supported" in reasons["3_mpeg2"]
    assert reasons["4_colour"].startswith("colour image")
    assert "no pixel data" in reasons["5_plan"]
    assert "unknown format" in reasons["random.bin"]
    # refused DICOMs still carry their UIDs, so that their study shows them
    assert rows["1_truncated"]["study_instance_uid"] == study
    assert rows["3_mpeg2"]["study_instance_uid"] == study
    for name in reasons:
        assert rows[name]["prob_PNEUMONIA"] == rows[name]["label"] == rows[name]["flagged"] == ""


def test_studies_file_aggregates_each_study(classifier: ServedModel, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    a, b, c = (generate_uid() for _ in range(3))
    for i in range(2):
        write_dicom(pydicom_file("CT_small.dcm"), folder / f"a{i}", study=a)
    for i, source in enumerate(["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm"]):
        write_dicom(pydicom_file(source), folder / f"b{i}", study=b)
    (folder / "b3").write_bytes((folder / "b0").read_bytes()[:-4000])  # truncated, study b
    write_dicom(pydicom_file("MR_small.dcm"), folder / "c0", study=c)
    PILImage.fromarray(np.zeros((40, 40), np.uint8)).save(folder / "no_study.png")
    out = tmp_path / "night.csv"
    summary = score([folder], classifier, options(out, batch_size=4))
    assert summary.studies == studies_path(out) == tmp_path / "night.studies.csv"

    rows = rows_of(out)
    with open(summary.studies, newline="") as f:
        studies = list(csv.DictReader(f))
    assert list(studies[0]) == ["study_instance_uid", "n_images", "n_ok", "n_not_analysed", "n_error",
                                "max_prob_PNEUMONIA", "flagged", "model"]
    assert {s["study_instance_uid"] for s in studies} == {a, b, c}
    maxima = [float(s["max_prob_PNEUMONIA"]) for s in studies]
    assert maxima == sorted(maxima, reverse=True)  # most suspicious study first
    for s in studies:
        mine = [r for r in rows if r["study_instance_uid"] == s["study_instance_uid"]]
        ok = [r for r in mine if r["status"] == "ok"]
        assert int(s["n_images"]) == len(mine)
        assert int(s["n_ok"]) == len(ok) and int(s["n_error"]) == len(mine) - len(ok)
        assert float(s["max_prob_PNEUMONIA"]) == max(float(r["prob_PNEUMONIA"]) for r in ok)
        assert s["flagged"] == str(any(r["flagged"] == "true" for r in ok)).lower()
        assert s["model"] == classifier.checkpoint.model_id
    b_row = next(s for s in studies if s["study_instance_uid"] == b)
    assert (b_row["n_images"], b_row["n_ok"], b_row["n_error"]) == ("4", "3", "1")


def test_threads_option_sets_the_model_threads(classifier: ServedModel, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    write_dicom(pydicom_file("CT_small.dcm"), tmp_path / "in" / "ct")
    try:
        code = main(["score", str(tmp_path / "in"), "--out", str(tmp_path / "r.csv"), "--model",
                     str(Path(classifier.checkpoint.path)), "--workers", "0", "--threads", "1",
                     "--ignore-intended-use"])
        assert code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


class _Niceness(ScoringDataset):
    """Reports the niceness of the process that decodes, in the record's reason field."""

    def __getitem__(self, item: Item) -> Record:
        return Record(item.path, reason=str(os.nice(0)))


@pytest.mark.parametrize("niceness", [0, 19])
def test_decoding_workers_run_at_the_niceness_asked_for(niceness: int) -> None:
    items = [Item(f"/nowhere/{i}", named=True) for i in range(4)]
    loader = make_loader(iter(items), _Niceness(PreprocessConfig()), batch_size=2, workers=2, niceness=niceness)
    seen = {record.reason for batch in loader for record in batch.records}
    assert seen == {str(min(19, os.nice(0) + niceness))}


def test_cams_have_safe_names_that_never_collide(classifier: ServedModel, tmp_path: Path) -> None:
    one = tmp_path / "site 1" / "img.dcm"
    two = tmp_path / "site;2" / "img.dcm"
    write_dicom(pydicom_file("CT_small.dcm"), one)
    write_dicom(pydicom_file("MR_small.dcm"), two)
    cams = tmp_path / "cams"  # inside the input folder, as is the results file
    out = tmp_path / "r.csv"
    score([tmp_path], classifier, options(out, cams=cams))
    rows = {r["path"]: r for r in rows_of(out)}
    assert set(rows) == {str(one), str(two)}
    files = [Path(rows[str(p)][kind]) for p in (one, two) for kind in ("overlay", "cam", "lungs")]
    assert len(set(files)) == 6 and all(f.parent == cams.resolve() and f.is_file() for f in files)
    assert sorted(p.name for p in cams.iterdir()) == sorted(f.name for f in files)
    image = load_image(one)
    maps = np.load(rows[str(one)]["cam"])
    np.testing.assert_allclose(maps, classifier.classify([image])[0].maps.numpy(), atol=1e-5)
    assert PILImage.open(rows[str(one)]["overlay"]).size == (image.shape[1], image.shape[0])
    again = score([tmp_path], classifier, options(out, cams=cams))  # its own outputs are not inputs
    assert (again.scored, again.skipped, len(rows_of(out))) == (0, 0, 2)


def test_regions_are_exported_for_flagged_images_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_network(ModelConfig()).eval()
    ckpt_path = tmp_path / "t.pt"
    save_checkpoint(ckpt_path, net, ModelConfig(), PreprocessConfig(size=64), trained=False)
    probe = ServedModel(str(ckpt_path))
    folder = tmp_path / "in"
    ct, mr = folder / "ct", folder / "mr"
    write_dicom(pydicom_file("CT_small.dcm"), ct)
    write_dicom(pydicom_file("MR_small.dcm"), mr)
    p_ct, p_mr = (probe.classify([load_image(p)])[0].positive_probability for p in (ct, mr))
    assert p_ct != p_mr
    # an operating point between the two images: exactly one of them is flagged
    save_checkpoint(ckpt_path, net, ModelConfig(), PreprocessConfig(size=64), trained=False,
                    threshold=(p_ct + p_mr) / 2)
    flagged, unflagged = (ct, mr) if p_ct > p_mr else (mr, ct)
    regions = tmp_path / "regions"
    out = tmp_path / "r.csv"
    score([folder], ServedModel(str(ckpt_path)), options(out, regions=regions, region_formats=("seg", "json")))
    rows = by_name(out)
    assert rows[flagged.name]["flagged"] == "true" and rows[unflagged.name]["flagged"] == "false"
    written = sorted(p.name for p in regions.iterdir())
    assert written and all(name.startswith(output_name(str(flagged))) for name in written)
    segs = [p for p in regions.iterdir() if p.name.endswith(".dcm")]
    assert len(segs) == 1
    seg = pydicom.dcmread(segs[0])
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == \
        pydicom.dcmread(flagged).SOPInstanceUID


# --- durability and resume ----------------------------------------------------------------------


def test_resume_scores_only_what_is_missing(classifier: ServedModel, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in"
    many_dicoms(folder, 3)
    out = tmp_path / "r.csv"
    seen: list[int] = []
    forward = classifier.forward

    def counting(batch: torch.Tensor) -> object:
        seen.append(batch.shape[0])
        return forward(batch)

    monkeypatch.setattr(classifier, "forward", counting)
    first = score([folder], classifier, options(out))
    assert (first.scored, sum(seen)) == (3, 3)
    before = {r["path"]: r for r in rows_of(out)}

    (folder / "later").mkdir()
    many_dicoms(folder / "later", 2)
    seen.clear()
    second = score([folder], classifier, options(out))
    assert (second.scored, second.resumed, sum(seen)) == (2, 3, 2)
    after = rows_of(out)
    assert len(after) == len({r["path"] for r in after}) == 5
    assert all(before[r["path"]] == r for r in after if r["path"] in before)  # old rows untouched

    seen.clear()
    third = score([folder], classifier, options(out))
    assert (third.scored, sum(seen), len(rows_of(out))) == (0, 0, 5)


def test_torn_last_row_is_cut_and_that_input_scored_again(classifier: ServedModel, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    paths = many_dicoms(folder, 4)
    out = tmp_path / "r.csv"
    score([folder], classifier, options(out))
    text = out.read_bytes()
    last_start = text.rstrip(b"\n").rfind(b"\n") + 1
    out.write_bytes(text[:last_start + 40])  # the last row torn in the middle
    summary = score([folder], classifier, options(out))
    assert summary.scored == 1
    repaired = out.read_bytes()
    assert repaired[:last_start] == text[:last_start]  # the rows before are untouched
    header = next(csv.reader(io.StringIO(text.decode())))
    old, new = (dict(zip(header, next(csv.reader(io.StringIO(t[last_start:].decode()))), strict=True))
                for t in (text, repaired))
    floats = ("prob_NORMAL", "prob_PNEUMONIA", "lung_evidence")
    same = [c for c in header if c not in (*floats, "scored_at")]
    assert [new[c] for c in same] == [old[c] for c in same]  # the same row, scored again
    assert all(float(new[c]) == pytest.approx(float(old[c]), abs=1e-5) for c in floats if old[c])
    assert new["scored_at"] >= old["scored_at"]
    assert sorted(r["path"] for r in rows_of(out)) == sorted(map(str, paths))


def test_results_file_refuses_another_model_other_columns_and_a_second_writer(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    columns = results_columns(("NORMAL", "PNEUMONIA"))
    info = ModelInfo("densenet121-aaa", ("NORMAL", "PNEUMONIA"), "PNEUMONIA", 0.5, segmenter_id="lungunet-aaa")
    with ResultsFile.open(out, columns, "densenet121-aaa", segmenter_id="lungunet-aaa") as results:
        results.append([make_row(info, str(tmp_path / "x"), "error", "why", ("", "", ""), None)])
    (tmp_path / "old.csv").write_text("path,status,error,sop_instance_uid\n")
    with pytest.raises(MedcamError, match="older medcam"):
        ResultsFile.open(tmp_path / "old.csv", columns, "densenet121-aaa")
    before_lungs = [c for c in columns if c not in ("lung_evidence", "quality", "segmenter")]
    (tmp_path / "before.csv").write_text(",".join(before_lungs) + "\n")
    with pytest.raises(MedcamError, match=r"older medcam \(no lung_evidence, quality, segmenter columns\)"):
        ResultsFile.open(tmp_path / "before.csv", columns, "densenet121-aaa")
    (tmp_path / "one_map.csv").write_text(",".join(c for c in columns if c != "calibration") + "\n")
    with pytest.raises(MedcamError, match=r"older medcam \(no calibration column\)"):
        ResultsFile.open(tmp_path / "one_map.csv", columns, "densenet121-aaa")
    with pytest.raises(MedcamError, match="lung segmenter lungunet-aaa, this run uses lungunet-bbb"):
        ResultsFile.open(out, columns, "densenet121-aaa", segmenter_id="lungunet-bbb")
    with (ResultsFile.open(out, columns, "densenet121-aaa", segmenter_id="lungunet-aaa"),
          pytest.raises(MedcamError, match="another medcam")):
        ResultsFile.open(out, columns, "densenet121-aaa", segmenter_id="lungunet-aaa")
    with pytest.raises(MedcamError, match="scored by model densenet121-aaa"):
        ResultsFile.open(out, columns, "densenet121-bbb", segmenter_id="lungunet-aaa")
    with pytest.raises(MedcamError, match="has the columns"):
        ResultsFile.open(out, results_columns(("A", "B", "C")), "densenet121-aaa")
    with ResultsFile.open(out, columns, "densenet121-aaa", segmenter_id="lungunet-aaa") as results:
        assert results.done == {str(tmp_path / "x")}


def test_a_forked_child_neither_keeps_the_lock_nor_can_write(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    columns = results_columns(("NORMAL", "PNEUMONIA"))
    results = ResultsFile.open(out, columns, "m")
    read, write = os.pipe()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child, like a decoding worker: outlives the writer for a while
        os.close(write)
        os.write(ready_write, b"x")
        os.read(read, 1)
        os._exit(0)
    try:
        os.read(ready_read, 1)
        results.close()  # as if the writer had been killed
        with ResultsFile.open(out, columns, "m") as again:  # not blocked by the child
            assert again.done == set()
    finally:
        os.close(write)
        os.waitpid(pid, 0)
    assert out.read_text() == ",".join(columns) + "\n"


def _count_rows(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def _score_command(folder: Path, out: Path, checkpoint: Path) -> list[str]:
    return [sys.executable, "-m", "medcam", "score", str(folder), "--out", str(out), "--model",
            str(checkpoint), "--batch-size", "2", "--workers", "1", "--ignore-intended-use"]


# One intra-op thread: the test machine's cores may be busy, where spinning threads crawl.
_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run_until(command: list[str], out: Path, rows: int, sig: int) -> subprocess.Popen[str]:
    """Start ``command``, wait until ``out`` has ``rows`` rows, send ``sig``; the process must
    still be running when it is sent."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_ENV)
    deadline = time.monotonic() + 120
    while _count_rows(out) < rows:
        assert proc.poll() is None, f"scoring ended before {rows} rows: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, "scoring made no progress"
        time.sleep(0.002)
    assert proc.poll() is None, "scoring finished before it could be interrupted"
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    return proc


def _assert_one_row_each(out: Path, expected: set[str], *, complete: bool) -> None:
    paths = [r["path"] for r in rows_of(out)]
    assert len(paths) == len(set(paths)), "a path has two rows"
    assert set(paths) <= expected
    if complete:
        assert set(paths) == expected
        assert out.read_bytes().endswith(b"\n")


@pytest.mark.slow
def test_kill_9_at_several_points_then_resume_gives_exactly_one_row_per_input(
        tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    paths = many_dicoms(folder, 100)
    (folder / "broken").write_bytes(paths[0].read_bytes()[:-6000])
    expected = {str(p) for p in paths} | {str(folder / "broken")}
    out = tmp_path / "r.csv"
    command = _score_command(folder, out, tiny_checkpoint)
    for rows in (10, 60):
        proc = _run_until(command, out, rows, signal.SIGKILL)
        assert proc.returncode == -signal.SIGKILL
        _assert_one_row_each(out, expected, complete=False)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_ENV)
    assert done.returncode in (0, 3), done.stderr  # 3 when this run wrote the broken file's row
    _assert_one_row_each(out, expected, complete=True)
    assert by_name(out)["broken"]["reason"].startswith("truncated")
    assert studies_path(out).is_file()
    rows = rows_of(out)  # the lung and acquisition columns survive the kills and the resume
    assert {r["segmenter"] for r in rows} == {load_segmenter().segmenter_id}
    analysed = [r for r in rows if r["status"] == "ok"]
    evidence = [float(r["lung_evidence"]) for r in analysed if r["lung_evidence"]]  # empty: no positive evidence
    assert len(analysed) == 100 and evidence and all(0 <= e <= 1 for e in evidence)
    assert all(r["manufacturer"] and r["bits_stored"] for r in analysed)
    assert all(datetime.fromisoformat(r["scored_at"]).tzinfo is not None for r in rows)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    paths = many_dicoms(folder, 60)
    out = tmp_path / "r.csv"
    command = _score_command(folder, out, tiny_checkpoint)
    proc = _run_until(command, out, 10, signal.SIGINT)
    assert proc.returncode == 130
    assert "run the same command again to resume" in (proc.stderr.read() if proc.stderr else "")
    assert out.read_bytes().endswith(b"\n")  # nothing torn
    _assert_one_row_each(out, {str(p) for p in paths}, complete=False)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_ENV)
    assert done.returncode == 0, done.stderr
    _assert_one_row_each(out, {str(p) for p in paths}, complete=True)


# --- Ray ----------------------------------------------------------------------------------------


def test_ray_missing_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MedcamError, match=r'pip install "medcam-screening\[distributed\]"'):
        ray_engine.import_ray()


@pytest.mark.slow
def test_ray_engine_writes_the_same_rows_and_files_as_the_local_engine(classifier: ServedModel,
                                                                       tmp_path: Path) -> None:
    pytest.importorskip("ray.data", reason='Ray is optional: pip install "medcam-screening[distributed]"')
    folder = tmp_path / "in"
    many_dicoms(folder, 6)
    for source in sorted(RG1_DICOM.glob("RG1_*.dcm"))[:2]:  # full-size CR, two transfer syntaxes
        write_dicom(source, folder / "rg1" / source.stem)
    (folder / "truncated").write_bytes((folder / "img0000").read_bytes()[:-3000])
    (folder / "notes.txt").write_text("skipped")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 500)
    ckpt = classifier.checkpoint  # at threshold 0 every image is flagged and gets its regions exported
    save_checkpoint(tmp_path / "all.pt", ckpt.network, ckpt.model, ckpt.preprocess, trained=False, threshold=0.0)
    flag_all = ServedModel(str(tmp_path / "all.pt"))

    def run(engine: str) -> ScoreSummary:
        kwargs = {"batch_size": 4, "cams": tmp_path / engine / "cams", "regions": tmp_path / engine / "regions",
                  "region_formats": ("png", "json")}
        if engine == "local":
            return score([folder, junk], flag_all, options(tmp_path / "local.csv", **kwargs))
        return score_ray([folder, junk], flag_all.checkpoint, options(tmp_path / "ray.csv", **kwargs), num_cpus=3)

    local_out, ray_out = tmp_path / "local.csv", tmp_path / "ray.csv"
    run("local")
    summary = run("ray")
    assert summary.scored == 10 and summary.skipped == 1

    local = {r["path"]: r for r in rows_of(local_out)}
    remote = {r["path"]: r for r in rows_of(ray_out)}
    assert set(local) == set(remote) and len(local) == 10
    for path, row in local.items():
        other = remote[path]
        for column, value in row.items():
            if (column.startswith("prob_") or column == "lung_evidence") and value:
                assert float(other[column]) == pytest.approx(float(value), abs=1e-4), (path, column)
            elif column == "scored_at":
                assert datetime.fromisoformat(other[column]).tzinfo is not None, (path, column)
            elif column in ("overlay", "cam", "lungs", "exports") and value:
                if column == "exports":
                    assert [Path(f).name for f in other[column].split(";")] == [
                        Path(f).name for f in value.split(";")], (path, column)
                    continue
                assert Path(other[column]).parent == (tmp_path / "ray" / "cams").resolve()
                assert Path(other[column]).name == Path(value).name, (path, column)
            else:
                assert other[column] == value, (path, column)
        if row["cam"]:
            np.testing.assert_allclose(np.load(other["cam"]), np.load(row["cam"]), atol=1e-5)
    assert sum(bool(r["cam"]) for r in local.values()) == 8  # the truncated file and the junk have none
    exported = [sorted(p.name for p in (tmp_path / engine / "regions").iterdir()) for engine in ("local", "ray")]
    assert exported[0] == exported[1] and any(name.endswith(".png") for name in exported[0])
    for name in exported[0]:
        if name.endswith(".png"):
            local_png, ray_png = (np.asarray(PILImage.open(tmp_path / e / "regions" / name)) for e in ("local", "ray"))
            # the engines batch differently, and CPU convolutions round a batch's sums in their
            # own order: maps agree to 1e-5, so a pixel whose value is at the threshold may flip
            assert local_png.shape == ray_png.shape and local_png.any(), name
            assert (local_png != ray_png).mean() < 1e-5, name
    with open(studies_path(local_out)) as f, open(studies_path(ray_out)) as g:
        studies = [{r["study_instance_uid"]: r for r in csv.DictReader(h)} for h in (f, g)]
    assert set(studies[0]) == set(studies[1]) and len(studies[0]) == 6  # 4 of img*, 2 of RG1
    for uid, row in studies[0].items():
        assert (row["n_images"], row["n_ok"], row["n_error"]) == tuple(
            studies[1][uid][k] for k in ("n_images", "n_ok", "n_error"))
