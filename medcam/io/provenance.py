"""medcam's own output: results are not radiographs, and are never read back as inputs.

What medcam writes says so. Its DICOM results (SEG, SC, SR, GSPS; see
:mod:`medcam.export.equipment`) name it as Manufacturer and in the Contributing Equipment
Sequence; its pictures (overlay and mask PNGs, the review app's pictures, evaluation plots)
carry the PNG text chunk ``Software=medcam`` (:data:`PNG_TEXT`); its NIfTI files (maps, regions,
lung masks) begin their header description with :data:`NIFTI_MARK`. The loaders refuse both,
whatever the intended use says: an overlay scored again would be a result about a result.

Example:
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.Manufacturer = "medcam"
    >>> own_dicom(ds)
    "medcam's own output (Manufacturer medcam), not a radiograph; score the original image instead"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom import Dataset

__all__ = ["NIFTI_MARK", "PNG_TEXT", "SOFTWARE", "own_dicom", "own_nifti", "own_png"]

SOFTWARE = "medcam"
"""The name medcam writes as DICOM Manufacturer and as PNG ``Software``."""
PNG_TEXT = {"Software": SOFTWARE}
"""The text chunks of every PNG medcam writes."""
NIFTI_MARK = f"{SOFTWARE} output:"
"""How the header description of every NIfTI file medcam writes begins."""


def own_dicom(dataset: Dataset) -> str | None:
    """Why ``dataset`` is medcam's own result (Manufacturer, or a Contributing Equipment
    Sequence item, ``medcam``), or None. A header read without pixels will do."""
    if _is_medcam(_get(dataset, "Manufacturer")):
        return _reason(f"Manufacturer {SOFTWARE}")
    items = _get(dataset, "ContributingEquipmentSequence")
    contributors = items if isinstance(items, Sequence) else []
    if any(isinstance(item, Dataset) and _is_medcam(_get(item, "Manufacturer")) for item in contributors):
        return _reason(f"ContributingEquipmentSequence names {SOFTWARE}")
    return None


def own_png(text: Mapping[Any, Any]) -> str | None:
    """Why a PNG whose text chunks are ``text`` (Pillow's ``image.info``) is medcam's own
    picture (``Software`` is ``medcam``, maybe with a version), or None."""
    if _is_medcam(text.get("Software")):
        return _reason(f"PNG Software={SOFTWARE}")
    return None


def own_nifti(description: object) -> str | None:
    """Why a NIfTI file whose header ``descrip`` is ``description`` is medcam's own output (it
    begins with :data:`NIFTI_MARK`), or None."""
    if isinstance(description, bytes):
        description = description.decode("latin-1")
    if str(description or "").lower().startswith(NIFTI_MARK):
        return _reason(f"NIfTI description '{NIFTI_MARK}'")
    return None


def _get(dataset: Dataset, keyword: str) -> object:
    try:
        return dataset.get(keyword)
    except (ValueError, TypeError, KeyError, OverflowError):  # a malformed value names nobody
        return None


def _is_medcam(value: object) -> bool:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    words = str(value or "").split()
    return bool(words) and words[0].lower() == SOFTWARE


def _reason(evidence: str) -> str:
    return f"{SOFTWARE}'s own output ({evidence}), not a radiograph; score the original image instead"
