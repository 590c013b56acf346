"""The tag gate: does a DICOM header contradict the model's intended use?

:func:`check_tags` reads the header only (a data set read with ``stop_before_pixels=True`` will do) and
answers None when nothing in it contradicts the :class:`~medcam.gate.intended_use.IntendedUse`,
or the reason for refusing, in words a radiographer can act on::

    modality CT (computed tomography); this model reads chest radiographs (CR, DX) only
    lateral view (ViewPosition LL); this model reads frontal chest films (PA, AP) only

The rule throughout: an absent or empty tag never refuses by itself (many exports strip
them); a present tag that contradicts the intended use does. The checks, in this order:

- **Modality** must be one of ``use.modalities``.
- **SOP Class UID** must be a projection radiograph: CR Image Storage or Digital X-Ray
  Image Storage (for presentation or for processing). Secondary Capture (a screenshot, a
  scanned film) only with ``use.allow_secondary_capture``; every other class (CT, MR,
  ultrasound, nuclear medicine, mammography, intra-oral, RT ...) is refused.
- **Body Part Examined**, compared without case, spaces or punctuation (``"Chest PA"``
  and ``THORAX`` count as ``CHEST``).
- **View Position** and the **View Code Sequence**: lateral, decubitus and oblique views
  are refused, and so is a frontal view the model was not meant for. Image Laterality is
  not used: it names the side of a paired organ, not the projection.
- **Patient Age** (``045Y``, ``006M``, ``010W``, ``003D``), else **Patient Birth Date**
  against the Study (or Acquisition, Content, Series) Date, within ``min_age``-``max_age``.
- **Rows** and **Columns**, each at least ``use.min_size``.
- **Photometric Interpretation** / **Samples per Pixel**: greyscale only, when required.

Example:
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.Modality, ds.ViewPosition = "CR", "LL"
    >>> check_tags(ds, IntendedUse())
    'lateral view (ViewPosition LL); this model reads frontal chest films (PA, AP) only'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

from pydicom import Dataset
from pydicom.uid import UID

from medcam.gate.intended_use import IntendedUse

__all__ = ["check_tags", "tag_findings"]

RADIOGRAPH_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}
SECONDARY_CAPTURE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
}
IMAGE_SOP_CLASSES = frozenset(RADIOGRAPH_SOP_CLASSES) | SECONDARY_CAPTURE_SOP_CLASSES
"""The storage classes worth fetching or accepting: the projection radiographs the gate reads,
and Secondary Capture, so that a screenshot gets its "not analysed" report, not silence."""
_MODALITY_NAMES = {
    "CT": "computed tomography", "MR": "magnetic resonance", "US": "ultrasound",
    "NM": "nuclear medicine", "PT": "PET", "MG": "mammography", "XA": "X-ray angiography",
    "RF": "fluoroscopy", "IO": "intra-oral radiography", "PX": "panoramic dental X-ray",
    "OT": "other", "SC": "secondary capture", "DG": "diaphanography", "ES": "endoscopy",
    "XC": "photograph", "OP": "ophthalmic photograph", "SM": "slide microscopy",
    "RTIMAGE": "radiotherapy image", "RTDOSE": "radiotherapy dose", "SEG": "segmentation",
    "SR": "structured report", "ECG": "electrocardiogram", "BMD": "bone densitometry",
}
_BODY_PART_SYNONYMS = {"THORAX": "CHEST", "TORAX": "CHEST", "THORAKS": "CHEST", "LUNG": "CHEST",
                       "LUNGS": "CHEST", "PECHO": "CHEST", "POITRINE": "CHEST"}
# View Position terms (PS3.3 C.8.11.5.1.1 and common vendor spellings) by kind.
_VIEW_KINDS = {
    "lateral": ("LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT"),
    "decubitus": ("LLD", "RLD", "DECUBITUS", "DECUB"),
    "oblique": ("LLO", "RLO", "LAO", "RAO", "LPO", "RPO", "OBL", "OBLIQUE"),
}
_FRONTAL = ("AP", "PA")
# View Code Sequence: meanings, then the few well-known SNOMED CT codes (CID 4010).
_CODE_MEANINGS = (("decubitus", "decubitus"), ("oblique", "oblique"), ("lateral", "lateral"),
                  ("antero-posterior", "AP"), ("postero-anterior", "PA"))
_CODE_VALUES = {"399067008": "lateral", "260427002": "oblique", "32185000": "decubitus",
                "399348003": "AP", "399300004": "lateral", "399352003": "lateral"}
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$")
_AGE_UNITS = {"D": (365.25, "day"), "W": (52.1775, "week"), "M": (12.0, "month"), "Y": (1.0, "year")}
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT",
           "YBR_RCT", "PALETTE COLOR", "ARGB", "CMYK", "HSV")


def check_tags(dataset: Dataset, use: IntendedUse) -> str | None:
    """None when nothing in the header contradicts ``use``, else why the image is refused.

    Only the first contradiction is given (modality first, size and colour last); see
    :func:`tag_findings` for all of them.
    """
    findings = tag_findings(dataset, use)
    return findings[0] if findings else None


def tag_findings(dataset: Dataset, use: IntendedUse) -> list[str]:
    """Every contradiction between the header and ``use``, as reason sentences, in check order."""
    checks: tuple[Callable[[Dataset, IntendedUse], str | None], ...] = (
        _modality, _sop_class, _body_part, _view_position, _view_code, _age, _size, _colour)
    return [reason for check in checks if (reason := check(dataset, use)) is not None]


def _text(dataset: Dataset, keyword: str) -> str:
    """The tag's value as upper-case text; empty when absent, empty or unreadable (unknown)."""
    try:
        value = dataset.get(keyword)
    except (ValueError, TypeError, KeyError, OverflowError):  # a malformed value says nothing
        return ""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip().upper()


