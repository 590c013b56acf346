"""How small an ECE a split can show: the ECE of a perfectly calibrated model on the same images.

ECE over 10 equal-width bins is biased upwards on small samples: even when every probability
is exactly right, the labels are Bernoulli draws and each bin's observed frequency scatters
around its mean probability. For each population of an evaluated split this draws the labels
``rounds`` times from the model's own probabilities (``predictions.csv`` of ``medcam
evaluate``; the real labels are not used) and reports the ECE such a perfectly calibrated
model would show: median and 5-95th percentiles. An ECE target below that floor cannot be
told apart from perfect calibration on this split.

    python benchmarks/ece_floor.py runs/eval-test runs/adult/test.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from medcam.training.calibration import expected_calibration_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluation", type=Path, help="a medcam evaluate output folder (predictions.csv)")
    parser.add_argument("split", type=Path, help="the CSV it evaluated, with a population column")
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with open(args.split, newline="") as f:
        population = {row["file"]: row.get("population") or "all" for row in csv.DictReader(f)}
    with open(args.evaluation / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    probs = np.array([float(r["probability"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    names = np.array([population.get(r["file"], "all") for r in rows])
    rng = np.random.default_rng(args.seed)
    print(f"{args.evaluation}: ECE (10 bins) measured, and that of a perfectly calibrated model with the same "
          f"probabilities ({args.rounds} label draws)")
    for name in dict.fromkeys(names.tolist()):
        p = probs[names == name]
        floor = [expected_calibration_error(p, rng.random(p.size) < p) for _ in range(args.rounds)]
        low, mid, high = np.percentile(floor, [5, 50, 95])
        print(f"  {name}: n={p.size}, measured {expected_calibration_error(p, labels[names == name]):.3f}; "
              f"perfectly calibrated: median {mid:.3f} (5-95%: {low:.3f}-{high:.3f})")


if __name__ == "__main__":
    main()
