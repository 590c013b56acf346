"""Forward cost of a finer CAM grid: DenseNet121 at output stride 16 against the published 32.

The networks are served as ``medcam`` serves them on the CPU (channels-last), untrained
(weights do not change the cost).

``model.output_stride: 16`` drops the pooling before the last dense block and dilates its 3x3
convolutions, which doubles the CAM grid's resolution (9x9 -> 18x18 at 288 px) and makes that
block work on four times as many positions. This prints what that costs: the single-pass CAM
(logits and maps of every class) of both networks on the same random batches, on CPU. The two
are timed in alternation, ``--repeats`` rounds, so that a shared machine's drifting speed hits
both alike; each cell is the median, the ratio is stride 32's time over stride 16's (below 1:
stride 16 is slower).

    python benchmarks/bench_stride.py                       # 288 px, batch 1 and 16
    python benchmarks/bench_stride.py --sizes 224 288 384 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medcam.config import ModelConfig
from medcam.models import convert_to_cam
from medcam.models.networks import build_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[288])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    coarse = build_network(ModelConfig())
    fine = build_network(ModelConfig(output_stride=16))
    fine.load_state_dict(coarse.state_dict())
    # served as medcam serves on the CPU: channels-last weights and inputs
    cams = {stride: convert_to_cam(net).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            for stride, net in ((32, coarse), (16, fine))}

    print(f"DenseNet121 single-pass CAM, CPU, {args.threads} threads, median of {args.repeats} alternating "
          "rounds; ms per image")
    print("| size | batch | grid, stride 32 | grid, stride 16 | stride 32 | stride 16 | ratio 32/16 |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for batch in args.batches:
            x = torch.rand(batch, 1, size, size).contiguous(memory_format=torch.channels_last)
            times: dict[int, list[float]] = {32: [], 16: []}
            grids = {}
            with torch.inference_mode():
                for stride, cam in cams.items():  # warm-up
                    grids[stride] = "x".join(map(str, cam(x).maps.shape[2:]))
                for _ in range(args.repeats):
                    for stride, cam in cams.items():
                        start = time.perf_counter()
                        cam(x)
                        times[stride].append((time.perf_counter() - start) / batch)
            ms = {stride: 1000 * statistics.median(t) for stride, t in times.items()}
            print(f"| {size} | {batch} | {grids[32]} | {grids[16]} | {ms[32]:.0f} | {ms[16]:.0f} | "
                  f"{ms[32] / ms[16]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
