"""``medcam monitor``: results files in, ``report.html`` and ``summary.json`` out, an exit status.

Exit status:

====  ==========================================================================
4     an alarm fired on the judged period (each one named in the last line and in summary.json)
3     no alarm, but an input file (or the review database) could not be read
0     no alarm, every input read
1     bad arguments, no readable rows, or nothing to judge (too few periods, no analysed reference)
====  ==========================================================================

Nothing is written outside ``out``; ``--on-alarm``'s command runs only on an alarm, with the
path of ``summary.json`` as its last argument.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from medcam.commands import EXIT_FATAL, EXIT_INCOMPLETE, EXIT_OK
from medcam.config import check_choice
from medcam.errors import ConfigError, MedcamError
from medcam.monitor.alarms import Alarm, judge, last_line, on_alarm_command, run_on_alarm
from medcam.monitor.analysis import Analysis, Settings, analyse
from medcam.monitor.node import find_spools, node_health, results_of
from medcam.monitor.periods import PERIODS, parse_date
from medcam.monitor.report import render_report, write_report
from medcam.monitor.reviews import ReviewCounts, read_reviews
from medcam.monitor.summary import build_summary, write_summary
from medcam.monitor.table import GROUP_COLUMNS, Table, Unreadable, find_results, read_tables

__all__ = ["EXIT_ALARM", "Findings", "MonitorError", "MonitorOptions", "MonitorResult", "created_now", "examine",
           "monitor", "print_result", "validation_flag_rate"]

EXIT_ALARM = 4


class MonitorError(MedcamError):
    """Nothing to monitor: no readable rows, or no rows of the model asked for."""


@dataclass(frozen=True)
class MonitorOptions:
    """What ``medcam monitor`` is asked (see ``medcam monitor --help``).

    Attributes:
        inputs: results files or folders (searched recursively; a node's spool too).
        out: the folder for ``report.html`` and ``summary.json``.
        reference: results files or folders of a baseline; empty: the first ``baseline_periods``.
        model: a checkpoint (path or ``bundled``: its rows only, its positive class, its
            validation flag rate for comparison) or a model id (its rows only).
        on_alarm: a command run on an alarm with summary.json's path appended.
        now: the time that decides which periods are complete (default: now, UTC).
    """

    inputs: tuple[str, ...]
    out: Path
    reference: tuple[str, ...] = ()
    baseline_periods: int = 2
    since: str | None = None
    period: str = "day"
    by: str | None = None
    by_study_date: bool = False
    reviews: Path | None = None
    model: str | None = None
    on_alarm: str | None = None
    now: np.datetime64 | None = None
    command: str = "medcam monitor"

    def __post_init__(self) -> None:
        check_choice("--period", self.period, PERIODS)
        if self.by is not None:
            check_choice("--by", self.by, GROUP_COLUMNS)
        if self.baseline_periods < 1:
            raise ConfigError(f"--baseline-periods must be 1 or more, got {self.baseline_periods!r}")
        if not self.inputs:
            raise ConfigError("give at least one results file or folder")
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} is a file; give a folder for report.html and summary.json")


@dataclass(frozen=True)
class MonitorResult:
    """What a run found and wrote: its exit status, last line, files and warnings."""

    exit_status: int
    last_line: str
    summary: Path
    report: Path
    alarms: list[Alarm] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Findings:
    """Rows analysed and judged: the analysis, its alarms, and the exit status, verdict and last
    line that ``medcam monitor`` gives for them."""

    analysis: Analysis
    alarms: list[Alarm]
    exit_status: int
    verdict: str
    last_line: str


def examine(table: Table, settings: Settings, reference: Table | None = None, unreadable: int = 0) -> Findings:
    """Analyse ``table`` against ``reference`` (or its own first periods) and judge the latest
    complete period: the verdict of ``medcam monitor`` and of the reviewer app's Monitoring page.

    Args:
        unreadable: how many inputs could not be read (exit status 3 when nothing alarms).

    Raises:
        ConfigError: the reference has no analysed rows.
    """
    analysis = analyse(table, settings, reference)
    alarms = judge(analysis)
    if alarms:
        return Findings(analysis, alarms, EXIT_ALARM, "alarm", last_line(alarms))
    if analysis.judged is None:
        return Findings(analysis, alarms, EXIT_FATAL, "not judged", f"not judged: {analysis.why_not_judged}")
    if unreadable:
        return Findings(analysis, alarms, EXIT_INCOMPLETE, "unreadable input",
                        f"no alarm ({analysis.judged_label}); {unreadable} input(s) could not be read")
    return Findings(analysis, alarms, EXIT_OK, "ok", f"no alarm ({analysis.judged_label})")


def validation_flag_rate(metadata: dict[str, Any]) -> float | None:
    """The share of the validation split a checkpoint would flag at its threshold, from the
    calibration record, or the training's when the calibration was not refitted (per population:
    positives times sensitivity plus negatives times one minus specificity), or None when the
    checkpoint has neither."""
    populations = ((metadata.get("calibration") or {}).get("validation")
                   or (metadata.get("training") or {}).get("validation") or {})
    total = flagged = 0.0
    for figures in populations.values():
        try:
            n, positive = float(figures["n"]), float(figures["n_positive"])
            flagged += positive * float(figures["sensitivity"]) + (n - positive) * (1 - float(figures["specificity"]))
            total += n
        except (KeyError, TypeError, ValueError):
            return None
    return flagged / total if total else None


def _model(name: str | None) -> tuple[str | None, str | None, float | None]:
    """The model id to keep, its positive class and validation flag rate, from ``--model``."""
    if name is None:
        return None, None, None
    if name == "bundled" or Path(name).is_file():
        from medcam.models.checkpoint import load_checkpoint  # torch: only when a checkpoint is named

        checkpoint = load_checkpoint(name)
        return checkpoint.model_id, checkpoint.model.positive_class, validation_flag_rate(checkpoint.metadata)
    return name, None, None


def _read(inputs: tuple[str, ...], out: Path, positive: str | None, model_id: str | None,
          what: str) -> tuple[Table, list[Unreadable]]:
    files, unreadable = find_results([results_of(item) for item in inputs], exclude=out)
    table, more = read_tables(files, positive)
    unreadable += more
    if table is None:
        reasons = "; ".join(str(u) for u in unreadable) or "no input given"
        raise MonitorError(f"no readable rows in the {what}: {reasons}")
    if model_id is not None:
        keep = table.model == model_id
        if not keep.any():
            found = ", ".join(sorted(set(table.model.tolist())))
            raise MonitorError(f"no row of the {what} was scored by model {model_id}; the rows name {found}")
        table = table.select(keep)
    return table, unreadable


def monitor(options: MonitorOptions) -> MonitorResult:
    """Read, analyse, judge, write ``report.html`` and ``summary.json``, run ``--on-alarm``.

    Raises:
        ConfigError: a bad option value.
        MonitorError: no readable rows, or none of the model asked for.
    """
    hook = on_alarm_command(options.on_alarm) if options.on_alarm is not None else None
    since = parse_date(options.since) if options.since else None
    now = options.now if options.now is not None else np.datetime64(datetime.now(timezone.utc).replace(tzinfo=None),
                                                                      "s")
    settings = Settings(now=now, period=options.period, by=options.by, by_study_date=options.by_study_date,
                        baseline_periods=options.baseline_periods)
    model_id, positive, validation = _model(options.model)
    table, unreadable = _read(options.inputs, options.out, positive, model_id, "inputs")
    reference = None
    if options.reference:
        reference, more = _read(options.reference, options.out, table.positive_class, model_id, "reference")
        unreadable += more
    if since is not None:
        when = table.study_date if options.by_study_date else table.scored_at
        table = table.select(when.astype("datetime64[D]") >= since)
        if not len(table):
            raise MonitorError(f"no row of the inputs is dated {options.since} or later")
    reviews: ReviewCounts | None = None
    if options.reviews is not None:
        counted = read_reviews(options.reviews, options.period)
        if isinstance(counted, Unreadable):
            unreadable.append(counted)
        else:
            reviews = counted
    found = examine(table, settings, reference, len(unreadable))
    nodes = [node_health(spool) for spool in find_spools(options.inputs)]

    summary = build_summary(
        analysis=found.analysis, alarms=found.alarms, table=table, unreadable=unreadable,
        exit_status=found.exit_status, verdict=found.verdict, last_line=found.last_line,
        reference_source=_reference_source(options), settings=_settings(options), validation_rate=validation,
        reviews=reviews, nodes=nodes, created=created_now(), command=options.command)
    options.out.mkdir(parents=True, exist_ok=True)
    summary_path = write_summary(summary, options.out / "summary.json")
    report_path = write_report(render_report(summary, found.analysis, reviews), options.out / "report.html")
    warnings = [f"could not read {u}" for u in unreadable]
    if found.alarms and hook is not None:
        problem = run_on_alarm(hook, summary_path)
        if problem:
            warnings.append(problem)
    return MonitorResult(found.exit_status, found.last_line, summary_path, report_path, found.alarms, warnings)


def created_now() -> str:
    """Now, UTC, as ``summary.json``'s ``created`` (``YYYY-MM-DDTHH:MM:SSZ``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _reference_source(options: MonitorOptions) -> str:
    if options.reference:
        return f"--reference {' '.join(options.reference)}"
    return f"the first {options.baseline_periods} {options.period}(s) with rows"


def _settings(options: MonitorOptions) -> dict[str, Any]:
    return {"period": options.period, "periods_from": "study_date" if options.by_study_date else "scored_at",
            "by": options.by, "baseline_periods": options.baseline_periods, "since": options.since,
            "model": options.model, "reviews": str(options.reviews) if options.reviews else None}


def print_result(result: MonitorResult) -> None:
    """Warnings to standard error, then where the files are, then the verdict as the last line."""
    for warning in result.warnings:
        print(f"medcam monitor: {warning}", file=sys.stderr)
    print(f"wrote {result.report} and {result.summary}")
    print(result.last_line)
