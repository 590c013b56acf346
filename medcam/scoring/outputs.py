"""The files written beside each row, the same from every front end and engine.

``cams`` writes each image's overlay and raw maps (:func:`medcam.export.write_cams`);
``regions`` exports the regions of the chosen class's map (:func:`medcam.export.export_regions`)
for flagged or for all analysed images. File names come from :func:`output_name` of the
input path, so a re-run after a crash rewrites the same files rather than adding copies.

Whatever goes wrong while writing one image's files (a full disk, a folder that cannot be
created, a DICOM writer's refusal) becomes that image's reason and the run goes on: the row
is written as an error, so a resumed run does not meet the same failure again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pydicom

from medcam.errors import MedcamError
from medcam.export import export_regions, write_cams
from medcam.export.equipment import ModelInfo as SRModelInfo
from medcam.export.lungs import write_lungs_png
from medcam.export.sr import write_not_analysed_sr
from medcam.io import detect_format
from medcam.io.provenance import own_dicom
from medcam.models.predictor import Prediction
from medcam.regions import find_regions, resolve_class
from medcam.scoring.options import ScoreOptions, output_name
from medcam.scoring.results import ModelInfo

__all__ = ["Written", "prepare_outputs", "write_outputs", "write_refusal"]


@dataclass(frozen=True)
class Written:
    """What was written for one image: the output columns' values, or why it failed."""

    columns: dict[str, str] = field(default_factory=dict)
    error: str = ""


def prepare_outputs(options: ScoreOptions, info: ModelInfo) -> str:
    """Check the CAM class and create the output folders; return the class, as the model names it.

    Raises:
        ConfigError: ``options.cam_class`` is not a class of the model (with the closest name).
        MedcamError: an output folder cannot be created.
    """
    cam_class = resolve_class(info.classes, options.cam_class or info.positive_class)
    for folder in (options.cams, options.regions):
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise MedcamError(f"{folder}: cannot create the output folder ({err.strerror or err})") from err
    return cam_class


def write_outputs(prediction: Prediction, path: str, options: ScoreOptions, cam_class: str) -> Written:
    """Write the files ``options`` asks for of one prediction; never raises for a per-image failure."""
    name = output_name(path)
    columns: dict[str, str] = {}
    problems: list[str] = []
    if options.cams is not None:
        try:
            files = write_cams(prediction, options.cams, name, cam_class=cam_class, colour_map=options.colour_map,
                               opacity=options.opacity, nifti=options.cam_nifti)
            columns.update(files)
            if prediction.lungs is not None:
                columns["lungs"] = str(write_lungs_png(prediction, options.cams, name))
        except Exception as err:  # any failure to write is this image's, reported in its row
            problems.append(f"CAM files: {_describe(err)}")
    formats = options.formats_for(prediction.flagged)
    if options.regions is not None and formats:
        try:
            regions = find_regions(prediction, cam_class, options.region_options)
            if not (prediction.flagged or options.regions_of == "all"):  # report_all's SR of a negative
                regions = regions.without_regions()
            result = export_regions(prediction, regions, options.regions, formats, name=name)
            columns["regions"] = str(len(regions))
            columns["exports"] = ";".join(str(p) for p in result.files.values())
            columns["not_exported"] = "; ".join(f"{fmt}: {why}" for fmt, why in result.skipped.items())
            problems += [f"{fmt}: {why}" for fmt, why in result.errors.items()]
        except Exception as err:
            problems.append(f"regions: {_describe(err)}")
    error = f"could not write its outputs: {'; '.join(problems)}" if problems else ""
    return Written(columns, error)


def _describe(err: Exception) -> str:
    if isinstance(err, MedcamError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror}{where}"
    return f"{type(err).__name__}: {err}"


def write_refusal(path: str, reason: str, options: ScoreOptions, info: ModelInfo) -> Written:
    """For an image the intended-use gate refused: its "not analysed" structured report, when the
    run exports regions as ``sr`` and the image is DICOM, so that the PACS shows the AI looked
    and declined. Nothing else is written for it, and nothing at all for medcam's own results (a
    report about a report)."""
    if options.regions is None or "sr" not in options.region_formats or detect_format(path) != "dicom":
        return Written()
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if own_dicom(header):
            return Written()
        model = SRModelInfo(info.model_id, info.threshold, info.temperature, info.positive_class, info.class_bias)
        report = write_not_analysed_sr(header, reason, model, options.regions, name=output_name(path))
    except Exception as err:  # the refusal stands; the report's failure is added to the row's reason
        return Written(error=f"its not-analysed report could not be written: {_describe(err)}")
    return Written({"exports": str(report)})