def _radiographs(use: IntendedUse) -> str:
    return f"chest radiographs ({', '.join(use.modalities)}) only"


def _is_secondary_capture(dataset: Dataset) -> bool:
    return _text(dataset, "SOPClassUID") in SECONDARY_CAPTURE_SOP_CLASSES


def _modality(dataset: Dataset, use: IntendedUse) -> str | None:
    modality = _text(dataset, "Modality")
    accepted = set(use.modalities)
    if use.allow_secondary_capture and _is_secondary_capture(dataset):
        accepted |= {"OT", "SC"}
    if not modality or modality in accepted:
        return None
    name = _MODALITY_NAMES.get(modality)
    return f"modality {modality}{f' ({name})' if name else ''}; this model reads {_radiographs(use)}"


def _sop_class(dataset: Dataset, use: IntendedUse) -> str | None:
    uid = _text(dataset, "SOPClassUID")
    if not uid or uid in RADIOGRAPH_SOP_CLASSES:
        return None
    if uid in SECONDARY_CAPTURE_SOP_CLASSES:
        if use.allow_secondary_capture:
            return None
        return ("Secondary Capture image (a screenshot, scan or export, not an original "
                "radiograph); this model reads original chest radiographs only")
    name = UID(uid).name
    what = f"{name} object" if name != uid else f"object of SOP class {uid}"
    return f"{what}, not a projection radiograph; this model reads {_radiographs(use)}"


def _body_part(dataset: Dataset, use: IntendedUse) -> str | None:
    value = _text(dataset, "BodyPartExamined")
    if not value:
        return None
    words = re.findall(r"[A-Z]+", value)
    accepted = set(use.body_parts)
    if any(_BODY_PART_SYNONYMS.get(w, w) in accepted for w in [*words, "".join(words)]):
        return None
    parts = ", ".join(p.lower() for p in use.body_parts)
    return f"body part {value} (BodyPartExamined); this model reads {parts} films only"


def _wanted_views(use: IntendedUse) -> str:
    frontal = set(use.views) == set(_FRONTAL)
    return f"{'frontal ' if frontal else ''}chest films ({', '.join(use.views)}) only"


def _view_reason(kind: str, terms: set[str], source: str, use: IntendedUse) -> str | None:
    """The refusal for a view of ``kind`` (lateral, decubitus, oblique, AP or PA) named by
    ``terms``, unless the intended use lists one of them."""
    if terms & set(use.views):
        return None
    return f"{kind} view ({source}); this model reads {_wanted_views(use)}"


