"""Who made a derived DICOM object: the model and medcam, as IHE AI Results asks.

Every derived object (SEG, SC, SR, GSPS) says:

- Manufacturer ``medcam`` and Manufacturer's Model Name ``medcam``;
- Software Versions: the medcam version and the model id (two values);
- Device Serial Number: the model id; Device UID: :func:`~medcam.export.uids.device_uid`
  of the model id, so that every object one model made names the same device;
- a Contributing Equipment Sequence item for medcam (purpose "Processing Equipment"), next
  to the one highdicom adds for itself.

:class:`ModelInfo` is what a report says about the algorithm: the model id, the operating
threshold, the calibration (temperature and, for Platt scaling, the class bias), the class
it screens for, and the lung segmenter with its ``lung_evidence`` threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

import medcam
from medcam.export.uids import device_uid
from medcam.io.provenance import SOFTWARE

if TYPE_CHECKING:
    from medcam.models.predictor import Prediction

__all__ = ["MANUFACTURER", "ModelInfo", "add_device_uid", "contributing_equipment", "equipment"]

MANUFACTURER = SOFTWARE
"""What every derived object names as its Manufacturer; :func:`medcam.io.provenance.own_dicom` refuses
them as inputs by it."""


@dataclass(frozen=True)
class ModelInfo:
    """The algorithm behind a result.

    Attributes:
        model_id: the checkpoint's id.
        threshold: the operating threshold on the positive class's probability.
        temperature: the calibration temperature of the probabilities.
        positive_class: the class the model screens for.
        class_bias: the calibration's per-class bias (Platt scaling), or None.
        segmenter_id: the lung segmenter's id, or "" when served without one.
        evidence_threshold: the threshold on ``lung_evidence`` below which a flagged image
            carries a caution (:attr:`medcam.models.Prediction.quality`), or None.
    """

    model_id: str
    threshold: float | None = None
    temperature: float | None = None
    positive_class: str = "PNEUMONIA"
    class_bias: tuple[float, ...] | None = None
    segmenter_id: str = ""
    evidence_threshold: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str):
            raise TypeError(f"model_id must be a str, got {type(self.model_id).__name__}")

    @classmethod
    def of(cls, prediction: Prediction) -> ModelInfo:
        """The model behind ``prediction``."""
        return cls(model_id=prediction.model_id, threshold=prediction.threshold,
                   temperature=prediction.temperature, positive_class=prediction.positive_class,
                   class_bias=prediction.class_bias, segmenter_id=prediction.segmenter_id,
                   evidence_threshold=prediction.evidence_threshold)

    @property
    def name(self) -> str:
        """The model id, or ``unknown`` when it has none."""
        return self.model_id or "unknown"

    def parameters(self) -> list[str]:
        """The algorithm parameters as ``name=value`` texts."""
        items = [f"model={self.name}", f"class={self.positive_class}", f"medcam={medcam.__version__}"]
        if self.threshold is not None:
            items.append(f"threshold={self.threshold:g}")
        if self.temperature is not None:
            items.append(f"temperature={self.temperature:g}")
        if self.class_bias is not None:
            items.append(f"class_bias={','.join(f'{b:g}' for b in self.class_bias)}")
        if self.segmenter_id:
            items.append(f"segmenter={self.segmenter_id}")
        if self.evidence_threshold is not None:
            items.append(f"lung_evidence_threshold={self.evidence_threshold:g}")
        return items


def equipment(model_id: str) -> dict[str, Any]:
    """Keyword arguments of highdicom's constructors that name the equipment."""
    name = model_id or "unknown"
    return {"manufacturer": MANUFACTURER, "manufacturer_model_name": MANUFACTURER,
            "software_versions": [medcam.__version__, name[:64]], "device_serial_number": name[:64]}


def contributing_equipment(model_id: str) -> hd.ContributingEquipment:
    """medcam as the processing equipment that made the object."""
    name = model_id or "unknown"
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER, purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=MANUFACTURER, software_versions=[medcam.__version__, name[:64]],
        device_serial_number=name[:64], contribution_description=f"AI result of model {name}"[:1024],
    )


def add_device_uid(dataset: Dataset, model_id: str) -> None:
    """Set Device UID (General Equipment) and Software Versions on ``dataset``."""
    dataset.DeviceUID = device_uid(model_id or "unknown")
    dataset.SoftwareVersions = [medcam.__version__, (model_id or "unknown")[:64]]
