"""``medcam score dicomweb:URL``: QIDO-RS / WADO-RS / STOW-RS against a real Orthanc (tests/node/pacs.py)."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import torch
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from medcam.cli import main
from medcam.config import ModelConfig, PreprocessConfig
from medcam.errors import MedcamError
from medcam.models import build_network, save_checkpoint
from medcam.node.dicomweb import Fetched, fetch_instances, instance_path, stow_files, stowed_path
from medcam.scoring import read_results

from .pacs import Orthanc

MEDCAM = Path(sys.executable).with_name("medcam")


def _variant(source: Path, folder: Path, name: str, **tags: str) -> Path:
    """A copy of ``source`` with new, deterministic study/series/instance UIDs and ``tags`` changed."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["medcam-test", name, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["medcam-test", name, "series"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["medcam-test", name])
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if "SOPClassUID" in tags:
        ds.file_meta.MediaStorageSOPClassUID = tags["SOPClassUID"]
    path = folder / f"{name}.dcm"
    ds.save_as(path)
    return path


@pytest.fixture(scope="module")
def flag_all(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded tiny DenseNet of tests/conftest.py with its operating threshold at 0: every analysed
    image is flagged, so each gets its report whatever the untrained network answers."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "flag-all.pt"
    save_checkpoint(path, build_network(ModelConfig()).eval(), ModelConfig(), PreprocessConfig(size=64),
                    trained=False, threshold=0.0)
    return path


@pytest.fixture
def extremity(testdata: Callable[[str], Path], tmp_path: Path) -> Path:
    """pydicom-data's RG3_J2KI (a CR of a hand, JPEG 2000, 200 kB) as a study of 2024 of its own."""
    return _variant(testdata("RG3_J2KI.dcm"), tmp_path, "extremity", StudyDate="20240102")


def _read(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


# --- file names -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["../../x", "..", ".", "/etc/passwd", "1.2/../../3", "1.2.3/4", "", None,
                                   "1." + "2" * 63, "1..2", "\uff11.\uff12", "1.2\n..", "C:\\x"])
def test_no_tag_value_puts_a_file_outside_the_folder(value: object, tmp_path: Path) -> None:
    folder = tmp_path / "fetched"
    path = instance_path(folder, value, value, value)
    assert path.resolve().is_relative_to(folder.resolve())
    assert len(path.relative_to(folder).parts) == 3
    assert all(part[0] == "x" and len(part.removesuffix(".dcm")) == 33 for part in path.relative_to(folder).parts)


def test_valid_uids_name_the_files_as_they_are(tmp_path: Path) -> None:
    path = instance_path(tmp_path, "1.2.3", "1.2.3.4", " 1.2.3.4.5\0")  # DICOM pads UIDs with NUL
    assert path == tmp_path / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"
    assert instance_path(tmp_path, "1." + "2" * 62, "1", "2").parts[-3] == "1." + "2" * 62


# --- arguments ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--since", "2024-01-31"], "--since '2024-01-31' is not a date as YYYYMMDD"),
    (["--since", "20240230"], "--since '20240230' is not a date as YYYYMMDD"),
    (["--study", "../../x"], "--study '../../x' is not a Study Instance UID"),
    (["--study", "1.2", "--since", "20240101"], "give --study or --since, not both"),
    (["--stow", "http://127.0.0.1:8042/dicom-web"], "--stow stores the DICOM results of --regions"),
    (["--stow", "pacs:8042", "--regions", "REGIONS"], "--stow: 'pacs:8042' is not a DICOMweb base URL"),
])
def test_bad_archive_arguments_are_fatal_before_anything_runs(args: list[str], message: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(tmp_path / "regions") if a == "REGIONS" else a for a in args]
    out = tmp_path / "night.csv"
    assert main(["score", "dicomweb:http://127.0.0.1:8042/dicom-web", "--out", str(out), *args]) == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_study_or_since_without_an_archive_is_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(tmp_path), "--out", str(tmp_path / "r.csv"), "--since", "20240101"]) == 1
    assert "give an input dicomweb:URL" in capsys.readouterr().err
    assert main(["score", "dicomweb:ftp://pacs/x", "--out", str(tmp_path / "r.csv")]) == 1
    assert "input 'dicomweb:ftp://pacs/x': 'ftp://pacs/x' is not a DICOMweb base URL" in capsys.readouterr().err


