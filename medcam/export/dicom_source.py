"""The source image's header, checked before a derived DICOM object copies from it.

A derived object (SEG, Secondary Capture, SR, GSPS) copies the patient and study of its
source and references it by UID. :func:`reference_dataset` returns a copy of
:attr:`medcam.io.Image.dicom` fit for that (:func:`checked_header` does the same for a bare
header, when there are no pixels to compare with):

- the UIDs that identify and reference the source (Study, Series and SOP Instance UID, SOP
  Class UID) and the patient/study identity (Patient ID, Patient's Name, Accession Number,
  Study ID) must be valid for their VR, or the source is refused with
  :class:`~medcam.errors.UnsupportedInputError`: a derived object that does not carry its
  patient's identity faithfully must not be written;
- any other top-level attribute whose value is invalid for its VR (too long, control
  characters, malformed dates or ages such as RSNA's ``Patient's Age`` "58") is left out of
  the copy, and a note says which;
- a Pixel Spacing or Imager Pixel Spacing that is not two positive numbers (RG1_UNCR.dcm has
  ``0\\0``) is left out too;
- the patient and study attributes that every derived object must carry (Type 2, possibly
  empty) are present, empty when the source has none (:data:`TYPE2_IDENTITY`).

:func:`save_dicom` writes a derived object to a temporary file next to its target and then
renames it, so that a failed write (a full disk) leaves no truncated file behind.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

from pydicom import Dataset
from pydicom.config import RAISE
from pydicom.dataelem import DataElement
from pydicom.uid import UID
from pydicom.valuerep import validate_value

from medcam.errors import UnsupportedInputError
from medcam.io.image import Image

__all__ = ["IDENTITY_KEYWORDS", "TYPE2_IDENTITY", "checked_header", "positive_spacing", "reference_dataset",
           "save_dicom"]

REFERENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
IDENTITY_KEYWORDS = (*REFERENCE_UIDS, "PatientID", "PatientName", "AccessionNumber", "StudyID")
TYPE2_IDENTITY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                  "StudyDate", "StudyTime", "ReferringPhysicianName")
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
_MULTILINE_VRS = {"LT", "ST", "UT"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]")  # ESC (0x1b) introduces character sets
_LINE_BREAKS = re.compile(r"[\t\n\f\r]")


def positive_spacing(value: object) -> bool:
    """True for two positive numbers (a usable Pixel Spacing)."""
    try:
        row, col = (float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return False
    return row > 0 and col > 0


def reference_dataset(image: Image) -> tuple[Dataset, tuple[str, ...]]:
    """A checked copy of ``image``'s DICOM header, and notes on what was left out of it.

    Raises:
        UnsupportedInputError: the image is not DICOM, its header does not match its pixels,
            or an identity attribute is missing or invalid.
    """
    if image.format != "dicom" or image.dicom is None:
        raise UnsupportedInputError(image.path, f"a {image.format} file has no DICOM header to reference")
    return checked_header(image.dicom, image.path, shape=image.shape)


def checked_header(header: Dataset, path: str | Path, *,
                   shape: tuple[int, int] | None = None) -> tuple[Dataset, tuple[str, ...]]:
    """A checked copy of a DICOM ``header`` read from ``path`` (module documentation).

    Args:
        header: the source's header (pixel data, if any, is not copied).
        path: the file it came from, named in errors.
        shape: ``(rows, cols)`` of the decoded pixels, compared with Rows and Columns.

    Raises:
        UnsupportedInputError: the header does not match ``shape``, or an identity attribute
            is missing or invalid.
    """
    source = copy.deepcopy(header)
    if "PixelData" in source:
        del source.PixelData
    for keyword in REFERENCE_UIDS:
        value = str(source.get(keyword, "") or "")
        if not UID(value).is_valid:
            shown = value if len(value) <= 80 else value[:77] + "..."
            raise UnsupportedInputError(
                path, f"its {keyword} {shown!r} is not a valid DICOM UID, so a derived object "
                "cannot reference it")
    rows, cols = int(source.get("Rows", 0) or 0), int(source.get("Columns", 0) or 0)
    if shape is not None and (rows, cols) != shape:
        raise UnsupportedInputError(path, f"its header says {rows} x {cols} pixels, the image has "
                                    f"{shape[0]} x {shape[1]}")
    notes = []
    for element in list(source):
        problem = _problem(element)
        if problem is None:
            continue
        if element.keyword in IDENTITY_KEYWORDS:
            raise UnsupportedInputError(
                path, f"its {element.keyword} is not valid DICOM ({problem}); a derived object "
                "would not carry the patient's identity faithfully")
        del source[element.tag]
        notes.append(f"{element.keyword or element.tag} not copied: {problem}")
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = source[keyword].value if keyword in source else None
        if spacing is not None and not positive_spacing(spacing):
            del source[keyword]
            notes.append(f"{keyword} not copied: {spacing} is not two positive numbers")
    for keyword in TYPE2_IDENTITY:
        if keyword not in source:
            setattr(source, keyword, None)
    return source, tuple(notes)


def save_dicom(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` to ``path`` through a temporary sibling file, replacing ``path``.

    Raises:
        OSError: the file cannot be written (the temporary file is removed).
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        dataset.save_as(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _problem(element: DataElement) -> str | None:
    """Why ``element``'s value is not valid for its VR, or None."""
    if element.VR not in _TEXT_VRS or element.value is None:
        return None
    values = element.value if element.VM > 1 else [element.value]
    for value in values:
        text = str(value)
        try:
            validate_value(element.VR, text, RAISE)
        except (ValueError, TypeError) as err:
            return str(err).split(" Please see")[0]
        checked = _LINE_BREAKS.sub("", text) if element.VR in _MULTILINE_VRS else text
        if _CONTROL.search(checked) or (element.VR not in _MULTILINE_VRS and _LINE_BREAKS.search(text)):
            return f"the {element.VR} value contains control characters"
    return None
