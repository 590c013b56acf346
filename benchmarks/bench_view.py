"""The intended-use gate on views: lateral films refused, frontal films of every population analysed.

One run of ``medcam score`` (the whole pipeline, as served: tags, image gate, frontal-view check)
over the lateral films and over each frontal population's test split, then the share of each
that was analysed, and why the others were not:

    python benchmarks/bench_view.py --laterals ../shared/data/views/lateral --split runs/frontal/test.csv

``--split`` is the ``test.csv`` that ``medcam fit-lung-gate`` writes (its ``--splits`` folder):
the children's and adults' test films of the classifier, RSNA challenge films and lung-mask
films, none of which set the check's statistics. The files are PNG/JPEG, so no tag names the
view and the frontal-view check decides.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import torch

from medcam.gate import ServedModel
from medcam.scoring import ScoreOptions, read_results, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--laterals", required=True, help="a folder of lateral films")
    parser.add_argument("--split", required=True, help="a CSV of frontal films with a population column")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    populations: dict[str, str] = {str(p.resolve()): "lateral" for p in sorted(Path(args.laterals).iterdir())}
    with open(args.split, newline="") as f:
        populations |= {str(Path(r["file"]).resolve()): r["population"] for r in csv.DictReader(f)}
    served = ServedModel(args.model)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "results.csv"
        score(list(populations), served, ScoreOptions(out=out, workers=args.workers, progress=False))
        rows = list(read_results(out))
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        reason = row["reason"]
        kind = ("analysed" if row["status"] == "ok" else "view check" if "not a frontal chest film" in reason
                else "image gate" if "does not resemble" in reason else row["status"])
        outcomes[populations[row["path"]]][kind] += 1
    print(f"{served.checkpoint.model_id} with {served.segmenter_id}; medcam score on PNG/JPEG (no view tag)")
    print("| films | n | analysed | refused by the view check | refused by the image gate | other |")
    print("|---|---|---|---|---|---|")
    for name in sorted(outcomes, key=lambda n: (n != "lateral", n)):
        c = outcomes[name]
        n = sum(c.values())
        other = n - c["analysed"] - c["view check"] - c["image gate"]
        print(f"| {name} | {n} | {c['analysed']} ({c['analysed'] / n:.1%}) | {c['view check']} | {c['image gate']} | "
              f"{other} |")
    lateral = outcomes["lateral"]
    refused = sum(lateral.values()) - lateral["analysed"]
    print(f"laterals refused: {refused} of {sum(lateral.values())} ({refused / max(1, sum(lateral.values())):.1%})")


if __name__ == "__main__":
    main()
