"""``medcam fit-ood`` and ``medcam intended-use``: the intended-use gate's data in a checkpoint."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import torch

from medcam.errors import ConfigError
from medcam.gate import (
    IntendedUse,
    OODStats,
    collect_features,
    fit_ood,
    read_intended_use,
    write_intended_use,
    write_ood,
)
from medcam.gate.served import ServedModel
from medcam.models.checkpoint import load_checkpoint
from medcam.training.data import read_samples

__all__ = ["fit_ood_command", "fit_ood_on", "intended_use_command"]


def fit_ood_on(classifier: ServedModel, train: str | Path, val: str | Path, *, batch_size: int = 16,
               quantile: float = 0.99, reference: str | Path | None = None, log: Any = print) -> OODStats:
    """Statistics of ``classifier``'s features on the labelled ``train`` images, the threshold from ``val``
    (at ``quantile`` of each population's validation scores when ``val`` names populations).

    One mean per population and class of ``train`` (per class when it names no populations),
    plus one for the films of ``reference`` (a CSV whose first or ``file`` column lists frontal
    chest films the classifier was not trained on, such as the lung segmenter's training films),
    with one covariance shared by all.
    """
    classes = classifier.classes
    samples = {name: read_samples(source, classes) for name, source in (("train", train), ("validation", val))}
    paths = {name: [s.path for s in part] for name, part in samples.items()}
    if reference is not None:
        paths["reference"] = _listed_files(reference)
    sets = {name: collect_features(classifier, part, batch_size=batch_size) for name, part in paths.items()}
    for name, found in sets.items():
        for path, why in found.failures:
            log(f"{name}: left out {path}: {why}")
        if not found.kept:
            raise ConfigError(f"no readable {name} images in {dict(train=train, validation=val).get(name, reference)}")
    kept = [samples["train"][i] for i in sets["train"].kept]
    names = [f"{s.population}/{classes[s.label]}" if s.population else classes[s.label] for s in kept]
    features = sets["train"].features
    if "reference" in sets:
        names += ["reference"] * len(sets["reference"].kept)
        features = torch.cat([features, sets["reference"].features])
    groups = sorted(set(names))
    labels = torch.tensor([groups.index(n) for n in names])
    populations = [samples["validation"][i].population for i in sets["validation"].kept]
    stats = fit_ood(features, labels, sets["validation"].features, quantile=quantile,
                    groups_val=populations if len(set(populations)) > 1 else None)
    stats = dataclasses.replace(stats, groups=tuple(groups))
    log(f"fitted on {stats.n_train} images ({len(groups)} means: {', '.join(groups)}); threshold "
        f"{stats.threshold:.2f} lets through at least {quantile:.1%} of the {stats.n_val} validation images of "
        f"every population")
    return stats


def _listed_files(source: str | Path) -> list[str]:
    """The files a CSV lists (its ``file`` column, else its first), relative to the CSV."""
    source = Path(source)
    if not source.is_file():
        raise ConfigError(f"{source}: no such CSV")
    with open(source, newline="") as f:
        reader = csv.DictReader(f)
        column = "file" if "file" in (reader.fieldnames or []) else (reader.fieldnames or [""])[0]
        files = [str((source.parent / row[column]).resolve()) for row in reader if row.get(column)]
    if not files:
        raise ConfigError(f"{source}: lists no files")
    return files


def fit_ood_command(model: str, train: str | Path, val: str | Path, out: str | Path, *, batch_size: int = 16,
                    quantile: float = 0.99, reference: str | Path | None = None) -> str:
    """What ``medcam fit-ood`` runs; returns the new model id."""
    classifier = ServedModel(model)
    stats = fit_ood_on(classifier, train, val, batch_size=batch_size, quantile=quantile, reference=reference)
    model_id = write_ood(classifier.checkpoint.path, stats, out=out)
    print(f"wrote {out} = {model_id}")
    return model_id


def intended_use_command(model: str, changes: dict[str, Any], out: str | Path | None) -> IntendedUse:
    """What ``medcam intended-use`` runs: print the intended use, or write the changed one to ``out``."""
    ckpt = load_checkpoint(model)
    use = read_intended_use(ckpt)
    if changes:
        if out is None:
            raise ConfigError("--out is needed to write a checkpoint with the changed intended use")
        use = IntendedUse.from_dict({**use.to_dict(), **changes})
        model_id = write_intended_use(ckpt.path, use, out=out)
        print(f"wrote {out} = {model_id}")
    for field, value in dataclasses.asdict(use).items():
        print(f"{field}: {' '.join(value) if isinstance(value, tuple) else value}")
    return use
