"""``medcam fit-lung-gate``: the frontal-view check's limits and the ``lung_evidence`` threshold.

Both are set on frontal validation films only and stored in the classifier's checkpoint with
the id of the lung segmenter they were set with (:class:`medcam.gate.ServedModel` refuses to
serve them with another):

- **frontal-view check** (:mod:`medcam.gate.view`): per frontal population, the mean and the
  Ledoit-Wolf covariance of the view measures of its validation films, and a limit, the
  ``quantile`` (0.995) of their own Mahalanobis distances. No lateral film is used: the lateral
  films of ``../shared/data/views`` only measure, afterwards, how many are refused
  (``benchmarks/bench_view.py``).
- **``lung_evidence`` threshold** ``T``: the ``quantile`` (default 0.05) of the
  ``lung_evidence`` of the flagged pneumonia films of the validation splits, each population
  weighing the same: a flagged film whose evidence lies less inside the lungs than that of 95%
  of correctly flagged films gets the caution "evidence outside the lungs".

The frontal populations and their patient-disjoint splits (:func:`frontal_splits`): the
classifier's own pediatric and adult splits (from its training config), the RSNA challenge
films (split 70/15/15 by patient here, stratified by finding) and the lung-mask films (the
segmenter's split).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from medcam.config import load_config
from medcam.errors import ConfigError, MedcamError
from medcam.gate.metadata import update_checkpoint
from medcam.gate.served import ServedModel
from medcam.gate.view import METADATA_KEY as VIEW_KEY
from medcam.gate.view import FrontalPopulation, ViewCheck, view_measures
from medcam.io import load_image
from medcam.models.predictor import EVIDENCE_KEY
from medcam.models.preprocess import prepare
from medcam.training.data import Sample, read_samples, split_by_patient, write_samples
from medcam.training.lungs import load_lungs_config, read_lung_samples, split_lung_samples
from medcam.training.train import read_populations, split_populations

__all__ = ["Measured", "evidence_threshold", "fit_lung_gate", "fit_view_check", "frontal_splits", "measure"]

_CLASSES = ("NORMAL", "PNEUMONIA")


def frontal_splits(classifier_config: str | Path, lungs_config: str | Path, rsna: str | Path, out: str | Path,
                   *, seed: int = 0) -> tuple[Path, Path]:
    """Write ``out/val.csv`` and ``out/test.csv``: the frontal populations' validation and test films.

    The classifier config's own splits (with ``population``, ``finding``), and the lung-mask
    films' split (population ``lungs``). The RSNA films of ``rsna`` are added with a split of
    their own only when the config does not train on them already (then its split is used).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(classifier_config)
    _, val, test = split_populations(read_populations(config), config)
    if Path(rsna).resolve() not in {Path(d.source).resolve() for d in config.data.datasets}:
        _, rsna_val, rsna_test = split_by_patient(_read_rsna(Path(rsna)), [0.7, 0.15, 0.15], seed)
        val, test = [*val, *rsna_val], [*test, *rsna_test]
    lungs = load_lungs_config(lungs_config)
    _, lung_val, lung_test = split_lung_samples(read_lung_samples(lungs.data), lungs.seed)

    def as_samples(part: Sequence[Any]) -> list[Sample]:
        return [Sample(s.image, 0, s.patient_id, "lungs", "PA") for s in part]

    paths = out / "val.csv", out / "test.csv"
    write_samples(paths[0], [*val, *as_samples(lung_val)], _CLASSES)
    write_samples(paths[1], [*test, *as_samples(lung_test)], _CLASSES)
    return paths


def _read_rsna(source: Path) -> list[Sample]:
    """RSNA challenge films as samples: PNEUMONIA (lung opacity) 1, NORMAL and OTHER 0."""
    if not source.is_file():
        raise ConfigError(f"{source}: no such RSNA labels file")
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    return [Sample(str((source.parent / r["file"]).resolve()), int(r["label"] == "PNEUMONIA"), r["patient_id"],
                   "rsna", r.get("view", "").upper()) for r in rows]


@dataclass(frozen=True)
class Measured:
    """What the served model says of one film: its view measures, ``lung_evidence`` and flag."""

    sample: Sample
    measures: np.ndarray
    lung_evidence: float | None
    flagged: bool


