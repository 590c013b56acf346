"""``medcam score``: whole folders into a resumable results CSV, locally or on Ray.

The pipeline (:mod:`medcam.scoring`) as it is: one row per input, appended durably, the
per-study file and the list of skipped files beside it; ``--cams`` and ``--regions`` switch
on the files of ``predict`` and ``export`` (regions of flagged images only).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from medcam.commands import model_line
from medcam.models.checkpoint import load_checkpoint
from medcam.models.predictor import Classifier
from medcam.scoring import ScoreOptions, ScoreSummary, score, score_ray, skipped_path

__all__ = ["main"]


def main(inputs: Sequence[str | Path], model: str, options: ScoreOptions, *, device: str = "cpu",
         engine: str = "local", ray_address: str | None = None, actors: int = 1) -> ScoreSummary:
    """What ``medcam score`` runs: the model line, the run on the chosen engine, a summary."""
    if engine == "ray":
        ckpt = load_checkpoint(model)
    else:
        classifier = Classifier(model, device=device)
        ckpt = classifier.checkpoint
    print(f"{model_line(ckpt)}; engine {engine}")
    try:
        if engine == "ray":
            summary = score_ray(inputs, ckpt, options, device=device, address=ray_address, actors=actors)
        else:
            summary = score(inputs, classifier, options)
    except KeyboardInterrupt:
        print(f"rows scored so far are safe in {options.out}; run the same command again to resume",
              file=sys.stderr)
        raise
    print(f"{summary.scored} rows written ({summary.errors} errors, {summary.refused} not analysed) at "
          f"{summary.images_per_second:.1f} images/s; {summary.resumed} already in the file; "
          f"{summary.skipped} other files skipped (listed in {skipped_path(options.out).name})")
    print(f"wrote {summary.results} and {summary.studies}")
    return summary
