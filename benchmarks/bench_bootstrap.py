"""The patient-bootstrap AUROC interval of ``medcam evaluate``: one ``roc_auc_score`` call per
resample (the baseline) against all resamples as weighted Mann-Whitney sums in matrix products
(what ``medcam.training.evaluate`` does), on the same draws, in the same run.

By default on synthetic splits of the sizes evaluated here (16 images, an RSNA-sized 131 and
a whole 863-image test split; about two images per patient); with ``--predictions`` on a
``medcam evaluate`` output (``predictions.csv``) and the split it evaluated (patients from its
``patient_id`` column):

    python benchmarks/bench_bootstrap.py
    python benchmarks/bench_bootstrap.py --predictions runs/eval5-test --split runs/three-long/test.csv
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from medcam.training.evaluate import _bootstrap_auroc


def per_resample(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, rounds: int, seed: int) -> list[float]:
    """The baseline: resample patients, concatenate their images, one ``roc_auc_score`` each."""
    rng = np.random.default_rng(seed)
    unique, index = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(index == g) for g in range(len(unique))]
    values = []
    for _ in range(rounds):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(unique), len(unique))])
        if labels[rows].min() != labels[rows].max():
            values.append(roc_auc_score(labels[rows], probs[rows]))
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def _splits(args: argparse.Namespace) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    if args.predictions:
        with open(args.split, newline="") as f:
            patient = {row["file"]: row.get("patient_id") or row["file"] for row in csv.DictReader(f)}
        with open(Path(args.predictions) / "predictions.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        probs = np.array([float(r["probability"]) for r in rows])
        patients = np.array([patient.get(r["file"], r["file"]) for r in rows])
        return [(str(args.predictions), probs, np.array([int(r["label"]) for r in rows]), patients)]
    rng = np.random.default_rng(args.seed)
    out = []
    for n in (16, 131, 863):
        labels = (rng.random(n) < 0.3).astype(int)
        out.append((f"synthetic, {n} images", np.round(rng.random(n) + 0.4 * labels, 3), labels,
                    rng.integers(0, max(2, n // 2), n)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", help="a medcam evaluate output folder (predictions.csv)")
    parser.add_argument("--split", help="the CSV it evaluated, with patient_id")
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if bool(args.predictions) != bool(args.split):
        parser.error("--predictions and --split go together")
    print("| data | images | baseline: roc_auc_score per resample | medcam | speed-up | same interval |")
    print("|---|---|---|---|---|---|")
    for name, probs, labels, groups in _splits(args):
        start = time.perf_counter()
        reference = per_resample(probs, labels, groups, args.rounds, 0)
        baseline = time.perf_counter() - start
        start = time.perf_counter()
        found = _bootstrap_auroc(probs, labels, groups, args.rounds, 0)
        ours = time.perf_counter() - start
        same = bool(np.allclose(found, reference, rtol=0, atol=1e-12))
        print(f"| {name} | {labels.size} | {baseline:.2f} s | {ours * 1000:.1f} ms | {baseline / ours:.0f}x | {same} |")


if __name__ == "__main__":
    main()
