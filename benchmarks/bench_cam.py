"""Throughput of the single-pass CAM against the plain forward pass and MONAI's CAM/Grad-CAM.

All methods run in this one process on the same untrained DenseNet121 (weights do not change
the cost) and the same random batches, on CPU. Each cell is the median of ``--repeats`` timed
runs after one warm-up. Ratios are relative to the plain forward pass of the same size and
batch (1.00 = as fast as classifying without any map). MONAI's CAM and GradCAM return maps
upsampled to the input and normalised; the "upsampled + normalised" column does the same for
the single-pass maps (``maps_to_source`` + ``normalise_maps``), for a like-for-like comparison.

    python benchmarks/bench_cam.py                # 224 and 512 px, batch 1 and 8
    python benchmarks/bench_cam.py --sizes 224 --batches 1 --repeats 3   # quick
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from monai.networks.nets import DenseNet121
from monai.visualize import CAM, GradCAM

from medcam.models import GridTransform, convert_to_cam, maps_to_source, normalise_maps

TARGET = "class_layers.relu"
FC = "class_layers.out"


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=args.classes).eval()
    single = convert_to_cam(net)
    monai_cam = CAM(copy.deepcopy(net), target_layers=TARGET, fc_layers=FC)
    monai_grad = GradCAM(copy.deepcopy(net), target_layers=TARGET)
    k = args.classes

    print(f"DenseNet121, {k} classes, CPU, {args.threads} threads, median of {args.repeats}; "
          "images/s (ratio to the plain forward)")
    header = ["size", "batch", "plain forward", "single-pass CAM, all classes",
              "single-pass, all, upsampled + normalised",
              "MONAI CAM, 1 class", "MONAI CAM, all", "MONAI GradCAM, 1 class", "MONAI GradCAM, all"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for size in args.sizes:
        for batch in args.batches:
            timings = _measure(net, single, monai_cam, monai_grad, size, batch, k, args.repeats)
            base = timings["plain"]
            cells = [f"{batch / t:.1f} ({base / t:.2f}x)" for t in timings.values()]
            print(f"| {size} | {batch} | " + " | ".join(cells) + " |", flush=True)


def _measure(net: torch.nn.Module, single: torch.nn.Module, monai_cam: CAM, monai_grad: GradCAM,
             size: int, batch: int, k: int, repeats: int) -> dict[str, float]:
    x = torch.rand(batch, 1, size, size)
    grid = GridTransform.fit((size, size), size, "stretch")

    def plain() -> object:
        with torch.inference_mode():
            return net(x)

    def ours() -> object:
        with torch.inference_mode():
            return single(x)

    def ours_up() -> object:
        with torch.inference_mode():
            return normalise_maps(maps_to_source(single(x).maps, grid))

    def cam(classes: int) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return [monai_cam(x, class_idx=torch.full((batch,), c)) for c in range(classes)]
        return run

    def grad(classes: int) -> Callable[[], object]:
        def run() -> object:
            return [monai_grad(x, class_idx=c) for c in range(classes)]
        return run

    return {
        "plain": _time(plain, repeats),
        "ours": _time(ours, repeats),
        "ours_up": _time(ours_up, repeats),
        "cam1": _time(cam(1), repeats),
        "camk": _time(cam(k), repeats),
        "grad1": _time(grad(1), repeats),
        "gradk": _time(grad(k), repeats),
    }

if __name__ == "__main__":
    main()
