"""The tag gate: does a DICOM header contradict the model's intended use?

:func:`check_tags` reads the header only (a data set read with ``stop_before_pixels=True`` will do) and
answers None when nothing in it contradicts the :class:`~medcam.gate.intended_use.IntendedUse`,
or the reason for refusing, in words a radiographer can act on::

    modality CT (computed tomography); this model reads chest radiographs (CR, DX) only
    lateral view (ViewPosition LL); this model reads frontal chest films (PA, AP) only

The rule throughout: an absent or empty tag never refuses by itself (many exports strip
them); a present tag that contradicts the intended use does. The checks, in this order:

- **medcam's own results** (Manufacturer ``medcam``, or medcam in the Contributing
  Equipment Sequence; :func:`medcam.io.provenance.own_dicom`) are refused, whatever the
  intended use: a result is not a radiograph.
- **Modality** must be one of ``use.modalities``.
- **SOP Class UID** must be a projection radiograph: CR Image Storage or Digital X-Ray
  Image Storage (for presentation or for processing), or a Secondary Capture of one (next
  item); every other class (CT, MR, ultrasound, nuclear medicine, mammography, intra-oral,
  RT ...) is refused.
- **Secondary Capture** is read like the radiograph it holds when it is a plain greyscale
  capture of one: Secondary Capture Image Storage (single frame) with Modality CR or DX (one
  of ``use.modalities``), Conversion Type ``WSD`` (workstation), ``DF`` (digitised film),
  ``DI`` (digital interface) or none, greyscale, no ``DERIVED`` Image Type and no burned-in
  annotation. Here an absent Modality does refuse: it is the capture's only claim to show a
  radiograph. Such an image passes, and :func:`tag_notes` gives the note for its row
  (``secondary capture of a radiograph (ConversionType WSD)``), as for the RSNA Pneumonia
  Challenge files. Any other capture is refused with everything that keeps it from the rule
  (Modality ``OT`` or none, Conversion Type ``SI`` scanned image, ``SD`` scanned document,
  ``DV`` digitised video, ``DRW`` drawing, ``SYN`` synthetic image or an unknown one, a
  multi-frame or bitonal class, ``DERIVED``, ``BurnedInAnnotation YES``, colour) - unless
  ``use.allow_secondary_capture`` (research) lets it through, with a note that says so.
  A capture of another modality (CT, MR ...) is refused by its Modality either way.
- **Body Part Examined**, compared without case, spaces or punctuation (``"Chest PA"``
  and ``THORAX`` count as ``CHEST``).
- **View Position** and the **View Code Sequence**: lateral, decubitus and oblique views
  are refused, and so is a frontal view the model was not meant for. Image Laterality is
  not used: it names the side of a paired organ, not the projection.
- **Patient Age** (``045Y``, ``006M``, ``010W``, ``003D``), else **Patient Birth Date**
  against the Study (or Acquisition, Content, Series) Date, within ``min_age``-``max_age``.
- **Rows** and **Columns**, each at least ``use.min_size``.
- **Photometric Interpretation** / **Samples per Pixel**: greyscale only, when required
  (``use.greyscale_only``; a Secondary Capture must be greyscale to count as a radiograph's).

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
from pydicom.multival import MultiValue
from pydicom.uid import UID

from medcam.config import IntendedUse
from medcam.io.provenance import own_dicom

__all__ = ["IMAGE_SOP_CLASSES", "check_tags", "named_view", "tag_findings", "tag_notes"]

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
SINGLE_FRAME_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
"""Secondary Capture Image Storage: the one capture class that can hold a radiograph as medcam reads it."""
IMAGE_SOP_CLASSES = frozenset(RADIOGRAPH_SOP_CLASSES) | SECONDARY_CAPTURE_SOP_CLASSES
"""The storage classes worth fetching or accepting: the projection radiographs the gate reads,
and Secondary Capture: a capture of a chest radiograph is analysed, any other gets its "not
analysed" report, not silence."""
CAPTURE_CONVERSIONS = ("WSD", "DF", "DI")
"""Conversion Types of a capture that holds a radiograph as it was shown or printed: workstation,
digitised film, digital interface."""
_OTHER_CONVERSIONS = {"DV": "digitised video", "SD": "scanned document", "SI": "scanned image",
                      "DRW": "drawing", "SYN": "synthetic image"}
