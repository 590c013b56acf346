"""The other ends of a node in the tests: radiographs to send, a modality that sends them and an
archive that records what it stores (pynetdicom, on loopback).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)
from skimage.transform import resize

from tests.conftest import testdata_path

RESULT_CLASSES = (Comprehensive3DSRStorage, ComprehensiveSRStorage, EnhancedSRStorage, BasicTextSRStorage,
                  SegmentationStorage, SecondaryCaptureImageStorage, GrayscaleSoftcopyPresentationStateStorage)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def radiographs(folder: Path, n: int, *, study: str | None = None, series: str | None = None,
                patient: str = "SECRET^PATIENT", patient_id: str = "PID-SECRET-42", size: int = 320) -> list[Path]:
    """``n`` chest CRs of one series, made from pydicom-data's RG1 (a real PA chest CR) at ``size`` px,
    each with its own SOP Instance UID."""
    source = pydicom.dcmread(testdata_path("RG1_UNCR.dcm"))
    pixels = source.pixel_array
    small = resize(pixels, (size, round(size * pixels.shape[1] / pixels.shape[0])), preserve_range=True,
                   anti_aliasing=True).astype(pixels.dtype)
    study = study or generate_uid()
    series = series or generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        ds = source.copy()
        ds.Rows, ds.Columns = small.shape
        ds.PixelData = small.tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.PatientName, ds.PatientID = patient, patient_id
        path = folder / f"cr{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def send(paths: Sequence[Path], port: int, *, called: str = "MEDCAM", calling: str = "MODALITY",
         host: str = "127.0.0.1") -> list[int | None]:
    """C-STORE each file on one association; each one's status (None: no response or not sent)."""
    datasets = [pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title=calling)
    for sop_class, syntax in {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}:
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        return [None] * len(paths)
    statuses: list[int | None] = []
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except (ValueError, RuntimeError):  # no accepted context for it, or the association went
                statuses.append(None)
                continue
            statuses.append(int(status.Status) if "Status" in status else None)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


class Archive:
    """A storage SCP that keeps every dataset it stores (duplicates included), like a PACS that
    answers success."""

    def __init__(self, port: int | None = None, *, ae_title: str = "ARCHIVE",
                 before_answer: Callable[[Any], None] | None = None) -> None:
        self.port = port or free_port()
        self.ae_title = ae_title
        self.received: list[pydicom.Dataset] = []
        self.before_answer = before_answer
        self._lock = threading.Lock()
        self._server: Any = None

    def start(self) -> Archive:
        ae = AE(ae_title=self.ae_title)
        for sop_class in RESULT_CLASSES:
            ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._store)])
        return self

    def _store(self, event: Any) -> int:
        if self.before_answer is not None:
            self.before_answer(event)
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self._lock:
            self.received.append(ds)
        return 0x0000

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    @property
    def peer(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def unique(self) -> dict[str, pydicom.Dataset]:
        """What the archive holds: one object per SOP Instance UID."""
        with self._lock:
            return {str(ds.SOPInstanceUID): ds for ds in self.received}

    def wait_for(self, count: int, timeout: float = 60.0) -> dict[str, pydicom.Dataset]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = self.unique()
            if len(held) >= count:
                return held
            time.sleep(0.1)
        raise AssertionError(f"the archive holds {len(self.unique())} objects after {timeout} s, expected {count}")


def sop_uids(paths: Sequence[Path]) -> list[str]:
    """The SOP Instance UIDs of ``paths``, sorted."""
    return sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths)


def source_of(result: pydicom.Dataset) -> str:
    """The SOP Instance UID of the image a result object was made from."""
    for item in result.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in item.ReferencedSeriesSequence:
            for ref in series.ReferencedSOPSequence:
                return str(ref.ReferencedSOPInstanceUID)
    for series in result.get("ReferencedSeriesSequence", []):
        for ref in series.get("ReferencedImageSequence", series.get("ReferencedInstanceSequence", [])):
            return str(ref.ReferencedSOPInstanceUID)
    raise AssertionError(f"{result.SOPClassUID.name} {result.SOPInstanceUID} references no source image")


