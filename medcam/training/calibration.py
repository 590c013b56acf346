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

from dataclasses import dataclass, field

import numpy as np
import torch

from medcam.models.calibration import Calibration

__all__ = ["Calibration", "OperatingPoint", "expected_calibration_error", "fit_calibration", "fit_operating_point",
           "operating_threshold", "screening_threshold"]


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
        calibration: fitted with every population weighing the same.
        threshold: the one threshold for every population (:func:`operating_threshold`).
        populations: per population, ``ece``, ``sensitivity`` and ``specificity`` at the
            threshold, ``n`` and ``n_positive``, on the data the fit saw.
    """

    calibration: Calibration
    threshold: float
    populations: dict[str, dict[str, float]] = field(default_factory=dict)


def fit_operating_point(logits: np.ndarray, labels: np.ndarray, populations: np.ndarray, positive: int,
                        sensitivity: float, *, bias: bool = True) -> OperatingPoint:
    """Calibrate ``logits`` (:func:`fit_calibration`, populations weighted equally) and choose the
    threshold reaching ``sensitivity`` in every population, on validation data.

    Args:
        logits: ``(N, K)`` raw logits; labels: ``(N,)`` class indices; populations: ``(N,)`` names.
        positive: the index of the class that is screened for.
        bias: Platt scaling; False fits a temperature alone.
    """
    labels, populations = np.asarray(labels), np.asarray(populations)
    calibration = fit_calibration(logits, labels, populations, bias=bias)
    probs = calibration(torch.as_tensor(np.asarray(logits), dtype=torch.float64))[:, positive].numpy()
    hit = labels == positive
    threshold = operating_threshold(probs, hit, populations, sensitivity)
    figures = {
        str(name): {"n": int(mask.sum()), "n_positive": int(hit[mask].sum()),
                    "ece": expected_calibration_error(probs[mask], hit[mask]),
                    "sensitivity": float(np.mean(probs[mask & hit] >= threshold)),
                    "specificity": float(np.mean(probs[mask & ~hit] < threshold))}
        for name in dict.fromkeys(populations.tolist()) for mask in [populations == name]}
    return OperatingPoint(calibration, threshold, figures)
