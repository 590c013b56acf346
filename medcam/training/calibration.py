"""Fitting calibration and operating points: the calibration map's fit, screening threshold, ECE.

A model's calibrated probabilities are ``softmax(logits / T + b)``
(:class:`Calibration`): temperature scaling (Guo et al., "On Calibration of Modern Neural
Networks", ICML 2017) when ``b`` is absent, and Platt scaling (Platt, "Probabilistic outputs
for support vector machines", 1999) generalised to K classes with a per-class bias ``b``.
For two classes, ``p = sigmoid((l_1 - l_0) / T + b_1 - b_0)``: a monotone map of the logit
margin, so neither changes the ranking (AUROC) and a threshold on the margin keeps its flags.

Example:
    >>> import torch
    >>> calibration = Calibration(temperature=2.0, bias=(0.0, 0.5))
    >>> calibration(torch.tensor([[0.0, 1.0]]))  # sigmoid(1 / 2 + 0.5)
    tensor([[0.2689, 0.7311]])
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from medcam.models.calibration import Calibration, PopulationCalibration

__all__ = ["Calibration", "OperatingPoint", "PopulationCalibration", "expected_calibration_error", "fit_calibration",
           "fit_discriminant", "fit_operating_point", "fit_population_operating_point", "operating_threshold",
           "screening_threshold"]


def fit_calibration(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None, *,
                    bias: bool = True) -> Calibration:
    """The :class:`Calibration` minimising the negative log-likelihood of ``labels``.

    Args:
        logits: ``(N, K)`` raw logits.
        labels: ``(N,)`` class indices.
        groups: ``(N,)`` population of each case, or None. Each population then weighs the
            same in the likelihood whatever its size, so that a small population is not
            calibrated for the large one's sake.
        bias: fit a per-class bias (Platt scaling); False fits the temperature alone.

    ``T`` is optimised in log space with L-BFGS, the bias of the first class stays 0.
    """
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if x.ndim != 2 or y.shape != x.shape[:1]:
        raise ValueError(f"logits must be (N, K) and labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    weights = torch.full((len(y),), 1.0 / max(len(y), 1), dtype=torch.float64)
    if groups is not None:
        names, index = np.unique(np.asarray(groups), return_inverse=True)
        counts = np.bincount(index, minlength=len(names))
        weights = torch.as_tensor(1.0 / (len(names) * counts[index]), dtype=torch.float64)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    shift = torch.zeros(x.shape[1] - 1, dtype=torch.float64, requires_grad=bias)
    optimiser = torch.optim.LBFGS([log_t, shift] if bias else [log_t], lr=0.1, max_iter=200,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        z = x / log_t.exp() + torch.cat([shift.new_zeros(1), shift])
        loss = (weights * torch.nn.functional.cross_entropy(z, y, reduction="none")).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    fitted = tuple([0.0, *(float(b) for b in shift.detach())]) if bias else None
    return Calibration(float(log_t.detach().exp()), fitted)


def screening_threshold(probs: np.ndarray, positive: np.ndarray, sensitivity: float) -> float:
    """A threshold reaching ``sensitivity`` (``probs >= t`` among positives), as high as possible.

    The threshold sits halfway between the score of the last positive that must be caught and
    the next lower score of any case, not on that positive's score itself: a probability that
    moves by rounding (another CPU, float16 weights) must not drop it below the threshold.
    """
    probs = np.asarray(probs, dtype=float)
    scores = np.sort(probs[np.asarray(positive, dtype=bool)])[::-1]
    if scores.size == 0:
        raise ValueError("no positive cases: cannot choose a screening threshold")
    needed = max(1, int(np.ceil(sensitivity * scores.size)))
    threshold = float(scores[needed - 1])
    lower = probs[probs < threshold]
    return (threshold + float(lower.max())) / 2 if lower.size else threshold


def operating_threshold(probs: np.ndarray, positive: np.ndarray, groups: np.ndarray, sensitivity: float) -> float:
    """One threshold for every population: the lowest of their :func:`screening_threshold` s,
    so that each population reaches ``sensitivity``."""
    probs, positive, groups = np.asarray(probs, dtype=float), np.asarray(positive, dtype=bool), np.asarray(groups)
    return min(screening_threshold(probs[groups == name], positive[groups == name], sensitivity)
               for name in dict.fromkeys(groups.tolist()))


def expected_calibration_error(probs: np.ndarray, positive: np.ndarray, bins: int = 10) -> float:
    """ECE of the positive-class probability over ``bins`` equal-width bins."""
    probs = np.asarray(probs, dtype=float)
    positive = np.asarray(positive, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(probs[mask].mean() - positive[mask].mean())
    return float(ece)


@dataclass(frozen=True)
class OperatingPoint:
    """A calibration map, the threshold on its probabilities, and what they give per population.

    Attributes:
        calibration: fitted with every fitted population weighing the same.
        threshold: the one threshold for every population (:func:`operating_threshold` of the
            fitted populations).
        populations: per population, ``ece``, ``sensitivity`` and ``specificity`` at the
            threshold, ``n``, ``n_positive`` and ``fitted`` (whether its labels took part in the
            fit), on the data the fit saw; with a population calibration also ``calibrated_as``,
            the share of its images given each map.
        population_calibration: one map per group of populations, chosen per image from its
            features, which then replaces :attr:`calibration` (the threshold and figures are
            of its probabilities); or None.
    """

    calibration: Calibration
    threshold: float
    populations: dict[str, dict[str, Any]] = field(default_factory=dict)
    population_calibration: PopulationCalibration | None = None


def fit_operating_point(logits: np.ndarray, labels: np.ndarray, populations: np.ndarray, positive: int,
                        sensitivity: float, *, bias: bool = True,
                        fit_on: Collection[str] | None = None) -> OperatingPoint:
    """Calibrate ``logits`` (:func:`fit_calibration`, populations weighted equally) and choose the
    threshold reaching ``sensitivity`` in every population, on validation data.

    Args:
        logits: ``(N, K)`` raw logits; labels: ``(N,)`` class indices; populations: ``(N,)`` names.
        positive: the index of the class that is screened for.
        bias: Platt scaling; False fits a temperature alone.
        fit_on: the populations whose labels fit the map and the threshold (by default all);
            the others are only reported, e.g. a source whose labels were mined from reports.

    Raises:
        ValueError: ``fit_on`` names a population the data does not hold.
    """
    labels, populations = np.asarray(labels), np.asarray(populations).astype(str)
    fitted = _fitted(populations, fit_on)
    logits = np.asarray(logits)
    calibration = fit_calibration(logits[fitted], labels[fitted], populations[fitted], bias=bias)
    probs = calibration(torch.as_tensor(logits, dtype=torch.float64))[:, positive].numpy()
    return _operating_point(calibration, probs, labels == positive, populations, sensitivity, fitted)


def fit_population_operating_point(logits: np.ndarray, labels: np.ndarray, populations: np.ndarray,
                                   features: np.ndarray, positive: int, sensitivity: float, *,
                                   groups: Mapping[str, Sequence[str]], train_features: np.ndarray,
                                   train_populations: np.ndarray, bias: bool = True,
                                   fit_on: Collection[str] | None = None) -> OperatingPoint:
    """One calibration map per group of populations, the group told from the features; one threshold.

    A linear discriminant (sklearn's :class:`~sklearn.discriminant_analysis.LinearDiscriminantAnalysis`,
    Ledoit-Wolf shrinkage, as 1024 features against a few thousand films call for) is fitted on
    the training images' pooled features to tell the groups apart. Each group's map is fitted
    on its own validation images (its populations weighing the same); the validation images
    are then calibrated as served, by the group the discriminant picks, and the threshold
    reaches ``sensitivity`` in every population. The point's :attr:`~OperatingPoint.calibration`
    is the one map of :func:`fit_operating_point`, kept as the checkpoint's plain calibration.

    Args:
        logits, labels, populations: validation images, as :func:`fit_operating_point`.
        features: ``(N, C)`` pooled features of the same validation images.
        groups: group name -> the populations it holds, e.g. ``{"adult": ["adult", "rsna"],
            "pediatric": ["pediatric"]}``; every population must be in one group.
        train_features, train_populations: ``(M, C)`` and ``(M,)`` of the training images.
        fit_on: the populations whose labels fit the maps and the threshold (by default all); the
            others still train the discriminant, take their group's map and are reported.

    Raises:
        ValueError: a population is in no group or in two, a group has no images to fit its map
            on, or ``fit_on`` names a population the data does not hold.
    """
    member: dict[str, str] = {}
    for name, held in groups.items():
        for population in held:
            if population in member:
                raise ValueError(f"population {population!r} is in two groups, {member[population]!r} and {name!r}")
            member[population] = name
    labels, populations = np.asarray(labels), np.asarray(populations).astype(str)
    fitted = _fitted(populations, fit_on)
    train_populations = np.asarray(train_populations).astype(str)
    unknown = sorted((set(populations) | set(train_populations)) - set(member))
    if unknown:
        raise ValueError(f"population(s) {', '.join(unknown)} in no group of {dict(groups)}")
    names, coef, intercept = fit_discriminant(np.asarray(train_features), [member[p] for p in train_populations])
    in_group = np.array([member[p] for p in populations])
    logits = np.asarray(logits)
    maps = []
    for name in names:
        mask = (in_group == name) & fitted
        if not mask.any():
            raise ValueError(f"no validation images of group {name!r} to fit its map on")
        maps.append(fit_calibration(logits[mask], labels[mask], populations[mask], bias=bias))
    calibration = PopulationCalibration(names, tuple(maps), coef, intercept)
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    probs = calibration(torch.as_tensor(logits, dtype=torch.float64), x)[:, positive].numpy()
    chosen = np.array(names)[calibration.population_index(x).numpy()]
    plain = fit_calibration(logits[fitted], labels[fitted], populations[fitted], bias=bias)
    point = _operating_point(plain, probs, labels == positive, populations, sensitivity, fitted, calibration)
    for population, figures in point.populations.items():
        mask = populations == population
        figures["calibrated_as"] = {name: float(np.mean(chosen[mask] == name)) for name in names}
    return point


def fit_discriminant(features: np.ndarray, names: Sequence[str]) -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor]:
    """The group names, ``coef`` ``(P, C)`` and ``intercept`` ``(P,)`` of a shrunk linear discriminant of
    ``features`` ``(M, C)`` by ``names``: an image's group is the argmax of ``features @ coef.T + intercept``."""
    found = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(np.asarray(features, dtype=np.float64),
                                                                             list(names))
    coef, intercept = found.coef_, found.intercept_
    if len(found.classes_) == 2:  # sklearn gives one row for two groups: the second's score against the first's 0
        coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
        intercept = np.array([0.0, intercept[0]])
    return tuple(str(c) for c in found.classes_), torch.from_numpy(coef), torch.from_numpy(intercept)


