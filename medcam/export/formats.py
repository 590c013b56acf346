"""Every export of one image's regions, in one call: :func:`export_regions`.

Formats (:data:`FORMATS`) and the files they write, each named
``<name>_<class>_<suffix>`` inside the output folder (the lung fields, which belong to no
class, ``<name>_<suffix>``), the whole name passed through
:func:`~medcam.export.naming.safe_path` (``<name>`` is the source's SOP Instance UID for
DICOM, else its file name without extension, so that no tag value or path can place a file
outside the folder):

========  =====================  ===========================================================
format    file                   content
========  =====================  ===========================================================
seg       ``_seg.dcm``           DICOM Segmentation (:mod:`medcam.export.seg`), DICOM only
sc        ``_sc.dcm``            DICOM Secondary Capture of the overlay (:mod:`.sc`), DICOM only
sr        ``_sr.dcm``            DICOM SR Measurement Report (TID 1500) of the result and the
                                 regions (:mod:`.sr`), DICOM only
gsps      ``_gsps.dcm``          DICOM Grayscale Softcopy Presentation State with the outlines
                                 and the result as text (:mod:`.gsps`), grayscale DICOM only
nifti     ``_mask.nii.gz``       label image (region ids, uint16) on the source geometry;
                                 DICOM and NIfTI sources only
png       ``_mask.png``,         mask (255 inside), and the outlines over the display image
          ``_overlay.png``
json      ``_regions.json``      COCO-style boxes and polygons (:mod:`medcam.export.coco`)
csv       ``_regions.csv``       region measurements (:mod:`medcam.export.table`)
lungs     ``_lungs.png``,        the lung segmenter's mask (:mod:`medcam.export.lungs`): PNG
          ``_lungs.nii.gz``,     (255 inside, full source size), NIfTI on the source geometry
          ``_lungs_seg.dcm``     (DICOM and NIfTI sources) and a DICOM SEG (DICOM sources)
========  =====================  ===========================================================

``lungs`` is written in parts (:data:`LUNG_PARTS`: ``lungs png``, ``lungs nifti``, ``lungs
seg``), each skipped or refused on its own as the formats are; the whole format is skipped
when the prediction has no lung mask (a model served without a segmenter).

A format that does not apply to the source (SEG of a PNG) is *skipped* with the reason; a
format that applies but fails (a DICOM whose identity is invalid, a value highdicom
refuses, a full disk, a folder it may not write to) is an *error* with a readable reason.
Neither stops the other formats, and both are returned: no format and no image aborts a
batch.

The DICOM objects (SEG, SC, SR, GSPS) go into the source's study with UIDs derived from
the source, the model and the object type (:mod:`medcam.export.uids`): exporting the same
result again writes the same UIDs, so that a PACS replaces rather than duplicates. A
reviewed report (:class:`~medcam.export.sr.Review`, ``review=``) lists every reviewed
region with the reviewer's decision; the other formats write ``regions`` only.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from medcam.errors import ConfigError, MedcamError
from medcam.export.coco import write_coco
from medcam.export.naming import result_stem, safe_name, safe_path
from medcam.export.nifti import write_nifti
from medcam.export.png import write_mask_png, write_overlay_png
from medcam.export.table import write_table
from medcam.io.image import Image
from medcam.regions import RegionSet

if TYPE_CHECKING:
    from medcam.export.sr import Review
    from medcam.models.predictor import Prediction

__all__ = ["FORMATS", "LUNG_PARTS", "ExportFormat", "ExportResult", "default_name", "export_regions",
           "parse_formats"]

ExportFormat = Literal["seg", "sc", "sr", "gsps", "nifti", "png", "json", "csv", "lungs"]
FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
LUNG_PARTS = ("lungs png", "lungs nifti", "lungs seg")
"""The parts of the ``lungs`` format, as :class:`ExportResult` names them in ``skipped`` and ``errors``."""


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
        files: written files by kind (``seg``, ``sc``, ``sr``, ``gsps``, ``nifti``,
            ``mask_png``, ``overlay_png``, ``json``, ``csv``, ``lungs_png``, ``lungs_nifti``,
            ``lungs_seg``).
        skipped: format (or part of ``lungs``, :data:`LUNG_PARTS`) -> why it does not apply
            to this source.
        errors: format (or part of ``lungs``) -> why it was refused.
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
                   formats: Sequence[str] | str = FORMATS, *, name: str | None = None,
                   review: Review | None = None) -> ExportResult:
    """Write ``regions`` of ``prediction``'s image in every requested format.

    Args:
        prediction: the prediction the regions came from (image, model id).
        regions: from :func:`medcam.regions.find_regions`, on the image's pixel grid.
        out_dir: the output folder (created); nothing is written outside it.
        formats: a subset of :data:`FORMATS`, or a comma-separated string.
        name: the file name stem (default :func:`default_name`); sanitised in any case.
        review: a reviewer's decisions; the SR then lists ``review.regions`` with them.

    Raises:
        ConfigError: an unknown format.
        ValueError: regions that are not on the image's grid.
        OSError: the output folder cannot be created.
    """
    wanted = parse_formats(formats)
    image = prediction.image
    regions.check_grid(image)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # sanitised twice: the stem alone (short enough that ".nii.gz" survives), then the file name
    stem = result_stem(name if name is not None else default_name(image), regions.class_name)

    def target(suffix: str) -> Path:
        return safe_path(out, f"{stem}_{suffix}")

    lung_stem = safe_name(name if name is not None else default_name(image), max_length=80)
    files: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    errors: dict[str, str] = {}
    notes: list[str] = []
    for fmt in wanted:
        if fmt == "lungs" and prediction.lungs is None:
            skipped[fmt] = "no lung mask: the model was served without a lung segmenter"
            continue
        for part in LUNG_PARTS if fmt == "lungs" else (fmt,):
            reason = _not_applicable(part, image)
            if reason:
                skipped[part] = reason
                continue
            try:
                if fmt == "lungs":
                    written, format_notes = _write_lungs(part, out, lung_stem, prediction)
                else:
                    written, format_notes = _write(fmt, target, prediction, regions, review)
            except Exception as err:  # every failure becomes this format's error (module doc)
                errors[part] = _reason(part, err)
                continue
            files.update(written)
            notes += [n for n in format_notes if n not in notes]
    return ExportResult(files=files, skipped=skipped, errors=errors, notes=tuple(notes))


def _label(part: str) -> str:
    """How a format or a part of ``lungs`` is named in a sentence: ``SEG``, ``lung SEG``."""
    fmt, _, kind = part.rpartition(" ")
    what = "NIfTI" if kind == "nifti" else kind.upper()
    return f"lung {what}" if fmt == "lungs" else what


def _not_applicable(part: str, image: Image) -> str:
    """Why a format (or a part of ``lungs``) does not apply to ``image``, or ``""``."""
    kind = part.rpartition(" ")[2]
    if kind in ("seg", "sc", "sr", "gsps") and image.format != "dicom":
        return f"a {image.format} source has no DICOM study to add a {_label(part)} to"
    if kind == "nifti" and image.affine is None:
        return f"a {image.format} source has no geometry for NIfTI"
    return ""


def _write_lungs(part: str, out: Path, stem: str, prediction: Prediction) -> tuple[dict[str, Path], tuple[str, ...]]:
    """Write one part of ``lungs`` (:data:`LUNG_PARTS`)."""
    from medcam.export.lungs import write_lungs_nifti, write_lungs_png, write_lungs_seg

    if part == "lungs seg":
        path, notes = write_lungs_seg(prediction, out, stem)
        return {"lungs_seg": path}, notes
    if part == "lungs nifti":
        return {"lungs_nifti": write_lungs_nifti(prediction, out, stem)}, ()
    return {"lungs_png": write_lungs_png(prediction, out, stem)}, ()


def _write(fmt: ExportFormat, target: Callable[[str], Path], prediction: Prediction, regions: RegionSet,
           review: Review | None) -> tuple[dict[str, Path], tuple[str, ...]]:
    """Write one format; returns the files by kind and the notes on the source header."""
    image, model_id = prediction.image, prediction.model_id
    if fmt == "seg":
        from medcam.export.seg import write_seg

        path, notes = write_seg(target("seg.dcm"), image, regions, model_id=model_id)
        return {"seg": path}, notes
    if fmt == "sc":
        from medcam.export.sc import write_sc

        path, notes = write_sc(target("sc.dcm"), prediction, regions)
        return {"sc": path}, notes
    if fmt == "sr":
        from medcam.export.sr import write_sr

        path, notes = write_sr(target("sr.dcm"), prediction, regions, review=review)
        return {"sr": path}, notes
    if fmt == "gsps":
        from medcam.export.gsps import write_gsps

        path, notes = write_gsps(target("gsps.dcm"), prediction, regions)
        return {"gsps": path}, notes
    if fmt == "nifti":
        path = write_nifti(target("mask.nii.gz"), image, regions.labels[None].astype(np.uint16),
                           description=f"medcam {regions.class_name} regions")
        return {"nifti": path}, ()
    if fmt == "png":
        return {"mask_png": write_mask_png(target("mask.png"), regions),
                "overlay_png": write_overlay_png(target("overlay.png"), image, regions)}, ()
    if fmt == "json":
        return {"json": write_coco(target("regions.json"), image, regions, model_id=model_id)}, ()
    return {"csv": write_table(target("regions.csv"), image, regions, model_id=model_id)}, ()


def _reason(part: str, err: Exception) -> str:
    """A readable sentence for why a format (or a part of ``lungs``) failed."""
    label = _label(part)
    if isinstance(err, MedcamError):
        return str(err)
    if isinstance(err, OSError):
        what = err.strerror or errno.errorcode.get(err.errno or 0, "") or str(err)
        where = f" {err.filename}" if err.filename else ""
        return f"could not write the {label} file{where}: {what}"
    if isinstance(err, ValueError):
        return f"the {label} was refused: {err}"
    return f"the {label} failed ({type(err).__name__}): {err}"