_CAPTURE_MODALITIES = {"OT": "other: a screenshot, document or photograph",
                       "SC": "secondary capture: the source modality is not named"}
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

    Only the first contradiction is given (medcam's own results and modality first, size and
    colour last); see :func:`tag_findings` for all of them.
    """
    findings = tag_findings(dataset, use)
    return findings[0] if findings else None


def tag_findings(dataset: Dataset, use: IntendedUse) -> list[str]:
    """Every contradiction between the header and ``use``, as reason sentences, in check order."""
    checks: tuple[Callable[[Dataset, IntendedUse], str | None], ...] = (
        _own_output, _modality, _sop_class, _secondary_capture, _body_part, _view_position, _view_code, _age,
        _size, _colour)
    return [reason for check in checks if (reason := check(dataset, use)) is not None]


def tag_notes(dataset: Dataset, use: IntendedUse) -> list[str]:
    """What the row of an image analysed with this header should say about it; empty for most.

    A Secondary Capture of a radiograph (see the module documentation) gets
    ``secondary capture of a radiograph (ConversionType WSD)``; one outside that rule that
    ``use.allow_secondary_capture`` lets through gets what keeps it from the rule. Nothing
    for any other object, for a capture of another modality, or for medcam's own results.
    The notes do not depend on the other checks: an image refused for another reason and
    analysed anyway (``--ignore-intended-use``) keeps its note.
    """
    if not _is_secondary_capture(dataset) or own_dicom(dataset) or _modality(dataset, use):
        return []
    problems = _capture_problems(dataset)
    if not problems:
        conversion = _text(dataset, "ConversionType")
        how = f"ConversionType {conversion}" if conversion else "no ConversionType"
        return [f"secondary capture of a radiograph ({how})"]
    if use.allow_secondary_capture:
        return ["secondary capture that is not a plain capture of a radiograph, analysed because the intended "
                f"use allows secondary captures (research): {', '.join(problems)}"]
    return []


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


def _values(dataset: Dataset, keyword: str) -> list[str]:
    """A multi-valued tag's values as upper-case texts; empty when absent, empty or unreadable."""
    try:
        value = dataset.get(keyword)
    except (ValueError, TypeError, KeyError, OverflowError):
        return []
    items = value if isinstance(value, MultiValue) else [value]
    return [str(v).strip().upper() for v in items if v is not None and str(v).strip()]


def _is_secondary_capture(dataset: Dataset) -> bool:
    return _text(dataset, "SOPClassUID") in SECONDARY_CAPTURE_SOP_CLASSES


def _own_output(dataset: Dataset, use: IntendedUse) -> str | None:
    return own_dicom(dataset)


def _modality(dataset: Dataset, use: IntendedUse) -> str | None:
    modality = _text(dataset, "Modality")
    if not modality or modality in use.modalities:
        return None
    if modality in _CAPTURE_MODALITIES and _is_secondary_capture(dataset):
        return None  # a capture's own modality, judged by _secondary_capture
    name = _MODALITY_NAMES.get(modality)
    return f"modality {modality}{f' ({name})' if name else ''}; this model reads {_radiographs(use)}"


def _sop_class(dataset: Dataset, use: IntendedUse) -> str | None:
    uid = _text(dataset, "SOPClassUID")
    if not uid or uid in RADIOGRAPH_SOP_CLASSES or uid in SECONDARY_CAPTURE_SOP_CLASSES:
        return None  # captures: see _secondary_capture
    name = UID(uid).name
    what = f"{name} object" if name != uid else f"object of SOP class {uid}"
    return f"{what}, not a projection radiograph; this model reads {_radiographs(use)}"


def _capture_problems(dataset: Dataset) -> list[str]:
    """What keeps a Secondary Capture from being a plain greyscale capture of a radiograph, in
    words; empty when it is one. A Modality that is not a capture's own (CT, MR ...) is left
    to :func:`_modality`."""
    problems = []
    uid = _text(dataset, "SOPClassUID")
    if uid != SINGLE_FRAME_CAPTURE:
        problems.append(f"{UID(uid).name}, a multi-frame or bitonal class")
    modality = _text(dataset, "Modality")
    if not modality:
        problems.append("no Modality")
    elif modality in _CAPTURE_MODALITIES:
        problems.append(f"Modality {modality} ({_CAPTURE_MODALITIES[modality]})")
    conversion = _text(dataset, "ConversionType")
    if conversion and conversion not in CAPTURE_CONVERSIONS:
        name = _OTHER_CONVERSIONS.get(conversion)
        problems.append(f"ConversionType {conversion}{f' ({name})' if name else ''}")
    image_type = _values(dataset, "ImageType")
    if "DERIVED" in image_type:
        values = "\\".join(image_type)
        problems.append(f"ImageType {values} (processed or composed)")
    if _text(dataset, "BurnedInAnnotation") == "YES":
        problems.append("BurnedInAnnotation YES (text or marks in the pixels)")
    colour = _colour_of(dataset)
    if colour:
        problems.append(f"colour ({colour})")
    return problems


