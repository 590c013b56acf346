"""``medcam listen``: run as a DICOM node until SIGTERM or Ctrl-C (:mod:`medcam.node`).

Log lines go to stderr with a time stamp; at INFO they name UIDs and AE titles, never a
patient. pynetdicom's own messages are shown from WARNING up (``--debug`` shows medcam's
debug lines, still without pynetdicom's dataset dumps).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from medcam.commands import EXIT_INTERRUPTED, EXIT_OK, model_line
from medcam.errors import MedcamError
from medcam.gate.served import ServedModel
from medcam.models.lungs import BUNDLED_SEGMENTER
from medcam.node.send import Destination, DimseDestination, StowDestination, parse_peer
from medcam.node.service import Node, NodeOptions

__all__ = ["destination_of", "main"]

log = logging.getLogger("medcam.node")


def destination_of(send_to: str | None, stow: str | None, *, calling_ae: str, timeout: float) -> Destination | None:
    """The destination ``--send-to`` or ``--stow`` names (not both), or None.

    Raises:
        MedcamError: both given, or either malformed.
    """
    if send_to and stow:
        raise MedcamError("give --send-to (C-STORE) or --stow (STOW-RS), not both")
    if send_to:
        return DimseDestination(parse_peer(send_to), calling_ae=calling_ae, timeout=timeout)
    if stow:
        return StowDestination(stow, timeout=timeout)
    return None


def configure_logging(debug: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    for noisy in ("urllib3", "dicomweb_client", "PIL", "highdicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(model: str, options: NodeOptions, destination: Destination | None, *, device: str = "cpu",
         debug: bool = False, segmenter: str | None = BUNDLED_SEGMENTER) -> int:
    """Start the node and serve until SIGTERM, SIGHUP or SIGINT; what is in flight stays in the spool."""
    configure_logging(debug)
    classifier = ServedModel(model, device=device, segmenter=segmenter)
    log.info("%s", model_line(classifier.checkpoint, "results"))
    where = destination.describe() if destination is not None else f"nowhere: results stay in {options.spool}/outbox"
    log.info("spool %s; series scored after %.0f s of quiet; %s results sent %s", options.spool, options.settle,
             ",".join(options.formats).upper(), where)
    stopped = threading.Event()
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stopped.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        with Node(classifier, options, destination):
            stopped.wait()
            log.info("stopping (%s); unfinished work stays in the spool", signal.Signals(received[0]).name)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return EXIT_INTERRUPTED if received and received[0] == signal.SIGINT else EXIT_OK
