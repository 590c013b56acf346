"""Temperature scaling, the screening threshold, ECE and the evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest

from medcam.calibration import expected_calibration_error, fit_temperature, screening_threshold
from medcam.evaluate import evaluate_scores


def test_temperature_recovers_the_scale_of_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    logits = np.stack([np.zeros_like(true_logit), 3 * true_logit], axis=1)  # 3x overconfident
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.1)


def test_screening_threshold_reaches_the_sensitivity() -> None:
    rng = np.random.default_rng(1)
    probs = rng.random(500)
    positive = rng.random(500) < probs
    t = screening_threshold(probs, positive, 0.95)
    assert np.mean(probs[positive] >= t) >= 0.95
    next_up = probs[probs > t].min()  # raising the threshold past the next case loses sensitivity
    assert np.mean(probs[positive] > next_up) < 0.95
    next_down = probs[probs < t].max()  # and the margin is halfway to the next case below
    assert t == pytest.approx((next_up + next_down) / 2)


def test_ece_is_zero_for_calibrated_bins_and_large_for_wrong_ones() -> None:
    probs = np.repeat([0.25, 0.75], 400)
    labels = np.concatenate([np.arange(400) < 100, np.arange(400) < 300]).astype(int)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(probs, 1 - labels) == pytest.approx(0.5)


def test_evaluate_scores_counts_and_intervals() -> None:
    probs = np.array([0.9, 0.8, 0.3, 0.6, 0.1, 0.2])
    labels = np.array([1, 1, 1, 0, 0, 0])
    groups = np.array(["a", "b", "c", "d", "e", "f"])
    m = evaluate_scores(probs, labels, groups, threshold=0.5, rounds=200)
    assert m["confusion"] == {"tp": 2, "fn": 1, "tn": 2, "fp": 1}
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(2 / 3)
    assert m["auroc"] == pytest.approx(8 / 9)
    low, high = m["auroc_ci95"]
    assert 0 <= low <= m["auroc"] <= high <= 1
