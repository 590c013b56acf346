"""``medcam predict``: probabilities, CAM overlays and raw maps for a few images.

The pipeline (:mod:`medcam.scoring`) with the CAM files switched on, into one folder: for
each input ``<name>_overlay.png`` (the chosen class's map, normalised with ``positive``, over
the display image), ``<name>_cam.npy`` (the raw maps of every class, ``(K, rows, cols)``
float32 on the source pixel grid, in logit units) and, for DICOM and NIfTI inputs,
``<name>_cam.nii.gz`` with the source geometry; ``<name>`` is
:func:`~medcam.scoring.output_name`. ``predictions.csv`` has one row per input (the columns
of ``medcam score`` plus the files) and ``manifest.json`` records the model and the options.
Each run starts ``predictions.csv`` afresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from medcam.commands import echo_rows, model_line, write_manifest
from medcam.gate.served import ServedModel
from medcam.scoring import ScoreOptions, ScoreSummary, score

__all__ = ["predict", "predict_options"]


def predict_options(out: str | Path, **options: object) -> ScoreOptions:
    """The pipeline's options for ``predict``: rows in ``OUT/predictions.csv``, CAM files in ``OUT``."""
    out = Path(out)
    return ScoreOptions(out=out / "predictions.csv", resume=False, cams=out, cam_nifti=True,
                        progress=False, **options)  # type: ignore[arg-type]


def predict(paths: Iterable[str | Path], classifier: ServedModel, options: ScoreOptions, *,
            echo: bool = True) -> ScoreSummary:
    """Run the pipeline with ``options`` (see :func:`predict_options`) and print one line per input."""
    summary = score(paths, classifier, options)
    assert options.cams is not None
    write_manifest(options.cams / "manifest.json", classifier.checkpoint, options, "predict")
    if echo:
        def ok_text(row: dict[str, str]) -> str:
            probs = "  ".join(f"{c} {float(row[f'prob_{c}']):.3f}" for c in classifier.classes)
            return f"{probs}{'  FLAGGED' if row['flagged'] == 'true' else ''}"

        echo_rows(options.out, ok_text)
        print(f"wrote overlays, maps and {options.out.name} to {options.cams}")
    return summary


def main(paths: Iterable[str | Path], classifier: ServedModel, options: ScoreOptions) -> ScoreSummary:
    """What ``medcam predict`` runs: the model line, then :func:`predict`."""
    print(model_line(classifier.checkpoint))
    return predict(paths, classifier, options)
