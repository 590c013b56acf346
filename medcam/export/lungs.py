"""The lung segmenter's mask as files, on the source image's pixel grid.

Each writer takes the prediction (whose :attr:`~medcam.models.Prediction.lungs` is the mask
on the source pixels), an output folder and a name stem, and writes one file, named as
:func:`~medcam.export.naming.safe_path` makes it (the NIfTI's stem is first cut to
:data:`NIFTI_STEM` characters, so that its double suffix survives):

==========================  ===================================================================
file                        content
==========================  ===================================================================
``<name>_lungs.png``        8-bit grayscale, 255 inside the lungs, at the full source size
                            (:func:`write_lungs_png`; marked as medcam's own, never scored again)
``<name>_lungs.nii.gz``     uint8 label image (1 inside) with the source's affine
                            (:func:`write_lungs_nifti`; DICOM and NIfTI sources only)
``<name>_lungs_seg.dcm``    DICOM Segmentation, one BINARY segment "Lung fields" (category SCT
                            91723000 "Anatomical structure", type SCT 39607008 "Lung"), algorithm
                            AUTOMATIC "medcam" with the segmenter and model ids as parameters
                            (:func:`write_lungs_seg`; DICOM sources only)
==========================  ===================================================================

The SEG goes into the source's study, in a series of its own (number
:data:`LUNGS_SERIES_NUMBER`, "medcam lung fields"), with UIDs derived from the source, the
model and the segmenter (:mod:`medcam.export.uids`): exporting again replaces it. Everything
else about it is the regions' SEG's (:func:`medcam.export.seg.binary_segmentation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

import medcam
from medcam.export.dicom_source import save_dicom
from medcam.export.naming import safe_name, safe_path
from medcam.export.nifti import write_nifti
from medcam.export.png import save_png
from medcam.export.seg import binary_segmentation

if TYPE_CHECKING:
    from medcam.models.predictor import Prediction

__all__ = ["LUNGS_SERIES_NUMBER", "NIFTI_STEM", "build_lungs_seg", "lung_mask", "write_lungs_nifti", "write_lungs_png",
           "write_lungs_seg"]

LUNGS_SERIES_NUMBER = 905
NIFTI_STEM = 86  # safe_path keeps names of up to 96 characters before ".gz": "<stem>_lungs.nii"


def lung_mask(prediction: Prediction) -> np.ndarray:
    """The prediction's lung mask ``(rows, cols)`` as uint8, 255 inside the lungs and 0 outside.

    Raises:
        ValueError: the prediction has no lung mask (served without a segmenter).
    """
    if prediction.lungs is None:
        raise ValueError(f"{prediction.image.path}: no lung mask (the model was served without a lung segmenter)")
    return np.where(prediction.lungs.numpy(), 255, 0).astype(np.uint8)


def write_lungs_png(prediction: Prediction, folder: str | Path, name: str) -> Path:
    """Write ``<name>_lungs.png``: the lung mask, 8-bit, at the full source image size."""
    path = _target(folder, name, "lungs.png")
    save_png(path, lung_mask(prediction))
    return path


def write_lungs_nifti(prediction: Prediction, folder: str | Path, name: str) -> Path:
    """Write ``<name>_lungs.nii.gz``: the lung mask (1 inside) on the source's geometry.

    Raises:
        ValueError: no lung mask, or an image without geometry (PNG/JPEG).
    """
    labels = (lung_mask(prediction) > 0).astype(np.uint8)
    return write_nifti(_target(folder, safe_name(name, max_length=NIFTI_STEM), "lungs.nii.gz"), prediction.image,
                       labels[None],
                       description=f"medcam lung fields {prediction.segmenter_id}")


def build_lungs_seg(prediction: Prediction) -> tuple[hd.seg.Segmentation, tuple[str, ...]]:
    """The Segmentation of ``prediction``'s lung fields over its image, and notes on the source header.

    Raises:
        ValueError: no lung mask.
        UnsupportedInputError: the source is not DICOM or its identity is invalid.
    """
    mask = lung_mask(prediction) > 0
    segmenter = prediction.segmenter_id or "unknown"
    algorithm = hd.AlgorithmIdentificationSequence(
        name="medcam", family=codes.cid7162.ArtificialIntelligence, version=medcam.__version__,
        parameters={"segmenter": segmenter, "model": prediction.model_id or "unknown"},
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Lung fields",
        segmented_property_category=codes.cid7150.AnatomicalStructure,
        segmented_property_type=codes.SCT.Lung,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    return binary_segmentation(prediction.image, mask, segment, model_id=prediction.model_id,
                               qualifiers=("lungs", segmenter), series_qualifiers=("lungs",),
                               series_number=LUNGS_SERIES_NUMBER, content_label="MEDCAM_LUNGS",
                               content_description=f"medcam lung fields by {segmenter}",
                               series_description="medcam lung fields")


def write_lungs_seg(prediction: Prediction, folder: str | Path, name: str) -> tuple[Path, tuple[str, ...]]:
    """Write :func:`build_lungs_seg`'s object as ``<name>_lungs_seg.dcm``; returns the path and the notes."""
    seg, notes = build_lungs_seg(prediction)
    return save_dicom(seg, _target(folder, name, "lungs_seg.dcm")), notes


def _target(folder: str | Path, name: str, suffix: str) -> Path:
    return safe_path(folder, f"{name}_{suffix}")
