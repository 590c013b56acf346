"""The receiving end: a C-ECHO and C-STORE service class provider that writes into the spool.

Accepted: the radiograph storage SOP classes the model is made for and Secondary Capture
(:data:`medcam.gate.tags.IMAGE_SOP_CLASSES`, the classes ``medcam score dicomweb:`` fetches) in
every transfer syntax pydicom can decode here (:func:`decodable_syntaxes`); an association
proposing only other classes is rejected at negotiation, so a PACS routing a CT series here
gets a clear answer rather than a pile of "not analysed" reports. medcam's own results
(:func:`medcam.io.provenance.own_dicom`: its Secondary Captures come back when a PACS routes a
whole study) are acknowledged and dropped, with a log line, as the DICOMweb fetch leaves them
on the archive: a result is never scored, nor reported on.

Each instance is written to the spool durably (:meth:`Spool.store`) *before* the success
response goes back; an instance larger than the size limit, one whose header cannot be read
and one the disk cannot take get a failure status instead, and the sender keeps it. Log
lines at INFO name UIDs and AE titles only, never a patient's name or ID.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pydicom
import pydicom.uid
from pydicom.pixels import get_decoder
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from medcam.errors import ConfigError, MedcamError
from medcam.gate.tags import IMAGE_SOP_CLASSES
from medcam.io.provenance import own_dicom
from medcam.node.spool import Spool

__all__ = ["ReceiveOptions", "check_ae_title", "decodable_syntaxes", "start_scp"]

log = logging.getLogger("medcam.node")

# DIMSE status codes (PS3.4 Annex B.2.3 and PS3.7 Annex C)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


def decodable_syntaxes() -> list[str]:
    """Every transfer syntax whose pixel data pydicom can decode with what is installed."""
    syntaxes: list[str] = []
    for uid in map(pydicom.uid.UID, pydicom.uid.AllTransferSyntaxes):
        if not uid.is_compressed:
            syntaxes.append(uid)
            continue
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            continue
        if decoder.is_available:
            syntaxes.append(uid)
    return syntaxes


def check_ae_title(value: str, what: str = "AE title") -> str:
    """A valid AE title (1-16 characters of the default repertoire, no backslash), stripped.

    Raises:
        ConfigError: naming ``what`` and the bad value.
    """
    title = value.strip()
    if not 0 < len(title) <= 16 or "\\" in title or not title.isascii() or not title.isprintable():
        raise ConfigError(f"{what} {value!r} is not a valid AE title: 1 to 16 printable ASCII characters, "
                          "no backslash")
    return title


@dataclass(frozen=True)
class ReceiveOptions:
    """How the node receives.

    Attributes:
        ae_title: the node's AE title; callers must address it by this title.
        host: the interface to listen on (127.0.0.1 unless told otherwise).
        port: the TCP port.
        allow_ae: calling AE titles allowed to associate; empty allows any.
        max_bytes: the largest instance accepted, in bytes (checked on receipt).
        timeout: seconds the network and each DIMSE message may stay silent; pynetdicom's
            30 s default aborts large radiographs on slow links (pynetdicom issue 825).
    """

    ae_title: str = "MEDCAM"
    host: str = "127.0.0.1"
    port: int = 11112
    allow_ae: tuple[str, ...] = ()
    max_bytes: int = 512 * 1024 * 1024
    timeout: float = 300.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "--ae-title"))
        object.__setattr__(self, "allow_ae", tuple(check_ae_title(a, "--allow-ae") for a in self.allow_ae))
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1 to 65535, got {self.port!r}")
        if self.max_bytes < 1:
            raise ConfigError(f"the size limit must be positive, got {self.max_bytes!r} bytes")
        if self.timeout <= 0:
            raise ConfigError(f"the timeout must be positive, got {self.timeout!r} s")


def start_scp(spool: Spool, options: ReceiveOptions, *, on_stored: Callable[[], None] | None = None) -> Any:
    """Start listening in background threads; returns the server (call ``.shutdown()``).

    Raises:
        MedcamError: the address is in use or may not be bound.
    """
    ae = AE(ae_title=options.ae_title)
    ae.require_called_aet = True
    ae.require_calling_aet = list(options.allow_ae)
    ae.acse_timeout = 60
    ae.dimse_timeout = options.timeout
    ae.network_timeout = options.timeout
    ae.maximum_pdu_size = 256 * 1024
    ae.add_supported_context(Verification)
    syntaxes = decodable_syntaxes()
    for sop_class in sorted(IMAGE_SOP_CLASSES):
        ae.add_supported_context(sop_class, syntaxes)
    handlers: Sequence[tuple[Any, Callable[..., Any]]] = [
        (evt.EVT_C_STORE, lambda event: _store(event, spool, options, on_stored)),
        (evt.EVT_ACCEPTED, _accepted),
        (evt.EVT_REJECTED, _rejected),
    ]
    try:
        server = ae.start_server((options.host, options.port), block=False, evt_handlers=list(handlers))
    except OSError as err:
        raise MedcamError(f"cannot listen on {options.host}:{options.port}: {err.strerror or err} (another DICOM "
                          "node on that port? choose another with --port)") from err
    log.info("listening as %s on %s:%d (%s)", options.ae_title, options.host, options.port,
             "calling AE titles: " + ", ".join(options.allow_ae) if options.allow_ae else "any calling AE title")
    return server


def _calling(event: Any) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def _accepted(event: Any) -> None:
    log.info("association from %s (%s) accepted", _calling(event), event.assoc.requestor.address)


def _rejected(event: Any) -> None:
    log.warning("association from %s (%s) rejected: calling AE title not allowed, wrong called AE title "
                "or nothing this node accepts", _calling(event), event.assoc.requestor.address)


def _store(event: Any, spool: Spool, options: ReceiveOptions, on_stored: Callable[[], None] | None) -> int:
    """The C-STORE handler: spool the instance durably, then answer."""
    request = event.request
    sop_uid = str(request.AffectedSOPInstanceUID or "")
    size = request.DataSet.getbuffer().nbytes if request.DataSet is not None else 0
    if size > options.max_bytes:
        log.warning("refused %s from %s: %d bytes, over the limit of %d", sop_uid, _calling(event), size,
                    options.max_bytes)
        return OUT_OF_RESOURCES
    encoded = event.encoded_dataset()  # as received, with its file meta: written as it is
    try:  # the header only: event.dataset would decode (and copy) the pixel data too
        header = pydicom.dcmread(io.BytesIO(encoded), stop_before_pixels=True, specific_tags=[
            "SeriesInstanceUID", "Manufacturer", "ContributingEquipmentSequence"])
        series_uid = header.get("SeriesInstanceUID", "")
    except Exception as err:  # the sender gets a failure status and keeps the instance
        log.warning("refused %s from %s: its header cannot be read (%s)", sop_uid, _calling(event),
                    type(err).__name__)
        return CANNOT_UNDERSTAND
    own = own_dicom(header)
    if own:  # the archive has it already; there is nothing to keep or retry
        log.info("dropped %s from %s: %s", sop_uid, _calling(event), own)
        return SUCCESS
    try:
        path = spool.store([encoded], series_uid, sop_uid)
    except OSError as err:
        log.error("could not spool %s from %s: %s", sop_uid, _calling(event), err.strerror or err)
        return OUT_OF_RESOURCES
    log.info("received %s (series %s) from %s", sop_uid, series_uid, _calling(event))
    log.debug("spooled as %s", path)
    if on_stored is not None:
        on_stored()
    return SUCCESS
