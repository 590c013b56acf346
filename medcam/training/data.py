"""Labelled image lists: read from a CSV or a folder per class, split by patient.

A CSV has the columns ``file,label[,patient_id][,population][,view]`` (paths relative to
the CSV; ``label`` a class index or a class name). A folder holds one sub-folder per class, named as the class.
Any file :func:`medcam.io.load_image` reads is accepted.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from medcam.errors import ConfigError
from medcam.io import detect_format

__all__ = ["Sample", "data_hash", "read_samples", "split_by_patient", "write_samples"]


@dataclass(frozen=True)
class Sample:
    """One labelled file; ``patient_id`` groups images of one person (the file when unknown).

    ``population`` names the data set it came from (``pediatric``, ``adult``); ``view`` is the
    projection (``PA``, ``AP``) when the data says it.
    """

    path: str
    label: int
    patient_id: str
    population: str = ""
    view: str = ""


def read_samples(source: str | Path, classes: Sequence[str], population: str = "") -> list[Sample]:
    """The labelled files of a CSV or a class-folder tree.

    ``population`` names them when the CSV has no ``population`` column.

    Raises:
        ConfigError: the source is missing, a label is unknown, or a listed file is absent.
    """
    source = Path(source)
    if source.is_dir():
        return _from_folders(source, classes, population)
    if not source.is_file():
        raise ConfigError(f"{source}: no such data CSV or folder")
    samples = []
    with open(source, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"file", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(f"{source}: the CSV lacks the column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            path = (source.parent / row["file"]).resolve()
            if not path.is_file():
                raise ConfigError(f"{source}, line {line}: {row['file']} does not exist")
            label = _label(row["label"], classes, f"{source}, line {line}")
            samples.append(Sample(str(path), label, row.get("patient_id") or str(path),
                                  row.get("population") or population, (row.get("view") or "").upper()))
    return samples


def write_samples(path: str | Path, samples: Sequence[Sample], classes: Sequence[str]) -> None:
    """Write ``samples`` as a CSV that :func:`read_samples` reads back (absolute paths)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "label_name", "patient_id", "population", "view"])
        for s in samples:
            writer.writerow([s.path, s.label, classes[s.label], s.patient_id, s.population, s.view])


def _from_folders(root: Path, classes: Sequence[str], population: str) -> list[Sample]:
    samples = []
    folders = {p.name.upper(): p for p in root.iterdir() if p.is_dir()}
    for label, name in enumerate(classes):
        folder = folders.get(name.upper())
        if folder is None:
            raise ConfigError(f"{root}: no folder for class {name!r} (found {', '.join(folders) or 'none'})")
        for path in sorted(folder.rglob("*")):
            if path.is_file() and detect_format(path) is not None:
                samples.append(Sample(str(path.resolve()), label, str(path.resolve()), population))
    return samples


def _label(value: str, classes: Sequence[str], where: str) -> int:
    value = value.strip()
    if value.isdigit() and int(value) < len(classes):
        return int(value)
    upper = [c.upper() for c in classes]
    if value.upper() in upper:
        return upper.index(value.upper())
    raise ConfigError(f"{where}: label {value!r} is neither a class index nor one of {', '.join(classes)}")


def split_by_patient(samples: Sequence[Sample], fractions: Sequence[float], seed: int) -> list[list[Sample]]:
    """Split into parts of roughly ``fractions`` of the patients, stratified by label.

    No patient appears in two parts. The first part takes what the others leave.
    """
    labels = np.array([s.label for s in samples])
    groups = np.array([s.patient_id for s in samples])
    remaining = np.arange(len(samples))
    parts: list[list[Sample]] = []
    left = 1.0
    for fraction in fractions[1:]:
        n_splits = max(2, round(left / fraction))
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        keep, take = next(splitter.split(remaining, labels[remaining], groups[remaining]))
        parts.append([samples[int(i)] for i in remaining[take]])
        remaining = remaining[keep]
        left -= fraction
    return [[samples[int(i)] for i in remaining], *parts]


def data_hash(samples: Sequence[Sample]) -> str:
    """SHA-256 over every file's bytes and label, in a fixed order."""
    digest = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.path):
        digest.update(f"{Path(s.path).name}:{s.label}:".encode())
        digest.update(Path(s.path).read_bytes())
    return digest.hexdigest()
