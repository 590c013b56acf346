"""The ``medcam`` command: one entry point, one subcommand per job; flags map onto library calls."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medcam import __version__
from medcam.errors import MedcamError

__all__ = ["main"]


def _train(args: argparse.Namespace) -> int:
    from medcam.config import load_config
    from medcam.train import train

    train(load_config(args.config), args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medcam", description=__doc__)
    parser.add_argument("--version", action="version", version=f"medcam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a classifier from a YAML config (resumes)")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/pneumonia_densenet121.yaml")
    p.add_argument("--out", default="runs/train", help="run folder (resumed if it holds last.pt)")
    p.set_defaults(func=_train)
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
