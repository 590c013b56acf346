"""``report.html``: one self-contained page (figures inline as base64 PNG, styles inline, no
link to anything), which opens from disk without a server and can be mailed as it is.

It holds what ``summary.json`` holds, for people: the verdict and each alarm first, then
volume and status mix, the flag rate against its limits and the CUSUM, score distributions
against the reference per group, model changes, reviews and node health, and how each
threshold is set. Every text that comes from the inputs is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcam.files import atomic_open
from medcam.monitor.analysis import SCORES, Analysis
from medcam.monitor.figures import (
    cusum_figure,
    distribution_figure,
    flag_rate_figure,
    png_bytes,
    psi_figure,
    reviews_figure,
    volume_figure,
)
from medcam.monitor.node import RETRYING_AFTER_S
from medcam.monitor.reviews import ReviewCounts
from medcam.monitor.statistics import CUSUM_H, CUSUM_K, PSI_LIMIT, PSI_MIN_ROWS, SIGMAS

__all__ = ["PERIOD_COLUMNS", "SHIFT_COLUMNS", "Picture", "draw_pictures", "period_rows", "render_report", "shift_rows",
           "write_report"]

PERIOD_COLUMNS = ("period", "analysed", "flagged", "rate", "lower limit", "upper limit", "CUSUM+", "CUSUM-",
                  "lung cautions", "")
SHIFT_COLUMNS = ("score", "group", "rows", "reference rows", "against", "PSI", "KS", "KS p-value", "can alarm")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { padding: 0.6em 1em; border-radius: 4px; font-weight: 600; }
.alarm { background: #fde2e1; border: 1px solid #d33; }
.ok { background: #e3f5e1; border: 1px solid #3a3; }
.grey { background: #eee; border: 1px solid #999; }
.note { color: #555; font-size: 0.9em; }
img { max-width: 100%; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: object) -> str:
    if value is None:
        return '<td class="n">-</td>'
    if isinstance(value, float):
        return f'<td class="n">{value:.3f}</td>' if value == value else '<td class="n">-</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="n">{value}</td>'
    return f"<td>{_e(value)}</td>"


@dataclass(frozen=True)
class Picture:
    """One of the report's figures, drawn: its section (``volume``, ``flag_rate``, ``psi``,
    ``distributions`` or ``reviews``), alt text and PNG."""

    section: str
    alt: str
    png: bytes = field(repr=False)


def draw_pictures(summary: dict[str, Any], analysis: Analysis, reviews: ReviewCounts | None = None) -> list[Picture]:
    """The report's figures in page order, drawn once: ``report.html`` inlines them, the reviewer
    app's Monitoring page shows them."""
    validation = summary["validation"]["flag_rate"] if summary["validation"] else None
    pictures = [Picture("volume", "rows per period by status", png_bytes(volume_figure(analysis))),
                Picture("flag_rate", "flag rate per period with p-chart limits",
                        png_bytes(flag_rate_figure(analysis, validation))),
                Picture("flag_rate", "CUSUM of the flag rate", png_bytes(cusum_figure(analysis)))]
    if analysis.psi:
        pictures.append(Picture("psi", "PSI per period", png_bytes(psi_figure(analysis))))
    for score in SCORES:
        mine = [shift for shift in analysis.shifts if shift.score == score]
        if mine:
            pictures.append(Picture("distributions", f"{score} against the reference",
                                    png_bytes(distribution_figure(mine, analysis.judged_label))))
    if reviews is not None and len(reviews.labels):
        pictures.append(Picture("reviews", "reviewers' decisions per period", png_bytes(reviews_figure(reviews))))
    return pictures


def _imgs(pictures: Sequence[Picture], section: str) -> list[str]:
    return [f'<p><img alt="{_e(p.alt)}" src="data:image/png;base64,{base64.b64encode(p.png).decode("ascii")}"></p>'
            for p in pictures if p.section == section]


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.0f} min"


