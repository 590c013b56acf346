"""Monitoring a deployed model over time: ``medcam monitor``.

Results files (``medcam score``'s, the node's per-series files) are read into columns, cut into
periods, held against a reference, judged, and written up. One module per step:

- :mod:`~medcam.monitor.table`: the results files read into numpy columns (the csv module,
  no pandas); unreadable files become data with their reason;
- :mod:`~medcam.monitor.periods`: days or ISO weeks from ``scored_at`` (or the Study Date),
  and which are complete;
- :mod:`~medcam.monitor.statistics`: p-chart limits, the CUSUM, the population stability
  index, the two-sample test, with their thresholds and false-alarm rates;
- :mod:`~medcam.monitor.analysis`: volume, status mix, flag rate and score shifts per period
  and group;
- :mod:`~medcam.monitor.alarms`: what fires on the latest complete period, and ``--on-alarm``;
- :mod:`~medcam.monitor.reviews` and :mod:`~medcam.monitor.node`: the reviewer app's decisions
  and the DICOM node's spool, reported only;
- :mod:`~medcam.monitor.figures`, :mod:`~medcam.monitor.report`, :mod:`~medcam.monitor.summary`:
  the figures, the self-contained ``report.html`` and ``summary.json``;
- :mod:`~medcam.monitor.run`: the command itself and its exit status; :func:`examine`, the
  verdict on a table of rows, is shared with the reviewer app's Monitoring page
  (:mod:`medcam.review.monitoring`), which reads its rows from the review database.

Example:
    >>> from medcam.monitor import MonitorOptions, monitor
    >>> result = monitor(MonitorOptions(("node/spool/results",), Path("monitor-out")))  # doctest: +SKIP
    >>> result.exit_status, result.last_line  # doctest: +SKIP
    (0, 'no alarm (2026-12-02)')
"""

from medcam.monitor.alarms import Alarm
from medcam.monitor.analysis import Analysis, Settings, analyse
from medcam.monitor.run import (
    EXIT_ALARM,
    Findings,
    MonitorError,
    MonitorOptions,
    MonitorResult,
    examine,
    monitor,
    print_result,
)
from medcam.monitor.table import Table, Unreadable, read_tables

__all__ = ["EXIT_ALARM", "Alarm", "Analysis", "Findings", "MonitorError", "MonitorOptions", "MonitorResult", "Settings",
           "Table", "Unreadable", "analyse", "examine", "monitor", "print_result", "read_tables"]
