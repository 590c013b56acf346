"""Labelled image lists: read from a CSV or a folder per class, split by patient.

A CSV has the columns ``file,label[,patient_id][,population][,view][,finding]`` (paths relative
to the CSV; ``label`` a class index, a class name, or a finding that ``labels`` maps onto a class,
such as RSNA's ``OTHER`` -> ``NORMAL``). A folder holds one sub-folder per class, named as the
class. Any file :func:`medcam.io.load_image` reads is accepted.

Two sources can hold the same film (the RSNA challenge films are NIH ChestX-ray14 films):
:func:`pixel_duplicates` finds them by their pixels, so that a film cannot sit in one source's
training split and the other's test split.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from medcam.errors import ConfigError
from medcam.io import detect_format, load_image

__all__ = ["Sample", "data_hash", "pixel_duplicates", "read_samples", "split_by_patient", "write_samples"]


@dataclass(frozen=True)
class Sample:
    """One labelled file; ``patient_id`` groups images of one person (the file when unknown).

    ``population`` names the data set it came from (``pediatric``, ``adult``); ``view`` is the
    projection (``PA``, ``AP``) when the data says it; ``finding`` the reader's finding when it
    is finer than the class (RSNA: ``PNEUMONIA``, ``NORMAL`` or ``OTHER``, the last two both
    the negative class), so that evaluation can report opacity vs normal.
    """

    path: str
    label: int
    patient_id: str
    population: str = ""
    view: str = ""
    finding: str = ""


def read_samples(source: str | Path, classes: Sequence[str], population: str = "",
                 labels: Mapping[str, str] | None = None) -> list[Sample]:
    """The labelled files of a CSV or a class-folder tree.

    ``population`` names them when the CSV has no ``population`` column. ``labels`` maps label
    values that are findings rather than classes onto a class (``{"OTHER": "NORMAL"}``); such
    a sample keeps its label value as its ``finding`` (a ``finding`` column wins).

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
            value = row["label"].strip()
            mapped = {k.upper(): v for k, v in (labels or {}).items()}.get(value.upper())
            label = _label(mapped or value, classes, f"{source}, line {line}")
            finding = row.get("finding") or (value.upper() if labels else "")
            samples.append(Sample(str(path), label, row.get("patient_id") or str(path),
                                  row.get("population") or population, (row.get("view") or "").upper(),
                                  finding.upper()))
    return samples


def write_samples(path: str | Path, samples: Sequence[Sample], classes: Sequence[str]) -> None:
    """Write ``samples`` as a CSV that :func:`read_samples` reads back (absolute paths)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "label_name", "patient_id", "population", "view", "finding"])
        for s in samples:
            writer.writerow([s.path, s.label, classes[s.label], s.patient_id, s.population, s.view, s.finding])


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


def _fingerprint(path: str, side: int = 32) -> np.ndarray:
    """The film shrunk to ``side`` x ``side`` (area average), centred and scaled to unit length."""
    pixels = load_image(path).pixels[0].astype(np.float32)
    small = cv2.resize(pixels, (side, side), interpolation=cv2.INTER_AREA).ravel()
    small -= small.mean()
    return small / max(float(np.linalg.norm(small)), 1e-6)


def pixel_duplicates(first: Sequence[Sample], second: Sequence[Sample], *,
                     threshold: float = 0.995) -> list[tuple[Sample, Sample]]:
    """Pairs ``(a, b)`` of ``first`` x ``second`` that are the same film, judged by the pixels.

    Each film is shrunk to 32 x 32 and the two sets are compared by correlation, which ignores
    the resolution, the encoding (PNG vs JPEG) and the grey-level scaling of the copies. Between
    the NIH films of ``cxr-adult`` and the RSNA films the copies correlate at 1.000 and the
    closest films that are not copies at 0.979 at most (two films of one patient), so 0.995
    keeps them apart. Each film of ``first`` is paired with its best match only.
    """
    if not first or not second:
        return []
    a = np.stack([_fingerprint(s.path) for s in first])
    b = np.stack([_fingerprint(s.path) for s in second])
    similarity = a @ b.T
    best = similarity.argmax(axis=1)
    return [(first[i], second[int(best[i])]) for i in range(len(first)) if similarity[i, best[i]] >= threshold]
