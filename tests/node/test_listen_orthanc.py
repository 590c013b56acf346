"""The node against a real archive (issue 15, item 5): Orthanc from Debian and dcmtk's storescu
as the modality, in a private network namespace (tests/node/pacs.py).

- Orthanc, with medcam registered as its modality ``medcam``, sends a study to ``medcam
  listen``; storescu sends a JPEG 2000 radiograph to medcam directly; medcam's SRs land in
  Orthanc, each in its source study, checked through Orthanc's REST API.
- ``kill -9`` of the node while it scores, then a restart: Orthanc holds one SR per image.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest

from medcam.node.send import StowDestination

from .pacs import STORESCU, Netns, Orthanc
from .peers import radiographs, sop_uids

BIN = Path(sys.executable).parent
RG1_DICOM = Path(__file__).resolve().parents[1] / "data" / "rg1" / "dicom"
PORT = 11112  # Orthanc's default modality entry for medcam (tests/node/pacs.py)


def _listen(netns: Netns, checkpoint: Path, spool: Path, log: Path, *,
            to: tuple[str, str] = ("--send-to", f"{Orthanc.aet}@127.0.0.1:{Orthanc.dicom_port}")
            ) -> subprocess.Popen[Any]:
    with log.open("ab") as out:
        process = netns.popen([BIN / "medcam", "listen", "--port", str(PORT), "--spool", spool, *to,
                               "--settle", "1", "--model", checkpoint, "--threads", "1"],
                              stdout=subprocess.DEVNULL, stderr=out)
    _wait_for_log(log, r"listening as MEDCAM", process)
    return process


def _wait_for_log(log: Path, pattern: str, process: subprocess.Popen[Any], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, log.read_text(errors="replace")):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in the node's log:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def _reports(orthanc: Orthanc, study_uid: str, count: int, timeout: float = 90.0) -> list[dict[str, Any]]:
    """The SR instances of a study in Orthanc, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reports = [i for i in orthanc.instances_of_study(study_uid)
                       if orthanc.instance_tags(i["ID"]).get("Modality") == "SR"]
        except Exception:  # the study is not there yet
            reports = []
        if len(reports) >= count or time.monotonic() > deadline:
            return reports
        time.sleep(0.5)


def _source(orthanc: Orthanc, report: dict[str, Any]) -> str:
    tags = orthanc.get(f"/instances/{report['ID']}/tags?simplify")
    evidence = tags["CurrentRequestedProcedureEvidenceSequence"][0]
    return str(evidence["ReferencedSeriesSequence"][0]["ReferencedSOPSequence"][0]["ReferencedSOPInstanceUID"])