def _secondary_capture(dataset: Dataset, use: IntendedUse) -> str | None:
    if use.allow_secondary_capture or not _is_secondary_capture(dataset):
        return None
    problems = _capture_problems(dataset)
    if not problems:
        return None
    return (f"secondary capture that is not a plain capture of a radiograph: {', '.join(problems)}; "
            f"this model reads chest radiographs ({', '.join(use.modalities)}) and greyscale captures of them "
            f"(ConversionType {', '.join(CAPTURE_CONVERSIONS)} or none) only")


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


def _position_view(dataset: Dataset) -> tuple[str, set[str]] | None:
    """The kind of view ViewPosition names and the terms that name it, or None."""
    words = set(re.findall(r"[A-Z]+", _text(dataset, "ViewPosition")))
    for kind, terms in _VIEW_KINDS.items():  # "AP LLD" is a decubitus film, not a frontal one
        if words & set(terms):
            return kind, words & set(terms)
    frontal = sorted(words & set(_FRONTAL))
    return (frontal[0], set(frontal)) if frontal else None  # no value, or terms we do not know


def _coded_views(dataset: Dataset) -> list[tuple[str, str]]:
    """``(kind, what the item says)`` of each View Code Sequence item that names a view."""
    try:
        items = list(dataset.get("ViewCodeSequence") or [])
    except (ValueError, TypeError, KeyError):
        return []
    found = []
    for item in items:
        meaning = _text(item, "CodeMeaning").lower()
        kind = next((k for word, k in _CODE_MEANINGS if word in meaning), _CODE_VALUES.get(_text(item, "CodeValue")))
        if kind is not None:
            found.append((kind, meaning or _text(item, "CodeValue")))
    return found


def _view_position(dataset: Dataset, use: IntendedUse) -> str | None:
    found = _position_view(dataset)
    if found is None:
        return None  # nothing contradicts
    kind, terms = found
    return _view_reason(kind, terms, f"ViewPosition {_text(dataset, 'ViewPosition')}", use)


def _view_code(dataset: Dataset, use: IntendedUse) -> str | None:
    for kind, said in _coded_views(dataset):
        terms = {kind} if kind in _FRONTAL else set(_VIEW_KINDS[kind])
        reason = _view_reason(kind, terms, f"ViewCodeSequence: {said}", use)
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


def _colour_of(dataset: Dataset) -> str:
    """What says the image is in colour (``PhotometricInterpretation RGB``); empty for greyscale."""
    photometric = _text(dataset, "PhotometricInterpretation")
    try:
        samples = int(dataset.get("SamplesPerPixel") or 1)
    except (ValueError, TypeError):
        samples = 1
    if photometric in _COLOUR or samples > 1:
        return f"PhotometricInterpretation {photometric}" if photometric else f"{samples} samples per pixel"
    return ""


def _colour(dataset: Dataset, use: IntendedUse) -> str | None:
    if not use.greyscale_only or (_is_secondary_capture(dataset) and not use.allow_secondary_capture):
        return None  # a capture's colour: see _secondary_capture
    what = _colour_of(dataset)
    return f"colour image ({what}); this model reads greyscale radiographs only" if what else None


def named_view(dataset: Dataset) -> str | None:
    """The view the header names (``PA``, ``AP``, ``lateral``, ``decubitus``, ``oblique``), or None
    when View Position is absent, empty or unrecognised and the View Code Sequence names no view:
    then the frontal-view check (:mod:`medcam.gate.view`) decides from the image."""
    found = _position_view(dataset)
    if found is not None:
        return found[0]
    coded = _coded_views(dataset)
    return coded[0][0] if coded else None
