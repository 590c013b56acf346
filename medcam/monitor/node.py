"""The health of a DICOM node (``medcam listen``), read from its spool's files.

An input that is a spool (a folder with ``results/`` and ``outbox/``), its ``results/`` folder
or a file in it names the spool; see :mod:`medcam.node.spool` for the layout. Read, never
changed: the backlog still to score (``incoming/``), the results waiting to be sent
(``outbox/``; the sender retries them with a growing delay, up to a minute, so one waiting
for longer than :data:`RETRYING_AFTER_S` means the destination has been failing), those the
destination refused for good (``rejected/``, with the reasons), and the received instances
that could not be analysed (``failed/``). The node's log lines (sends, retries) go to its
standard error, not the spool; they are not read. Reported, never alarmed on.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medcam.monitor.analysis import common_reason

__all__ = ["RETRYING_AFTER_S", "NodeHealth", "find_spools", "node_health", "results_of"]

RETRYING_AFTER_S = 300.0
"""A result waiting in the outbox longer than this is being retried (the sender's longest
wait between tries is 60 s)."""


@dataclass(frozen=True)
class NodeHealth:
    """What a spool holds (ages in seconds, None when the folder is empty)."""

    spool: str
    results_files: int
    incoming_series: int
    incoming_instances: int
    oldest_incoming_s: float | None
    outbox: int
    oldest_outbox_s: float | None
    retrying: int
    rejected: int
    rejected_reasons: list[tuple[str, int]]
    failed: int


def _is_spool(folder: Path) -> bool:
    return (folder / "results").is_dir() and (folder / "outbox").is_dir() and (folder / "incoming").is_dir()


def results_of(item: str | Path) -> str:
    """``item``, or its ``results/`` folder when it is a spool (the rest of a spool holds no rows)."""
    path = Path(item)
    return str(path / "results") if path.is_dir() and _is_spool(path) else str(item)


def find_spools(inputs: Iterable[str | Path]) -> list[Path]:
    """The node spools that ``inputs`` are, or are the results of."""
    spools: dict[Path, None] = {}
    for item in inputs:
        path = Path(item).resolve()
        for candidate in (path, path.parent, path.parent.parent):
            if _is_spool(candidate):
                spools[candidate] = None
                break
    return list(spools)


def _files(folder: Path, pattern: str) -> list[Path]:
    return [p for p in folder.glob(pattern) if p.is_file()] if folder.is_dir() else []


def _oldest(files: list[Path], now: float) -> float | None:
    times = []
    for path in files:
        try:
            times.append(path.stat().st_mtime)
        except FileNotFoundError:  # sent or scored while we looked
            continue
    return max(0.0, now - min(times)) if times else None


def node_health(spool: Path, now: float | None = None) -> NodeHealth:
    """What ``spool`` holds now."""
    now = time.time() if now is None else now
    incoming = _files(spool / "incoming", "*/*.dcm")
    outbox = _files(spool / "outbox", "*.dcm")
    ages = []
    for path in outbox:
        try:
            ages.append(now - path.stat().st_mtime)
        except FileNotFoundError:
            continue
    reasons: Counter[str] = Counter()
    for path in _files(spool / "rejected", "*.reason"):
        try:
            reasons[common_reason(path.read_text(encoding="utf-8", errors="replace").strip())] += 1
        except OSError:
            continue
    return NodeHealth(
        spool=str(spool),
        results_files=len(_files(spool / "results", "*.csv")),
        incoming_series=len({p.parent for p in incoming}),
        incoming_instances=len(incoming),
        oldest_incoming_s=_oldest(incoming, now),
        outbox=len(outbox),
        oldest_outbox_s=max(ages) if ages else None,
        retrying=sum(age > RETRYING_AFTER_S for age in ages),
        rejected=len(_files(spool / "rejected", "*.dcm")),
        rejected_reasons=reasons.most_common(5),
        failed=len(_files(spool / "failed", "*/*.dcm")),
    )
