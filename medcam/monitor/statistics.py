"""The statistics of monitoring: control limits and a CUSUM on the flag rate, distribution shift.

Each period's flag rate ``p_t = x_t / n_t`` (``x_t`` flagged of ``n_t`` analysed rows) is held
against the reference flag rate ``p0``, measured on ``N`` analysed reference rows. The
false-alarm rates below were measured by ``python benchmarks/monitor_false_alarms.py``
(fixed seed; binomial flag counts at the reference rate, real scores resampled); its full
tables are in the README ("Monitoring").

- **p-chart**: limits ``p0 +- 3 sqrt(p0 (1 - p0) (1 / n_t + 1 / N))``, cut to [0, 1]: the
  3-sigma limits of a period's difference from a reference that is itself a sample (with a
  large reference, the classic ``p0 +- 3 sqrt(p0 (1 - p0) / n_t)``). False alarms per judged
  period: 0.2-0.7 % for ``n_t`` of 100 to 1000 against two reference periods of ``n_t`` rows
  (0.27 % in theory; the binomial's skew reaches 2 % at ``n_t p0`` near 3). The classic limits
  around a two-period reference would give 1.3-2 %.
- **CUSUM** (tabular, self-starting): two one-sided sums of standardised rates,
  ``S+_t = max(0, S+_(t-1) + z_t - k)`` for a rising flag rate and ``S-_t = max(0, S-_(t-1) -
  z_t - k)`` for a falling one, from 0 in the first period after the reference; an alarm when
  either exceeds ``h``. ``z_t = (x_t - n_t q) / sqrt(n_t q (1 - q) (1 + n_t / M))`` holds each
  period against ``q``, the rate of the reference and every monitored period before it
  (``M`` rows; Hawkins' self-starting CUSUM): the error of a short reference's rate is the
  same in every period, and a CUSUM against it fixed adds it up until it alarms (measured: half
  of all judged periods in alarm within a year after a two-day reference). ``k = 0.5`` (it
  reacts to a shift of one standard error per period), ``h = 5``: 0.7-0.9 % of judged periods
  in alarm over a year of in-control daily periods, the first false alarm after about 250
  periods on average (within a 365-period horizon).
- **Population stability index** of a score (the probability, the OOD score) in a period
  against the reference: ``PSI = sum_i (a_i - e_i) ln(a_i / e_i)`` over ten bins whose edges are
  the reference's deciles (fixed by the reference, so every period is binned alike; tied
  deciles merge bins), with ``e_i`` and ``a_i`` the reference's and the period's shares of rows
  in bin ``i``, each count plus one half so that an empty bin stays finite. By convention 0.1 to
  0.25 is a moderate shift and 0.25 or more a major one; the alarm is PSI >= 0.25 in a group of
  at least 100 rows. A sample of the reference population gives PSI near ``9 (1 / n + 1 / N)``
  on average: at ``n`` = 100 rows against a 200-row reference, 0.13, and 0.25 is reached in
  4.5 % of periods per score (9 % for either score); at 150 rows 0.3-0.5 % (0.75 % for either),
  from 200 rows none in 2,000 draws.
- **Two-sample test**: the Kolmogorov-Smirnov test of the period's scores against the
  reference's (:func:`scipy.stats.ks_2samp`), reported, never alarmed on: with thousands of
  rows a difference too small to matter is already significant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["CUSUM_H", "CUSUM_K", "PSI_BINS", "PSI_LIMIT", "PSI_MIN_ROWS", "SIGMAS", "Cusum", "cusum",
           "p_chart_limits", "psi", "psi_edges", "two_sample"]

SIGMAS = 3.0
"""Width of the p-chart's limits, in binomial standard errors."""
CUSUM_K = 0.5
"""The CUSUM's allowance, in standard errors per period."""
CUSUM_H = 5.0
"""The CUSUM's decision interval, in standard errors."""
PSI_BINS = 10
"""Bins of the PSI: the reference's deciles."""
PSI_LIMIT = 0.25
"""PSI at or above which a score's distribution has shifted (an alarm)."""
PSI_MIN_ROWS = 100
"""Fewest rows of a group in a period for its PSI to raise an alarm."""
_P_FLOOR = 1e-3  # a reference rate of exactly 0 or 1 would make every flag (or none) infinitely many sigmas


def _sigma(p0: float, n: float) -> float:
    p = min(max(p0, _P_FLOOR), 1 - _P_FLOOR)
    return float(np.sqrt(p * (1 - p) / n))