@pytest.mark.slow
def test_orthanc_sends_a_study_and_gets_the_reports_back_in_it(orthanc: Orthanc, tiny_checkpoint: Path,
                                                               tmp_path: Path) -> None:
    netns = orthanc.netns
    images = radiographs(tmp_path / "modality", 3)
    study = str(pydicom.dcmread(images[0]).StudyInstanceUID)
    orthanc.store_with_storescu(images)  # the modality sends to the PACS
    log = tmp_path / "node.log"
    node = _listen(netns, tiny_checkpoint, tmp_path / "spool", log)
    try:
        # the PACS routes the study to medcam, registered as its modality "medcam"
        answer = orthanc.post("/modalities/medcam/store", orthanc.study_id(study))
        assert answer is not None
        # a modality sends straight to medcam, in JPEG 2000 (storescu -xv proposes it)
        j2k = RG1_DICOM / "RG1_J2KR.dcm"
        sent = netns.run([STORESCU, "-xv", "-aet", "CR_ROOM", "-aec", "MEDCAM", "127.0.0.1", str(PORT), j2k],
                         capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        reports = _reports(orthanc, study, 3)
        j2k_study = str(pydicom.dcmread(j2k, stop_before_pixels=True).StudyInstanceUID)
        j2k_reports = _reports(orthanc, j2k_study, 1)
    finally:
        node.kill()
        node.wait(30)
    assert sorted(_source(orthanc, r) for r in reports) == sop_uids(images)
    assert [_source(orthanc, r) for r in j2k_reports] == sop_uids([j2k])
    # the images and their reports side by side in the source study
    modalities = sorted(orthanc.instance_tags(i["ID"]).get("Modality") for i in orthanc.instances_of_study(study))
    assert modalities == ["CR"] * 3 + ["SR"] * 3


@pytest.mark.slow
def test_kill_9_while_scoring_then_a_restart_stores_each_report_once(orthanc: Orthanc, tiny_checkpoint: Path,
                                                                     tmp_path: Path) -> None:
    netns = orthanc.netns
    images = radiographs(tmp_path / "modality", 4)
    study = str(pydicom.dcmread(images[0]).StudyInstanceUID)
    spool, log = tmp_path / "spool", tmp_path / "node.log"
    node = _listen(netns, tiny_checkpoint, spool, log)
    sent = netns.run([STORESCU, "-aet", "CR_ROOM", "-aec", "MEDCAM", "127.0.0.1", str(PORT), *images],
                     capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stdout + sent.stderr  # every image acknowledged
    _wait_for_log(log, r"scoring series", node)
    node.kill()  # SIGKILL: no chance to tidy up
    node.wait(30)
    node = _listen(netns, tiny_checkpoint, spool, log)
    try:
        reports = _reports(orthanc, study, 4)
        _wait_for_log(log, r"sent .*_sr\.dcm", node)
        time.sleep(2.0)  # anything sent twice would have arrived by now
        reports = _reports(orthanc, study, 4, timeout=0)
    finally:
        node.kill()
        node.wait(30)
    assert sorted(_source(orthanc, r) for r in reports) == sop_uids(images)
    assert orthanc.count_instances() == 4
    assert not list((spool / "outbox").iterdir()) and not list((spool / "incoming").iterdir())


def test_stow_rs_to_orthanc_stores_once_and_says_what_failed(orthanc: Orthanc, tmp_path: Path) -> None:
    images = radiographs(tmp_path / "results", 2)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"DICM" * 10)
    stow = StowDestination(orthanc.dicomweb, timeout=30)
    outcomes = orthanc.netns.call(stow.send, [*images, broken])
    assert [o.kind for o in outcomes] == ["stored", "stored", "rejected"]
    assert "cannot be read" in outcomes[2].reason
    again = orthanc.netns.call(stow.send, images)  # a result sent twice: the archive keeps one
    assert [o.kind for o in again] == ["stored", "stored"] and orthanc.count_instances() == 2
    nobody = StowDestination("http://127.0.0.1:9/dicom-web", timeout=5)  # nothing listens there
    assert [o.kind for o in orthanc.netns.call(nobody.send, images[:1])] == ["retry"]


@pytest.mark.slow
def test_results_by_stow_rs_land_in_the_source_study(orthanc: Orthanc, tiny_checkpoint: Path, tmp_path: Path) -> None:
    images = radiographs(tmp_path / "modality", 2)
    study = str(pydicom.dcmread(images[0]).StudyInstanceUID)
    log = tmp_path / "node.log"
    node = _listen(orthanc.netns, tiny_checkpoint, tmp_path / "spool", log, to=("--stow", orthanc.dicomweb))
    try:
        sent = orthanc.netns.run([STORESCU, "-aet", "CR_ROOM", "-aec", "MEDCAM", "127.0.0.1", str(PORT), *images],
                                 capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        reports = _reports(orthanc, study, 2)
        _wait_for_log(log, r"sent .*_sr\.dcm \(STOW-RS", node)
        deadline = time.monotonic() + 30
        while list((tmp_path / "spool" / "outbox").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        node.kill()
        node.wait(30)
    assert sorted(_source(orthanc, r) for r in reports) == sop_uids(images)
    assert not list((tmp_path / "spool" / "outbox").iterdir())
