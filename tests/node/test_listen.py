"""``medcam listen`` on loopback: receive by C-STORE, score each quiet series, send the results
on (issue 15, items 1, 2 and 4). The archive is a pynetdicom storage SCP in the test process;
tests/node/test_listen_orthanc.py does the round trip with a real PACS.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from medcam.errors import ConfigError
from medcam.gate.served import ServedModel
from medcam.node.scp import ReceiveOptions, decodable_syntaxes
from medcam.node.send import DimseDestination, Outcome, Sender, StowDestination, parse_peer
from medcam.node.service import Node, NodeOptions
from medcam.node.spool import Spool, uid_name
from medcam.scoring import read_results
from tests.conftest import testdata_path as corpus

from .peers import Archive, free_port, radiographs, send, sop_uids, source_of

RG1_DICOM = Path(__file__).resolve().parents[1] / "data" / "rg1" / "dicom"


# --- the spool ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["../../etc/passwd", "/abs/path", "1.2.3/../../x", "1.2..3", "", None, "1." * 40,
                                   "C:\\x"])
def test_a_uid_that_is_not_one_becomes_a_hash(value: object) -> None:
    name = uid_name(value)
    assert name.startswith("x") and len(name) == 33 and name[1:].isalnum()


def test_a_valid_uid_names_its_file() -> None:
    assert uid_name("1.2.840.10008.5.1.4.1.1.1") == "1.2.840.10008.5.1.4.1.1.1"
    assert uid_name("1.2.3\0") == "1.2.3"  # UI values are padded with NUL to even length


def test_whatever_the_tags_say_instances_land_inside_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.store([b"abc"], "../../../../tmp/evil", "../../x")
    assert path.resolve().is_relative_to(spool.incoming) and path.read_bytes() == b"abc"
    assert not list(spool.tmp.iterdir())


def test_half_written_files_are_cleared_at_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    (spool.tmp / "torn.part").write_bytes(b"half")
    assert spool.recover() == 1 and not list(spool.tmp.iterdir())


def test_a_series_is_scored_only_once_quiet(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.store([b"a"], "1.2.3", "1.2.3.1")
    now = time.time()
    assert not list(spool.settled(10.0, now))
    (series,) = spool.settled(10.0, now + 11)
    assert series.key == "1.2.3" and [p.name for p in series.files] == ["1.2.3.1.dcm"]


# --- options ---------------------------------------------------------------------------------------


def test_bad_options_are_refused_with_the_value() -> None:
    with pytest.raises(ConfigError, match="not of the form AET@HOST:PORT"):
        parse_peer("ORTHANC:4242")
    with pytest.raises(ConfigError, match="port must be 1 to 65535"):
        parse_peer("PACS@host:70000")
    with pytest.raises(ConfigError, match="not a valid AE title"):
        parse_peer("A_VERY_LONG_AE_TITLE_INDEED@host:104")
    with pytest.raises(ConfigError, match="not a valid AE title"):
        ReceiveOptions(allow_ae=("BAD\\AE",))
    with pytest.raises(ConfigError, match="DICOM results only"):
        NodeOptions(spool=Path("s"), formats=("sr", "png"))
    with pytest.raises(ConfigError, match="http"):
        StowDestination("ftp://pacs/dicom-web")
    assert parse_peer("ORTHANC@127.0.0.1:4242") == parse_peer(" ORTHANC@127.0.0.1:4242 ")


def test_it_accepts_every_transfer_syntax_medcam_decodes() -> None:
    names = {pydicom.uid.UID(u).name for u in decodable_syntaxes()}
    for name in ("Explicit VR Little Endian", "RLE Lossless", "JPEG Baseline (Process 1)",
                 "JPEG-LS Lossless Image Compression", "JPEG 2000 Image Compression (Lossless Only)",
                 "JPEG 2000 Image Compression"):
        assert name in names


# --- a node in this process ------------------------------------------------------------------------


@pytest.fixture
def archive() -> Iterator[Archive]:
    archive = Archive().start()
    yield archive
    archive.stop()


def _node(checkpoint: Path, spool: Path, archive: Archive, **receive: object) -> Node:
    options = NodeOptions(spool=spool, settle=0.5, poll=0.2,
                          receive=ReceiveOptions(port=free_port(), **receive))  # type: ignore[arg-type]
    destination = DimseDestination(parse_peer(archive.peer), timeout=30)
    return Node(ServedModel(str(checkpoint)), options, destination)


def test_images_in_results_out_in_the_same_study(tiny_checkpoint: Path, archive: Archive, tmp_path: Path) -> None:
    images = radiographs(tmp_path / "modality", 3)
    extremity = tmp_path / "rg3.dcm"  # a hand radiograph: the gate refuses it, with a report
    pydicom.dcmread(corpus("RG3_UNCR.dcm")).save_as(extremity)
    with _node(tiny_checkpoint, tmp_path / "spool", archive) as node:
        assert send([*images, extremity], node.options.receive.port) == [0, 0, 0, 0]
        held = archive.wait_for(4)
    sources = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p) for p in [*images, extremity]}
    assert sorted(source_of(sr) for sr in held.values()) == sorted(sources)
    for sr in held.values():
        source = sources[source_of(sr)]
        assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
        assert sr.SOPClassUID.name.endswith("SR Storage")
    spool = node.spool
    assert not list(spool.incoming.iterdir()) and not spool.waiting() and not list(spool.tmp.iterdir())
    rows = [r for f in spool.results.glob("*[0-9].csv") for r in read_results(f)]
    assert sorted(r["status"] for r in rows) == ["not_analysed", "ok", "ok", "ok"]


def test_every_encoding_of_a_full_size_radiograph_is_received_and_scored(tiny_checkpoint: Path, archive: Archive,
                                                                         tmp_path: Path) -> None:
    encodings = sorted(RG1_DICOM.glob("RG1_*.dcm"))  # 1955x1841: explicit VR, RLE, JPEG-LS, JPEG 2000 lossless
    assert len(encodings) == 4
    with _node(tiny_checkpoint, tmp_path / "spool", archive) as node:
        assert send(encodings, node.options.receive.port) == [0, 0, 0, 0]
        held = archive.wait_for(4)
    assert sorted(source_of(sr) for sr in held.values()) == sop_uids(encodings)
    rows = [r for f in node.spool.results.glob("*[0-9].csv") for r in read_results(f)]
    assert [r["status"] for r in rows] == ["ok"] * 4


def test_lungs_sends_each_flagged_images_lung_fields_as_a_seg_and_keeps_nothing_else(archive: Archive,
                                                                                      tmp_path: Path) -> None:
    import torch

    from medcam.config import ModelConfig, PreprocessConfig
    from medcam.models import build_network, save_checkpoint

    torch.manual_seed(0)
    always = tmp_path / "always-flags.pt"  # threshold 0: every analysed image is flagged
    save_checkpoint(always, build_network(ModelConfig()).eval(), ModelConfig(), PreprocessConfig(size=64),
                    trained=False, threshold=0.0)
    images = radiographs(tmp_path / "modality", 2)
    options = NodeOptions(spool=tmp_path / "spool", formats=("sr", "lungs"), settle=0.5, poll=0.2,
                          receive=ReceiveOptions(port=free_port()))
    with Node(ServedModel(str(always)), options, DimseDestination(parse_peer(archive.peer), timeout=30)) as node:
        assert send(images, node.options.receive.port) == [0, 0]
        held = archive.wait_for(4)
    segs = [ds for ds in held.values() if ds.Modality == "SEG"]
    assert len(segs) == 2 and len(held) == 4
    for seg in segs:
        assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Lung fields"]
        uid = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        source = pydicom.dcmread(next(p for p in images if pydicom.dcmread(p).SOPInstanceUID == uid))
        assert seg.StudyInstanceUID == source.StudyInstanceUID and (seg.Rows, seg.Columns) == (source.Rows,
                                                                                                source.Columns)
        mask = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance([uid], segment_numbers=[1])
        assert 0 < mask.mean() < 1  # the lung fields of a real chest film: part of it, not all or nothing
    spool = node.spool
    assert not list(spool.outputs.iterdir()) and not spool.waiting()  # the mask's PNG and NIfTI are not kept


def test_an_instance_received_again_is_not_scored_or_sent_again(tiny_checkpoint: Path, archive: Archive,
                                                                tmp_path: Path) -> None:
    images = radiographs(tmp_path / "modality", 2)
    with _node(tiny_checkpoint, tmp_path / "spool", archive) as node:
        assert send(images, node.options.receive.port) == [0, 0]
        archive.wait_for(2)
        assert send(images[:1], node.options.receive.port) == [0]  # a modality that resends
        deadline = time.monotonic() + 30
        while list(node.spool.incoming.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    rows = [r for f in node.spool.results.glob("*[0-9].csv") for r in read_results(f)]
    assert len(rows) == 2 and len(archive.received) == 2 and not list(node.spool.incoming.iterdir())


def test_results_wait_in_the_outbox_while_the_archive_is_down(tiny_checkpoint: Path, tmp_path: Path) -> None:
    archive = Archive()  # not started: down
    images = radiographs(tmp_path / "modality", 2)
    with _node(tiny_checkpoint, tmp_path / "spool", archive) as node:
        assert node.sender is not None
        node.sender.first_delay = 0.2
        assert send(images, node.options.receive.port) == [0, 0]
        deadline = time.monotonic() + 60
        # the results reach the outbox a moment before their instance leaves the incoming folder
        while ((len(node.spool.waiting()) < 2 or list(node.spool.incoming.iterdir()))
               and time.monotonic() < deadline):
            time.sleep(0.1)
        assert len(node.spool.waiting()) == 2 and not list(node.spool.incoming.iterdir())
        time.sleep(1.0)
        assert len(node.spool.waiting()) == 2  # still there: nothing confirmed them
        archive.start()
        try:
            archive.wait_for(2)
            deadline = time.monotonic() + 10
            while node.spool.waiting() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            archive.stop()
    assert not node.spool.waiting()


def test_only_allowed_calling_ae_titles_may_send(tiny_checkpoint: Path, archive: Archive, tmp_path: Path) -> None:
    images = radiographs(tmp_path / "modality", 1)
    with _node(tiny_checkpoint, tmp_path / "spool", archive, allow_ae=("CR_ROOM_1",)) as node:
        port = node.options.receive.port
        assert send(images, port, calling="INTRUDER") == [None]
        assert send(images, port, calling="CR_ROOM_1", called="NOT_MEDCAM") == [None]  # wrong called AE title
        assert not list(node.spool.incoming.iterdir())
        assert send(images, port, calling="CR_ROOM_1") == [0]


def test_an_instance_over_the_size_limit_is_refused(tiny_checkpoint: Path, archive: Archive, tmp_path: Path) -> None:
    images = radiographs(tmp_path / "modality", 1)
    with _node(tiny_checkpoint, tmp_path / "spool", archive, max_bytes=64 * 1024) as node:
        assert send(images, node.options.receive.port) == [0xA700]
        assert not list(node.spool.incoming.iterdir()) and not list(node.spool.tmp.iterdir())


def test_what_the_model_is_not_made_for_is_not_accepted(tiny_checkpoint: Path, archive: Archive,
                                                        tmp_path: Path) -> None:
    with _node(tiny_checkpoint, tmp_path / "spool", archive) as node:
        assert send([corpus("CT_small.dcm")], node.options.receive.port) == [None]
        assert not list(node.spool.incoming.iterdir())


def test_medcams_own_results_are_acknowledged_and_dropped(tiny_checkpoint: Path, archive: Archive,
                                                          own_results: dict[str, Path], tmp_path: Path) -> None:
    """As the DICOMweb fetch leaves them on the archive: a result is neither scored nor reported on."""
    images = radiographs(tmp_path / "modality", 1)
    with _node(tiny_checkpoint, tmp_path / "spool", archive) as node:
        assert send([own_results["sc"]], node.options.receive.port) == [0]
        assert not list(node.spool.incoming.iterdir())
        assert send(images, node.options.receive.port) == [0]
        held = archive.wait_for(1)
    assert [source_of(sr) for sr in held.values()] == sop_uids(images)


def test_secondary_captures_of_chest_radiographs_are_received_and_scored(tiny_checkpoint: Path, archive: Archive,
                                                                         rsna_dicoms: list[Path],
                                                                         tmp_path: Path) -> None:
    """The RSNA Pneumonia Challenge's films, as they are: the node accepts the Secondary Captures
    that ``medcam score dicomweb:`` fetches, and the gate reads these as radiographs."""
    with _node(tiny_checkpoint, tmp_path / "spool", archive) as node:
        assert send(rsna_dicoms, node.options.receive.port) == [0] * len(rsna_dicoms)
        held = archive.wait_for(len(rsna_dicoms))
    assert sorted(source_of(sr) for sr in held.values()) == sop_uids(rsna_dicoms)
    rows = [r for f in node.spool.results.glob("*[0-9].csv") for r in read_results(f)]
    assert [r["status"] for r in rows] == ["ok"] * len(rsna_dicoms)


def test_a_result_the_destination_refuses_for_good_does_not_block_the_rest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        (spool.outbox / name).write_bytes(b"result " + name.encode())

    class Picky:
        def describe(self) -> str:
            return "a picky archive"

        def send(self, paths: list[Path]) -> list[Outcome]:
            return [Outcome("rejected", "status 0xA900") if p.name == "b.dcm" else Outcome("stored") for p in paths]

    sender = Sender(spool, Picky())
    assert sender.send_waiting() and (sender.sent, sender.rejected) == (2, 1)
    assert not spool.waiting()
    assert (spool.rejected / "b.dcm").read_bytes() == b"result b.dcm"
    assert "0xA900" in (spool.rejected / "b.reason").read_text()


def test_a_destination_that_does_not_answer_means_retry(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    (spool.outbox / "a.dcm").write_bytes(b"")  # can never be sent, whatever the destination
    images = radiographs(tmp_path / "m", 1)
    (spool.outbox / "b.dcm").write_bytes(images[0].read_bytes())
    nobody = DimseDestination(parse_peer(f"NOBODY@127.0.0.1:{free_port()}"), timeout=5)
    outcomes = nobody.send(spool.waiting())
    assert [o.kind for o in outcomes] == ["rejected", "retry"]
    assert "did not answer" in outcomes[1].reason


def test_report_all_gives_every_analysed_image_its_sr_and_nothing_else(tmp_path: Path) -> None:
    import torch

    from medcam.config import ModelConfig, PreprocessConfig
    from medcam.models import build_network, save_checkpoint
    from medcam.scoring import ScoreOptions, score

    torch.manual_seed(0)
    never = tmp_path / "never-flags.pt"  # threshold above any probability: no image is flagged
    save_checkpoint(never, build_network(ModelConfig()).eval(), ModelConfig(), PreprocessConfig(size=64),
                    trained=False, threshold=1.01)
    radiographs(tmp_path / "in", 2)
    for report_all, expected in ((False, []), (True, ["sr", "sr"])):
        out = tmp_path / f"report_all={report_all}"
        options = ScoreOptions(out=out / "r.csv", regions=out / "files", region_formats=("sr", "seg", "gsps"),
                               report_all=report_all, workers=0, progress=False)
        score([tmp_path / "in"], ServedModel(str(never)), options)
        rows = list(read_results(out / "r.csv"))
        assert [r["flagged"] for r in rows] == ["false", "false"] and {r["status"] for r in rows} == {"ok"}
        written = sorted(p.name.rsplit("_", 1)[1].removesuffix(".dcm") for p in (out / "files").glob("*.dcm"))
        assert written == expected
        for path in (out / "files").glob("*_sr.dcm"):  # a negative's report outlines nothing
            report = hd.sr.srread(path)
            assert report.content.get_planar_roi_measurement_groups() == []
            assert [r["regions"] for r in rows] == ["0", "0"]


def test_a_series_that_cannot_be_scored_is_tried_again_not_lost(tiny_checkpoint: Path, archive: Archive,
                                                                tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                                ) -> None:
    images = radiographs(tmp_path / "modality", 1)
    series = str(pydicom.dcmread(images[0]).SeriesInstanceUID)
    blocker = tmp_path / "spool" / "results" / f"{series}.csv"
    blocker.mkdir(parents=True)  # its results file cannot be opened: scoring that series fails
    with caplog.at_level("INFO", logger="medcam.node"), _node(tiny_checkpoint, tmp_path / "spool", archive) as node:
        assert send(images, node.options.receive.port) == [0]
        deadline = time.monotonic() + 30
        while "scoring failed" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "scoring failed" in caplog.text and list(node.spool.incoming.iterdir())  # kept for later
        blocker.rmdir()
        archive.wait_for(1)


def test_a_port_in_use_is_a_clear_error(tiny_checkpoint: Path, archive: Archive, tmp_path: Path) -> None:
    import socket

    from medcam.errors import MedcamError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        options = NodeOptions(spool=tmp_path / "spool", receive=ReceiveOptions(port=port))
        node = Node(ServedModel(str(tiny_checkpoint)), options, None)
        with pytest.raises(MedcamError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            node.start()


def test_a_second_node_on_the_same_spool_is_refused(tiny_checkpoint: Path, archive: Archive, tmp_path: Path) -> None:
    from medcam.errors import MedcamError

    with _node(tiny_checkpoint, tmp_path / "spool", archive):
        second = _node(tiny_checkpoint, tmp_path / "spool", archive)
        with pytest.raises(MedcamError, match=r"in use by another medcam listen \(pid \d+\)"):
            second.start()
    with _node(tiny_checkpoint, tmp_path / "spool", archive):  # free again once the first has stopped
        pass
