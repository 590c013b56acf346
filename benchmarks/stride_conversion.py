"""Does a stride-32 model keep its meaning at output stride 16, before any training?

``model.output_stride: 16`` drops the pooling before DenseNet121's last dense block and
dilates that block's 3x3 convolutions by 2, adding no weight, so a stride-32 checkpoint can
start a stride-16 run. This loads a checkpoint, builds the same weights at stride 16, and
scores a labelled split with both (the served pipeline: float32, calibration and threshold of
the checkpoint): the AUROC per population, the largest change of a probability and how many
flags change.

    python benchmarks/stride_conversion.py --model bundled --data runs/adult/val.csv
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from sklearn.metrics import roc_auc_score

from medcam.gate import ServedModel, collect_features
from medcam.models import load_checkpoint
from medcam.models.networks import build_network
from medcam.training.data import read_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled", help="a stride-32 checkpoint, or 'bundled' (default)")
    parser.add_argument("--data", required=True, help="labelled CSV with a population column (val.csv of a run)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    ckpt = load_checkpoint(args.model)
    if ckpt.model.output_stride != 32:
        parser.error(f"{ckpt.path} is already at output stride {ckpt.model.output_stride}")
    finer = dataclasses.replace(ckpt.model, output_stride=16)
    network = build_network(finer)
    network.load_state_dict(ckpt.network.state_dict())
    variants = {32: ServedModel(ckpt), 16: ServedModel(dataclasses.replace(ckpt, network=network.eval(), model=finer))}

    samples = read_samples(args.data, ckpt.model.classes)
    positive = ckpt.model.classes.index(ckpt.model.positive_class)
    probs = {}
    for stride, classifier in variants.items():
        found = collect_features(classifier, [s.path for s in samples], batch_size=args.batch_size)
        assert not found.failures, found.failures
        assert found.logits is not None
        probs[stride] = classifier.probabilities(found.logits, found.features)[:, positive].numpy()
    labels = np.array([s.label == positive for s in samples])
    populations = np.array([s.population or "all" for s in samples])

    print(f"{ckpt.model_id} at output stride 32 and, untrained, 16; {args.data} ({len(samples)} images)")
    print("| population | n | AUROC stride 32 | AUROC stride 16 | max abs change of p | flags changed |")
    print("|---|---|---|---|---|---|")
    for name in dict.fromkeys(populations.tolist()):
        keep = populations == name
        a, b = probs[32][keep], probs[16][keep]
        aurocs = [roc_auc_score(labels[keep], p) for p in (a, b)]
        flips = int(np.sum((a >= ckpt.threshold) != (b >= ckpt.threshold)))
        print(f"| {name} | {int(keep.sum())} | {aurocs[0]:.4f} | {aurocs[1]:.4f} | {np.abs(a - b).max():.3f} | "
              f"{flips} |")


if __name__ == "__main__":
    main()
