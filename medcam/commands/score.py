"""``medcam score``: whole folders, or an archive's studies, into a resumable results CSV, locally or on Ray.

The pipeline (:mod:`medcam.scoring`) as it is: one row per input, appended durably, the
per-study file and the list of skipped files beside it; ``--cams`` and ``--regions`` switch
on the files of ``predict`` and ``export`` (regions of flagged images only).

An input ``dicomweb:URL`` is an archive (:mod:`medcam.node.dicomweb`): its radiographs (one
study with ``--study``, the studies since a date with ``--since``, else all) are fetched into
``RESULTS.dicomweb/`` beside the results file, and that folder is scored, so a rerun resumes
both. ``--stow URL`` then stores the run's DICOM results in an archive by STOW-RS. An instance
that could not be fetched or stored makes the run incomplete (exit status 3), as an error row does.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from medcam.commands import EXIT_INCOMPLETE, EXIT_OK, exit_status, model_line
from medcam.errors import ConfigError
from medcam.gate.served import ServedModel
from medcam.models.checkpoint import load_checkpoint
from medcam.models.lungs import BUNDLED_SEGMENTER
from medcam.node import dicomweb
from medcam.scoring import ScoreOptions, score, score_ray, skipped_path

__all__ = ["main", "pull", "stow"]

DICOM_FORMATS = ("seg", "sc", "sr", "gsps", "lungs")  # lungs: the lung fields' SEG


def main(inputs: Sequence[str | Path], model: str, options: ScoreOptions, *, device: str = "cpu",
         engine: str = "local", ray_address: str | None = None, actors: int = 1, study: str | None = None,
         since: str | None = None, stow_url: str | None = None, segmenter: str | None = BUNDLED_SEGMENTER) -> int:
    """What ``medcam score`` runs: the model line, archives fetched, the run on the chosen engine, a
    summary, the results stored back; returns the exit status (see :mod:`medcam.commands`).

    Raises:
        ConfigError: ``study``/``since`` without a ``dicomweb:`` input, a bad date, UID or URL, or
            ``stow_url`` without DICOM region formats; nothing has been fetched or scored then.
    """
    sources = {str(i): dicomweb.parse_source(str(i)) for i in inputs}
    if (study or since) and not any(sources.values()):
        raise ConfigError("--study and --since choose what to fetch from an archive; give an input "
                          "dicomweb:URL (e.g. dicomweb:http://pacs:8042/dicom-web)")
    if study and since:
        raise ConfigError("give --study or --since, not both")
    study = dicomweb.parse_study(study) if study else None
    since = dicomweb.parse_date(since) if since else None
    if stow_url is not None:
        stow_url = dicomweb.parse_url(stow_url, "--stow")
        if options.regions is None or not set(options.region_formats) & set(DICOM_FORMATS):
            raise ConfigError(f"--stow stores the DICOM results of --regions: give --regions DIR and one of "
                              f"{','.join(DICOM_FORMATS)} in --formats")
    classifier = None if engine == "ray" else ServedModel(model, device=device, segmenter=segmenter)
    ckpt = load_checkpoint(model) if classifier is None else classifier.checkpoint
    print(f"{model_line(ckpt)}; engine {engine}")
    folders, problems = pull(sources, options.out, study=study, since=since)
    try:
        if classifier is None:
            summary = score_ray(folders, ckpt, options, device=device, address=ray_address, actors=actors,
                                segmenter=segmenter)
        else:
            summary = score(folders, classifier, options)
    except KeyboardInterrupt:
        print(f"rows scored so far are safe in {options.out}; run the same command again to resume",
              file=sys.stderr)
        raise
    print(f"{summary.scored} rows written ({summary.errors} errors, {summary.refused} not analysed) at "
          f"{summary.images_per_second:.1f} images/s; {summary.resumed} already in the file; "
          f"{summary.skipped} other files skipped (listed in {skipped_path(options.out).name})")
    print(f"wrote {summary.results} and {summary.studies}")
    if stow_url is not None:
        problems += stow(stow_url, summary.results)
    status = exit_status(summary)
    return EXIT_INCOMPLETE if problems and status == EXIT_OK else status


def pull(sources: dict[str, str | None], out: Path, *, study: str | None = None,
         since: str | None = None) -> tuple[list[str], int]:
    """The inputs to score: each ``dicomweb:URL`` fetched into ``RESULTS.dicomweb/`` and replaced by that
    folder, the others as they are; and how many instances could not be fetched (each reported)."""
    inputs: list[str] = []
    failures = 0
    folder = dicomweb.fetch_folder(Path(out))
    for given, url in sources.items():
        if url is None:
            inputs.append(given)
            continue
        counts = {"new": 0, "there": 0, "failed": 0}
        for fetched in dicomweb.fetch_instances(url, folder, study=study, since=since):
            if fetched.problem:
                print(f"medcam score: {fetched.problem}", file=sys.stderr)
            counts["failed" if fetched.problem else "new" if fetched.new else "there"] += 1
        print(f"fetched {counts['new']} instance(s) from {url} into {folder} ({counts['there']} there already, "
              f"{counts['failed']} failed)")
        failures += counts["failed"]
        if str(folder) not in inputs:
            inputs.append(str(folder))
    return inputs, failures


def stow(url: str, results: Path) -> int:
    """Store the DICOM results listed in ``results`` at ``url`` (STOW-RS); how many failed (each reported)."""
    report = dicomweb.stow_results(url, results)
    for path, reason in report.failed:
        print(f"medcam score: could not store {path}: {reason}", file=sys.stderr)
    print(f"stored {report.stored} result file(s) at {url} ({report.already} stored by an earlier run, "
          f"{len(report.failed)} failed; recorded in {dicomweb.stowed_path(results).name})")
    return len(report.failed)

