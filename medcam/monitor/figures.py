"""The report's figures, drawn with matplotlib and returned as PNG (inlined in ``report.html``, shown
by the reviewer app's Monitoring page).

Each PNG carries ``Software=medcam`` (:data:`medcam.io.provenance.PNG_TEXT`), like every
picture medcam writes. Figures are made without ``pyplot``: no global state, no display.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from medcam.io.provenance import PNG_TEXT
from medcam.monitor.analysis import Analysis, Shift
from medcam.monitor.reviews import ReviewCounts
from medcam.monitor.statistics import PSI_LIMIT

__all__ = ["cusum_figure", "distribution_figure", "flag_rate_figure", "png_bytes", "psi_figure",
           "reviews_figure", "volume_figure"]

_WIDTH = 9.0
_MAX_TICKS = 16
MAX_GROUPS = 8
"""Most groups drawn in one distribution figure (the table lists them all)."""


def png_bytes(figure: Figure) -> bytes:
    """``figure`` as a PNG file's bytes (with medcam's PNG text)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata=PNG_TEXT)
    return buffer.getvalue()


def _period_axis(ax: Axes, labels: Sequence[str]) -> None:
    step = max(1, int(np.ceil(len(labels) / _MAX_TICKS)))
    ticks = list(range(0, len(labels), step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([labels[i] for i in ticks], rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)


def _marks(ax: Axes, analysis: Analysis) -> None:
    """Shade the reference periods, mark model changes and the judged period."""
    for i in np.flatnonzero(analysis.reference_periods).tolist():
        ax.axvspan(i - 0.5, i + 0.5, color="0.9", zorder=0)
    for label, _ in analysis.changes:
        i = analysis.labels.index(label)
        ax.axvline(i - 0.5, color="tab:purple", linestyle=":", linewidth=1.2)
    if analysis.judged is not None:
        ax.axvspan(analysis.judged - 0.5, analysis.judged + 0.5, color="#fff2b3", zorder=0)


def _figure(height: float = 3.2) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(_WIDTH, height))
    return figure, figure.add_subplot()


def volume_figure(analysis: Analysis) -> Figure:
    """Rows per period by status (grey: reference periods; dotted: model or segmenter changed)."""
    figure, ax = _figure()
    x = np.arange(len(analysis.labels))
    bottom = np.zeros(len(x))
    for counts, name, colour in zip(analysis.status, ("analysed", "not analysed", "error"),
                                    ("tab:blue", "tab:orange", "tab:red"), strict=True):
        ax.bar(x, counts, bottom=bottom, label=name, color=colour, width=0.8)
        bottom = bottom + counts
    _marks(ax, analysis)
    _period_axis(ax, analysis.labels)
    ax.set_ylabel("rows")
    ax.legend(fontsize=8, loc="upper left")
    return figure


def flag_rate_figure(analysis: Analysis, validation_rate: float | None = None) -> Figure:
    """Flag rate per period with its p-chart limits, the reference rate and, for comparison
    only, the validation split's."""
    figure, ax = _figure(3.6)
    x = np.arange(len(analysis.labels))
    ax.step(x, analysis.upper, where="mid", color="tab:red", linewidth=1, label="3-sigma limits")
    ax.step(x, analysis.lower, where="mid", color="tab:red", linewidth=1)
    ax.axhline(analysis.reference_rate, color="tab:green", linewidth=1.2,
               label=f"reference {analysis.reference_rate:.3f}")
    if validation_rate is not None:
        ax.axhline(validation_rate, color="0.4", linestyle="--", linewidth=1,
                   label=f"validation split {validation_rate:.3f} (not alarmed on)")
    outside = (analysis.rate > analysis.upper) | (analysis.rate < analysis.lower)
    ax.plot(x, analysis.rate, "o-", color="tab:blue", markersize=4, linewidth=1, label="flag rate")
    ax.plot(x[outside], analysis.rate[outside], "o", color="tab:red", markersize=7, label="outside the limits")
    _marks(ax, analysis)
    _period_axis(ax, analysis.labels)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("flagged / analysed")
    ax.legend(fontsize=8, loc="best")
    return figure


def cusum_figure(analysis: Analysis) -> Figure:
    """The two one-sided CUSUMs over the monitored periods and their decision interval."""
    figure, ax = _figure()
    x = np.arange(len(analysis.labels))
    shown = np.where(analysis.monitored, 1.0, np.nan)
    chart = analysis.cusum
    ax.plot(x, chart.upper * shown, "o-", markersize=3, color="tab:red", label="S+ (rising flag rate)")
    ax.plot(x, chart.lower * shown, "o-", markersize=3, color="tab:blue", label="S- (falling flag rate)")
    ax.axhline(chart.h, color="black", linestyle="--", linewidth=1, label=f"h = {chart.h:g} (k = {chart.k:g})")
    _marks(ax, analysis)
    _period_axis(ax, analysis.labels)
    ax.set_ylabel("standard errors")
    ax.legend(fontsize=8, loc="upper left")
    return figure


def psi_figure(analysis: Analysis) -> Figure:
    """Each score's PSI per monitored period against the reference (all rows)."""
    figure, ax = _figure()
    x = np.arange(len(analysis.labels))
    for name, values in analysis.psi.items():
        ax.plot(x, values, "o-", markersize=3, label=name)
    ax.axhline(PSI_LIMIT, color="tab:red", linestyle="--", linewidth=1, label=f"alarm at {PSI_LIMIT:g}")
    _marks(ax, analysis)
    _period_axis(ax, analysis.labels)
    ax.set_ylabel("PSI")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper left")
    return figure


def distribution_figure(shifts: Sequence[Shift], period: str) -> Figure:
    """One score in the judged period against its reference: ``all`` and the largest groups."""
    shown = sorted(shifts, key=lambda s: (s.group != "all", -s.n))[:MAX_GROUPS]
    columns = min(4, len(shown))
    rows = int(np.ceil(len(shown) / columns))
    figure = Figure(figsize=(_WIDTH, 2.4 * rows + 0.4))
    for k, shift in enumerate(shown):
        ax = figure.add_subplot(rows, columns, k + 1)
        both = np.concatenate([shift.reference, shift.values])
        edges = (np.histogram_bin_edges(both, bins=30) if len(both) else np.linspace(0, 1, 31)).tolist()
        ax.hist(shift.reference, bins=edges, density=True, color="tab:green", alpha=0.45, label="reference")
        ax.hist(shift.values, bins=edges, density=True, histtype="step", color="tab:blue", linewidth=1.5,
                label=period)
        psi = "n/a" if not np.isfinite(shift.psi) else f"{shift.psi:.2f}"
        ax.set_title(f"{shift.group[:32]}\nn={shift.n}, PSI {psi}", fontsize=8,
                     color="tab:red" if shift.alarmable and shift.psi >= PSI_LIMIT else "black")
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
        if k == 0:
            ax.legend(fontsize=7)
    figure.suptitle(shown[0].score if shown else "", fontsize=10)
    figure.tight_layout()
    return figure


def reviews_figure(counts: ReviewCounts) -> Figure:
    """Reviewers' region decisions and sign-offs per period."""
    figure, ax = _figure()
    x = np.arange(len(counts.labels))
    width = 0.2
    for offset, values, name, colour in ((-1.5, counts.accepted, "regions accepted", "tab:green"),
                                         (-0.5, counts.rejected, "regions rejected", "tab:red"),
                                         (0.5, counts.agree, "agree (signed off)", "tab:blue"),
                                         (1.5, counts.disagree, "disagree (signed off)", "tab:orange")):
        ax.bar(x + offset * width, values, width=width, label=name, color=colour)
    _period_axis(ax, counts.labels)
    ax.set_ylabel("decisions")
    ax.legend(fontsize=8, loc="upper left")
    return figure
