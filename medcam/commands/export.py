"""``medcam export``: the regions of one class's map, exported for annotation tools and the PACS.

The pipeline (:mod:`medcam.scoring`) with the region exports switched on for every analysed
image: regions are found by :func:`medcam.regions.find_regions` and written in the chosen
formats by :func:`medcam.export.export_regions`, named :func:`~medcam.scoring.output_name`.
The output folder also receives ``exports.csv`` (the columns of ``medcam score`` plus the
number of regions and the written files; a format that failed makes the row an error with
the reason) and ``manifest.json``. Each run starts ``exports.csv`` afresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from medcam.commands import echo_rows, model_line, write_manifest
from medcam.gate.served import ServedModel
from medcam.regions import resolve_class
from medcam.scoring import ScoreOptions, ScoreSummary, score

__all__ = ["export_images", "export_options"]


def export_options(out: str | Path, **options: object) -> ScoreOptions:
    """The pipeline's options for ``export``: rows in ``OUT/exports.csv``, regions of every image in ``OUT``."""
    out = Path(out)
    return ScoreOptions(out=out / "exports.csv", resume=False, regions=out, regions_of="all", progress=False,
                        **options)  # type: ignore[arg-type]


def export_images(paths: Iterable[str | Path], classifier: ServedModel, options: ScoreOptions, *,
                  echo: bool = True) -> ScoreSummary:
    """Run the pipeline with ``options`` (see :func:`export_options`) and print one line per input."""
    summary = score(paths, classifier, options)
    assert options.regions is not None
    write_manifest(options.regions / "manifest.json", classifier.checkpoint, options, "export",
                   regions=options.region_options.describe(),
                   **{"class": resolve_class(classifier.classes, options.cam_class or
                                             classifier.checkpoint.model.positive_class)})
    if echo:
        positive = f"prob_{classifier.checkpoint.model.positive_class}"

        def ok_text(row: dict[str, str]) -> str:
            skipped = [why.replace(":", " skipped:", 1) for why in row["not_exported"].split("; ") if why]
            return f"p={float(row[positive]):.3f}  {row['regions']} region(s)" + "".join(f"  ({s})" for s in skipped)

        echo_rows(options.out, ok_text)
        print(f"wrote {', '.join(options.region_formats)} exports and {options.out.name} to {options.regions}")
    return summary


def main(paths: Iterable[str | Path], classifier: ServedModel, options: ScoreOptions) -> ScoreSummary:
    """What ``medcam export`` runs: the model line and the region rule, then :func:`export_images`."""
    print(f"{model_line(classifier.checkpoint, 'regions')}; regions: {options.region_options.describe()}")
    return export_images(paths, classifier, options)
