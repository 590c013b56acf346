"""Periods: the days or weeks that rows are counted in, and which of them are over.

A period is a UTC calendar day, or an ISO week (Monday to Sunday, labelled ``2026-W49``). A
row falls in the period of its ``scored_at`` time, or of its DICOM Study Date with
``--by-study-date``. The periods run without a gap from the first one with rows to the last
(a day with no rows is a period of volume 0). A period is *complete* once its end has passed;
alarms are judged on complete periods only, never on the one still filling.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np

from medcam.config import check_choice
from medcam.errors import ConfigError

__all__ = ["PERIODS", "Periods", "make_periods", "parse_date", "period_start"]

PERIODS = ("day", "week")
_STEP = {"day": 1, "week": 7}


def period_start(when: np.ndarray, kind: str) -> np.ndarray:
    """The first day (``datetime64[D]``) of the period of each time in ``when`` (NaT stays NaT)."""
    check_choice("period", kind, PERIODS)
    days = when.astype("datetime64[D]")
    if kind == "day":
        return days
    monday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday: weekday 3 counting from Monday
    return np.where(np.isnat(days), days, days - monday.astype("timedelta64[D]"))


@dataclass(frozen=True)
class Periods:
    """The periods of a set of rows.

    Attributes:
        kind: ``day`` or ``week``.
        starts: each period's first day (``datetime64[D]``), consecutive.
        index: for each row, its period (index into ``starts``), or -1 when it has no time.
    """

    kind: str
    starts: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def ends(self) -> np.ndarray:
        """The first day after each period."""
        return self.starts + np.timedelta64(_STEP[self.kind], "D")

    @property
    def labels(self) -> list[str]:
        return [self.label(i) for i in range(len(self))]

    def label(self, i: int) -> str:
        start = self.starts[i].astype(dt.date)
        if self.kind == "day":
            return start.isoformat()
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"

    def complete(self, now: np.datetime64) -> np.ndarray:
        """Which periods had ended at ``now`` (UTC)."""
        return self.ends.astype("datetime64[s]") <= now.astype("datetime64[s]")

    def split(self, values: np.ndarray, mask: np.ndarray | None = None) -> list[np.ndarray]:
        """``values`` of the rows (where ``mask`` is true) cut into one array per period."""
        index = self.index if mask is None else self.index[mask]
        values = values if mask is None else values[mask]
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        bounds = np.searchsorted(ordered, np.arange(len(self) + 1), side="left")
        return [values[order[bounds[i]:bounds[i + 1]]] for i in range(len(self))]

    def counts(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Rows per period (of the rows where ``mask`` is true)."""
        index = self.index if mask is None else self.index[mask]
        return np.bincount(index[index >= 0], minlength=len(self))


def make_periods(when: np.ndarray, kind: str) -> Periods:
    """The periods of rows whose times (or dates) are ``when``; rows with NaT get index -1."""
    starts = period_start(when, kind)
    known = ~np.isnat(starts)
    if not known.any():
        return Periods(kind, np.array([], dtype="datetime64[D]"), np.full(len(when), -1, dtype=np.int64))
    first, last = starts[known].min(), starts[known].max()
    step = _STEP[kind]
    grid = np.arange(first, last + np.timedelta64(step, "D"), np.timedelta64(step, "D"))
    index = np.full(len(when), -1, dtype=np.int64)
    index[known] = (starts[known] - first).astype(np.int64) // step
    return Periods(kind, grid, index)


def parse_date(text: str, option: str = "--since") -> np.datetime64:
    """``YYYY-MM-DD`` or ``YYYYMMDD`` as a ``datetime64[D]``.

    Raises:
        ConfigError: another form, or no such day.
    """
    match = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", text.strip())
    try:
        if match is None:
            raise ValueError(text)
        return np.datetime64(dt.date(*map(int, match.groups())), "D")
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a date of the form YYYY-MM-DD (or YYYYMMDD)") from None
