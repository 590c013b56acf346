"""DICOM Segmentation (SEG) of the regions, with highdicom.

One BINARY segment holds the union of the regions of one class, on the source image's pixel
grid, in a new series of the source's study. The object references the source image (Source
Image Sequence, Referenced Series Sequence), copies its patient and study from the checked
header (:func:`~medcam.export.dicom_source.reference_dataset`) and describes the segment
with coded concepts:

- category SCT 49755003 "Morphologically abnormal structure" and type DCM 112001
  "Opacity" (CID 6102, thoracic radiographic findings: the finding RSNA's pneumonia boxes
  mark) for a pneumonia or opacity class; category SCT 309825002 "Spatial and relational
  concept" and type DCM 111030 "Image region" for any other class;
- anatomic region SCT 39607008 "Lung";
- algorithm type AUTOMATIC, algorithm "medcam" (family "Artificial Intelligence", version
  :data:`medcam.__version__`) with the model id, class and threshold rule as parameters.

Identity: series and instance UIDs derived from the study, source, model and class
(:mod:`medcam.export.uids`), equipment attributes from :mod:`medcam.export.equipment`.
:func:`binary_segmentation` builds any such one-segment object; the lung fields' SEG
(:mod:`medcam.export.lungs`) is the other one.

Projection radiographs and secondary captures have no Frame of Reference: the segmentation
is then aligned with its source pixel for pixel, and carries no Pixel Measures Sequence
(highdicom 0.28 would write one without Slice Thickness that it then cannot read back).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

import medcam
from medcam.export.dicom_source import reference_dataset, save_dicom
from medcam.export.equipment import add_device_uid, contributing_equipment, equipment
from medcam.export.uids import instance_uid, series_uid
from medcam.io.image import Image
from medcam.regions import RegionSet

__all__ = ["SEG_SERIES_NUMBER", "binary_segmentation", "build_seg", "write_seg"]

SEG_SERIES_NUMBER = 901
_OPACITY_CLASSES = ("pneumonia", "opacity", "lung opacity", "lung_opacity", "consolidation")


def build_seg(image: Image, regions: RegionSet, *, model_id: str = "") -> tuple[hd.seg.Segmentation, tuple[str, ...]]:
    """The Segmentation of ``regions`` over ``image``, and notes on the source header.

    Raises:
        UnsupportedInputError: the source is not DICOM or its identity is invalid.
        ValueError: the regions are not on the image's grid.
    """
    regions.check_grid(image)
    class_name = regions.class_name or "region"
    opacity = class_name.lower() in _OPACITY_CLASSES
    algorithm = hd.AlgorithmIdentificationSequence(
        name="medcam", family=codes.cid7162.ArtificialIntelligence, version=medcam.__version__,
        parameters={"model": model_id or "unknown", "class": class_name,
                    "threshold": regions.options.describe()},
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=f"{class_name} CAM regions"[:64],
        segmented_property_category=(codes.cid7150.MorphologicallyAbnormalStructure if opacity
                                     else codes.cid7150.SpatialAndRelationalConcept),
        segmented_property_type=codes.DCM.Opacity if opacity else codes.DCM.ImageRegion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[codes.SCT.Lung],
    )
    return binary_segmentation(image, regions.mask, segment, model_id=model_id, qualifiers=(class_name,),
                               series_number=SEG_SERIES_NUMBER, content_label="MEDCAM_CAM",
                               content_description=f"medcam CAM regions of {class_name}",
                               series_description=f"medcam {class_name} regions")


def binary_segmentation(image: Image, mask: np.ndarray, segment: hd.seg.SegmentDescription, *, model_id: str,
                        qualifiers: tuple[str, ...], series_number: int, content_label: str,
                        content_description: str, series_description: str,
                        series_qualifiers: tuple[str, ...] = ()) -> tuple[hd.seg.Segmentation, tuple[str, ...]]:
    """A BINARY Segmentation of one ``segment``, ``mask`` ``(rows, cols)`` on ``image``'s pixel grid, in
    the source's study; and notes on the source header.

    The series UID is derived from the study, the model, ``seg`` and ``series_qualifiers``; the
    instance UID from the source, the model, ``seg`` and ``qualifiers`` (:mod:`medcam.export.uids`).

    Raises:
        UnsupportedInputError: the source is not DICOM or its identity is invalid.
        ValueError: the mask is not on the image's grid.
    """
    if mask.shape != image.shape:
        raise ValueError(f"{image.path}: the mask is {mask.shape}, the image {image.shape}")
    source, notes = reference_dataset(image)
    if "FrameOfReferenceUID" not in source:
        for keyword in ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices"):
            if keyword in source:
                del source[keyword]
    model = model_id or "unknown"
    with warnings.catch_warnings():  # the source's own single-component names are copied as they are
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = hd.seg.Segmentation(
            source_images=[source],
            pixel_array=mask[None].astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=series_uid(source.StudyInstanceUID, model, "seg", *series_qualifiers),
            series_number=series_number,
            sop_instance_uid=instance_uid(source.SOPInstanceUID, model, "seg", *qualifiers),
            instance_number=1,
            contributing_equipment=[contributing_equipment(model_id)],
            **equipment(model_id),
            content_label=content_label,
            content_description=content_description[:64],
            series_description=series_description[:64],
            omit_empty_frames=False,
            transfer_syntax_uid=ExplicitVRLittleEndian,
        )
    if "ImageOrientationPatient" not in source and "PatientOrientation" not in seg:
        # General Image: Type 2C when there is no Image Orientation (Patient); copied, empty if unknown
        seg.PatientOrientation = source.get("PatientOrientation", "")
    add_device_uid(seg, model_id)
    return seg, notes


def write_seg(path: str | Path, image: Image, regions: RegionSet, *,
              model_id: str = "") -> tuple[Path, tuple[str, ...]]:
    """Write :func:`build_seg`'s object to ``path``; returns the path and the notes."""
    seg, notes = build_seg(image, regions, model_id=model_id)
    return save_dicom(seg, path), notes