def _view_position(dataset: Dataset, use: IntendedUse) -> str | None:
    value = _text(dataset, "ViewPosition")
    words = set(re.findall(r"[A-Z]+", value))
    source = f"ViewPosition {value}"
    for kind, terms in _VIEW_KINDS.items():  # "AP LLD" is a decubitus film, not a frontal one
        if words & set(terms):
            return _view_reason(kind, words & set(terms), source, use)
    frontal = sorted(words & set(_FRONTAL))
    if frontal:
        return _view_reason(frontal[0], set(frontal), source, use)
    return None  # no value, or terms we do not know: nothing contradicts


def _view_code(dataset: Dataset, use: IntendedUse) -> str | None:
    try:
        items = list(dataset.get("ViewCodeSequence") or [])
    except (ValueError, TypeError, KeyError):
        return None
    for item in items:
        meaning = _text(item, "CodeMeaning").lower()
        kind = _CODE_VALUES.get(_text(item, "CodeValue"))
        kind = next((k for word, k in _CODE_MEANINGS if word in meaning), kind)
        if kind is None:
            continue
        terms = {kind} if kind in _FRONTAL else set(_VIEW_KINDS[kind])
        reason = _view_reason(kind, terms, f"ViewCodeSequence: {meaning or _text(item, 'CodeValue')}", use)
        if reason:
            return reason
    return None


def _age(dataset: Dataset, use: IntendedUse) -> str | None:
    if use.min_age is None and use.max_age is None:
        return None
    found = _age_from_tag(dataset) or _age_from_dates(dataset)
    if found is None:
        return None
    years, words = found
    too_young = use.min_age is not None and years < use.min_age
    too_old = use.max_age is not None and years > use.max_age
    if not (too_young or too_old):
        return None
    return f"patient age {words} is outside the model's range of {use.age_range} years"


def _age_from_tag(dataset: Dataset) -> tuple[float, str] | None:
    match = _AGE.match(_text(dataset, "PatientAge"))
    if match is None:
        return None
    number, unit = int(match.group(1)), match.group(2)
    per_year, name = _AGE_UNITS[unit]
    return number / per_year, f"{number} {name}{'' if number == 1 else 's'} (PatientAge {match.group(0).strip()})"


def _date(dataset: Dataset, keyword: str) -> date | None:
    value = _text(dataset, keyword)
    if not re.fullmatch(r"\d{8}", value):
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def _age_from_dates(dataset: Dataset) -> tuple[float, str] | None:
    birth = _date(dataset, "PatientBirthDate")
    if birth is None:
        return None
    for keyword in ("StudyDate", "AcquisitionDate", "ContentDate", "SeriesDate"):
        when = _date(dataset, keyword)
        if when is None:
            continue
        if when < birth:
            return None  # inconsistent dates (often anonymisation) say nothing about age
        years = when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))
        exact = (when - birth).days / 365.25
        return exact, f"{years} year{'' if years == 1 else 's'} (from PatientBirthDate and {keyword})"
    return None


def _size(dataset: Dataset, use: IntendedUse) -> str | None:
    try:
        rows, cols = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    except (ValueError, TypeError):
        return None
    small = [n for n in (rows, cols) if 0 < n < use.min_size]
    if not small:
        return None
    size = f"{cols}x{rows}" if rows and cols else f"{min(small)} pixels across"
    return (f"image {size} is smaller than {use.min_size} pixels on a side; "
            "this model needs the detail of a full-size radiograph")


def _colour(dataset: Dataset, use: IntendedUse) -> str | None:
    if not use.greyscale_only:
        return None
    photometric = _text(dataset, "PhotometricInterpretation")
    try:
        samples = int(dataset.get("SamplesPerPixel") or 1)
    except (ValueError, TypeError):
        samples = 1
    if photometric in _COLOUR or samples > 1:
        what = f"PhotometricInterpretation {photometric}" if photometric else f"{samples} samples per pixel"
        return f"colour image ({what}); this model reads greyscale radiographs only"
    return None
