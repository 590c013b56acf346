"""Cost of the image gate (pooled features + Mahalanobis score) against the forward pass.

One run on the CPU with a served :class:`~medcam.models.ServedModel` (the bundled DenseNet121
unless ``--model`` names another checkpoint), on random batches of the model's input size.
Printed per batch size, each the median of ``--repeats`` timed runs after one warm-up:

- ``plain``: the original network (global average pooling, logits only);
- ``forward``: the served single-pass CAM forward (logits, maps and pooled features);
- ``score``: :meth:`OODStats.score` on the pooled features alone;
- ``forward + score``: the two together, as the gate runs them;
- ``ratio``: ``score / forward``, the gate's cost as a share of the forward pass (target
  <= 2%), and ``features``: ``(forward - plain) / plain``, what the single pass adds over
  classifying (maps and features; noisy, since it is a difference of two timings).

The score's cost does not depend on the values of the statistics, so a checkpoint without
stored ones is timed with statistics fitted on the features of the timed batches.

    python benchmarks/bench_ood.py
    python benchmarks/bench_ood.py --batches 1 8 --repeats 20 --threads 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cam import _time

from medcam.gate import OODStats, ServedModel, fit_ood, read_ood


def _stats(classifier: ServedModel, size: int) -> OODStats:
    stored = read_ood(classifier.checkpoint)
    if stored is not None:
        return stored
    x = torch.randn(48, 1, size, size, generator=torch.Generator().manual_seed(0))
    features = torch.cat([classifier.forward(x[i:i + 16]).features for i in range(0, 48, 16)])  # type: ignore[misc]
    return fit_ood(features[:32], torch.arange(32) % 2, features[32:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    classifier = ServedModel(args.model)
    size = classifier.checkpoint.preprocess.size
    stats = _stats(classifier, size)
    network = classifier.checkpoint.network
    print(f"{classifier.checkpoint.model_id}, {size} px, CPU, {args.threads} threads, median of "
          f"{args.repeats}; statistics: {stats.means.shape[0]} classes x {stats.feature_dim} features")
    print("batch | plain ms | forward ms | score ms | forward + score ms | ratio score/forward | features")
    for batch in args.batches:
        x = torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(batch))
        features = classifier.forward(x).features
        assert features is not None

        def plain(x: torch.Tensor = x) -> object:
            with torch.inference_mode():
                return network(x)

        def forward(x: torch.Tensor = x) -> object:
            return classifier.forward(x)

        def score(features: torch.Tensor = features) -> object:
            return stats.score(features)

        def gated(x: torch.Tensor = x) -> object:
            out = classifier.forward(x)
            assert out.features is not None
            return stats.score(out.features)

        t_plain = _time(plain, args.repeats)
        t_forward = _time(forward, args.repeats)
        t_score = _time(score, max(args.repeats, 50))
        t_both = _time(gated, args.repeats)
        print(f"{batch:5d} | {t_plain * 1e3:8.1f} | {t_forward * 1e3:10.1f} | {t_score * 1e3:8.3f} | "
              f"{t_both * 1e3:18.1f} | {t_score / t_forward:19.2%} | {(t_forward - t_plain) / t_plain:+8.1%}")


if __name__ == "__main__":
    main()
