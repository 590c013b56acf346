"""Calibration and operating points: temperature scaling, screening threshold, ECE."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["expected_calibration_error", "fit_temperature", "screening_threshold"]


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of ``softmax(logits / T)``.

    Guo et al., "On Calibration of Modern Neural Networks", ICML 2017. T is optimised in
    log space with L-BFGS; it does not change the ranking (AUROC) of the predictions.
    """
    x = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.detach().exp())


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
