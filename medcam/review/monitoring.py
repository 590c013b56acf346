"""The reviewer app's Monitoring page, without its user interface: the review database read as
``medcam monitor`` reads results files.

The rows are the database's cached scores of the served model, one per image content
(:meth:`~medcam.review.store.ReviewStore.cached_scores`), turned into the columns that
:mod:`medcam.monitor.table` reads from a results file: the status and reason from the cached
error, the positive class's probability, ``flagged`` at the model's operating threshold (a
model id is its checkpoint's hash, so the threshold is the one the score was made at), the OOD
score, lung evidence and caution, ``scored_at`` (when the score was cached) and the DICOM
header values. From there everything is :mod:`medcam.monitor`'s: :func:`~medcam.monitor.examine`
analyses and judges the rows (the verdict of ``medcam monitor``), the reviewers' decisions are
counted by :func:`~medcam.monitor.reviews.read_reviews` from the same database, and the figures
are the report's own (:func:`~medcam.monitor.report.draw_pictures`), from which a ``report.html``
is made as well. Scores of other models in the database are left out, as ``--model`` does.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from medcam.monitor.analysis import Settings
from medcam.monitor.report import Picture, draw_pictures, render_report
from medcam.monitor.reviews import read_reviews
from medcam.monitor.run import Findings, MonitorError, created_now, examine
from medcam.monitor.summary import build_summary
from medcam.monitor.table import GROUP_COLUMNS, STATUSES, Table, Unreadable, parse_dates, parse_times
from medcam.review.store import CachedScore, ReviewStore
from medcam.scoring.results import ModelInfo

__all__ = ["COMMAND", "StoreMonitoring", "monitor_store", "score_table"]

COMMAND = "medcam review (Monitoring page)"
"""What ``summary.json`` and ``report.html`` name as their maker."""


@dataclass(frozen=True)
class StoreMonitoring:
    """What the Monitoring page shows.

    Attributes:
        summary: the findings as ``summary.json`` holds them (:mod:`medcam.monitor.summary`).
        findings: the analysis, its alarms and verdict.
        pictures: the report's figures, drawn.
        report: ``report.html``'s page, made from the same figures.
        other_models: images scored by other model ids in the database (left out), by id.
    """

    summary: dict[str, Any]
    findings: Findings
    pictures: list[Picture] = field(repr=False)
    report: str = field(repr=False)
    other_models: dict[str, int]


def _floats(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def score_table(store: ReviewStore, model: ModelInfo, keys: Collection[str] | None = None) -> Table | None:
    """The cached scores of ``model`` (of the images whose content hash is in ``keys``, when
    given) as a :class:`~medcam.monitor.table.Table`, or None when there is none."""
    scores: list[CachedScore] = [s for key, s in store.cached_scores(model.model_id).items()
                                 if keys is None or key in keys]
    if not scores:
        return None
    status = np.array([STATUSES.index(s.status) for s in scores], dtype=np.int8)
    ok = status == 0
    probability = _floats([s.probabilities.get(model.positive_class) for s in scores])
    probability[~ok] = np.nan
    with np.errstate(invalid="ignore"):
        flagged = ok & (probability >= model.threshold)
    return Table(
        status=status,
        reason=np.array([s.reason for s in scores], dtype=object),
        probability=probability,
        flagged=flagged,
        ood_score=_floats([s.ood_score for s in scores]),
        lung_evidence=_floats([s.lung_evidence for s in scores]),
        caution=np.array([bool(s.quality) for s in scores]) & ok,
        model=np.full(len(scores), model.model_id, dtype=object),
        segmenter=np.array([s.segmenter for s in scores], dtype=object),
        scored_at=parse_times([s.scored_at for s in scores]),
        study_date=parse_dates([s.acquisition.get("study_date", "") for s in scores]),
        groups={c: np.array([s.acquisition.get(c, "") for s in scores], dtype=object) for c in GROUP_COLUMNS},
        source=np.zeros(len(scores), dtype=np.int32),
        files=(str(store.path),),
        positive_class=model.positive_class,
    )


def monitor_store(store: ReviewStore, model: ModelInfo, *, period: str = "day", by: str | None = None,
                  baseline_periods: int = 2, keys: Collection[str] | None = None,
                  validation_rate: float | None = None, now: np.datetime64 | None = None) -> StoreMonitoring:
    """Monitor the cached scores of ``model`` in ``store`` as ``medcam monitor`` monitors results
    files (``--period``, ``--by`` and ``--baseline-periods`` as the arguments say).

    Args:
        keys: only the images with these content hashes (the worklist's), or every scored image.
        validation_rate: the validation split's flag rate, drawn for comparison (never alarmed on).
        now: the time that decides which periods are complete (default: now, UTC).

    Raises:
        MonitorError: no image has a cached score of ``model`` (among ``keys``).
        ConfigError: a bad ``period``, ``by`` or ``baseline_periods``, or a reference without
            analysed rows.
    """
    when = now if now is not None else np.datetime64(datetime.now(timezone.utc).replace(tzinfo=None), "s")
    settings = Settings(now=when, period=period, by=by, baseline_periods=baseline_periods)
    table = score_table(store, model, keys)
    if table is None:
        among = "" if keys is None else f" among the {len(keys)} image(s) of the worklist"
        raise MonitorError(f"no readable rows in the review database {store.path}: no image{among} has been scored "
                           f"by model {model.model_id} yet, so there is nothing to monitor")
    counted = read_reviews(store.path, period)
    unreadable = [counted] if isinstance(counted, Unreadable) else []
    reviews = None if isinstance(counted, Unreadable) else counted
    found = examine(table, settings, unreadable=len(unreadable))
    summary = build_summary(
        analysis=found.analysis, alarms=found.alarms, table=table, unreadable=unreadable,
        exit_status=found.exit_status, verdict=found.verdict, last_line=found.last_line,
        reference_source=f"the first {baseline_periods} {period}(s) with rows",
        settings={"period": period, "periods_from": "scored_at", "by": by, "baseline_periods": baseline_periods,
                  "since": None, "model": model.model_id, "reviews": str(store.path),
                  "rows": "every scored image" if keys is None else "the worklist's images"},
        validation_rate=validation_rate, reviews=reviews, nodes=[], created=created_now(), command=COMMAND)
    pictures = draw_pictures(summary, found.analysis, reviews)
    others = {m: n for m, n in store.scored_models().items() if m != model.model_id}
    return StoreMonitoring(summary, found, pictures, render_report(summary, found.analysis, reviews, pictures), others)
