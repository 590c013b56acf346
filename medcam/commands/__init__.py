"""The command front ends: each maps a command's options onto the one pipeline (:mod:`medcam.scoring`).

``predict``, ``export`` and ``score`` choose which files the pipeline writes beside its
rows; they share the model line, the manifest and the exit status defined here.

Exit status of every command that runs the pipeline:

====  ==========================================================================
0     every input was analysed
3     the run finished, and some inputs were not analysed or failed (their rows say why)
1     fatal: bad arguments, an unreadable model, a results file of another model ...
130   interrupted (Ctrl-C); what was written is kept, run the same command to resume
====  ==========================================================================
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import medcam

if TYPE_CHECKING:  # the CLI imports this package for its exit codes: --help stays fast
    from medcam.models.checkpoint import Checkpoint
    from medcam.scoring.options import ScoreOptions, ScoreSummary

__all__ = ["EXIT_FATAL", "EXIT_INCOMPLETE", "EXIT_INTERRUPTED", "EXIT_OK", "echo_rows", "exit_status",
           "model_line", "write_manifest"]

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130
SCHEMA_VERSION = 2


def exit_status(summary: ScoreSummary) -> int:
    """0 when every input was analysed, else 3 (see the module documentation)."""
    return EXIT_OK if summary.complete else EXIT_INCOMPLETE


def model_line(ckpt: Checkpoint, outputs: str = "outputs") -> str:
    """The line every command prints first: which model, and whether its outputs mean anything."""
    status = "trained" if ckpt.trained else f"UNTRAINED PLACEHOLDER - {outputs} are meaningless"
    return (f"model {ckpt.model_id} ({status}); {ckpt.model.positive_class} flagged at "
            f"p >= {ckpt.threshold:.3f}")


def write_manifest(path: Path, ckpt: Checkpoint, options: ScoreOptions, command: str, **extra: Any) -> None:
    """``manifest.json``: what made the files beside it (model, options, versions)."""
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"id": ckpt.model_id, "path": ckpt.path, "trained": ckpt.trained,
                  "classes": list(ckpt.model.classes), "positive_class": ckpt.model.positive_class,
                  "temperature": ckpt.temperature, "class_bias": ckpt.class_bias, "threshold": ckpt.threshold,
                  "population_calibration": _populations(ckpt), "preprocess": asdict(ckpt.preprocess)},
        "options": json.loads(json.dumps(asdict(options), default=str)),
        "versions": {"medcam": medcam.__version__, "python": platform.python_version()},
        **extra,
    }
    path.write_text(json.dumps(manifest, indent=2))


def _populations(ckpt: Checkpoint) -> dict[str, Any] | None:
    """Each population's calibration map, when the model chooses one per image (then it replaces
    ``temperature`` and ``class_bias``)."""
    found = ckpt.population_calibration
    if found is None:
        return None
    return {name: {"temperature": c.temperature, "class_bias": c.bias}
            for name, c in zip(found.populations, found.calibrations, strict=True)}


def echo_rows(results: Path, ok_text: Callable[[dict[str, str]], str]) -> None:
    """Print one line per row of ``results``: ``ok_text(row)`` when analysed, else the status and reason."""
    from medcam.scoring.results import read_results

    rows = list(read_results(results))
    width = max((len(Path(r["path"]).name) for r in rows), default=10)
    for row in rows:
        name = Path(row["path"]).name.ljust(width)
        text = ok_text(row) if row["status"] == "ok" else f"{row['status'].replace('_', ' ')}: {row['reason']}"
        print(f"{name}  {text}")
