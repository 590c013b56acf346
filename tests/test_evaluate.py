"""``medcam evaluate``: metrics per population and view, and the localisation metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from sklearn.metrics import roc_auc_score

from medcam.cli import main
from medcam.models import load_checkpoint
from medcam.training.evaluate import _bootstrap_auroc
from medcam.training.localisation import best_iou, box_iou, boxes_for, pointing_hit, read_boxes
from medcam.training.modelcard import render_model_card


def test_pointing_hit_uses_the_peak_pixel_centre_and_the_tolerance() -> None:
    heat = torch.zeros(100, 200)
    heat[40, 150] = 1.0  # centre (40.5, 150.5)
    assert pointing_hit(heat, [(40, 150, 41, 151)])
    assert not pointing_hit(heat, [(0, 0, 30, 100)], tolerance=0.0)
    assert pointing_hit(heat, [(0, 0, 35, 145)], tolerance=0.05)  # 10 px of slack on a 200 px side
    assert not pointing_hit(heat, [(0, 0, 25, 135)], tolerance=0.05)


def test_box_iou_and_best_iou() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert best_iou([], [(0, 0, 1, 1)]) == 0.0
    assert best_iou([(0, 0, 10, 10), (5, 0, 15, 10)], [(5, 0, 15, 10)]) == 1.0


def test_boxes_file_by_file_name_or_patient_id(tmp_path: Path) -> None:
    path = tmp_path / "boxes.csv"
    path.write_text("patient_id,x,y,width,height\nabc,10,20,30,40\nabc,0,0,1,1\n")
    boxes = read_boxes(path)
    assert boxes_for("/data/abc.dcm", boxes) == [(20, 10, 60, 40), (0, 0, 1, 1)]
    assert boxes_for("/data/other.dcm", boxes) == []


def _data(tmp_path: Path) -> Path:
    """16 PNGs of two populations; the adults have views. Pneumonia images carry a bright blob."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        label = i % 2
        image = rng.normal(90, 15, (96, 96)).clip(0, 255)
        if label:
            image[20:50, 50:80] = 230
        name = f"img{i:02d}.png"
        PILImage.fromarray(image.astype(np.uint8)).save(tmp_path / name)
        population = "adult" if i < 8 else "child"
        view = ("PA" if i % 4 < 2 else "AP") if population == "adult" else ""
        rows.append([name, label, f"p{i}", population, view])
    with open(tmp_path / "data.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "label", "patient_id", "population", "view"], *rows])
    with open(tmp_path / "boxes.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "x", "y", "width", "height"],
                                 *[[f"img{i:02d}.png", 50, 20, 30, 30] for i in range(1, 16, 2)]])
    return tmp_path / "data.csv"


def test_the_bootstrap_interval_is_that_of_one_roc_auc_per_resample_of_patients() -> None:
    """The weighted Mann-Whitney sums give what resampling patients and scoring each resample gives."""
    rng = np.random.default_rng(5)
    labels = (rng.random(90) < 0.4).astype(int)
    probs = np.round(rng.random(90) + 0.5 * labels, 1)  # rounded: many ties
    patients = rng.integers(0, 40, 90)  # some patients with several images
    draws = np.random.default_rng(0)
    members = [np.flatnonzero(patients == p) for p in np.unique(patients)]
    values = []
    for _ in range(300):
        rows = np.concatenate([members[i] for i in draws.integers(0, len(members), len(members))])
        if labels[rows].min() != labels[rows].max():
            values.append(roc_auc_score(labels[rows], probs[rows]))
    expected = np.percentile(values, [2.5, 97.5])
    np.testing.assert_allclose(_bootstrap_auroc(probs, labels, patients, 300, 0, block=64), expected, atol=1e-12)
    low, high = _bootstrap_auroc(probs, labels, np.arange(90), 300, 0)
    assert low <= roc_auc_score(labels, probs) <= high


def test_evaluate_reports_each_population_view_and_the_localisation(tiny_checkpoint: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = _data(tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(tiny_checkpoint), "--data", str(data), "--out", str(out),
                 "--boxes", str(tmp_path / "boxes.csv")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["groups"]) == {"adult", "adult/AP", "adult/PA", "child"}
    assert metrics["groups"]["adult"]["n"] == 8 and metrics["groups"]["adult/PA"]["n"] == 4
    for group in metrics["groups"].values():
        assert 0 <= group["auroc"] <= 1 and 0 <= group["ece"] <= 1
    with open(out / "predictions.csv", newline="") as f:
        probs = {Path(r["file"]).name: float(r["probability"]) for r in csv.DictReader(f)}
    child = [(probs[f"img{i:02d}.png"], i % 2) for i in range(8, 16)]
    pairs = [(p, q) for p, y in child if y for q, z in child if not z]
    expected = sum((p > q) + 0.5 * (p == q) for p, q in pairs) / len(pairs)
    assert metrics["groups"]["child"]["auroc"] == pytest.approx(expected)  # computed on the children only
    localisation = metrics["localisation"]
    assert localisation["n_with_boxes"] == 8 and 0 <= localisation["pointing_game"] <= 1
    assert 0 <= localisation["mean_best_iou"] <= 1
    assert "adult/PA" in capsys.readouterr().out
    card = render_model_card(load_checkpoint(tiny_checkpoint), {"test": out}, notes="## Notes\n\nseen")
    assert "Not for clinical use" in card and "## Notes" in card
    for group in ("adult", "adult/PA", "adult/AP", "child"):
        assert f"**{group}**" in card
    assert f"{metrics['groups']['child']['auroc']:.3f}" in card
