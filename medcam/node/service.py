"""``medcam listen``: receive, score each series once it is quiet, send the results back.

Three threads share one :class:`~medcam.node.spool.Spool`: the C-STORE server
(:mod:`medcam.node.scp`) fills ``incoming/``; the worker (:meth:`Node.score_settled`) scores
every series that has been quiet for ``settle`` seconds with :func:`medcam.scoring.score` -
the same pipeline, intended-use gate and results columns as ``medcam score`` - and moves its
DICOM results to the outbox; the :class:`~medcam.node.send.Sender` empties the outbox.

Why a ``kill -9`` at any moment loses and repeats nothing the archive can see:

- an instance is acknowledged only once it is durable in ``incoming/`` (an unacknowledged one
  is sent again by the modality or PACS);
- a series' instances stay in ``incoming/`` until their rows are in the series' results file
  and their results are in the outbox; a rerun resumes that file, so an image is scored once,
  and its result files are rewritten under the same names;
- a result leaves the outbox only after the destination's success; one sent again after a
  crash has the same UIDs (:mod:`medcam.export.uids`), and the archive keeps one copy.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcam.errors import ConfigError
from medcam.export import parse_formats
from medcam.gate.served import ServedModel
from medcam.node.scp import ReceiveOptions, start_scp
from medcam.node.send import Destination, Sender
from medcam.node.spool import Series, Spool
from medcam.regions import RegionOptions
from medcam.scoring import ScoreOptions, read_results, score

__all__ = ["DICOM_FORMATS", "Node", "NodeOptions"]

log = logging.getLogger("medcam.node")

DICOM_FORMATS = ("sr", "sc", "seg", "gsps", "lungs")
"""The result objects a node can send; the SR goes for every analysed image, the others for
flagged ones. ``lungs`` is the lung fields' SEG (the lung mask's PNG and NIfTI, which
``medcam export`` also writes, are not kept)."""


@dataclass(frozen=True)
class NodeOptions:
    """What the node does with what it receives.

    Attributes:
        spool: the spool folder (created); nothing is written outside it.
        formats: DICOM results to send, a subset of :data:`DICOM_FORMATS`.
        settle: seconds a series must be quiet before it is scored.
        receive: how it listens (:class:`~medcam.node.scp.ReceiveOptions`).
        batch_size: images per forward pass.
        ignore_intended_use: analyse images outside the model's intended use (research only).
        poll: seconds between looks for quiet series.
    """

    spool: Path
    formats: tuple[str, ...] = ("sr",)
    settle: float = 10.0
    receive: ReceiveOptions = field(default_factory=ReceiveOptions)
    region_options: RegionOptions = field(default_factory=RegionOptions)
    batch_size: int = 8
    ignore_intended_use: bool = False
    poll: float = 1.0

    def __post_init__(self) -> None:
        formats = parse_formats(self.formats)
        other = [f for f in formats if f not in DICOM_FORMATS]
        if other:
            raise ConfigError(f"a DICOM node sends DICOM results only ({', '.join(DICOM_FORMATS)}); "
                              f"not {', '.join(other)}")
        object.__setattr__(self, "formats", formats)
        if self.settle < 0:
            raise ConfigError(f"--settle must be 0 or more seconds, got {self.settle!r}")


class Node:
    """One DICOM node: :meth:`start`, then :meth:`stop` (or use it as a context manager)."""

    def __init__(self, classifier: ServedModel, options: NodeOptions, destination: Destination | None) -> None:
        self.classifier = classifier
        self.options = options
        self.spool = Spool(options.spool)
        self.destination = destination
        self.sender = Sender(self.spool, destination) if destination is not None else None
        self.stop_event = threading.Event()
        self.arrived = threading.Event()
        self._server: Any = None
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Clear what a previous process left half-written, then listen, score and send.

        Raises:
            MedcamError: another process uses the spool, or the port cannot be bound.
        """
        self.spool.lock()
        removed = self.spool.recover()
        if removed:
            log.info("removed %d half-written files left by a previous run", removed)
        try:
            self._server = start_scp(self.spool, self.options.receive, on_stored=self.arrived.set)
        except Exception:
            self.spool.unlock()
            raise
        self._threads = [threading.Thread(target=self._score_loop, name="medcam-score", daemon=True)]
        if self.sender is not None:
            self._threads.append(threading.Thread(target=self.sender.run, args=(self.stop_event,),
                                                  name="medcam-send", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop receiving, let the batch in hand finish, stop sending. What is left stays in the
        spool for the next start."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.stop_event.set()
        self.arrived.set()
        if self.sender is not None:
            self.sender.wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self.spool.unlock()

    def _score_loop(self) -> None:
        delay = self.options.poll
        while not self.stop_event.is_set():
            try:
                self.score_settled()
                delay = self.options.poll
            except Exception:  # the spool's disk, a results file of another model ...: logged, tried again later
                log.exception("scoring failed; trying again in %.0f s", delay)
                self.stop_event.wait(timeout=delay)
                delay = min(delay * 2, 60.0)
                continue
            self.arrived.wait(timeout=self.options.poll)
            self.arrived.clear()

    def score_settled(self, now: float | None = None) -> int:
        """Score every series quiet for the settle time; returns how many images got rows."""
        rows = 0
        for series in self.spool.settled(self.options.settle, now):
            if self.stop_event.is_set():
                break
            rows += self.score_series(series)
        return rows

    def score_series(self, series: Series) -> int:
        """Score one series into its results file, queue its DICOM results, clear its instances."""
        options = ScoreOptions(out=self.spool.results_of(series), regions=self.spool.outputs_of(series),
                               region_formats=self.options.formats, region_options=self.options.region_options,
                               report_all=True, batch_size=self.options.batch_size, workers=0, progress=False,
                               ignore_intended_use=self.options.ignore_intended_use)
        start = time.perf_counter()
        log.info("scoring series %s (%d instances)", series.key, len(series.files))
        summary = score([series.folder], self.classifier, options)
        done: list[Path] = []
        failed: list[Path] = []
        for row in read_results(options.out):
            path = Path(row["path"])
            if path.parent == series.folder:
                (failed if row["status"] == "error" else done).append(path)
                if row["status"] == "error" and path in series.files:
                    log.error("%s: not analysed: %s", path.name, row["reason"])
        queued = self.spool.queue(series)
        self.spool.finish(series, done, failed)
        if summary.scored:
            log.info("series %s: %d image(s) scored (%d not analysed, %d errors) in %.1f s; %d result(s) queued",
                     series.key, summary.scored, summary.refused, summary.errors, time.perf_counter() - start,
                     len(queued))
        if queued and self.sender is not None:
            self.sender.wake.set()
        return summary.scored
