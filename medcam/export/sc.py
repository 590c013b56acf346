"""DICOM Secondary Capture of the region overlay, for PACS viewers that cannot show SEG.

The RGB overlay (:func:`~medcam.export.contours.draw_regions`: the display image with the
regions' outlines) becomes a Secondary Capture Image (highdicom ``SCImage``) in a new series
of the source's study, with the source's patient and study (from the checked header,
:func:`~medcam.export.dicom_source.reference_dataset`), a Source Image Sequence that
references the source image, Image Type ``DERIVED\\SECONDARY`` and a Derivation
Description that says how it was made. Patient Orientation, Body Part Examined and
Laterality are copied from the source (the Type 2C ones empty, as DICOM allows, when the
source has none); Pixel Spacing is copied when it is known and positive.

The image says what it is: a label is burned into its top left corner (white on black,
Pillow's default font scaled to the image) with "AI result - not for diagnostic use", the
result (:func:`~medcam.export.gsps.result_text`: class, probability, model) and, with a lung
segmenter, a third line (:func:`~medcam.export.gsps.lung_text`: the caution "CAUTION:
evidence outside the lungs (...)" when there is one, else the lung evidence share), so Burned
In Annotation is ``YES``; the Series Description is "medcam AI result (not for diagnostic
use)". Series and instance UIDs are derived from the study, source, model and class
(:mod:`medcam.export.uids`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

import medcam
from medcam.export.contours import draw_regions
from medcam.export.dicom_source import positive_spacing, reference_dataset, save_dicom
from medcam.export.equipment import add_device_uid, contributing_equipment, equipment
from medcam.export.gsps import AI_LABEL, lung_text, result_text
from medcam.export.sr import SR_SERIES_DESCRIPTION
from medcam.export.uids import instance_uid, series_uid
from medcam.regions import RegionSet

if TYPE_CHECKING:
    from medcam.models.predictor import Prediction

__all__ = ["SC_SERIES_NUMBER", "build_sc", "burn_label", "label_box", "write_sc"]

SC_SERIES_NUMBER = 902


def build_sc(prediction: Prediction, regions: RegionSet) -> tuple[hd.sc.SCImage, tuple[str, ...]]:
    """The Secondary Capture of ``regions`` drawn over ``prediction``'s image, labelled as an AI
    result, and notes on the source header.

    Raises:
        UnsupportedInputError: the source is not DICOM or its identity is invalid.
        ValueError: the regions are not on the image's grid.
    """
    image = prediction.image
    regions.check_grid(image)
    source, notes = reference_dataset(image)
    model_id = prediction.model_id or "unknown"
    lines = [AI_LABEL, result_text(prediction).removeprefix(f"{AI_LABEL}: "), lung_text(prediction)]
    rgb = burn_label(draw_regions(image.pixels, regions.regions), [line for line in lines if line])
    spacing = source.get("PixelSpacing")
    class_name = regions.class_name or "region"
    with warnings.catch_warnings():  # the source's own single-component names are copied as they are
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=np.ascontiguousarray(rgb),
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            # required by highdicom for PATIENT; replaced below by the source's own value
            patient_orientation=("L", "F"),
            series_instance_uid=series_uid(source.StudyInstanceUID, model_id, "sc"),
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=instance_uid(source.SOPInstanceUID, model_id, "sc", class_name),
            instance_number=1,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description=SR_SERIES_DESCRIPTION,
            contributing_equipment=[contributing_equipment(model_id)],
            **equipment(model_id),
        )
    sc.PatientOrientation = source.get("PatientOrientation", "")
    if positive_spacing(spacing):
        sc.PixelSpacing = spacing
    if "BodyPartExamined" in source:  # lets a reader tell a paired body part from an unpaired one
        sc.BodyPartExamined = source.BodyPartExamined
    if "Laterality" in source or "BodyPartExamined" not in source:
        sc.Laterality = source.get("Laterality", "")  # General Series, Type 2C: empty when unknown
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "YES"
    sc.DerivationDescription = (f"medcam {medcam.__version__} CAM regions of {class_name} "
                                f"({regions.options.describe()}; model {model_id}) outlined on the "
                                f"display image; labelled '{AI_LABEL}' with the result")[:1024]
    sc.SourceImageSequence = [_source_reference(source)]
    add_device_uid(sc, model_id)
    return sc, notes


def write_sc(path: str | Path, prediction: Prediction, regions: RegionSet) -> tuple[Path, tuple[str, ...]]:
    """Write :func:`build_sc`'s object to ``path``; returns the path and the notes."""
    sc, notes = build_sc(prediction, regions)
    return save_dicom(sc, path), notes


def label_box(shape: tuple[int, int], lines: int = 2) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` in pixels (ends exclusive) of the label :func:`burn_label` draws."""
    rows, cols = shape
    size = _font_size(shape)
    margin = max(2, size // 3)
    return 0, 0, cols, min(rows, margin * 2 + lines * (size + margin))


def burn_label(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """``rgb`` (uint8 ``(H, W, 3)``) with ``lines`` written white on a black band across the top."""
    canvas = PILImage.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    draw = ImageDraw.Draw(canvas)
    size = _font_size(rgb.shape[:2])
    margin = max(2, size // 3)
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = label_box(rgb.shape[:2], len(lines))
    draw.rectangle((left, top, right - 1, bottom - 1), fill=(0, 0, 0))  # Pillow's corners are inclusive
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * (size + margin)), line, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def _font_size(shape: tuple[int, int]) -> int:
    """Text height in pixels: 1/40 of the image's height, at least 10."""
    return max(10, shape[0] // 40)


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    purpose = hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item