def render_report(summary: dict[str, Any], analysis: Analysis, reviews: ReviewCounts | None = None,
                  pictures: Sequence[Picture] | None = None) -> str:
    """The page for ``summary`` (:mod:`medcam.monitor.summary`), with ``analysis``'s figures
    (``pictures`` when already drawn by :func:`draw_pictures`)."""
    s = summary
    if pictures is None:
        pictures = draw_pictures(summary, analysis, reviews)
    verdict = s["verdict"]
    css = "alarm" if verdict == "alarm" else "ok" if verdict == "ok" else "grey"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>medcam monitor: {_e(verdict)}"
             f"</title><style>{_STYLE}</style></head><body>",
             "<h1>medcam monitor</h1>",
             f"<p class='note'>Made {_e(s['created'])} by <code>{_e(s['command'])}</code>; positive class "
             f"{_e(s['positive_class'])}; model(s) {_e(', '.join(s['models']))}.</p>",
             f"<p class='verdict {css}'>{_e(verdict.upper())} (exit status {s['exit_status']}): "
             f"{_e(_headline(s))}</p>"]
    if s["alarms"]:
        parts.append(_table(["check", "period", "group", "on", "figure", "limit"],
                            [(a["check"], a["period"], a["group"], a["variable"], a["figure"], a["limit"])
                             for a in s["alarms"]]))
    if s["why_not_judged"]:
        parts.append(f"<p>No period judged: {_e(s['why_not_judged'])}.</p>")
    parts += _inputs(s)
    parts += _volume(s, pictures)
    parts += _flag_rate(s, pictures)
    parts += _shifts(s, analysis, pictures)
    if s["model_changes"]:
        parts.append("<h2>Model changes</h2><p>The flag rate and the scores are not comparable across a change "
                     "of model or lung segmenter: monitor the new model with <code>--model</code> and a new "
                     "reference.</p>")
        parts.append(_table(["period", "change"], [(c["period"], c["change"]) for c in s["model_changes"]]))
    if reviews is not None:
        parts.append("<h2>Reviews</h2>")
        parts += _imgs(pictures, "reviews") if len(reviews.labels) else [
            "<p>The review database holds no decisions yet.</p>"]
    if s["node"]:
        parts += _node(s["node"])
    parts.append(_method())
    parts.append("</body></html>")
    return "\n".join(parts)


def _headline(s: dict[str, Any]) -> str:
    alarms = s["alarms"]
    if not alarms:
        return str(s["last_line"])
    checks = ", ".join(sorted({a["check"] for a in alarms}))
    return f"{len(alarms)} alarm(s) on {s['judged_period']} ({checks}); each below with its figure and limit"


def _inputs(s: dict[str, Any]) -> list[str]:
    inputs = s["inputs"]
    parts = ["<h2>Inputs</h2>",
             f"<p>{inputs['rows']} rows from {inputs['files']} results file(s); periods of a "
             f"{_e(s['settings']['period'])} by {_e(s['settings']['periods_from'])}. "
             f"Reference: {_e(s['reference']['source'])}, "
             f"{s['reference']['rows_analysed']} analysed rows, flag rate {s['reference']['flag_rate']:.3f}.</p>"]
    if s["validation"]:
        parts.append(f"<p>Validation split's flag rate {s['validation']['flag_rate']:.3f}: "
                     f"{_e(s['validation']['note'])}.</p>")
    notes = []
    if inputs["rows_without_period"]:
        notes.append(f"{inputs['rows_without_period']} rows have no usable {_e(s['settings']['periods_from'])} "
                     "and are in no period")
    if inputs["rows_left_out_damaged"]:
        notes.append(f"{inputs['rows_left_out_damaged']} damaged or torn rows were left out")
    if notes:
        parts.append(f"<p class='note'>{'; '.join(notes)}.</p>")
    if inputs["unreadable"]:
        parts.append("<p><b>Inputs that could not be read</b></p>")
        parts.append(_table(["input", "reason"], [(u["path"], u["reason"]) for u in inputs["unreadable"]]))
    return parts


