"""Calibration maps, the screening threshold, ECE and the evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcam.training.calibration import (
    Calibration,
    PopulationCalibration,
    expected_calibration_error,
    fit_calibration,
    fit_operating_point,
    fit_population_operating_point,
    screening_threshold,
)
from medcam.training.evaluate import evaluate_scores


def _cases(n: int, scale: float, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-class logits whose true probability is ``sigmoid((l_1 - l_0) / scale + shift)``."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0, 2, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(int)
    margin = scale * (true_logit - shift)
    return np.stack([np.zeros(n), margin], axis=1), labels


def test_temperature_recovers_the_scale_of_overconfident_logits() -> None:
    logits, labels = _cases(4000, scale=3.0, shift=0.0, seed=0)  # 3x overconfident
    fitted = fit_calibration(logits, labels, bias=False)
    assert fitted.temperature == pytest.approx(3.0, rel=0.1) and fitted.bias is None


def test_platt_scaling_recovers_scale_and_bias() -> None:
    logits, labels = _cases(8000, scale=3.0, shift=0.8, seed=1)
    fitted = fit_calibration(logits, labels)
    assert fitted.temperature == pytest.approx(3.0, rel=0.1)
    assert fitted.bias is not None and fitted.bias[0] == 0.0
    assert fitted.bias[1] == pytest.approx(0.8, abs=0.15)
    no_bias = fit_calibration(logits, labels, bias=False)
    p_platt = fitted(torch.as_tensor(logits))[:, 1].numpy()
    p_temp = no_bias(torch.as_tensor(logits))[:, 1].numpy()
    assert expected_calibration_error(p_platt, labels) < expected_calibration_error(p_temp, labels)


def test_populations_weigh_the_same_whatever_their_size() -> None:
    big, big_labels = _cases(5000, scale=1.0, shift=0.0, seed=2)
    small, small_labels = _cases(250, scale=4.0, shift=0.0, seed=3)
    logits, labels = np.concatenate([big, small]), np.concatenate([big_labels, small_labels])
    groups = np.array(["big"] * 5000 + ["small"] * 250)
    pooled = fit_calibration(logits, labels, bias=False).temperature
    balanced = fit_calibration(logits, labels, groups, bias=False).temperature
    assert pooled < 1.3, "the pooled fit follows the large population"
    assert balanced > pooled + 0.5, "the balanced fit moves towards the small one"


def test_calibration_applies_temperature_and_bias_along_the_class_axis() -> None:
    calibration = Calibration(temperature=2.0, bias=(0.0, 1.0))
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    expected = torch.sigmoid(torch.tensor([2.0 / 2 + 1, -2.0 / 2 + 1]))
    assert torch.allclose(calibration(logits)[:, 1], expected)
    maps = logits.T[:, :, None].expand(2, 2, 3)  # classes first, as maps are (K, rows, cols)
    assert torch.allclose(calibration(maps, dim=0)[1, :, 0], expected)
    assert torch.allclose(Calibration(2.0)(logits), torch.softmax(logits / 2, -1))
    with pytest.raises(ValueError, match="bias has 3 values but the logits 2 classes"):
        Calibration(bias=(0.0, 1.0, 2.0))(logits)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        Calibration(temperature=0.0)
    with pytest.raises(ValueError, match="finite"):
        Calibration(bias=(0.0, float("nan")))


def test_operating_point_reaches_the_sensitivity_in_every_population_and_keeps_the_flags() -> None:
    a, a_labels = _cases(600, scale=0.5, shift=-0.8, seed=4)
    b, b_labels = _cases(80, scale=1.0, shift=0.0, seed=5)
    logits, labels = np.concatenate([a, b]), np.concatenate([a_labels, b_labels])
    groups = np.array(["a"] * 600 + ["b"] * 80)
    platt = fit_operating_point(logits, labels, groups, positive=1, sensitivity=0.9)
    temperature = fit_operating_point(logits, labels, groups, positive=1, sensitivity=0.9, bias=False)
    for name, mask in (("a", groups == "a"), ("b", groups == "b")):
        assert platt.populations[name]["sensitivity"] >= 0.9
        assert platt.populations[name]["n"] == mask.sum()
    flags = [point.calibration(torch.as_tensor(logits))[:, 1].numpy() >= point.threshold
             for point in (platt, temperature)]
    assert np.array_equal(flags[0], flags[1]), "a monotone map of the margin keeps the same cases flagged"


def test_populations_left_out_of_the_fit_are_calibrated_and_reported_but_fit_nothing() -> None:
    """Labels mined from reports can be kept out of the fit: scrambling them changes nothing fitted."""
    a, a_labels = _cases(600, scale=0.5, shift=-0.8, seed=4)
    b, b_labels = _cases(300, scale=1.0, shift=0.5, seed=5)
    logits = np.concatenate([a, b])
    groups = np.array(["a"] * 600 + ["b"] * 300)
    points = [fit_operating_point(logits, np.concatenate([a_labels, b]), groups, positive=1, sensitivity=0.9,
                                  fit_on=["a"])
              for b in (b_labels, np.random.default_rng(0).permutation(b_labels))]
    assert points[0].calibration == points[1].calibration and points[0].threshold == points[1].threshold
    assert points[0].populations["a"]["fitted"] and not points[0].populations["b"]["fitted"]
    assert points[0].populations["b"]["n"] == 300, "a population left out is still reported"
    assert points[0].populations["a"]["sensitivity"] >= 0.9
    alone = fit_operating_point(a, a_labels, groups[:600], positive=1, sensitivity=0.9)
    assert points[0].calibration == alone.calibration and points[0].threshold == alone.threshold
    with pytest.raises(ValueError, match="c to fit on are not in the data"):
        fit_operating_point(logits, np.concatenate([a_labels, b_labels]), groups, 1, 0.9, fit_on=["a", "c"])


def test_population_calibration_gives_each_image_its_population_map() -> None:
    maps = (Calibration(0.5, (0.0, 1.0)), Calibration(3.0, (0.0, -0.5)))
    coef = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # the larger feature names the population
    populations = PopulationCalibration(("children", "adults"), maps, coef, torch.zeros(2, dtype=torch.float64))
    features = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, 1.0]])
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, -2.0]])
    assert populations.population_index(features).tolist() == [0, 1, 0]
    assert populations.select(features) == [maps[0], maps[1], maps[0]]
    expected = torch.cat([maps[0](logits[:1]), maps[1](logits[1:2]), maps[0](logits[2:])])
    torch.testing.assert_close(populations(logits, features), expected)
    back = PopulationCalibration.from_metadata(populations.to_metadata())
    assert back.populations == populations.populations and back.calibrations == maps
    torch.testing.assert_close(back(logits, features), expected)
    with pytest.raises(ValueError, match=r"features must have shape \(B, 2\)"):
        populations(logits, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="two or more distinct populations"):
        PopulationCalibration(("one",), maps[:1], coef[:1], torch.zeros(1))
    with pytest.raises(ValueError, match="newer"):
        PopulationCalibration.from_metadata({**populations.to_metadata(), "version": 2})


def test_a_map_per_population_calibrates_each_where_one_map_cannot() -> None:
    """Two populations whose logits mean different risks; their features tell them apart."""
    rng = np.random.default_rng(7)
    a, a_labels = _cases(1500, scale=0.4, shift=1.5, seed=8)   # underconfident, mostly positive
    b, b_labels = _cases(1500, scale=3.0, shift=-1.0, seed=9)  # overconfident, mostly negative
    logits, labels = np.concatenate([a, b]), np.concatenate([a_labels, b_labels])
    populations = np.array(["a"] * 1500 + ["b1"] * 700 + ["b2"] * 800)

    def features(names: np.ndarray) -> np.ndarray:
        centre = np.where(np.isin(names, ["a"]), 1.5, -1.5)[:, None]
        return centre * np.ones((1, 6)) + rng.normal(0, 1, (len(names), 6))

    train_populations = np.array(["a"] * 400 + ["b1"] * 200 + ["b2"] * 200)
    point = fit_population_operating_point(
        logits, labels, populations, features(populations), positive=1, sensitivity=0.9,
        groups={"A": ["a"], "B": ["b1", "b2"]}, train_features=features(train_populations),
        train_populations=train_populations)
    pooled = fit_operating_point(logits, labels, np.where(populations == "a", "a", "b"), positive=1, sensitivity=0.9)
    assert point.population_calibration is not None and point.population_calibration.populations == ("A", "B")
    assert point.populations["a"]["calibrated_as"]["A"] > 0.97
    assert point.populations["b1"]["calibrated_as"]["B"] > 0.97
    for name in ("a", "b1", "b2"):
        assert point.populations[name]["sensitivity"] >= 0.9
        assert point.populations[name]["ece"] < 0.05
    assert max(pooled.populations[name]["ece"] for name in ("a", "b")) > 0.08
    with pytest.raises(ValueError, match="b2 in no group"):
        fit_population_operating_point(logits, labels, populations, features(populations), 1, 0.9,
                                       groups={"A": ["a"], "B": ["b1"]}, train_features=features(train_populations),
                                       train_populations=train_populations)
    radiologists = fit_population_operating_point(
        logits, labels, populations, features(populations), positive=1, sensitivity=0.9,
        groups={"A": ["a"], "B": ["b1", "b2"]}, train_features=features(train_populations),
        train_populations=train_populations, fit_on=["a", "b1"])
    assert not radiologists.populations["b2"]["fitted"] and radiologists.populations["b2"]["calibrated_as"]["B"] > 0.97
    b1 = populations == "b1"
    alone = fit_operating_point(logits[b1], labels[b1], populations[b1], positive=1, sensitivity=0.9)
    assert radiologists.population_calibration is not None
    assert radiologists.population_calibration.calibrations[1] == alone.calibration, "B's map is b1's alone"
    with pytest.raises(ValueError, match="no validation images of group 'B' to fit its map on"):
        fit_population_operating_point(logits, labels, populations, features(populations), 1, 0.9,
                                       groups={"A": ["a"], "B": ["b1", "b2"]},
                                       train_features=features(train_populations),
                                       train_populations=train_populations, fit_on=["a"])
    with pytest.raises(ValueError, match="in two groups"):
        fit_population_operating_point(logits, labels, populations, features(populations), 1, 0.9,
                                       groups={"A": ["a", "b1"], "B": ["b1", "b2"]},
                                       train_features=features(train_populations), train_populations=train_populations)


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
