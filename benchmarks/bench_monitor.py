"""Time ``medcam monitor`` on 100,000 rows (target: under 30 s on this machine).

The rows are real: those of results files of real films (by default the pools that
``benchmarks/monitor_false_alarms.py`` makes in runs/monitor-pool, else 32 children's films
from ../shared/data/cxr scored here), resampled with replacement and given new ``scored_at``
times spread over 60 days, the last 7 days drawn from the adults' rows when an adults' file is
given, and ``station_name`` set to one of 8 stations so that ``--by station_name`` has groups.
They are written as 100 files of 1,000 rows in one folder, as a node's per-series files would
be. The timed command is the real one, in a fresh process (imports included)::

    python benchmarks/bench_monitor.py [--rows 100000] [RESULTS.csv ...]
"""

from __future__ import annotations

import argparse
import csv
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
POOL = REPO / "runs" / "monitor-pool"
TARGET_S = 30.0
DAYS = 60
DRIFT_DAYS = 7


def score_some(folder: Path, n: int = 32) -> Path:
    """Score ``n`` random children's films with the bundled model (when no results are given)."""
    from medcam.gate import ServedModel
    from medcam.scoring import ScoreOptions, score

    files = sorted((SHARED / "cxr" / "images").rglob("*.png"))
    if not files:
        sys.exit(f"no results given and no films in {SHARED}/cxr")
    out = folder / "children.csv"
    score(random.Random(0).sample(files, n), ServedModel("bundled"), ScoreOptions(out=out, workers=0, progress=False))
    return out


def read(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


def synthesise(sources: list[Path], rows: int, folder: Path) -> Path:
    header, baseline = read(sources[0])
    drifted = read(sources[1])[1] if len(sources) > 1 else baseline
    when, station = header.index("scored_at"), header.index("station_name")
    rng = random.Random(1)
    out = folder / "results"
    out.mkdir()
    per_file = 1000
    for part in range(rows // per_file):
        chunk = []
        for i in range(per_file):
            k = part * per_file + i
            day = k * DAYS // rows
            row = list(rng.choice(drifted if day >= DAYS - DRIFT_DAYS else baseline))
            seconds = rng.randrange(86400)
            row[when] = (f"2026-10-{1 + day:02d}" if day < 31 else f"2026-11-{day - 30:02d}") + \
                f"T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z"
            row[station] = f"ROOM{rng.randrange(8)}"
            chunk.append(row)
        with open(out / f"series-{part:04d}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(chunk)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="*", type=Path, help="results files of real films: baseline [, drifted]")
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sources = args.results or [p for p in (POOL / "children.csv", POOL / "adults.csv") if p.is_file()]
        if not sources:
            sources = [score_some(folder)]
        inputs = synthesise(sources, args.rows, folder)
        command = [sys.executable, "-m", "medcam", "monitor", str(inputs), "--out", str(folder / "out"),
                   "--by", "station_name"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        print(done.stdout.strip().splitlines()[-1][:300] if done.stdout.strip() else done.stderr[-2000:])
        print(f"sources: {', '.join(str(s) for s in sources)}")
        print(f"medcam monitor on {args.rows:,} rows in {args.rows // 1000} files ({DAYS} days, --by station_name): "
              f"{seconds:.1f} s, exit status {done.returncode}; {seconds / TARGET_S:.2f} of the "
              f"{TARGET_S:.0f} s target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