def p_chart_limits(p0: float, n: np.ndarray | int, n_reference: int | None = None,
                   sigmas: float = SIGMAS) -> tuple[np.ndarray, np.ndarray]:
    """The lower and upper control limits of the flag rate of periods of ``n`` rows (NaN where
    ``n`` is 0), for the reference rate ``p0`` measured on ``n_reference`` rows (None: known).

    Example:
        >>> low, high = p_chart_limits(0.2, np.array([100]))
        >>> round(float(low[0]), 3), round(float(high[0]), 3)
        (0.08, 0.32)
        >>> low, high = p_chart_limits(0.2, np.array([100]), n_reference=200)
        >>> round(float(low[0]), 3), round(float(high[0]), 3)
        (0.053, 0.347)
    """
    if not 0.0 <= p0 <= 1.0:
        raise ValueError(f"the reference flag rate must be in [0, 1], got {p0!r}")
    n = np.asarray(n, dtype=np.float64)
    extra = 1.0 / n_reference if n_reference else 0.0
    width = sigmas * np.sqrt(p0 * (1 - p0) * (1.0 / np.where(n > 0, n, np.nan) + extra))
    return np.clip(p0 - width, 0.0, 1.0), np.clip(p0 + width, 0.0, 1.0)


@dataclass(frozen=True)
class Cusum:
    """The two one-sided CUSUMs over a run of periods (module documentation).

    Attributes:
        upper: ``S+`` after each period (a rising flag rate).
        lower: ``S-`` after each period (a falling flag rate).
        k: the allowance; h: the decision interval.
    """

    upper: np.ndarray
    lower: np.ndarray
    k: float
    h: float

    @property
    def alarm(self) -> np.ndarray:
        """Periods where either sum exceeds ``h``."""
        return (self.upper > self.h) | (self.lower > self.h)


def cusum(flagged: np.ndarray, n: np.ndarray, p0: float, n_reference: int | None = None, k: float = CUSUM_K,
          h: float = CUSUM_H) -> Cusum:
    """The CUSUMs of periods with ``flagged`` of ``n`` analysed rows against the rate ``p0``.

    With ``n_reference`` (the rows ``p0`` was measured on) the CUSUM is self-starting (module
    documentation): each period is held against the reference and the periods before it.
    Without, ``p0`` is taken as known.

    Example:
        >>> c = cusum(np.array([20, 20, 40]), np.array([100, 100, 100]), 0.2)
        >>> [round(float(v), 2) for v in c.upper]
        [0.0, 0.0, 4.5]
    """
    flagged = np.asarray(flagged, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    upper = np.zeros(len(n))
    lower = np.zeros(len(n))
    high = low = 0.0
    pooled_x, pooled_n = (p0 * n_reference, float(n_reference)) if n_reference else (p0, 0.0)
    for t in range(len(n)):
        if n[t] > 0:
            p = pooled_x / pooled_n if pooled_n else p0
            spread = 1.0 + (n[t] / pooled_n if pooled_n else 0.0)
            z = (flagged[t] - n[t] * p) / (_sigma(p, n[t]) * n[t] * np.sqrt(spread))
            high = max(0.0, high + z - k)
            low = max(0.0, low - z - k)
            if pooled_n:
                pooled_x, pooled_n = pooled_x + flagged[t], pooled_n + n[t]
        upper[t], lower[t] = high, low
    return Cusum(upper, lower, k, h)


def psi_edges(reference: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """The inner bin edges of the PSI: the reference's quantiles at 1/bins, 2/bins ...
    (tied quantiles merged). NaN values are left out."""
    values = np.asarray(reference, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        raise ValueError("the reference has no values to set the PSI's bins")
    return np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return (counts + 0.5) / (counts.sum() + 0.5 * len(counts))


def psi(reference: np.ndarray, actual: np.ndarray, edges: np.ndarray | None = None) -> float:
    """The population stability index of ``actual`` against ``reference`` (NaN values left
    out), binned at ``edges`` (default: :func:`psi_edges` of the reference); NaN when
    ``actual`` has no values.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> round(psi(rng.normal(size=100_000), rng.normal(1.0, 1.0, size=100_000)), 2)
        0.93
    """
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    reference, actual = reference[np.isfinite(reference)], actual[np.isfinite(actual)]
    if not len(actual):
        return float("nan")
    edges = psi_edges(reference) if edges is None else edges
    expected, observed = _shares(reference, edges), _shares(actual, edges)
    return float(np.sum((observed - expected) * np.log(observed / expected)))


def two_sample(reference: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """The Kolmogorov-Smirnov statistic and p-value of ``actual`` against ``reference`` (NaN
    values left out); NaN, NaN when either has no values."""
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    reference, actual = reference[np.isfinite(reference)], actual[np.isfinite(actual)]
    if not len(reference) or not len(actual):
        return float("nan"), float("nan")
    result = stats.ks_2samp(reference, actual)
    return float(result.statistic), float(result.pvalue)
