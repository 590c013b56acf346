"""``summary.json``: the monitor's findings as data, for cron jobs, tickets and the node's supervisor.

Keys: ``schema_version``, ``created``, ``command``, ``exit_status``, ``verdict`` (``alarm``,
``not judged``, ``unreadable input`` or ``ok``), ``last_line``, ``alarms`` (each with
``check``, ``period``, ``group``, ``variable``, ``figure``, ``limit`` and ``text``),
``judged_period`` and ``why_not_judged``, ``thresholds``, ``inputs`` (files, rows, rows left
out, unreadable files with the reason), ``reference`` (where it came from, its rows and flag
rate), ``validation`` (the validation split's flag rate, for comparison only, or null),
``periods`` (one entry per period: rows by status, flagged, flag rate, p-chart limits,
CUSUMs, PSIs, cautions, and whether it is reference, monitored, complete), ``reasons`` (the
most frequent reasons rows were not analysed, numbers and paths taken out), ``shifts`` (the
judged period's PSI and Kolmogorov-Smirnov test per score and group), ``model_changes``,
``reviews`` and ``node``. Numbers that are not defined (a rate without rows) are null.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from medcam.files import atomic_open
from medcam.monitor.alarms import Alarm
from medcam.monitor.analysis import Analysis
from medcam.monitor.node import NodeHealth
from medcam.monitor.reviews import ReviewCounts
from medcam.monitor.statistics import CUSUM_H, CUSUM_K, PSI_BINS, PSI_LIMIT, PSI_MIN_ROWS, SIGMAS
from medcam.monitor.table import STATUSES, Table, Unreadable

__all__ = ["SCHEMA_VERSION", "build_summary", "number", "write_summary"]

SCHEMA_VERSION = 1
THRESHOLDS = {"p_chart_sigmas": SIGMAS, "cusum_k": CUSUM_K, "cusum_h": CUSUM_H, "psi_limit": PSI_LIMIT,
              "psi_min_rows": PSI_MIN_ROWS, "psi_bins": PSI_BINS}


def number(value: Any, digits: int = 6) -> float | int | None:
    """A JSON number: ints as they are, floats rounded, NaN and infinity as None."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _periods(analysis: Analysis) -> list[dict[str, Any]]:
    entries = []
    for i, label in enumerate(analysis.labels):
        counts = {status: int(analysis.status[k, i]) for k, status in enumerate(STATUSES)}
        entry: dict[str, Any] = {
            "period": label, "rows": sum(counts.values()), **counts, "flagged": int(analysis.flagged[i]),
            "flag_rate": number(analysis.rate[i]), "lower_limit": number(analysis.lower[i]),
            "upper_limit": number(analysis.upper[i]),
            "cusum_up": number(analysis.cusum.upper[i]) if analysis.monitored[i] else None,
            "cusum_down": number(analysis.cusum.lower[i]) if analysis.monitored[i] else None,
            "cautions": int(analysis.cautions[i]),
            "reference": bool(analysis.reference_periods[i]), "monitored": bool(analysis.monitored[i]),
            "complete": bool(analysis.complete[i]),
        }
        entry.update({f"psi_{name}": number(values[i]) for name, values in analysis.psi.items()})
        entries.append(entry)
    return entries


def build_summary(*, analysis: Analysis, alarms: list[Alarm], table: Table, unreadable: list[Unreadable],
                  exit_status: int, verdict: str, last_line: str, reference_source: str, settings: dict[str, Any],
                  validation_rate: float | None, reviews: ReviewCounts | None, nodes: list[NodeHealth],
                  created: str, command: str) -> dict[str, Any]:
    """Everything :mod:`summary.json <medcam.monitor.summary>` holds, as a dictionary."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": created,
        "command": command,
        "exit_status": exit_status,
        "verdict": verdict,
        "last_line": last_line,
        "alarms": [a.as_dict() for a in alarms],
        "judged_period": analysis.judged_label or None,
        "why_not_judged": analysis.why_not_judged or None,
        "settings": settings,
        "thresholds": THRESHOLDS,
        "positive_class": table.positive_class,
        "models": sorted(set(table.model.tolist())),
        "inputs": {"files": len(table.files), "rows": len(table), "rows_without_period": analysis.undated,
                   "rows_left_out_damaged": table.dropped,
                   "unreadable": [{"path": u.path, "reason": u.reason} for u in unreadable]},
        "reference": {"source": reference_source, "rows_analysed": analysis.n_reference,
                      "flag_rate": number(analysis.reference_rate),
                      "periods": [label for label, ref in zip(analysis.labels, analysis.reference_periods,
                                                              strict=True) if ref]},
        "validation": None if validation_rate is None else {
            "flag_rate": number(validation_rate),
            "note": "the validation split's mix of films differs from a hospital's: shown for comparison, "
                    "never alarmed on"},
        "periods": _periods(analysis),
        "reasons": [{"reason": reason, "rows": count} for reason, count in analysis.reasons],
        "shifts": [{"score": s.score, "group": s.group, "rows": s.n, "reference_rows": s.n_reference,
                    "against": s.against, "psi": number(s.psi), "ks": number(s.ks), "ks_p_value": number(s.p_value),
                    "alarmable": s.alarmable} for s in analysis.shifts],
        "model_changes": [{"period": period, "change": change} for period, change in analysis.changes],
        "reviews": None if reviews is None else {
            "periods": [{"period": label, "regions_accepted": int(a), "regions_rejected": int(r),
                         "agree": int(g), "disagree": int(d)}
                        for label, a, r, g, d in zip(reviews.labels, reviews.accepted, reviews.rejected,
                                                     reviews.agree, reviews.disagree, strict=True)]},
        "node": [asdict(n) for n in nodes],
    }


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    """Write ``summary`` to ``path`` atomically (a reader never sees half a file)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, allow_nan=False)
        f.write("\n")
    return path
