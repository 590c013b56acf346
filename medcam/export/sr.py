"""The AI result as a DICOM Structured Report a PACS understands: TID 1500 Measurement Report.

One Comprehensive 3D SR per analysed image (:func:`build_sr`), in the source's study (series
and instance UIDs from :mod:`medcam.export.uids`), with the source's patient and study from
the checked header (:func:`~medcam.export.dicom_source.reference_dataset`). Its content:

- observation context: the device observer medcam (Device Observer UID = the model's
  Device UID, model name = the model id) and, for a reviewed report, the reviewer as person
  observer;
- procedure reported SCT 413815006 "Chest imaging";
- an image-level measurement group (TID 1501) about the positive class (SCT 233604007
  "Pneumonia" for a pneumonia class, DCM 112001 "Opacity" for an opacity class, else
  DCM 121071 "Finding"), referencing the source image: the calibrated probability as a
  numeric measurement DCM 122157 "Probability" (UCUM ``1``), and the finding present or
  absent at the operating threshold (``Prediction.flagged``) as a qualitative evaluation
  (SCT 52101004 "Present" / SCT 272519000 "Absent"); with a lung segmenter, the share of the
  positive class's positive CAM evidence inside the lungs (``Prediction.lung_evidence``) as a
  numeric measurement :data:`LUNG_EVIDENCE` (99MEDCAM LUNGEVIDENCE "Lung evidence share",
  UCUM ``{ratio}``; no standard concept exists, so the code is medcam's own, declared in the
  Coding Scheme Identification Sequence) and, when that share is below the model's threshold
  on a flagged image (``Prediction.quality``), the caution as a TEXT item DCM 121106
  "Comment" that starts with "Caution:";
- one planar ROI group (TID 1410) per region: its outline as a closed SCOORD POLYLINE in
  image coordinates (the largest outline of :func:`~medcam.export.contours.region_polygons`,
  shifted by half a pixel: DICOM puts ``0.0\\0.0`` at the top left corner of the top left
  pixel, OpenCV at its centre), with the region's area (SCT 42798000 "Area", mm\\ :sup:`2`)
  when the pixel spacing is known;
- Algorithm Identification (TID 4019) in every group: name ``medcam``, version = the model
  id, family "Artificial Intelligence", parameters ``model=``, ``class=``, ``medcam=``,
  ``threshold=``, ``temperature=`` (and ``class_bias=`` when the calibration has one,
  ``segmenter=`` and ``lung_evidence_threshold=`` when there are a segmenter and a threshold).

A reviewed report (:class:`Review`) adds, per region, the reviewer's decision as a
qualitative evaluation of the region's finding: accepted = "Present", rejected = "Absent".

An image that was not analysed (refused by an intended-use check) gets a report that says
so (:func:`build_not_analysed_sr`): the image-level group's evaluation is SCT 373068000
"Undetermined", and a TEXT item DCM 121106 "Comment" carries the reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes

from medcam.export.contours import region_polygons
from medcam.export.dicom_source import checked_header, reference_dataset, save_dicom
from medcam.export.equipment import ModelInfo, add_device_uid, contributing_equipment, equipment
from medcam.export.naming import result_stem, safe_path
from medcam.export.uids import device_uid, instance_uid, series_uid, tracking_uid
from medcam.io.image import Image
from medcam.regions import Region, RegionSet

if TYPE_CHECKING:
    from medcam.models.predictor import Prediction

__all__ = ["LUNG_EVIDENCE", "MEDCAM_SCHEME", "PNEUMONIA", "SR_SERIES_DESCRIPTION", "SR_SERIES_NUMBER", "Review",
           "build_not_analysed_sr", "build_sr", "finding_code", "outline", "write_not_analysed_sr", "write_sr"]

SR_SERIES_NUMBER = 903
SR_SERIES_DESCRIPTION = "medcam AI result (not for diagnostic use)"
PNEUMONIA = hd.sr.CodedConcept(value="233604007", scheme_designator="SCT", meaning="Pneumonia")
MEDCAM_SCHEME = "99MEDCAM"
"""medcam's own coding scheme (a private designator starts with 99), for what no standard code names."""
LUNG_EVIDENCE = hd.sr.CodedConcept(value="LUNGEVIDENCE", scheme_designator=MEDCAM_SCHEME,
                                   meaning="Lung evidence share")
"""The share of the positive class's positive CAM evidence inside the lung fields, in [0, 1]."""
_OPACITY_CLASSES = ("opacity", "lung opacity", "lung_opacity", "consolidation")
_PERSON_NAME_WARNING = ".*unlikely to represent the intended person name"


