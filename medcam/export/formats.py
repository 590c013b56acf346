"""Every export of one image's regions, in one call: :func:`export_regions`.

Formats (:data:`FORMATS`) and the files they write, each named
``<name>_<class>_<suffix>`` inside the output folder, the whole name passed through
:func:`~medcam.export.naming.safe_path` (``<name>`` is the source's SOP Instance UID for
DICOM, else its file name without extension, so that no tag value or path can place a file
outside the folder):

========  =====================  ===========================================================
format    file                   content
========  =====================  ===========================================================
seg       ``_seg.dcm``           DICOM Segmentation (:mod:`medcam.export.seg`), DICOM only
sc        ``_sc.dcm``            DICOM Secondary Capture of the overlay (:mod:`.sc`), DICOM only
nifti     ``_mask.nii.gz``       label image (region ids, uint16) on the source geometry;
                                 DICOM and NIfTI sources only
png       ``_mask.png``,         mask (255 inside), and the outlines over the display image
          ``_overlay.png``
json      ``_regions.json``      COCO-style boxes and polygons (:mod:`medcam.export.coco`)
csv       ``_regions.csv``       region measurements (:mod:`medcam.export.table`)
========  =====================  ===========================================================

A format that does not apply to the source (SEG of a PNG) is *skipped* with the reason; a
format that applies but is refused (a DICOM whose identity is invalid) is an *error* with
the reason. Neither stops the other formats, and both are returned.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from medcam.errors import ConfigError, MedcamError
from medcam.export.coco import write_coco
from medcam.export.naming import safe_name, safe_path
from medcam.export.nifti import write_nifti
from medcam.export.png import write_mask_png, write_overlay_png
from medcam.export.table import write_table
from medcam.io.image import Image
from medcam.regions import RegionSet

if TYPE_CHECKING:
    from medcam.models.predictor import Prediction

__all__ = ["FORMATS", "ExportFormat", "ExportResult", "default_name", "export_regions", "parse_formats"]

ExportFormat = Literal["seg", "sc", "nifti", "png", "json", "csv"]
FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)


def parse_formats(value: str | Iterable[str]) -> tuple[ExportFormat, ...]:
    """``"seg,sc,png"`` (or a list; ``"all"`` for every format) as validated format names.

    Raises:
        ConfigError: an unknown format, with the closest name.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [item.strip().lower() for item in items if item.strip()]
    if not names:
        raise ConfigError(f"no export format given; choose from {', '.join(FORMATS)}")
    if "all" in names:
        return FORMATS
    for name in names:
        if name not in FORMATS:
            close = difflib.get_close_matches(name, FORMATS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(FORMATS)}"
            raise ConfigError(f"unknown export format {name!r}; {hint}")
    return tuple(f for f in FORMATS if f in names)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_regions` wrote, skipped and refused.

    Attributes:
        files: written files by kind (``seg``, ``sc``, ``nifti``, ``mask_png``,
            ``overlay_png``, ``json``, ``csv``).
        skipped: format -> why it does not apply to this source.
        errors: format -> why it was refused.
        notes: remarks about the source header (attributes not copied into DICOM objects).
    """

    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def default_name(image: Image) -> str:
    """The SOP Instance UID of a DICOM source, else the file name without its extension.

    Not yet safe for a file name: :func:`export_regions` passes it through ``safe_path``.
    """
    if image.identity is not None and image.identity.sop_instance_uid:
        return image.identity.sop_instance_uid
    name = Path(image.path).name
    for suffix in (".nii.gz", ".nii", ".dcm", ".dicom", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def export_regions(prediction: Prediction, regions: RegionSet, out_dir: str | Path,
                   formats: Sequence[str] | str = FORMATS, *, name: str | None = None) -> ExportResult:
    """Write ``regions`` of ``prediction``'s image in every requested format.

    Args:
        prediction: the prediction the regions came from (image, model id).
        regions: from :func:`medcam.regions.find_regions`, on the image's pixel grid.
        out_dir: the output folder (created); nothing is written outside it.
        formats: a subset of :data:`FORMATS`, or a comma-separated string.
        name: the file name stem (default :func:`default_name`); sanitised in any case.

    Raises:
        ConfigError: an unknown format.
        ValueError: regions that are not on the image's grid.
    """
    wanted = parse_formats(formats)
    image = prediction.image
    regions.check_grid(image)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # sanitised twice: the stem alone (short enough that ".nii.gz" survives), then the file name
    stem = safe_name(f"{name if name is not None else default_name(image)}_{regions.class_name}", max_length=80)

    def target(suffix: str) -> Path:
        return safe_path(out, f"{stem}_{suffix}")

    model_id = prediction.model_id
    files: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    errors: dict[str, str] = {}
    notes: list[str] = []
    for fmt in wanted:
        if fmt in ("seg", "sc") and image.format != "dicom":
            skipped[fmt] = f"a {image.format} source has no DICOM study to add a {fmt.upper()} to"
            continue
        if fmt == "nifti" and image.affine is None:
            skipped[fmt] = f"a {image.format} source has no geometry for NIfTI"
            continue
        try:
            if fmt == "seg":
                from medcam.export.seg import write_seg

                files["seg"], seg_notes = write_seg(target("seg.dcm"), image, regions, model_id=model_id)
                notes += [n for n in seg_notes if n not in notes]
            elif fmt == "sc":
                from medcam.export.sc import write_sc

                files["sc"], sc_notes = write_sc(target("sc.dcm"), image, regions, model_id=model_id)
                notes += [n for n in sc_notes if n not in notes]
            elif fmt == "nifti":
                files["nifti"] = write_nifti(target("mask.nii.gz"), image, regions.labels[None].astype(np.uint16),
                                             description=f"medcam {regions.class_name} regions")
            elif fmt == "png":
                files["mask_png"] = write_mask_png(target("mask.png"), regions)
                files["overlay_png"] = write_overlay_png(target("overlay.png"), image, regions)
            elif fmt == "json":
                files["json"] = write_coco(target("regions.json"), image, regions, model_id=model_id)
            else:
                files["csv"] = write_table(target("regions.csv"), image, regions, model_id=model_id)
        except MedcamError as err:
            errors[fmt] = str(err)
    return ExportResult(files=files, skipped=skipped, errors=errors, notes=tuple(notes))