def measure(model: ServedModel, samples: Sequence[Sample], *, batch_size: int = 16,
            log: Callable[[str], None] = print) -> list[Measured]:
    """Run ``model`` (classifier and lung segmenter, one pass) over ``samples``; unreadable files are logged."""
    out: list[Measured] = []
    positive = model.classes.index(model.checkpoint.model.positive_class)
    for start in range(0, len(samples), batch_size):
        chunk, inputs = [], []
        for sample in samples[start:start + batch_size]:
            try:
                inputs.append(prepare(load_image(sample.path), model.checkpoint.preprocess)[0])
                chunk.append(sample)
            except MedcamError as err:
                log(f"{sample.path}: left out ({err})")
        if not chunk:
            continue
        batch = torch.stack(inputs)
        output = model.forward(batch)  # classifier and segmenter, one call
        if output.lungs is None:
            raise ConfigError("fitting the lung gate needs a lung segmenter; it was served with --segmenter none")
        probs = model.probabilities(output.logits, output.features)[:, positive].cpu().tolist()
        for sample, values, share, p in zip(chunk, view_measures(output.lungs, batch), model.lung_evidence(output),
                                            probs, strict=True):
            out.append(Measured(sample, values, share, p >= model.checkpoint.threshold))
    return out


def fit_view_check(measured: Sequence[Measured], segmenter_id: str, *, quantile: float = 0.995) -> ViewCheck:
    """Per frontal population: the mean and Ledoit-Wolf covariance of the view measures, and the
    ``quantile`` of its own films' distances as its limit."""
    populations = []
    for name in sorted({m.sample.population for m in measured}):
        values = np.stack([m.measures for m in measured if m.sample.population == name])
        fit = LedoitWolf().fit(values)
        population = FrontalPopulation(name, fit.location_, fit.precision_, 1.0, len(values))
        limit = float(np.quantile(population.distance(values), quantile))
        populations.append(replace(population, limit=limit))
    counts = ", ".join(f"{p.name} {p.n}" for p in populations)
    fitted = (f"the validation films of {counts}; each population's limit is the {quantile:g} quantile of its own "
              "films' distances")
    return ViewCheck(tuple(populations), segmenter_id, fitted)


def evidence_threshold(measured: Sequence[Measured], *, quantile: float = 0.05,
                       where: str = "the validation data") -> float:
    """The ``quantile`` of ``lung_evidence`` over flagged pneumonia films, populations weighing the same.

    Raises:
        ConfigError: ``where`` (the validation films) holds no flagged pneumonia film.
    """
    values: list[float] = []
    weights: list[float] = []
    positives = [m for m in measured if m.flagged and m.sample.label == 1 and m.lung_evidence is not None]
    populations = {m.sample.population for m in positives}
    if not positives:
        raise ConfigError(f"{where}: no flagged pneumonia film with positive map evidence; the lung_evidence "
                          "threshold is set on those")
    for population in populations:
        part = [m.lung_evidence for m in positives if m.sample.population == population and m.lung_evidence is not None]
        values += part
        weights += [1 / len(part)] * len(part)
    order = np.argsort(values)
    cumulative = np.cumsum(np.array(weights)[order]) / len(populations)
    return float(np.array(values)[order][np.searchsorted(cumulative, quantile)])


def fit_lung_gate(model: ServedModel, val: str | Path, out: str | Path, *, view_quantile: float = 0.995,
                  quantile: float = 0.05, log: Callable[[str], None] = print) -> str:
    """Fit both on the validation films of ``val`` and write the checkpoint to ``out``; returns its model id.

    Logs, per population, the limit, the median ``lung_evidence`` and the median share of the image
    inside the two largest lung fields.

    Raises:
        ConfigError: no segmenter (``--segmenter none``), a quantile outside (0, 1), or no flagged
            pneumonia film in ``val``.
    """
    if model.segmenter is None:
        raise ConfigError("fitting the lung gate needs a lung segmenter; it was served with --segmenter none")
    for name, value in (("--quantile", quantile), ("--view-quantile", view_quantile)):
        if not 0 < value < 1:
            raise ConfigError(f"{name} must be between 0 and 1, got {value}")
    samples = read_samples(val, _CLASSES)
    measured = measure(model, samples, log=log)
    check = fit_view_check(measured, model.segmenter_id, quantile=view_quantile)
    threshold = evidence_threshold(measured, quantile=quantile, where=str(val))
    for population in check.populations:
        part = [m for m in measured if m.sample.population == population.name]
        shares = [m.lung_evidence for m in part if m.lung_evidence is not None]
        log(f"{population.name}: {population.n} films; frontal-view limit {population.limit:.2f}; median "
            f"lung_evidence {np.median(shares):.3f}; median lung area {np.median([m.measures[0] for m in part]):.3f}")
    log(f"lung_evidence threshold {threshold:.3f} ({quantile:g} quantile of flagged pneumonia films)")
    with_pneumonia = sorted({m.sample.population for m in measured if m.sample.label == 1})
    rule = (f"the {quantile:g} quantile of lung_evidence over the flagged pneumonia films of the validation splits "
            f"({', '.join(with_pneumonia)}), populations weighing the same")
    return update_checkpoint(model.checkpoint.path,
                             {VIEW_KEY: check.to_metadata(),
                              EVIDENCE_KEY: {"threshold": threshold, "rule": rule, "segmenter": model.segmenter_id}},
                             out=out)