# --- fetching --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_fetch_keeps_the_radiographs_only_in_uid_folders_and_resumes(
        orthanc: Orthanc, rg1_data: Path, testdata: Callable[[str], Path], extremity: Path,
        tmp_path: Path) -> None:
    chest = rg1_data / "dicom" / "RG1_JLSL.dcm"
    other_sc = _variant(extremity, tmp_path, "screenshot", SOPClassUID=SecondaryCaptureImageStorage, Modality="OT",
                        Manufacturer="Acme")
    own_sc = _variant(extremity, tmp_path, "medcam-sc", SOPClassUID=SecondaryCaptureImageStorage, Modality="OT",
                      Manufacturer="medcam")
    for path in (chest, extremity, other_sc, own_sc, testdata("test-SR.dcm"), testdata("CT_small.dcm")):
        orthanc.upload(path)  # as they are: storescu cannot send JPEG-LS or JPEG 2000 unchanged
    folder = tmp_path / "fetched"

    first = orthanc.netns.call(lambda: list(fetch_instances(orthanc.dicomweb, folder)))

    wanted = {chest, extremity, other_sc}
    expected = {instance_path(folder, (d := _read(p)).StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID)
                for p in wanted}
    assert {f.path for f in first} == expected
    assert all(f.new and not f.problem for f in first)
    assert {p for p in folder.rglob("*") if p.is_file()} == expected
    for source in wanted:  # the instance as it was stored, in its transfer syntax
        d = _read(source)
        kept = _read(instance_path(folder, d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID))
        assert kept.SOPInstanceUID == d.SOPInstanceUID
        assert kept.file_meta.TransferSyntaxUID == d.file_meta.TransferSyntaxUID

    torn = next(iter(expected))
    torn.with_name(f".{torn.name}.k1ll3d.tmp").write_bytes(b"\0" * 128 + b"DICM")  # left by a killed run
    again = orthanc.netns.call(lambda: list(fetch_instances(orthanc.dicomweb, folder)))
    assert sorted(again, key=str) == sorted((Fetched(p) for p in expected), key=str)
    assert {p for p in folder.rglob("*") if p.is_file()} == expected


@pytest.mark.slow
def test_study_and_since_choose_what_is_fetched(orthanc: Orthanc, rg1_data: Path, extremity: Path,
                                                tmp_path: Path) -> None:
    chest = rg1_data / "dicom" / "RG1_JLSL.dcm"  # a study of 2004
    for path in (chest, extremity):
        orthanc.upload(path)
    uid = _read(chest).StudyInstanceUID

    by_date = orthanc.netns.call(lambda: list(fetch_instances(orthanc.dicomweb, tmp_path / "a", since="20100101")))
    by_study = orthanc.netns.call(lambda: list(fetch_instances(orthanc.dicomweb, tmp_path / "b", study=uid)))

    assert [f.path.parts[-3] for f in by_date] == [_read(extremity).StudyInstanceUID]
    assert [f.path.parts[-3] for f in by_study] == [uid]


@pytest.mark.slow
def test_a_failed_fetch_is_reported_and_the_others_go_on(orthanc: Orthanc, rg1_data: Path,
                                                         tmp_path: Path) -> None:
    files = [rg1_data / "dicom" / name for name in ("RG1_JLSL.dcm", "RG1_RLE.dcm")]
    ids = {_read(p).SOPInstanceUID: orthanc.upload(p)["ID"] for p in files}
    folder = tmp_path / "fetched"

    def fetch_deleting_the_other() -> list[Fetched]:
        results = []
        for fetched in fetch_instances(orthanc.dicomweb, folder):
            results.append(fetched)
            if len(results) == 1:  # listed already; gone from the archive before its fetch
                other = next(uid for uid in ids if uid != fetched.path.stem)
                orthanc.netns.http("DELETE", f"{orthanc.url}/instances/{ids[other]}")
        return results

    first, second = orthanc.netns.call(fetch_deleting_the_other)

    assert first.new and not first.problem and first.path.is_file()
    assert not second.new and not second.path.exists()
    assert f"could not fetch instance {second.path.stem} of study " in second.problem
    assert "HTTP 404" in second.problem
    assert [p.name for p in folder.rglob("*") if p.is_file()] == [first.path.name]


@pytest.mark.slow
def test_an_archive_that_cannot_be_searched_is_fatal(orthanc: Orthanc, tmp_path: Path) -> None:
    url = f"{orthanc.url}/no-dicom-web-here"
    with pytest.raises(MedcamError, match=r"could not search the studies of .*/no-dicom-web-here: HTTP 404"):
        orthanc.netns.call(lambda: list(fetch_instances(url, tmp_path / "fetched")))


# --- storing ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_stow_files_stores_each_file_and_reports_each_failure(orthanc: Orthanc, testdata: Callable[[str], Path],
                                                              tmp_path: Path) -> None:
    report, not_dicom = testdata("test-SR.dcm"), tmp_path / "notes.dcm"
    not_dicom.write_text("not a DICOM file")

    outcomes = orthanc.netns.call(stow_files, orthanc.dicomweb, [report, not_dicom])
    elsewhere = orthanc.netns.call(stow_files, f"{orthanc.url}/no-dicom-web-here", [report])

    assert outcomes[0] == (report, "")
    assert outcomes[1][0] == not_dicom and outcomes[1][1].startswith("cannot be read (")
    assert elsewhere == [(report, f"{orthanc.url}/no-dicom-web-here answered HTTP 404")]
    assert [i["MainDicomTags"]["SOPInstanceUID"] for i in orthanc.instances_of_study(_read(report).StudyInstanceUID)] \
        == [_read(report).SOPInstanceUID]


