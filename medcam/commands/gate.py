"""``medcam fit-ood`` and ``medcam intended-use``: the intended-use gate's data in a checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
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
               quantile: float = 0.99, log: Any = print) -> OODStats:
    """Statistics of ``classifier``'s features on the labelled ``train`` images, the threshold from ``val``
    (at ``quantile`` of each population's validation scores when ``val`` names populations)."""
    classes = classifier.classes
    samples = {name: read_samples(source, classes) for name, source in (("train", train), ("validation", val))}
    sets = {name: collect_features(classifier, [s.path for s in part], batch_size=batch_size)
            for name, part in samples.items()}
    for name, found in sets.items():
        for path, why in found.failures:
            log(f"{name}: left out {path}: {why}")
        if not found.kept:
            raise ConfigError(f"no readable {name} images in {train if name == 'train' else val}")
    labels = torch.tensor(np.array([samples["train"][i].label for i in sets["train"].kept]))
    groups = [samples["validation"][i].population for i in sets["validation"].kept]
    stats = fit_ood(sets["train"].features, labels, sets["validation"].features, quantile=quantile,
                    groups_val=groups if len(set(groups)) > 1 else None)
    log(f"fitted on {stats.n_train} training images; threshold {stats.threshold:.2f} lets through at least "
        f"{quantile:.0%} of the {stats.n_val} validation images of every population")
    return stats


def fit_ood_command(model: str, train: str | Path, val: str | Path, out: str | Path, *, batch_size: int = 16,
                    quantile: float = 0.99) -> str:
    """What ``medcam fit-ood`` runs; returns the new model id."""
    classifier = ServedModel(model)
    stats = fit_ood_on(classifier, train, val, batch_size=batch_size, quantile=quantile)
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
