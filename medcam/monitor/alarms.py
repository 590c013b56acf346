"""Alarms: what is judged on the latest complete period, and the command run when one fires.

On the judged period (:attr:`medcam.monitor.analysis.Analysis.judged`) an alarm fires for

- ``p_chart``: the flag rate outside the 3-sigma p-chart limits around the reference rate;
- ``cusum_up`` / ``cusum_down``: the CUSUM of a rising or falling flag rate above ``h``;
- ``psi``: the PSI of the probability or the OOD score at or above 0.25 in any group
  (``all``, or each value of ``--by``) of at least 100 analysed rows.

:mod:`medcam.monitor.statistics` gives the thresholds and the false-alarm rate each one has.
Two-sample tests, the lung-evidence share, the validation split's flag rate, reviews and node
health are reported, never alarmed on.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medcam.errors import ConfigError
from medcam.monitor.analysis import Analysis
from medcam.monitor.statistics import PSI_LIMIT

__all__ = ["ON_ALARM_TIMEOUT_S", "Alarm", "judge", "last_line", "on_alarm_command", "run_on_alarm"]

ON_ALARM_TIMEOUT_S = 300.0
"""How long ``--on-alarm``'s command may run before it is stopped."""


@dataclass(frozen=True)
class Alarm:
    """One alarm: which check, on what, in which period and group, the figure and its limit."""

    check: str
    period: str
    group: str
    variable: str
    figure: float
    limit: float
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(analysis: Analysis) -> list[Alarm]:
    """The alarms of the judged period (none when no period could be judged)."""
    j = analysis.judged
    if j is None:
        return []
    period = analysis.labels[j]
    alarms = []
    rate, low, high = float(analysis.rate[j]), float(analysis.lower[j]), float(analysis.upper[j])
    if rate > high or rate < low:
        side, limit = ("above the upper", high) if rate > high else ("below the lower", low)
        alarms.append(Alarm("p_chart", period, "all", "flag_rate", rate, limit,
                            f"flag rate {rate:.3f} {side} p-chart limit {limit:.3f} ({period}, "
                            f"{analysis.flagged[j]} of {analysis.n_ok[j]} flagged; reference "
                            f"{analysis.reference_rate:.3f})"))
    chart = analysis.cusum
    for name, values, direction in (("cusum_up", chart.upper, "rising"), ("cusum_down", chart.lower, "falling")):
        if values[j] > chart.h:
            alarms.append(Alarm(name, period, "all", "flag_rate", float(values[j]), chart.h,
                                f"CUSUM of a {direction} flag rate {values[j]:.2f} > h {chart.h:g} ({period}, "
                                f"k {chart.k:g})"))
    for shift in analysis.shifts:
        if shift.alarmable and shift.psi >= PSI_LIMIT:
            alarms.append(Alarm("psi", period, shift.group, shift.score, shift.psi, PSI_LIMIT,
                                f"PSI of {shift.score} {shift.psi:.3f} >= {PSI_LIMIT:g} ({period}, {shift.group}, "
                                f"{shift.n} rows against {shift.n_reference} reference rows)"))
    return alarms


def last_line(alarms: list[Alarm]) -> str:
    """The line a cron job or the node's supervisor reads: each alarm with figure and limit."""
    if not alarms:
        return "no alarm"
    return f"ALARM ({len(alarms)}): " + "; ".join(a.text for a in alarms)


def on_alarm_command(command: str) -> list[str]:
    """``--on-alarm``'s command as arguments (split like a shell would, but never run by one).

    Raises:
        ConfigError: an empty command or unbalanced quotes.
    """
    try:
        arguments = shlex.split(command)
    except ValueError as err:
        raise ConfigError(f"--on-alarm {command!r} cannot be split into arguments ({err})") from None
    if not arguments:
        raise ConfigError("--on-alarm needs a command, e.g. --on-alarm 'logger -t medcam-monitor'")
    return arguments


def run_on_alarm(arguments: list[str], summary: Path, timeout: float = ON_ALARM_TIMEOUT_S) -> str:
    """Run ``arguments`` with the summary's path as the last argument; returns "" when it
    succeeded, else what went wrong (a failing hook does not change the exit status)."""
    try:
        done = subprocess.run([*arguments, str(summary)], check=False, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as err:
        return f"--on-alarm {shlex.join(arguments)} could not run: {err}"
    if done.returncode:
        return f"--on-alarm {shlex.join(arguments)} exited with status {done.returncode}"
    return ""