def _volume(s: dict[str, Any], pictures: Sequence[Picture]) -> list[str]:
    totals = {k: sum(p[k] for p in s["periods"]) for k in ("ok", "not_analysed", "error")}
    parts = ["<h2>Volume and status</h2>",
             *_imgs(pictures, "volume"),
             "<p class='note'>Grey: the reference periods; yellow: the judged period; dotted: the model or "
             "segmenter changed.</p>",
             _table(["analysed", "not analysed", "error"], [(totals["ok"], totals["not_analysed"], totals["error"])])]
    if s["reasons"]:
        parts.append("<p><b>Most frequent reasons rows were not analysed or failed</b> (numbers and paths "
                     "replaced by # and &lt;file&gt;)</p>")
        parts.append(_table(["reason", "rows"], [(r["reason"], r["rows"]) for r in s["reasons"]]))
    return parts


def period_rows(s: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The flag-rate table's rows (:data:`PERIOD_COLUMNS`): each period with rows."""
    return [(p["period"], p["ok"], p["flagged"], p["flag_rate"], p["lower_limit"], p["upper_limit"],
             p["cusum_up"], p["cusum_down"], p["cautions"],
             "reference" if p["reference"] else "judged" if p["period"] == s["judged_period"] else
             "monitored" if p["monitored"] else "" if p["complete"] else "incomplete")
            for p in s["periods"] if p["rows"]]


def shift_rows(s: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The score-distribution table's rows (:data:`SHIFT_COLUMNS`): each score and group."""
    return [(x["score"], x["group"], x["rows"], x["reference_rows"], x["against"], x["psi"], x["ks"], x["ks_p_value"],
             "yes" if x["alarmable"] else "no") for x in s["shifts"]]


def _flag_rate(s: dict[str, Any], pictures: Sequence[Picture]) -> list[str]:
    return ["<h2>Flag rate</h2>", *_imgs(pictures, "flag_rate"), _table(PERIOD_COLUMNS, period_rows(s))]


def _shifts(s: dict[str, Any], analysis: Analysis, pictures: Sequence[Picture]) -> list[str]:
    parts = ["<h2>Score distributions</h2>", *_imgs(pictures, "psi")]
    if not analysis.shifts:
        return [*parts, "<p>No judged period, so no distribution is compared.</p>"]
    parts.append(f"<p>{_e(s['judged_period'])} against the reference. PSI raises an alarm at {PSI_LIMIT:g} on "
                 f"probability and ood_score in groups of at least {PSI_MIN_ROWS} rows; the Kolmogorov-Smirnov "
                 "test and the lung-evidence share are reported only.</p>")
    parts.append(_table(SHIFT_COLUMNS, shift_rows(s)))
    return [*parts, *_imgs(pictures, "distributions")]


def _node(nodes: list[dict[str, Any]]) -> list[str]:
    rows = [(n["spool"], n["results_files"], f"{n['incoming_instances']} in {n['incoming_series']} series",
             _minutes(n["oldest_incoming_s"]), n["outbox"], _minutes(n["oldest_outbox_s"]), n["retrying"],
             n["rejected"], "; ".join(f"{r} ({c})" for r, c in n["rejected_reasons"]), n["failed"]) for n in nodes]
    return ["<h2>DICOM node</h2>",
            _table(["spool", "results files", "waiting to be scored", "oldest waiting", "waiting to be sent",
                    "oldest unsent", f"retrying (> {RETRYING_AFTER_S / 60:.0f} min)", "refused for good",
                    "reasons", "failed instances"], rows)]


def _method() -> str:
    return (
        "<h2>How the alarms are set</h2><ul>"
        f"<li>p-chart: the judged period's flag rate outside reference rate +- {SIGMAS:g} standard errors "
        "sqrt(p0 (1 - p0) / n).</li>"
        f"<li>CUSUM: two one-sided sums of the standardised flag rate, k = {CUSUM_K:g}, h = {CUSUM_H:g}, "
        "from the first period after the reference.</li>"
        f"<li>PSI over the reference's deciles, alarm at {PSI_LIMIT:g} or more on the probability or the OOD score "
        f"in a group of {PSI_MIN_ROWS} rows or more.</li>"
        "<li>Only the latest complete period is judged; the validation split, two-sample tests, reviews and "
        "node health are shown, never alarmed on. The false-alarm rate of each threshold is documented in "
        "medcam.monitor.statistics and the README.</li></ul>"
    )


def write_report(page: str, path: Path) -> Path:
    """Write the page to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
