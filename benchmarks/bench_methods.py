"""Each map method of ``medcam predict --method`` against the plain forward pass, in one run.

For every input size in ``--sizes``: images/s of the plain forward pass of the served network
(channels-last on the CPU), of ``Classifier.explain`` with ``cam`` (the single pass: logits
and every class's map), ``gradcam`` and ``gradcam++`` (a forward and a backward pass per
class, through MONAI) and ``occlusion`` (one pass per occluded window), and each one's ratio
to the plain forward of the same size. The bundled model's weights are used at every size
(the network is fully convolutional), so the first size also shows what its input size costs
against the others.

    python benchmarks/bench_methods.py
    python benchmarks/bench_methods.py --sizes 224 288 --batch 8 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import time

import torch

from medcam.gate import ServedModel
from medcam.runtime import retain_freed_memory
from medcam.scoring import METHODS


def images_per_second(run: object, x: torch.Tensor, repeats: int) -> float:
    run(x)  # type: ignore[operator]  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run(x)  # type: ignore[operator]
    return repeats * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--sizes", type=int, nargs="+", default=[288, 224])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--occlusion-repeats", type=int, default=1)
    args = parser.parse_args()
    retain_freed_memory()
    base = ServedModel(args.model)
    print(f"model {base.checkpoint.model_id} (trained at {base.checkpoint.preprocess.size} px); batch {args.batch}; "
          f"{torch.get_num_threads()} threads")
    print("| size | plain forward | " + " | ".join(METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    reference = None
    for size in args.sizes:
        ckpt = base.checkpoint
        classifier = ServedModel(dataclasses.replace(
            ckpt, network=copy.deepcopy(ckpt.network), preprocess=dataclasses.replace(ckpt.preprocess, size=size)))
        x = torch.randn(args.batch, 1, size, size).contiguous(memory_format=classifier.memory_format)
        network = copy.deepcopy(ckpt.network).to(memory_format=classifier.memory_format)  # type: ignore[call-overload]
        with torch.inference_mode():
            plain = images_per_second(network, x, args.repeats)
        reference = reference or plain
        cells = []
        for method in METHODS:
            repeats = args.occlusion_repeats if method == "occlusion" else args.repeats
            rate = images_per_second(functools.partial(classifier.explain, method=method), x, repeats)
            cells.append(f"{rate:.3g} ({rate / plain:.3g}x)")  # occlusion is hundreds of times slower
        print(f"| {size} | {plain:.2f} images/s ({plain / reference:.2f}x of {args.sizes[0]} px) | "
              + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
