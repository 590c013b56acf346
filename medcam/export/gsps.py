"""The regions as a Grayscale Softcopy Presentation State: outlines a PACS viewer draws.

A GSPS (highdicom ``GrayscaleSoftcopyPresentationState``) in the source's study (UIDs from
:mod:`medcam.export.uids`) that references the source image and tells a viewer how to show
it:

- graphic layer ``MEDCAM_AI`` with one closed POLYLINE graphic object per region (the
  outline of :func:`medcam.export.sr.outline`, in PIXEL units: ``0.0\\0.0`` is the top
  left corner of the top left pixel), tracked by the same Tracking UID as in the SR;
- one text object in the top left corner: "AI result - not for diagnostic use", the class,
  its probability, positive or negative at the operating threshold, and the model id; with a
  lung segmenter, a second one below it (:func:`lung_text`): the caution "CAUTION: evidence
  outside the lungs (...)" of a flagged image whose evidence lies outside the lungs, else the
  share of the evidence inside the lungs;
- the source's VOI (its Window Center/Width or VOI LUT, copied by highdicom when present)
  and its Modality LUT (Rescale Slope/Intercept);
- Presentation LUT Shape ``INVERSE`` for a MONOCHROME1 source (a presentation state
  overrides the Photometric Interpretation, so that air stays white as the source meant),
  else ``IDENTITY``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd

from medcam.export.dicom_source import reference_dataset, save_dicom
from medcam.export.equipment import ModelInfo, add_device_uid, contributing_equipment, equipment
from medcam.export.sr import SR_SERIES_DESCRIPTION, outline
from medcam.export.uids import instance_uid, series_uid, tracking_uid
from medcam.regions import RegionSet

if TYPE_CHECKING:
    from medcam.models.predictor import Prediction

__all__ = ["AI_LABEL", "GSPS_SERIES_NUMBER", "build_gsps", "lung_text", "result_text", "write_gsps"]

GSPS_SERIES_NUMBER = 904
AI_LABEL = "AI result - not for diagnostic use"


def result_text(prediction: Prediction) -> str:
    """One line that says what the model found: the label, class, probability and model."""
    verdict = "positive" if prediction.flagged else "negative"
    return (f"{AI_LABEL}: {prediction.positive_class} probability {prediction.positive_probability:.2f} "
            f"({verdict} at {prediction.threshold:g}); model {prediction.model_id or 'unknown'}")


def lung_text(prediction: Prediction) -> str:
    """What the lung segmenter adds: ``CAUTION: <quality>`` when the prediction has a caution
    (:attr:`~medcam.models.Prediction.quality`), else ``lung evidence share X`` when it has a
    share, else ""."""
    if prediction.quality:
        return f"CAUTION: {prediction.quality}"
    if prediction.lung_evidence is not None:
        return f"lung evidence share {prediction.lung_evidence:.2f} (of the {prediction.positive_class} map's evidence)"
    return ""


def build_gsps(prediction: Prediction,
               regions: RegionSet) -> tuple[hd.pr.GrayscaleSoftcopyPresentationState, tuple[str, ...]]:
    """The presentation state that outlines ``regions`` on ``prediction``'s image.

    Raises:
        UnsupportedInputError: the source is not DICOM or its identity is invalid.
        ValueError: the regions are not on the image's grid; a colour source (highdicom).
    """
    image = prediction.image
    regions.check_grid(image)
    source, notes = reference_dataset(image)
    info = ModelInfo.of(prediction)
    layer = hd.pr.GraphicLayer(layer_name="MEDCAM_AI", order=1, description=SR_SERIES_DESCRIPTION)
    graphics = [hd.pr.GraphicObject(
        graphic_type=hd.pr.GraphicTypeValues.POLYLINE, graphic_data=outline(region),
        units=hd.pr.AnnotationUnitsValues.PIXEL,
        tracking_id=f"medcam {region.class_name} region {region.id}"[:64],
        tracking_uid=tracking_uid(source.SOPInstanceUID, info.name, "region", region.class_name, str(region.id)),
    ) for region in regions]
    rows, cols = image.shape
    lines = [line for line in (result_text(prediction), lung_text(prediction)) if line]
    texts = [hd.pr.TextObject(text_value=line[:1024], units=hd.pr.AnnotationUnitsValues.PIXEL,
                              bounding_box=(0.02 * cols, top * rows, 0.98 * cols, (top + 0.06) * rows),
                              text_justification=hd.pr.TextJustificationValues.LEFT)
             for line, top in zip(lines, (0.02, 0.08), strict=False)]
    annotation = hd.pr.GraphicAnnotation(referenced_images=[source], graphic_layer=layer,
                                         graphic_objects=graphics or None, text_objects=texts)
    inverse = source.get("PhotometricInterpretation") == "MONOCHROME1"
    shape = hd.PresentationLUTShapeValues.INVERSE if inverse else hd.PresentationLUTShapeValues.IDENTITY
    class_name = regions.class_name or info.positive_class
    with warnings.catch_warnings():  # the source's own single-component names are copied as they are
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        gsps = hd.pr.GrayscaleSoftcopyPresentationState(
            referenced_images=[source],
            series_instance_uid=series_uid(source.StudyInstanceUID, info.name, "gsps"),
            series_number=GSPS_SERIES_NUMBER,
            sop_instance_uid=instance_uid(source.SOPInstanceUID, info.name, "gsps", class_name),
            instance_number=1,
            content_label="MEDCAM_AI",
            content_description=f"medcam {class_name} regions"[:64],
            graphic_annotations=[annotation],
            graphic_layers=[layer],
            presentation_lut_transformation=hd.PresentationLUTTransformation(presentation_lut_shape=shape),
            contributing_equipment=[contributing_equipment(info.name)],
            series_description=SR_SERIES_DESCRIPTION,
            **equipment(info.name),
        )
    if "BodyPartExamined" in source:  # lets a reader tell a paired body part from an unpaired one
        gsps.BodyPartExamined = source.BodyPartExamined
    if "Laterality" in source or "BodyPartExamined" not in source:
        gsps.Laterality = source.get("Laterality", "")  # General Series, Type 2C: empty when unknown
    add_device_uid(gsps, info.name)
    return gsps, notes


def write_gsps(path: str | Path, prediction: Prediction, regions: RegionSet) -> tuple[Path, tuple[str, ...]]:
    """Write :func:`build_gsps`'s object to ``path``; returns the path and the notes."""
    gsps, notes = build_gsps(prediction, regions)
    return save_dicom(gsps, path), notes
