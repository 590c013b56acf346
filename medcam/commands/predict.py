"""``medcam predict``: probabilities, CAM overlays and raw maps for a few images.

For each input the output folder receives ``<name>_overlay.png`` (the chosen class's map,
normalised with ``positive``, over the display image), ``<name>_cam.npy`` (the raw maps of
every class, ``(K, rows, cols)`` float32 on the source pixel grid, in logit units) and, for
DICOM and NIfTI inputs, ``<name>_cam.nii.gz`` with the source geometry. ``predictions.csv``
lists every input (``status`` ok or error, with the reason) and ``manifest.json`` records
the model and the options.
"""

from __future__ import annotations

import csv
import hashlib
import json
import platform
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from matplotlib import colormaps

import medcam
from medcam.errors import ConfigError, MedcamError
from medcam.export import COLOUR_MAPS, write_cams
from medcam.io import VOI
from medcam.io.discover import iter_image_batches
from medcam.models.grid import Normalisation
from medcam.models.predictor import Classifier, Prediction

__all__ = ["PredictOptions", "PredictRecord", "predict"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PredictOptions:
    """What to write and how (see ``medcam predict --help``)."""

    out: Path
    cam_class: str | None = None
    colour_map: str = "jet"
    opacity: float = 0.5
    normalisation: Normalisation = "positive"
    batch_size: int = 8
    voi: VOI = "auto"

    def __post_init__(self) -> None:
        if self.colour_map not in colormaps:
            raise ConfigError(f"unknown colour map {self.colour_map!r}; try one of {', '.join(COLOUR_MAPS)}")
        if not 0.0 <= self.opacity <= 1.0:
            raise ConfigError(f"opacity must be in [0, 1], got {self.opacity!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size!r}")


@dataclass(frozen=True)
class PredictRecord:
    """One input's outcome: probabilities and written files, or the error."""

    path: str
    status: str
    error: str = ""
    probabilities: dict[str, float] = field(default_factory=dict)
    flagged: bool = False
    files: dict[str, str] = field(default_factory=dict)


def predict(paths: Iterable[str | Path], classifier: Classifier, options: PredictOptions) -> list[PredictRecord]:
    """Run the classifier on every file in ``paths`` (folders recursively) and write outputs."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    cam_class = options.cam_class or classifier.checkpoint.model.positive_class
    if cam_class not in classifier.classes:
        raise MedcamError(f"--class {cam_class!r} is not one of the model's classes: {', '.join(classifier.classes)}")
    records: list[PredictRecord] = []
    taken: set[str] = set()
    for images in iter_image_batches(paths, options.batch_size, voi=options.voi,
                                     on_error=lambda p, why: records.append(PredictRecord(str(p), "error", why))):
        for prediction in classifier.classify(images, batch_size=options.batch_size):
            records.append(_write(prediction, _unique_name(Path(prediction.image.path), taken), cam_class, options))
    _write_table(out / "predictions.csv", records, classifier)
    _write_manifest(out / "manifest.json", classifier, options, cam_class)
    return records


def _unique_name(path: Path, taken: set[str]) -> str:
    """The file stem, or with a hash of the full path when another input already took it."""
    stem = path.name.removesuffix(".gz")
    name = stem.rsplit(".", 1)[0] if "." in stem.strip(".") else stem
    if name in taken:
        name = f"{name}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
    taken.add(name)
    return name


def _write(prediction: Prediction, name: str, cam_class: str, options: PredictOptions) -> PredictRecord:
    files = write_cams(prediction, options.out, name, cam_class=cam_class, colour_map=options.colour_map,
                       opacity=options.opacity, normalisation=options.normalisation)
    probabilities = {c: prediction.probability(c) for c in prediction.classes}
    return PredictRecord(prediction.image.path, "ok", "", probabilities, prediction.flagged, files)


def _write_table(path: Path, records: Sequence[PredictRecord], classifier: Classifier) -> None:
    classes = classifier.classes
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "status", "error", *(f"prob_{c}" for c in classes), "label",
                         "flagged", "model", "overlay", "cam", "cam_nifti"])
        for r in records:
            probs = [f"{r.probabilities[c]:.6f}" if r.probabilities else "" for c in classes]
            label = max(r.probabilities, key=r.probabilities.__getitem__) if r.probabilities else ""
            writer.writerow([r.path, r.status, r.error, *probs, label,
                             str(r.flagged).lower() if r.status == "ok" else "",
                             classifier.checkpoint.model_id, r.files.get("overlay", ""),
                             r.files.get("cam", ""), r.files.get("cam_nifti", "")])


def _write_manifest(path: Path, classifier: Classifier, options: PredictOptions, cam_class: str) -> None:
    ckpt = classifier.checkpoint
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"id": ckpt.model_id, "path": ckpt.path, "trained": ckpt.trained,
                  "classes": list(ckpt.model.classes), "positive_class": ckpt.model.positive_class,
                  "temperature": ckpt.temperature, "threshold": ckpt.threshold,
                  "preprocess": asdict(ckpt.preprocess)},
        "options": {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
                    "cam_class": cam_class},
        "versions": {"medcam": medcam.__version__, "python": platform.python_version()},
    }
    path.write_text(json.dumps(manifest, indent=2))
