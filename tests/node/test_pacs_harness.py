"""The test PACS itself: Orthanc starts in its namespace and holds what dcmtk and REST store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from .pacs import Netns, Orthanc, PacsError


@pytest.mark.slow
def test_storescu_and_rest_upload_are_listed_by_rest_and_qido(orthanc: Orthanc,
                                                               testdata: Callable[[str], Path]) -> None:
    radiograph, ct = testdata("RG1_UNCR.dcm"), testdata("CT_small.dcm")
    orthanc.store_with_storescu([radiograph])
    answer = orthanc.upload(ct)
    assert answer["Status"] == "Success"

    assert orthanc.count_instances() == 2
    cr = pydicom.dcmread(radiograph, stop_before_pixels=True)
    studies = {s["MainDicomTags"]["StudyInstanceUID"] for s in orthanc.studies()}
    assert studies == {cr.StudyInstanceUID, pydicom.dcmread(ct, stop_before_pixels=True).StudyInstanceUID}

    instances = orthanc.instances_of_study(cr.StudyInstanceUID)
    assert [i["MainDicomTags"]["SOPInstanceUID"] for i in instances] == [cr.SOPInstanceUID]
    assert orthanc.instance_tags(instances[0]["ID"])["Modality"] == "CR"

    qido = orthanc.netns.get_json(f"{orthanc.dicomweb}/studies")
    assert {s["0020000D"]["Value"][0] for s in qido} == studies


@pytest.mark.slow
def test_the_pacs_is_reachable_only_inside_its_namespace(orthanc: Orthanc) -> None:
    assert orthanc.netns.get_json(f"{orthanc.url}/system")["DicomAet"] == "ORTHANC"
    outside = Netns()
    try:
        with pytest.raises(PacsError, match="failed inside the namespace"):
            outside.get_json(f"{orthanc.url}/system")
    finally:
        outside.close()


@pytest.mark.slow
def test_close_ends_every_process_of_the_namespace(pacs_namespace: Netns) -> None:
    sleeper = pacs_namespace.popen(["sleep", "300"])
    orphan = pacs_namespace.run(["bash", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"],
                                capture_output=True, text=True, check=True)
    pids = [pacs_namespace.pid, sleeper.pid, int(orphan.stdout)]
    pacs_namespace.close()
    for pid in pids:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "State:\tZ" in status.read_text(), pid


def test_a_failed_start_says_why_with_the_orthanc_log(pacs_namespace: Netns, tmp_path: Path) -> None:
    with pytest.raises(PacsError, match=r"(?s)Orthanc exited with status .*orthanc\.log:.*Orthanc version"):
        Orthanc(tmp_path, pacs_namespace, modalities={"medcam": ["MEDCAM", "127.0.0.1", "not a port"]},
                timeout=20)


@pytest.mark.slow
def test_call_runs_a_function_of_this_process_inside_the_namespace(orthanc: Orthanc) -> None:
    import urllib.request

    def system() -> dict[str, object]:
        with urllib.request.urlopen(f"{orthanc.url}/system", timeout=10) as answer:
            return dict(json.load(answer))

    assert orthanc.netns.call(system)["DicomAet"] == "ORTHANC"
    with pytest.raises(OSError):  # this thread stays outside: nothing listens on 8042 here
        system()
    with pytest.raises(ZeroDivisionError):  # the function's exception is raised here
        orthanc.netns.call(lambda: 1 / 0)
