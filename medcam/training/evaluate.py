"""``medcam evaluate``: discrimination, calibration and the operating point on labelled data.

Writes to the output folder:

- ``metrics.json``: ``n``, ``n_positive``, ``auroc`` with a bootstrap 95% CI (resampling
  patients when the data names them, since images of one patient are not independent),
  ``threshold`` (the model's operating point), ``sensitivity`` and ``specificity`` there
  (with Wilson 95% CIs), ``ece`` (10 bins), the confusion matrix and the model id;
- ``roc.png``, ``reliability.png`` and ``confusion.png`` (marked as medcam's own, ``Software=medcam``);
- ``predictions.csv``: every image's calibrated probability and label.

When the data names populations (``population`` column, as ``medcam train`` writes its
splits) the same metrics are reported per population in ``groups``, and per view within a
population that has views (``adult/PA``, ``adult/AP``), so that a confounder such as view
cannot carry the overall figure unseen. Where the data keeps a finding finer than the label
(``finding`` column: RSNA's ``PNEUMONIA``, ``NORMAL``, ``OTHER``), a population with two or
more negative findings also gets the positives against each negative finding alone
(``rsna: PNEUMONIA vs NORMAL``: opacity vs normal; ``rsna`` itself is opacity vs all) and the
share flagged of every finding (``rsna: OTHER``). With ``boxes`` (see
:mod:`medcam.training.localisation`), ``localisation`` has the pointing game (the positive class
map's maximum inside a box, 5% of the image side as tolerance) and the best region's IoU with
the boxes, over the images that have boxes, overall and per population
(``localisation.populations``); ``predictions.csv`` then says per image whether the map's peak
hit a box. When the model has image-gate statistics, ``ood_refused`` is the share of
images the gate would refuse.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import sparse
from sklearn.metrics import roc_auc_score, roc_curve
from tqdm import tqdm

from medcam.gate.served import ServedModel
from medcam.io import load_image
from medcam.io.provenance import PNG_TEXT
from medcam.regions import RegionOptions, find_regions
from medcam.training.calibration import expected_calibration_error
from medcam.training.data import Sample, read_samples
from medcam.training.localisation import best_iou, boxes_for, pointing_hit, read_boxes

__all__ = ["Evaluation", "evaluate", "evaluate_scores"]


@dataclass(frozen=True)
class Evaluation:
    """Scores and labels of one evaluation, and the metrics computed from them."""

    metrics: dict[str, Any]
    probs: np.ndarray
    labels: np.ndarray


def _wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [float("nan"), float("nan")]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(centre - half), float(centre + half)]


def _bootstrap_auroc(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                     rounds: int, seed: int, *, block: int = 250) -> list[float]:
    """The percentile 95% interval of the AUROC over ``rounds`` resamples of the groups (patients).

    A resample draws as many patients as there are, with replacement; each image then counts as
    often as its patient was drawn, and the AUROC of that weighted sample is the Mann-Whitney
    statistic: for each positive, the weight of the negatives scored below it plus half of those
    tied with it. Scores are ranked once and the resamples are computed ``block`` at a time as
    matrix products, instead of one ``roc_auc_score`` call per resample (the same figures;
    ``benchmarks/bench_bootstrap.py``). Resamples that hold one class only are left out.
    """
    rng = np.random.default_rng(seed)
    unique, index = np.unique(groups, return_inverse=True)
    values, tie = np.unique(probs, return_inverse=True)
    positive = labels == 1
    by_score = sparse.csr_matrix((np.ones(labels.size), (np.arange(labels.size), tie)),
                                 shape=(labels.size, values.size))
    aurocs = []
    for start in range(0, rounds, block):
        draws = rng.integers(0, len(unique), (min(block, rounds - start), len(unique)))
        offsets = np.arange(len(draws))[:, None] * len(unique)  # one bincount for the whole block
        counts = np.bincount((draws + offsets).ravel(), minlength=draws.size).reshape(draws.shape)
        weights = counts[:, index].astype(np.float64)  # (resamples, images)
        pos = np.asarray((by_score[positive].T @ weights[:, positive].T).T)  # weight per score value
        neg = np.asarray((by_score[~positive].T @ weights[:, ~positive].T).T)
        below = np.cumsum(neg, axis=1) - neg
        pairs = pos.sum(axis=1) * neg.sum(axis=1)
        both = pairs > 0
        aurocs.append((pos * (below + 0.5 * neg)).sum(axis=1)[both] / pairs[both])
    low, high = np.percentile(np.concatenate(aurocs), [2.5, 97.5])
    return [float(low), float(high)]


def evaluate_scores(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, threshold: float,
                    *, rounds: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Metrics of positive-class probabilities ``probs`` against binary ``labels``."""
    probs, labels = np.asarray(probs, float), np.asarray(labels, int)
    predicted = probs >= threshold
    tp = int(np.sum(predicted & (labels == 1)))
    fn = int(np.sum(~predicted & (labels == 1)))
    tn = int(np.sum(~predicted & (labels == 0)))
    fp = int(np.sum(predicted & (labels == 0)))
    return {
        "n": int(labels.size),
        "n_positive": int(labels.sum()),
        "n_groups": int(np.unique(groups).size),
        "auroc": float(roc_auc_score(labels, probs)),
        "auroc_ci95": _bootstrap_auroc(probs, labels, groups, rounds, seed),
        "auroc_ci_method": f"percentile bootstrap, {rounds} resamples of patients",
        "threshold": float(threshold),
        "sensitivity": tp / max(tp + fn, 1),
        "sensitivity_ci95": _wilson(tp, tp + fn),
        "specificity": tn / max(tn + fp, 1),
        "specificity_ci95": _wilson(tn, tn + fp),
        "ppv": tp / max(tp + fp, 1),
        "npv": tn / max(tn + fn, 1),
        "ece": expected_calibration_error(probs, labels),
        "confusion": {"tp": tp, "fn": fn, "tn": tn, "fp": fp},
    }


