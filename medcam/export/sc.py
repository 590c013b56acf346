"""DICOM Secondary Capture of the region overlay, for PACS viewers that cannot show SEG.

The RGB overlay (:func:`~medcam.export.contours.draw_regions`: the display image with the
regions' outlines) becomes a Secondary Capture Image (highdicom ``SCImage``) in a new series
of the source's study, with the source's patient and study (from the checked header,
:func:`~medcam.export.dicom_source.reference_dataset`), a Source Image Sequence that
references the source image, Image Type ``DERIVED\\SECONDARY`` and a Derivation
Description that says how it was made. Patient Orientation, Body Part Examined and
Laterality are copied from the source (the Type 2C ones empty, as DICOM allows, when the
source has none); Pixel Spacing is copied when it is known and positive. The outlines carry
no text, so Burned In Annotation is ``NO``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

import medcam
from medcam.export.contours import draw_regions
from medcam.export.dicom_source import positive_spacing, reference_dataset
from medcam.io.image import Image
from medcam.regions import RegionSet

__all__ = ["SC_SERIES_NUMBER", "build_sc", "write_sc"]

SC_SERIES_NUMBER = 902


def build_sc(image: Image, regions: RegionSet, *, model_id: str = "") -> tuple[hd.sc.SCImage, tuple[str, ...]]:
    """The Secondary Capture of ``regions`` drawn over ``image``, and notes on the source header.

    Raises:
        UnsupportedInputError: the source is not DICOM or its identity is invalid.
        ValueError: the regions are not on the image's grid.
    """
    regions.check_grid(image)
    source, notes = reference_dataset(image)
    rgb = draw_regions(image.pixels, regions.regions)
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
            series_instance_uid=hd.UID(),
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="medcam",
            transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description=f"medcam {class_name} regions overlay"[:64],
        )
    sc.PatientOrientation = source.get("PatientOrientation", "")
    if positive_spacing(spacing):
        sc.PixelSpacing = spacing
    if "BodyPartExamined" in source:  # lets a reader tell a paired body part from an unpaired one
        sc.BodyPartExamined = source.BodyPartExamined
    if "Laterality" in source or "BodyPartExamined" not in source:
        sc.Laterality = source.get("Laterality", "")  # General Series, Type 2C: empty when unknown
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "NO"
    sc.DerivationDescription = (f"medcam {medcam.__version__} CAM regions of {class_name} "
                                f"({regions.options.describe()}; model {model_id or 'unknown'}) "
                                "outlined on the display image")[:1024]
    sc.SourceImageSequence = [_source_reference(source)]
    return sc, notes


def write_sc(path: str | Path, image: Image, regions: RegionSet, *,
             model_id: str = "") -> tuple[Path, tuple[str, ...]]:
    """Write :func:`build_sc`'s object to ``path``; returns the path and the notes."""
    sc, notes = build_sc(image, regions, model_id=model_id)
    path = Path(path)
    sc.save_as(path)
    return path, notes


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    purpose = hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item
