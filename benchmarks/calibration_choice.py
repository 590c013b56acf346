"""Which calibration map for several populations? Compared on the validation split only.

    python benchmarks/calibration_choice.py runs/adult/val.csv

The model's logits on the split (``--model``, default the bundled one; the calibration does
not change them) are calibrated by four maps, each fitted by negative log-likelihood
(:func:`medcam.training.calibration.fit_calibration`):

- ``pooled T``: one temperature on the pooled split (the larger population dominates);
- ``balanced T``: one temperature, every population weighing the same;
- ``balanced Platt``: one temperature and class bias, every population weighing the same;
- ``per-population T``: a temperature per population (needs the population at inference).

Each map's per-population ECE (10 bins) and NLL are printed fitted on the whole split (in
sample) and out of fold (5-fold cross-validation grouped by patient within the split,
``--repeats`` times, mean over repeats), followed by each population's own temperature with
a patient-bootstrap 95% interval. The test split is never read.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch

from medcam.gate import ServedModel, collect_features
from medcam.training.calibration import Calibration, expected_calibration_error, fit_calibration
from medcam.training.data import read_samples

Fitted = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (logits, populations) -> positive probability


def _apply(calibration: Calibration, logits: np.ndarray) -> np.ndarray:
    return calibration(torch.as_tensor(logits))[:, 1].numpy()


def _fit(kind: str, logits: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> Fitted:
    if kind == "pooled T":
        pooled = fit_calibration(logits, labels, bias=False)
        return lambda x, g: _apply(pooled, x)
    if kind in ("balanced T", "balanced Platt"):
        balanced = fit_calibration(logits, labels, groups, bias=kind == "balanced Platt")
        return lambda x, g: _apply(balanced, x)
    own = {name: fit_calibration(logits[groups == name], labels[groups == name], bias=False)
           for name in np.unique(groups)}

    def per_population(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        for name, calibration in own.items():
            out[g == name] = _apply(calibration, x[g == name])
        return out
    return per_population


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", help="the validation CSV (population and patient_id columns)")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    classifier = ServedModel(args.model)
    if len(classifier.classes) != 2:
        raise SystemExit(f"{classifier.checkpoint.model_id} has {len(classifier.classes)} classes; this compares "
                         "maps for two-class models")
    positive = classifier.classes.index(classifier.checkpoint.model.positive_class)
    samples = read_samples(args.split, classifier.classes)
    found = collect_features(classifier, [s.path for s in samples])
    assert found.logits is not None and not found.failures, found.failures
    logits = found.logits.double().numpy()[:, [1 - positive, positive]]  # the positive class second
    labels = np.array([int(s.label == positive) for s in samples])
    groups = np.array([s.population or "all" for s in samples])
    patients = np.array([s.patient_id for s in samples])
    names = list(dict.fromkeys(groups.tolist()))
    kinds = ["pooled T", "balanced T", "balanced Platt", "per-population T"]
    rng = np.random.default_rng(args.seed)

    def row(probs: np.ndarray) -> str:
        return "  ".join(f"{n} ECE {expected_calibration_error(probs[groups == n], labels[groups == n]):.3f} "
                         f"NLL {_nll(probs[groups == n], labels[groups == n]):.3f}" for n in names)

    print(f"{classifier.checkpoint.model_id} on {args.split}: "
          + ", ".join(f"{n} {int((groups == n).sum())} images" for n in names))
    print("in sample (fitted on the whole split):")
    for kind in kinds:
        print(f"  {kind:17s} {row(_fit(kind, logits, labels, groups)(logits, groups))}")
    unique = np.unique(patients)
    scores = {kind: {n: np.zeros(2) for n in names} for kind in kinds}
    for _ in range(args.repeats):
        fold_of = dict(zip(unique, rng.integers(0, 5, unique.size), strict=True))
        folds = np.array([fold_of[p] for p in patients])
        oof = {kind: np.empty(len(labels)) for kind in kinds}
        for fold in range(5):
            train, held = folds != fold, folds == fold
            for kind in kinds:
                oof[kind][held] = _fit(kind, logits[train], labels[train], groups[train])(logits[held], groups[held])
        for kind in kinds:
            for n in names:
                mask = groups == n
                scores[kind][n] += [expected_calibration_error(oof[kind][mask], labels[mask]),
                                    _nll(oof[kind][mask], labels[mask])]
    print(f"out of fold (5-fold, grouped by patient, mean of {args.repeats} repeats):")
    for kind in kinds:
        print(f"  {kind:17s} " + "  ".join(f"{n} ECE {scores[kind][n][0] / args.repeats:.3f} "
                                           f"NLL {scores[kind][n][1] / args.repeats:.3f}" for n in names))
    for n in names:
        mask = groups == n
        own = fit_calibration(logits[mask], labels[mask], bias=False).temperature
        members = [np.flatnonzero(mask & (patients == p)) for p in np.unique(patients[mask])]
        boot = [fit_calibration(logits[rows], labels[rows], bias=False).temperature
                for rows in (np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
                             for _ in range(500))]
        low, high = np.percentile(boot, [2.5, 97.5])
        print(f"{n}: own temperature {own:.3f} (patient bootstrap 95% interval {low:.3f}-{high:.3f})")


if __name__ == "__main__":
    main()
