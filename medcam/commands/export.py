"""``medcam export``: regions of one class's map, exported for annotation tools, for many images.

Each input is classified, its regions are found (:func:`medcam.regions.find_regions`) and
written in the chosen formats (:func:`medcam.export.export_regions`). The output folder also
receives ``exports.csv`` (every input: status, probability, number of regions, written files,
skipped formats and errors) and ``manifest.json`` (model, options and versions).
"""

from __future__ import annotations

import csv
import hashlib
import json
import platform
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import medcam
from medcam.errors import ConfigError
from medcam.export.formats import FORMATS, default_name, export_regions, parse_formats
from medcam.io import VOI
from medcam.io.discover import iter_image_batches
from medcam.models.predictor import Classifier, Prediction
from medcam.regions import RegionOptions, find_regions, resolve_class

__all__ = ["ExportOptions", "ExportRecord", "export_images"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how (see ``medcam export --help``).

    Attributes:
        out: the output folder.
        cam_class: the class whose map gives the regions (any case); default the positive class.
        formats: a subset of :data:`~medcam.export.FORMATS`.
        regions: the threshold rule, smoothing and minimum area.
        batch_size: images per forward pass.
        voi: the DICOM VOI step for the display image (see :mod:`medcam.io.dicom`).
    """

    out: Path
    cam_class: str | None = None
    formats: tuple[str, ...] = FORMATS
    regions: RegionOptions = field(default_factory=RegionOptions)
    batch_size: int = 8
    voi: VOI = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", parse_formats(self.formats))
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size!r}")


@dataclass(frozen=True)
class ExportRecord:
    """One input's outcome."""

    path: str
    status: str
    error: str = ""
    probability: float | None = None
    flagged: bool = False
    regions: int = 0
    files: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def export_images(paths: Iterable[str | Path], classifier: Classifier, options: ExportOptions) -> list[ExportRecord]:
    """Classify every file in ``paths`` (folders recursively) and export its regions."""
    cam_class = resolve_class(classifier.classes, options.cam_class or classifier.checkpoint.model.positive_class)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    records: list[ExportRecord] = []
    taken: set[str] = set()
    for images in iter_image_batches(paths, options.batch_size, voi=options.voi,
                                     on_error=lambda p, why: records.append(ExportRecord(str(p), "error", why))):
        for prediction in classifier.classify(images, batch_size=options.batch_size):
            records.append(_export_one(prediction, cam_class, options, taken))
    _write_table(out / "exports.csv", records)
    _write_manifest(out / "manifest.json", classifier, options, cam_class)
    return records


def _export_one(prediction: Prediction, cam_class: str, options: ExportOptions, taken: set[str]) -> ExportRecord:
    image = prediction.image
    name = default_name(image)
    if name in taken:  # the same UID or file name twice: keep both
        name = f"{name}-{hashlib.sha256(str(Path(image.path).resolve()).encode()).hexdigest()[:8]}"
    taken.add(name)
    regions = find_regions(prediction, cam_class, options.regions)
    result = export_regions(prediction, regions, options.out, options.formats, name=name)
    error = "; ".join(f"{fmt}: {why}" for fmt, why in result.errors.items())
    return ExportRecord(
        path=image.path, status="error" if error else "ok", error=error,
        probability=prediction.probability(cam_class), flagged=prediction.flagged, regions=len(regions),
        files={kind: str(path) for kind, path in result.files.items()}, skipped=result.skipped,
        notes=result.notes,
    )


def _write_table(path: Path, records: list[ExportRecord]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "status", "error", "probability", "flagged", "regions", "files", "skipped", "notes"])
        for r in records:
            writer.writerow([
                r.path, r.status, r.error, "" if r.probability is None else f"{r.probability:.6f}",
                str(r.flagged).lower() if r.probability is not None else "", r.regions,
                ";".join(f"{k}={v}" for k, v in r.files.items()),
                "; ".join(f"{k}: {v}" for k, v in r.skipped.items()), "; ".join(r.notes),
            ])


def _write_manifest(path: Path, classifier: Classifier, options: ExportOptions, cam_class: str) -> None:
    ckpt = classifier.checkpoint
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"id": ckpt.model_id, "path": ckpt.path, "trained": ckpt.trained,
                  "classes": list(ckpt.model.classes), "positive_class": ckpt.model.positive_class,
                  "temperature": ckpt.temperature, "threshold": ckpt.threshold},
        "options": {"out": str(options.out), "class": cam_class, "formats": list(options.formats),
                    "regions": {**asdict(options.regions), "description": options.regions.describe()},
                    "batch_size": options.batch_size, "voi": options.voi},
        "versions": {"medcam": medcam.__version__, "python": platform.python_version()},
    }
    path.write_text(json.dumps(manifest, indent=2))