# --- medcam score dicomweb:URL --stow URL ------------------------------------------------------------

def _score_args(orthanc: Orthanc, out: Path, model: Path) -> list[str]:
    """``medcam score`` of the whole archive, its reports stored back."""
    return ["score", f"dicomweb:{orthanc.dicomweb}", "--out", str(out), "--regions", str(out.parent / "regions"),
            "--formats", "sr", "--stow", orthanc.dicomweb, "--model", str(model), "--workers", "0"]


@pytest.mark.slow
def test_score_fetches_scores_and_stores_each_report_once(orthanc: Orthanc, rg1_data: Path, extremity: Path,
                                                          testdata: Callable[[str], Path], flag_all: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chests = [rg1_data / "dicom" / name for name in ("RG1_JLSL.dcm", "RG1_RLE.dcm")]
    for path in (*chests, extremity, testdata("test-SR.dcm")):
        orthanc.upload(path)
    sources = {_read(p).SOPInstanceUID: _read(p) for p in (*chests, extremity)}
    out = tmp_path / "night" / "results.csv"

    first = orthanc.netns.run([MEDCAM, *_score_args(orthanc, out, flag_all)], capture_output=True, text=True,
                              timeout=300)

    assert first.returncode == 3, first.stdout + first.stderr  # the hand is not analysed
    assert f"fetched 3 instance(s) from {orthanc.dicomweb} into {tmp_path / 'night' / 'results.dicomweb'}" \
        in first.stdout
    rows = {Path(row["path"]).stem: row for row in read_results(out)}
    assert set(rows) == set(sources)
    assert all(Path(row["path"]).is_relative_to(tmp_path / "night" / "results.dicomweb") for row in rows.values())
    assert [rows[uid]["status"] for uid in sources] == ["ok", "ok", "not_analysed"]
    reports = [Path(p) for row in rows.values() for p in row["exports"].split(";") if p]
    assert len(reports) == 3  # the chests' reports (flagged) and the hand's not-analysed report
    stored = {uid: orthanc.instances_of_study(source.StudyInstanceUID) for uid, source in sources.items()}
    for report in map(_read, reports):
        source = sources[report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                         .ReferencedSOPSequence[0].ReferencedSOPInstanceUID]
        assert report.StudyInstanceUID == source.StudyInstanceUID
        assert report.SOPInstanceUID in {i["MainDicomTags"]["SOPInstanceUID"] for i in stored[source.SOPInstanceUID]}
    assert f"stored {len(reports)} result file(s) at {orthanc.dicomweb} (0 stored by an earlier run, 0 failed" \
        in first.stdout
    count = orthanc.count_instances()
    assert count == 4 + len(reports)
    with stowed_path(out).open() as f:
        assert sorted(row[1] for row in csv.reader(f)) == sorted(_read(p).SOPInstanceUID for p in reports)

    capsys.readouterr()
    assert orthanc.netns.call(main, _score_args(orthanc, out, flag_all)) == 0  # nothing left to do, nothing failed

    again = capsys.readouterr().out
    assert "fetched 0 instance(s)" in again and "(3 there already, 0 failed)" in again
    assert "0 rows written" in again and "3 already in the file" in again
    assert f"stored 0 result file(s) at {orthanc.dicomweb} ({len(reports)} stored by an earlier run, 0 failed" \
        in again
    assert len(list(read_results(out))) == 3
    assert orthanc.count_instances() == count

    orthanc.netns.call(main, _score_args(orthanc, tmp_path / "rerun" / "results.csv", flag_all))  # all made again

    assert f"stored {len(reports)} result file(s)" in capsys.readouterr().out
    assert orthanc.count_instances() == count  # the same UIDs: the archive keeps one copy of each


@pytest.mark.slow
def test_results_not_stored_make_the_run_incomplete_and_go_with_the_next_run(
        orthanc: Orthanc, rg1_data: Path, flag_all: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    orthanc.upload(rg1_data / "dicom" / "RG1_JLSL.dcm")
    out = tmp_path / "results.csv"
    args = ["score", f"dicomweb:{orthanc.dicomweb}", "--out", str(out), "--regions", str(tmp_path / "regions"),
            "--formats", "sr", "--model", str(flag_all), "--workers", "0"]

    missed = orthanc.netns.call(main, [*args, "--stow", f"{orthanc.url}/no-dicom-web-here"])

    assert missed == 3
    err = capsys.readouterr().err
    assert "medcam score: could not store " in err and "/no-dicom-web-here answered HTTP 404" in err
    assert orthanc.count_instances() == 1

    assert orthanc.netns.call(main, [*args, "--stow", orthanc.dicomweb]) == 0
    assert f"stored 1 result file(s) at {orthanc.dicomweb} (0 stored by an earlier run, 0 failed" \
        in capsys.readouterr().out
    assert orthanc.count_instances() == 2