def evaluate(classifier: ServedModel, data: str | Path, out: str | Path, *, batch_size: int = 16,
             command: str = "", boxes: str | Path | None = None,
             regions: RegionOptions | None = None) -> Evaluation:
    """Score every labelled image of ``data`` (CSV or class folders) and write the report.

    ``command``, when given, is recorded in ``metrics.json`` (the command line that made it).
    ``boxes``: a CSV of reference boxes for the localisation metrics; ``regions``: how the
    regions whose IoU is measured are cut (default: half the map's maximum).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = classifier.checkpoint
    samples = read_samples(data, ckpt.model.classes)
    positive = ckpt.model.classes.index(ckpt.model.positive_class)
    reference = read_boxes(boxes) if boxes is not None else {}
    probs = np.empty(len(samples))
    ood: list[float] = []
    hits: list[bool] = []
    ious: list[float] = []
    hit_of: dict[int, bool] = {}
    for start in tqdm(range(0, len(samples), batch_size), desc="evaluate", unit="batch"):
        chunk = samples[start:start + batch_size]
        predictions = classifier.classify([load_image(s.path) for s in chunk], batch_size=batch_size)
        probs[start:start + len(chunk)] = [float(p.probabilities[positive]) for p in predictions]
        ood += [p.ood_score for p in predictions if p.ood_score is not None]
        for index, (sample, prediction) in enumerate(zip(chunk, predictions, strict=True), start=start):
            gt = boxes_for(sample.path, reference)
            if gt:
                hits.append(pointing_hit(prediction.maps[positive], gt))
                hit_of[index] = hits[-1]
                found = find_regions(prediction, prediction.positive_class, regions or RegionOptions())
                ious.append(best_iou([r.bbox for r in found], gt))
    labels = np.array([int(s.label == positive) for s in samples])
    groups = np.array([s.patient_id for s in samples])
    metrics = evaluate_scores(probs, labels, groups, ckpt.threshold)
    metrics["groups"] = _group_metrics(samples, probs, labels, groups, ckpt.threshold)
    if reference:
        metrics["localisation"] = {"n_with_boxes": len(hits), "pointing_game": float(np.mean(hits)) if hits else None,
                                   "pointing_tolerance": 0.05,
                                   "mean_best_iou": float(np.mean(ious)) if ious else None,
                                   "regions": (regions or RegionOptions()).describe(), "boxes": str(boxes),
                                   "populations": _pointing_by_population(samples, hit_of)}
    if ood and classifier.ood is not None:
        metrics["ood_refused"] = float(np.mean(np.array(ood) > classifier.ood.threshold))
    metrics.update({"model": ckpt.model_id, "data": str(data), "positive_class": ckpt.model.positive_class,
                    "temperature": ckpt.temperature, "class_bias": ckpt.class_bias, "command": command})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_predictions(out / "predictions.csv", samples, probs, labels, hit_of)
    _plot_roc(out / "roc.png", probs, labels, metrics)
    _plot_reliability(out / "reliability.png", probs, labels, metrics)
    _plot_confusion(out / "confusion.png", metrics, ckpt.model.positive_class)
    return Evaluation(metrics, probs, labels)


def _group_metrics(samples: Sequence[Sample], probs: np.ndarray, labels: np.ndarray, patients: np.ndarray,
                   threshold: float) -> dict[str, dict[str, Any]]:
    """The metrics of each population, of each view within it, and of its findings (module docstring)."""
    keys: dict[str, np.ndarray] = {}
    populations = np.array([s.population for s in samples])
    views = np.array([s.view for s in samples])
    findings = np.array([s.finding for s in samples])
    for population in sorted(set(populations) - {""}):
        inside = populations == population
        keys[population] = inside
        for view in sorted(set(views[inside]) - {""}):
            keys[f"{population}/{view}"] = inside & (views == view)
        negative = sorted(set(findings[inside & (labels == 0)]) - {""})
        if len(negative) >= 2:
            positive = sorted(set(findings[inside & (labels == 1)]) - {""})
            for finding in negative:
                name = f"{population}: {'/'.join(positive) or 'positive'} vs {finding}"
                keys[name] = inside & ((labels == 1) | (findings == finding))
            for finding in [*positive, *negative]:
                keys[f"{population}: {finding}"] = inside & (findings == finding)
    out: dict[str, dict[str, Any]] = {}
    for name, mask in keys.items():
        if labels[mask].min() == labels[mask].max():  # one class only: no AUROC, the share flagged
            out[name] = {"n": int(mask.sum()), "n_positive": int(labels[mask].sum()), "auroc": None,
                         "flagged": float(np.mean(probs[mask] >= threshold))}
            continue
        out[name] = evaluate_scores(probs[mask], labels[mask], patients[mask], threshold)
    return out


def _pointing_by_population(samples: Sequence[Sample], hit_of: dict[int, bool]) -> dict[str, dict[str, Any]]:
    by: dict[str, list[bool]] = {}
    for index, hit in hit_of.items():
        by.setdefault(samples[index].population or "all", []).append(hit)
    return {name: {"n_with_boxes": len(found), "pointing_game": float(np.mean(found))} for name, found in by.items()}


def _write_predictions(path: Path, samples: Sequence[Sample], probs: np.ndarray, labels: np.ndarray,
                       hit_of: dict[int, bool]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "patient_id", "population", "view", "finding", "label", "probability", "pointing_hit"])
        for index, (s, p, y) in enumerate(zip(samples, probs, labels, strict=True)):
            hit = "" if index not in hit_of else int(hit_of[index])
            writer.writerow([s.path, s.patient_id, s.population, s.view, s.finding, int(y), f"{p:.6f}", hit])


def _plot_roc(path: Path, probs: np.ndarray, labels: np.ndarray, m: dict[str, Any]) -> None:
    fpr, tpr, _ = roc_curve(labels, probs)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    low, high = m["auroc_ci95"]
    ax.plot(fpr, tpr, lw=2, label=f"AUROC {m['auroc']:.3f} (95% CI {low:.3f}-{high:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.scatter([1 - m["specificity"]], [m["sensitivity"]], c="red", zorder=3,
               label=f"operating point p >= {m['threshold']:.3f}")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC, n = {m['n']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_TEXT)
    plt.close(fig)


def _plot_reliability(path: Path, probs: np.ndarray, labels: np.ndarray, m: dict[str, Any], bins: int = 10) -> None:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    centres, observed, counts = [], [], []
    for b in range(bins):
        mask = which == b
        if mask.any():
            centres.append(probs[mask].mean())
            observed.append(labels[mask].mean())
            counts.append(int(mask.sum()))
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    ax.plot(centres, observed, marker="o", label=f"model (ECE {m['ece']:.3f})")
    for x, y, n in zip(centres, observed, counts, strict=True):
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="Reliability (10 bins)",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_TEXT)
    plt.close(fig)


def _plot_confusion(path: Path, m: dict[str, Any], positive: str) -> None:
    c = m["confusion"]
    matrix = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    fig, ax = plt.subplots(figsize=(4, 3.6), dpi=120)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=12,
                color="white" if v > matrix.max() / 2 else "black")
    names = [f"not {positive}", positive]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set(xlabel="predicted", ylabel="true", title=f"threshold p >= {m['threshold']:.3f}")
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_TEXT)
    plt.close(fig)
