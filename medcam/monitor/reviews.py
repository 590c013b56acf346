"""The reviewer app's findings per period, read from its database without changing it.

From the store (:mod:`medcam.review.store`, any schema version this medcam knows): region decisions
(``accept`` / ``reject``) by the period of their ``updated_at``, and sign-offs (``reviews``
with an overall ``agree`` / ``disagree``) by the period of theirs. The file is opened
read-only (``mode=ro``), so the monitor never migrates or writes it. Reported, never alarmed on.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcam.monitor.periods import make_periods
from medcam.monitor.table import Unreadable

__all__ = ["ReviewCounts", "read_reviews"]


@dataclass(frozen=True)
class ReviewCounts:
    """Reviewers' decisions per period (arrays over ``labels``)."""

    labels: list[str]
    accepted: np.ndarray
    rejected: np.ndarray
    agree: np.ndarray
    disagree: np.ndarray

    @property
    def total(self) -> int:
        return int(self.accepted.sum() + self.rejected.sum() + self.agree.sum() + self.disagree.sum())


def read_reviews(db: str | Path, period: str) -> ReviewCounts | Unreadable:
    """The decisions in the review database ``db`` per ``period`` (``day`` or ``week``), or why
    it could not be read."""
    from medcam.review.store import SCHEMA_VERSION  # the review package is slow to import: only with --reviews

    path = Path(db)
    if not path.is_file():
        return Unreadable(str(path), "no such review database")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            version = int(con.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                return Unreadable(str(path), f"has review schema version {version}; this medcam reads up to "
                                             f"{SCHEMA_VERSION}: upgrade medcam")
            decisions = con.execute("SELECT decision, updated_at FROM region_decisions").fetchall()
            signed = con.execute("SELECT agreement, updated_at FROM reviews WHERE agreement IS NOT NULL").fetchall()
        finally:
            con.close()
        times = np.array([str(t)[:19] for _, t in decisions + signed], dtype="datetime64[s]")
    except (sqlite3.Error, ValueError) as err:
        return Unreadable(str(path), f"is not a readable review database ({err})")
    kinds = [d for d, _ in decisions] + [a for a, _ in signed]
    periods = make_periods(times, period)
    kinds_array = np.array(kinds, dtype=object)
    counts = {kind: periods.counts(kinds_array == kind) for kind in ("accept", "reject", "agree", "disagree")}
    return ReviewCounts(periods.labels, counts["accept"], counts["reject"], counts["agree"], counts["disagree"])
