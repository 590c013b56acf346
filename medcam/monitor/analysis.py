"""What the rows say per period: volume, status mix, flag rate against its limits, score shifts.

:func:`analyse` turns a :class:`~medcam.monitor.table.Table` (and a reference table, or the
first periods of the same rows) into an :class:`Analysis`: plain arrays per period and one
:class:`Shift` per score and group, which :mod:`~medcam.monitor.alarms` judges,
:mod:`~medcam.monitor.figures` draws and :mod:`~medcam.monitor.summary` writes. It decides
nothing itself.

The reference is ``--reference`` (its analysed rows, whatever their dates) or else the first
``baseline_periods`` periods that have rows; the periods after it are *monitored*. The
*judged* period is the latest monitored period that is complete and has analysed rows.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from medcam.errors import ConfigError
from medcam.monitor.periods import Periods, make_periods
from medcam.monitor.statistics import PSI_MIN_ROWS, Cusum, cusum, p_chart_limits, psi, psi_edges, two_sample
from medcam.monitor.table import GROUP_COLUMNS, STATUSES, Table

__all__ = ["ALARMED_SCORES", "Analysis", "Settings", "Shift", "analyse", "common_reason"]

ALARMED_SCORES = ("probability", "ood_score")
"""The scores whose PSI can raise an alarm; the lung-evidence share is reported only."""
SCORES = (*ALARMED_SCORES, "lung_evidence")
TOP_REASONS = 8


@dataclass(frozen=True)
class Settings:
    """How rows are cut into periods and groups (the command's options).

    Attributes:
        period: ``day`` or ``week``.
        by: a column of :data:`~medcam.monitor.table.GROUP_COLUMNS` to split the score
            distributions by, or None.
        by_study_date: periods from the DICOM Study Date instead of ``scored_at``.
        baseline_periods: without a reference table, how many first periods are the reference.
        now: the time (UTC, ``datetime64[s]``) that decides which periods are complete.
    """

    now: np.datetime64
    period: str = "day"
    by: str | None = None
    by_study_date: bool = False
    baseline_periods: int = 2

    def __post_init__(self) -> None:
        if self.by is not None and self.by not in GROUP_COLUMNS:
            raise ConfigError(f"--by must be one of {', '.join(GROUP_COLUMNS)}, got {self.by!r}")
        if self.baseline_periods < 1:
            raise ConfigError(f"--baseline-periods must be 1 or more, got {self.baseline_periods!r}")


@dataclass(frozen=True)
class Shift:
    """A score's distribution in the judged period (``values``) against the reference's.

    ``against`` is ``group`` when the group's own reference rows (at least
    :data:`~medcam.monitor.statistics.PSI_MIN_ROWS`) are the reference, else ``all``
    reference rows (a group new since the reference: a new unit or station).
    """

    score: str
    group: str
    n_reference: int
    n: int
    psi: float
    ks: float
    p_value: float
    against: str
    reference: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)

    @property
    def alarmable(self) -> bool:
        return bool(self.score in ALARMED_SCORES and self.n >= PSI_MIN_ROWS and np.isfinite(self.psi))


@dataclass(frozen=True)
class Analysis:
    """Everything per period (arrays over ``periods``) and the judged period's shifts.

    Attributes:
        periods: the periods (see :mod:`~medcam.monitor.periods`).
        labels: their labels.
        status: rows per status and period, shape (3, periods), in the order of
            :data:`~medcam.monitor.table.STATUSES`.
        n_ok, flagged: analysed and flagged rows per period.
        rate: flag rate per period (NaN without analysed rows).
        lower, upper: the p-chart limits per period.
        reference_rate, n_reference: the reference's flag rate and analysed rows.
        reference_periods: which periods are the reference (all False with a reference table).
        complete: which periods had ended at ``settings.now``.
        monitored: which periods are judged in turn (after the reference, complete).
        cusum: the CUSUMs over the periods (0 outside ``monitored``).
        judged: index of the judged period, or None (``why_not_judged`` says why).
        cautions: flagged rows with a lung-evidence caution, per period.
        psi: PSI of each score in each period against the reference (all rows), by score.
        shifts: the judged period's :class:`Shift` per score and group.
        reasons: the most frequent reasons rows were not analysed or failed, with counts.
        changes: ``(period label, what changed)`` where the model or segmenter changed.
        undated: rows without a usable time (or study date) for their period.
    """

    periods: Periods
    labels: list[str]
    status: np.ndarray
    n_ok: np.ndarray
    flagged: np.ndarray
    rate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    reference_rate: float
    n_reference: int
    reference_periods: np.ndarray
    complete: np.ndarray
    monitored: np.ndarray
    cusum: Cusum
    judged: int | None
    why_not_judged: str
    cautions: np.ndarray
    psi: dict[str, np.ndarray]
    shifts: list[Shift]
    reasons: list[tuple[str, int]]
    changes: list[tuple[str, str]]
    undated: int

    @property
    def judged_label(self) -> str:
        return self.labels[self.judged] if self.judged is not None else ""


def common_reason(reason: str) -> str:
    """A reason with its numbers, URLs and file paths taken out, so that alike reasons count
    together (and no path, which may name a patient, reaches the report)."""
    text = re.sub(r"\b[a-z][a-z0-9+.-]*://\S+", "<url>", reason)
    text = re.sub(r"(?:[A-Za-z]:)?[\\/][^\s:;,()]+", "<file>", text)
    return re.sub(r"\d+(?:\.\d+)?", "#", text).strip() or "(no reason given)"


def _scores(table: Table) -> dict[str, np.ndarray]:
    return {"probability": table.probability, "ood_score": table.ood_score, "lung_evidence": table.lung_evidence}


def analyse(table: Table, settings: Settings, reference: Table | None = None) -> Analysis:
    """The :class:`Analysis` of ``table`` against ``reference`` (or its own first periods).

    Raises:
        ConfigError: the reference has no analysed rows.
    """
    when = table.study_date if settings.by_study_date else table.scored_at
    periods = make_periods(when, settings.period)
    labels = periods.labels
    status = np.stack([periods.counts(table.status == code) for code in range(len(STATUSES))])
    n_ok = status[0]
    flagged = periods.counts(table.flagged)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(n_ok > 0, flagged / np.maximum(n_ok, 1), np.nan)

    has_rows = np.flatnonzero(status.sum(axis=0) > 0)
    reference_periods = np.zeros(len(periods), dtype=bool)
    if reference is None:
        reference_periods[has_rows[: settings.baseline_periods]] = True
        reference = table.select(np.isin(periods.index, np.flatnonzero(reference_periods)))
        after = has_rows[settings.baseline_periods:]
        first_monitored = int(after[0]) if len(after) else len(periods)
    else:
        first_monitored = 0
    reference_ok = reference.select(reference.ok)
    if not len(reference_ok):
        raise ConfigError("the reference has no analysed rows, so there is no flag rate or score distribution to "
                          "hold the periods against; give --reference with analysed rows, or more --baseline-periods")
    p0 = float(reference_ok.flagged.mean())
    lower, upper = p_chart_limits(p0, n_ok, len(reference_ok))

    complete = periods.complete(settings.now)
    monitored = complete & (np.arange(len(periods)) >= first_monitored)
    candidates = np.flatnonzero(monitored & (n_ok > 0))
    judged = int(candidates[-1]) if len(candidates) else None
    monitored &= np.arange(len(periods)) <= (judged if judged is not None else -1)
    chart = cusum(np.where(monitored, flagged, 0), np.where(monitored, n_ok, 0), p0, len(reference_ok))
    why = "" if judged is not None else _why_not(periods, first_monitored, complete, settings)

    ok = table.ok & (periods.index >= 0)
    scores, reference_scores = _scores(table), _scores(reference_ok)
    psi_series = {}
    for name in SCORES:
        ref = reference_scores[name]
        if not np.isfinite(ref).any():
            continue
        edges = psi_edges(ref)
        per_period = periods.split(scores[name], ok)
        psi_series[name] = np.array([psi(ref, per_period[i], edges) if monitored[i] else np.nan
                                     for i in range(len(periods))])
    shifts = [] if judged is None else _shifts(table.select(ok & (periods.index == judged)), reference_ok, settings)

    not_ok = table.status != 0
    reasons = Counter(common_reason(r) for r in table.reason[not_ok]).most_common(TOP_REASONS)
    return Analysis(periods=periods, labels=labels, status=status, n_ok=n_ok, flagged=flagged, rate=rate,
                    lower=lower, upper=upper, reference_rate=p0, n_reference=len(reference_ok),
                    reference_periods=reference_periods, complete=complete, monitored=monitored, cusum=chart,
                    judged=judged,
                    why_not_judged=why, cautions=periods.counts(table.caution & table.flagged), psi=psi_series,
                    shifts=shifts, reasons=reasons, changes=_changes(table, periods, labels),
                    undated=int((periods.index < 0).sum()))


def _why_not(periods: Periods, first_monitored: int, complete: np.ndarray, settings: Settings) -> str:
    dated = "study date" if settings.by_study_date else "scored_at time"
    if not len(periods):
        return f"no row has a usable {dated}"
    if first_monitored >= len(periods):
        return (f"the rows fall in {int((periods.counts() > 0).sum())} {settings.period}(s), and the first "
                f"{settings.baseline_periods} are the reference: no {settings.period} is left to judge (give "
                "--reference, or wait for more rows)")
    if not complete[first_monitored:].any():
        return f"no {settings.period} after the reference is complete yet (the latest is still filling)"
    return f"no complete {settings.period} after the reference has analysed rows"


def _shifts(period: Table, reference: Table, settings: Settings) -> list[Shift]:
    """Each score's shift in the judged period, overall and per group of ``settings.by``."""
    groups: list[tuple[str, np.ndarray, np.ndarray | None]] = [("all", np.ones(len(period), dtype=bool), None)]
    if settings.by is not None:
        mine, theirs = period.groups[settings.by], reference.groups[settings.by]
        values_seen = sorted(set(mine.tolist()))
        for value in values_seen if len(values_seen) > 1 else ():  # one group is "all" again
            label = f"{settings.by}={value or '(none)'}"
            groups.append((label, mine == value, theirs == value))
    values, reference_values = _scores(period), _scores(reference)
    shifts = []
    for name in SCORES:
        if not np.isfinite(reference_values[name]).any():
            continue
        everyone = reference_values[name]
        edges = psi_edges(everyone)
        for label, rows, own in groups:
            ref, against, ref_edges = everyone, "all", edges
            if own is not None and np.isfinite(everyone[own]).sum() >= PSI_MIN_ROWS:
                ref, against, ref_edges = everyone[own], "group", psi_edges(everyone[own])
            x = values[name][rows]
            x = x[np.isfinite(x)]
            ref = ref[np.isfinite(ref)]
            statistic, p_value = two_sample(ref, x)
            shifts.append(Shift(name, label, len(ref), len(x), psi(ref, x, ref_edges), statistic, p_value, against,
                                ref, x))
    return shifts


def _changes(table: Table, periods: Periods, labels: list[str]) -> list[tuple[str, str]]:
    """Where the set of model (or segmenter) ids differs from the previous period with rows."""
    changes = []
    for what, column in (("model", table.model), ("segmenter", table.segmenter)):
        before: set[str] | None = None
        for i, values in enumerate(periods.split(column)):
            if not len(values):
                continue
            ids = set(values.tolist())
            if before is not None and ids != before:
                old = ", ".join(sorted(before)) or "(none)"
                new = ", ".join(sorted(ids)) or "(none)"
                changes.append((labels[i], f"{what} {old} -> {new}"))
            before = ids
    return sorted(changes, key=lambda change: labels.index(change[0]))
