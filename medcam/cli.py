"""The ``medcam`` command: one entry point, one subcommand per job; flags map onto library calls."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from medcam import __version__
from medcam.errors import MedcamError

__all__ = ["main"]


def _train(args: argparse.Namespace) -> int:
    import torch

    from medcam.config import load_config
    from medcam.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    train(load_config(args.config), args.out)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medcam.models.predictor import Classifier
    from medcam.predict import PredictOptions, predict

    classifier = Classifier(args.model, device=args.device)
    ckpt = classifier.checkpoint
    status = "trained" if ckpt.trained else "UNTRAINED PLACEHOLDER - outputs are meaningless"
    print(f"model {ckpt.model_id} ({status}); {ckpt.model.positive_class} flagged at "
          f"p >= {ckpt.threshold:.3f}")
    voi = tuple(args.window) if args.window else args.voi
    options = PredictOptions(out=Path(args.out), cam_class=args.cam_class, colour_map=args.colour_map,
                             opacity=args.opacity, batch_size=args.batch_size, voi=voi)
    records = predict(args.paths, classifier, options)
    width = max((len(Path(r.path).name) for r in records), default=10)
    for r in records:
        name = Path(r.path).name.ljust(width)
        if r.status == "ok":
            probs = "  ".join(f"{c} {p:.3f}" for c, p in r.probabilities.items())
            print(f"{name}  {probs}{'  FLAGGED' if r.flagged else ''}")
        else:
            print(f"{name}  error: {r.error}")
    print(f"wrote overlays, maps and predictions.csv to {options.out}")
    return 0 if all(r.status == "ok" for r in records) else 1


def _evaluate(args: argparse.Namespace) -> int:
    from medcam.evaluate import evaluate
    from medcam.models.predictor import Classifier

    result = evaluate(Classifier(args.model, device=args.device), args.data, args.out,
                      batch_size=args.batch_size, command=shlex.join(["medcam", *sys.argv[1:]]))
    m = result.metrics
    low, high = m["auroc_ci95"]
    print(f"n={m['n']} ({m['n_positive']} positive)  AUROC {m['auroc']:.4f} (95% CI {low:.4f}-{high:.4f})  "
          f"threshold {m['threshold']:.3f}: sensitivity {m['sensitivity']:.3f}, "
          f"specificity {m['specificity']:.3f}  ECE {m['ece']:.3f}")
    print(f"wrote metrics.json, roc.png, reliability.png, confusion.png to {args.out}")
    return 0


def _model_card(args: argparse.Namespace) -> int:
    from medcam.modelcard import render_model_card
    from medcam.models.checkpoint import load_checkpoint

    evaluations = dict(item.split("=", 1) for item in args.eval)
    notes = Path(args.notes).read_text() if args.notes else ""
    card = render_model_card(load_checkpoint(args.model), evaluations, notes=notes)
    Path(args.out).write_text(card)
    print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medcam", description=__doc__)
    parser.add_argument("--version", action="version", version=f"medcam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a classifier from a YAML config (resumes)")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/pneumonia_densenet121.yaml")
    p.add_argument("--out", default="runs/train", help="run folder (resumed if it holds last.pt)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.set_defaults(func=_train)

    p = sub.add_parser("predict", help="probabilities, CAM overlays and raw maps for images",
                       description="Score DICOM, NIfTI, PNG or JPEG files (folders recursively).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("--out", default="medcam-out", help="output folder (default: medcam-out)")
    p.add_argument("--model", default="bundled", help="checkpoint path, or 'bundled' (default)")
    p.add_argument("--class", dest="cam_class", help="class whose map is overlaid (default: the positive class)")
    p.add_argument("--colour-map", "--colormap", default="jet", help="matplotlib colour map (default: jet)")
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")
    p.add_argument("--voi", choices=["auto", "lut", "window", "none"], default="auto",
                   help="DICOM VOI step (default: auto = VOI LUT, else window, else percentiles)")
    p.add_argument("--window", type=float, nargs=2, metavar=("CENTER", "WIDTH"),
                   help="DICOM window to use instead of the file's")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("evaluate", help="AUROC with CI, calibration and operating point on labelled data")
    p.add_argument("--model", default="bundled", help="checkpoint path, or 'bundled' (default)")
    p.add_argument("--data", required=True, help="CSV (file,label[,patient_id]) or a folder per class")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("model-card", help="write a model card from a checkpoint and its evaluations")
    p.add_argument("--model", default="bundled", help="checkpoint path, or 'bundled' (default)")
    p.add_argument("--eval", nargs="+", default=[], metavar="SPLIT=DIR",
                   help="evaluation folders holding metrics.json, e.g. test=runs/eval-test")
    p.add_argument("--notes", help="markdown file with reviewer observations of the CAMs")
    p.add_argument("--out", required=True, help="the markdown file to write")
    p.set_defaults(func=_model_card)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MedcamError as err:
        print(f"medcam {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medcam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
