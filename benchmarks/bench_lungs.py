"""Cost of the lung segmenter in the one pipeline: its time as a share of the classifier's forward.

Both networks are served as ``medcam`` serves them on the CPU (channels-last): the bundled
DenseNet121 single-pass CAM on a batch of the classifier's input size, and the bundled lung
segmenter on the same batch (resampled to its own side and standardised, as
:meth:`medcam.models.Classifier.forward` does). They are timed in alternation, ``--repeats``
rounds, so that a shared machine's drifting speed hits both alike; each cell is the median. The
served forward is the two together; the share is segmenter / classifier (target <= 0.15).

    python benchmarks/bench_lungs.py                    # batch 1 and 16, this machine's threads
    python benchmarks/bench_lungs.py --threads 1
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from medcam.gate import ServedModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--segmenter", default="bundled")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    served = ServedModel(args.model, segmenter=args.segmenter)
    assert served.segmenter is not None
    segmenter, size = served.segmenter, served.checkpoint.preprocess.size
    print(f"{served.checkpoint.model_id} at {size} px, {segmenter.segmenter_id} at {segmenter.config.size} px; CPU, "
          f"{args.threads} threads, median of {args.repeats} alternating rounds; ms per image")
    print("| batch | classifier | segmenter | served (both) | segmenter / classifier |")
    print("|---|---|---|---|---|")
    for batch in args.batches:
        x = torch.randn(batch, 1, size, size).contiguous(memory_format=served.memory_format)
        steps = {"classifier": functools.partial(served.cam, x), "segmenter": functools.partial(segmenter, x)}
        times: dict[str, list[float]] = {name: [] for name in steps}
        with torch.inference_mode():
            for step in steps.values():  # warm-up
                step()
            for _ in range(args.repeats):
                for name, step in steps.items():
                    start = time.perf_counter()
                    step()
                    times[name].append((time.perf_counter() - start) * 1000 / batch)
        classifier, lungs = (statistics.median(times[name]) for name in steps)
        print(f"| {batch} | {classifier:.1f} | {lungs:.1f} | {classifier + lungs:.1f} | {lungs / classifier:.3f} |")


if __name__ == "__main__":
    main()
