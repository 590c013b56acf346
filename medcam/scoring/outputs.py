"""The files a scoring run writes beside its rows, the same from either engine.

``--cams`` writes each image's overlay and raw maps (:func:`medcam.export.write_cams`);
``--regions`` exports the positive class's regions of every flagged image
(:func:`medcam.export.export_regions`). File names come from :func:`cam_name` of the input
path, so a re-run after a crash rewrites the same files rather than adding copies.
"""

from __future__ import annotations

from collections.abc import Sequence

from medcam.errors import ConfigError
from medcam.export import export_regions, write_cams
from medcam.models.predictor import Prediction
from medcam.regions import find_regions
from medcam.scoring.options import ScoreOptions, cam_name
from medcam.scoring.results import ModelInfo

__all__ = ["prepare_outputs", "write_outputs"]


def prepare_outputs(options: ScoreOptions, info: ModelInfo) -> str:
    """Create the output folders and return the class whose map is overlaid.

    Raises:
        ConfigError: ``options.cam_class`` is not a class of the model.
    """
    cam_class = options.cam_class or info.positive_class
    if cam_class not in info.classes:
        raise ConfigError(f"CAM class {cam_class!r} is not one of the model's classes: {', '.join(info.classes)}")
    for folder in (options.cams, options.regions):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    return cam_class


def write_outputs(predictions: Sequence[Prediction], paths: Sequence[str], options: ScoreOptions,
                  cam_class: str) -> list[dict[str, str]]:
    """Write the CAM files and region exports that ``options`` asks for; the CAM files by image.

    Returns one dictionary per prediction (``overlay`` and ``cam`` paths), empty when
    ``options.cams`` is None.
    """
    files: list[dict[str, str]] = []
    for prediction, path in zip(predictions, paths, strict=True):
        name = cam_name(path)
        written = {}
        if options.cams is not None:
            written = write_cams(prediction, options.cams, name, cam_class=cam_class,
                                 colour_map=options.colour_map, opacity=options.opacity, nifti=False)
        if options.regions is not None and prediction.flagged:
            regions = find_regions(prediction, prediction.positive_class, options.region_options)
            export_regions(prediction, regions, options.regions, options.region_formats, name=name)
        files.append(written)
    return files
