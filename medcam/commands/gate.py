"""``medcam fit-ood`` and ``medcam intended-use``: the intended-use gate's data in a checkpoint."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import torch

from medcam.errors import ConfigError
from medcam.gate import (
    FeatureSet,
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
from medcam.training.data import Sample, read_samples

__all__ = ["fit_ood_command", "fit_ood_on", "intended_use_command", "labelled_features"]


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
    kept, found = labelled_features(classifier, train, "the training statistics", batch_size=batch_size, log=log)
    validation, held_out = labelled_features(classifier, val, "the threshold", batch_size=batch_size, log=log)
    names = [f"{s.population}/{classes[s.label]}" if s.population else classes[s.label] for s in kept]
    features = found.features
    if reference is not None:
        extra = collect_features(classifier, _listed_files(reference), batch_size=batch_size)
        for path, why in extra.failures:
            log(f"{path}: left out of the reference films ({why})")
        if not extra.kept:
            raise ConfigError(f"no readable reference films in {reference}")
        names += ["reference"] * len(extra.kept)
        features = torch.cat([features, extra.features])
    groups = sorted(set(names))
    labels = torch.tensor([groups.index(n) for n in names])
    populations = [s.population for s in validation]
    stats = fit_ood(features, labels, held_out.features, quantile=quantile,
                    groups_val=populations if len(set(populations)) > 1 else None)
    stats = dataclasses.replace(stats, groups=tuple(groups))
    log(f"fitted on {stats.n_train} images ({len(groups)} means: {', '.join(groups)}); threshold "
        f"{stats.threshold:.2f} lets through at least {quantile:.1%} of the {stats.n_val} validation images of "
        f"every population")
    return stats


def labelled_features(classifier: ServedModel, source: str | Path, use: str, *, batch_size: int = 16,
                      log: Any = print) -> tuple[list[Sample], FeatureSet]:
    """The labelled samples of ``source`` (CSV or class folders) that could be read, with their
    pooled features and logits; each file left out is logged with its reason.

    Raises:
        ConfigError: no file of ``source`` could be read.
    """
    samples = read_samples(source, classifier.classes)
    found = collect_features(classifier, [s.path for s in samples], batch_size=batch_size)
    for path, why in found.failures:
        log(f"{path}: left out of {use} ({why})")
    if not found.kept:
        raise ConfigError(f"no readable images for {use} in {source}")
    return [samples[i] for i in found.kept], found


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