@dataclass(frozen=True)
class Review:
    """A reviewer's decisions on the regions of one image.

    Attributes:
        reviewer: the reviewer's name (the report's person observer).
        regions: every region the report lists (accepted, rejected and undecided).
        decisions: region id -> True (accepted) or False (rejected); undecided ids are absent.
    """

    reviewer: str
    regions: RegionSet
    decisions: Mapping[int, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.reviewer.strip():
            raise ValueError("a reviewer name is required for a reviewed report")
        unknown = set(self.decisions) - {r.id for r in self.regions}
        if unknown:
            raise ValueError(f"decisions on regions {sorted(unknown)} that are not among the "
                             f"{len(self.regions)} regions of this map")


def finding_code(class_name: str) -> hd.sr.CodedConcept:
    """The coded finding of a class: Pneumonia, Opacity, or the generic Finding."""
    name = class_name.strip().lower()
    if name == "pneumonia":
        return PNEUMONIA
    code = codes.DCM.Opacity if name in _OPACITY_CLASSES else codes.DCM.Finding
    return hd.sr.CodedConcept.from_code(code)


def outline(region: Region) -> np.ndarray:
    """The region's largest outline as a closed polyline ``(n + 1, 2)`` of DICOM ``(col, row)``."""
    polygons = region_polygons(region)
    largest = max(polygons, key=lambda p: cv2.contourArea(p.reshape(-1, 1, 2)))
    points = largest.astype(np.float32) + 0.5
    return np.concatenate([points, points[:1]])


def build_sr(prediction: Prediction, regions: RegionSet, *,
             review: Review | None = None) -> tuple[hd.sr.Comprehensive3DSR, tuple[str, ...]]:
    """The Measurement Report of ``prediction`` and ``regions`` (or ``review.regions``).

    Raises:
        UnsupportedInputError: the source is not DICOM or its identity is invalid.
        ValueError: the regions are not on the image's grid.
    """
    image = prediction.image
    listed = review.regions if review is not None else regions
    listed.check_grid(image)
    source, notes = reference_dataset(image)
    info = ModelInfo.of(prediction)
    finding = finding_code(info.positive_class)
    algorithm = _algorithm(info)
    measurements = [hd.sr.Measurement(name=codes.DCM.Probability, value=prediction.positive_probability,
                                      unit=codes.UCUM.NoUnits, algorithm_id=algorithm)]
    if prediction.lung_evidence is not None:
        measurements.append(hd.sr.Measurement(name=LUNG_EVIDENCE, value=prediction.lung_evidence,
                                              unit=codes.UCUM.Ratio, algorithm_id=algorithm))
    present = codes.SCT.Present if prediction.flagged else codes.SCT.Absent
    image_group = _image_group(source, info, algorithm, measurements=measurements,
                               evaluation=hd.sr.QualitativeEvaluation(name=finding, value=present))
    if prediction.quality:
        image_group[0].ContentSequence.append(hd.sr.TextContentItem(
            name=codes.DCM.Comment, value=f"Caution: {prediction.quality}",
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    groups: list[hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]
    groups = [image_group]
    region_finding = finding_code(listed.class_name or info.positive_class)
    for region in listed:
        decision = review.decisions.get(region.id) if review is not None else None
        groups.append(_region_group(source, info, algorithm, region, region_finding, decision))
    qualifiers: tuple[str, ...] = (listed.class_name or info.positive_class,)
    if review is not None:
        qualifiers += ("reviewed", review.reviewer.strip())
    sr = _report(source, info, groups, qualifiers, reviewer=review.reviewer if review else None)
    if prediction.lung_evidence is not None:
        sr.CodingSchemeIdentificationSequence = [_medcam_scheme()]
    return sr, notes


def write_sr(path: str | Path, prediction: Prediction, regions: RegionSet, *,
             review: Review | None = None) -> tuple[Path, tuple[str, ...]]:
    """Write :func:`build_sr`'s report to ``path``; returns the path and the notes."""
    sr, notes = build_sr(prediction, regions, review=review)
    return save_dicom(sr, path), notes


def build_not_analysed_sr(source: Image | Dataset, reason: str,
                          model: ModelInfo) -> tuple[hd.sr.Comprehensive3DSR, tuple[str, ...]]:
    """A report that says ``model`` looked at ``source`` and declined to analyse it, and why.

    Args:
        source: the loaded image, or its DICOM header.
        reason: why it was not analysed, in a sentence a radiographer can act on.
        model: the model that declined.

    Raises:
        ValueError: an empty reason.
        UnsupportedInputError: the source is not DICOM or its identity is invalid.
    """
    if not reason.strip():
        raise ValueError("a reason is required for a 'not analysed' report")
    header, notes = _header(source)
    finding = finding_code(model.positive_class)
    algorithm = _algorithm(model)
    group = _image_group(header, model, algorithm, measurements=None,
                         evaluation=hd.sr.QualitativeEvaluation(name=finding, value=codes.SCT.Undetermined))
    group[0].ContentSequence.append(hd.sr.TextContentItem(
        name=codes.DCM.Comment, value=f"Not analysed by medcam model {model.name}: {reason.strip()}",
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return _report(header, model, [group], (model.positive_class,)), notes


def write_not_analysed_sr(source: Image | Dataset, reason: str, model: ModelInfo, folder: str | Path, *,
                          name: str | None = None) -> Path:
    """Write :func:`build_not_analysed_sr`'s report into ``folder``; returns its path.

    The file is named as :func:`~medcam.export.formats.export_regions` names the report of
    an analysed image (``<SOP Instance UID>_<class>_sr.dcm``), and it has the same SOP
    Instance UID, so that a later analysis replaces it.

    Raises:
        ValueError: an empty reason.
        UnsupportedInputError: the source is not DICOM or its identity is invalid.
        OSError: the file cannot be written.
    """
    sr, _ = build_not_analysed_sr(source, reason, model)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    stem = result_stem(name if name is not None else str(_header(source)[0].SOPInstanceUID), model.positive_class)
    return save_dicom(sr, safe_path(out, f"{stem}_sr.dcm"))


def _header(source: Image | Dataset) -> tuple[Dataset, tuple[str, ...]]:
    if isinstance(source, Image):
        return reference_dataset(source)
    if isinstance(source, Dataset):
        return checked_header(source, str(getattr(source, "filename", "") or "<dataset>"))
    raise TypeError(f"source must be a medcam Image or a pydicom Dataset, got {type(source).__name__}")


def _medcam_scheme() -> Dataset:
    """The Coding Scheme Identification item that declares :data:`MEDCAM_SCHEME`."""
    item = Dataset()
    item.CodingSchemeDesignator = MEDCAM_SCHEME
    item.CodingSchemeName = "medcam local codes"
    item.CodingSchemeResponsibleOrganization = "medcam"
    return item


def _algorithm(info: ModelInfo) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name="medcam", version=info.name[:64], parameters=info.parameters(),
                                         family=codes.cid7162.ArtificialIntelligence, manufacturer="medcam")


def _image_group(source: Dataset, info: ModelInfo, algorithm: hd.sr.AlgorithmIdentification, *,
                 measurements: list[hd.sr.Measurement] | None,
                 evaluation: hd.sr.QualitativeEvaluation) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    finding = finding_code(info.positive_class)
    tracking = hd.sr.TrackingIdentifier(uid=tracking_uid(source.SOPInstanceUID, info.name, "image",
                                                         info.positive_class),
                                        identifier=f"medcam {info.positive_class} image result"[:64])
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, finding_type=finding, algorithm_id=algorithm,
        measurements=measurements, qualitative_evaluations=[evaluation],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )


def _region_group(source: Dataset, info: ModelInfo, algorithm: hd.sr.AlgorithmIdentification, region: Region,
                  finding: hd.sr.CodedConcept, decision: bool | None
                  ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    roi = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=outline(region),
                            source_image=hd.sr.SourceImageForRegion.from_source_image(source))
    tracking = hd.sr.TrackingIdentifier(
        uid=tracking_uid(source.SOPInstanceUID, info.name, "region", region.class_name, str(region.id)),
        identifier=f"medcam {region.class_name} region {region.id}"[:64])
    measurements = None
    if region.area_mm2 is not None:
        measurements = [hd.sr.Measurement(name=codes.SCT.Area, value=float(region.area_mm2),
                                          unit=codes.UCUM.SquareMillimeter, algorithm_id=algorithm)]
    evaluations = None
    if decision is not None:
        evaluations = [hd.sr.QualitativeEvaluation(name=finding,
                                                   value=codes.SCT.Present if decision else codes.SCT.Absent)]
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_region=roi, finding_type=finding, algorithm_id=algorithm,
        measurements=measurements, qualitative_evaluations=evaluations,
    )


def _report(source: Dataset, info: ModelInfo, groups: list, qualifiers: tuple[str, ...], *,
            reviewer: str | None = None) -> hd.sr.Comprehensive3DSR:
    device = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(info.name), name="medcam", manufacturer_name="medcam", model_name=info.name[:64]))
    with warnings.catch_warnings():  # names are taken as the reviewer typed them, and as the source has them
        warnings.filterwarnings("ignore", message=_PERSON_NAME_WARNING)
        person = None
        if reviewer is not None:
            person = hd.sr.ObserverContext(
                observer_type=codes.cid270.Person,
                observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=reviewer.strip()))
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_person_context=person,
                                                         observer_device_context=device),
            procedure_reported=codes.SCT.ChestImaging, imaging_measurements=groups,
            title=codes.cid7021.ImagingMeasurementReport)
        study = str(source.StudyInstanceUID)
        sr = hd.sr.Comprehensive3DSR(
            evidence=[source], content=report,
            series_instance_uid=series_uid(study, info.name, "sr"), series_number=SR_SERIES_NUMBER,
            sop_instance_uid=instance_uid(source.SOPInstanceUID, info.name, "sr", *qualifiers),
            instance_number=1, is_complete=True, series_description=SR_SERIES_DESCRIPTION,
            contributing_equipment=[contributing_equipment(info.name)], **equipment(info.name),
        )
    add_device_uid(sr, info.name)
    return sr