def _fitted(populations: np.ndarray, fit_on: Collection[str] | None) -> np.ndarray:
    """Which images' labels take part in a fit: those of the ``fit_on`` populations, or all."""
    if fit_on is None:
        return np.ones(len(populations), dtype=bool)
    missing = sorted(set(fit_on) - set(populations.tolist()))
    if missing:
        raise ValueError(f"population(s) {', '.join(missing)} to fit on are not in the data "
                         f"({', '.join(sorted(set(populations.tolist())))})")
    return np.isin(populations, list(fit_on))


def _operating_point(calibration: Calibration, probs: np.ndarray, hit: np.ndarray, populations: np.ndarray,
                     sensitivity: float, fitted: np.ndarray,
                     by_population: PopulationCalibration | None = None) -> OperatingPoint:
    threshold = operating_threshold(probs[fitted], hit[fitted], populations[fitted], sensitivity)
    figures: dict[str, dict[str, Any]] = {
        str(name): {"n": int(mask.sum()), "n_positive": int(hit[mask].sum()), "fitted": bool(fitted[mask].any()),
                    "ece": expected_calibration_error(probs[mask], hit[mask]),
                    "sensitivity": float(np.mean(probs[mask & hit] >= threshold)),
                    "specificity": float(np.mean(probs[mask & ~hit] < threshold))}
        for name in dict.fromkeys(populations.tolist()) for mask in [populations == name]}
    return OperatingPoint(calibration, threshold, figures, by_population)
