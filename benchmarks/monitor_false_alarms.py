"""False-alarm rates of ``medcam monitor``'s thresholds, and how often real drift is caught.

Four measurements, every one with a fixed seed:

1. **p-chart** (3 sigma): periods of ``n`` analysed rows with binomial flag counts at the
   reference rate ``p0``; the share of periods outside the limits, with ``p0`` known and with
   ``p0`` estimated from a reference of two periods (what ``--baseline-periods 2`` does).
2. **CUSUM** (k 0.5, h 5): a year of daily periods at the reference rate after a reference of
   two periods; the share of judged periods in alarm, and the mean periods to the first alarm.
3. **PSI** (deciles, alarm at 0.25): real probabilities and OOD scores resampled from the
   baseline pool, a reference of two periods of ``n`` rows and a period of ``n`` rows.
4. **Repeated random splits of real films**: each split draws, without replacement, two
   reference periods and one new period of 100 films from the children's pool and judges it
   as ``medcam monitor`` does (every alarm); the same with 100 adult films as the new
   period measures how often that drift is caught.

The pools are results files of real films scored by the bundled model; they are made on the
first run (400 children from ../shared/data/cxr, 200 adults from ../shared/data/cxr-adult,
seeded sample, about 5 minutes on 2 CPU cores) unless given::

    python benchmarks/monitor_false_alarms.py [--children C.csv --adults A.csv] [--pool-dir DIR]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from medcam.monitor import Settings, Table, analyse, read_tables
from medcam.monitor.alarms import judge
from medcam.monitor.statistics import CUSUM_H, CUSUM_K, PSI_LIMIT, cusum, p_chart_limits, psi

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SEED = 20261203


def make_pool(name: str, images: Path, n: int, out: Path) -> Path:
    """Score a seeded random sample of ``n`` films under ``images`` into ``out`` (once)."""
    if out.is_file():
        return out
    from medcam.gate import ServedModel
    from medcam.scoring import ScoreOptions, score

    files = sorted(images.rglob("*.png"))
    random.Random(7).shuffle(files)
    print(f"scoring {n} {name} films into {out} ...", flush=True)
    score(files[:n], ServedModel("bundled"), ScoreOptions(out=out, workers=0, progress=False))
    return out


def p_chart_rates(rng: np.random.Generator, repeats: int = 20_000) -> None:
    print("\n1. p-chart (3 sigma): share of in-control periods of n rows outside the limits")
    print(f"{'p0':>5} {'n':>6} {'p0 known':>9} {'2-period ref, classic':>22} {'2-period ref, medcam':>21}")
    for p0 in (0.1, 0.3, 0.5, 0.7):
        for n in (30, 100, 300, 1000):
            rate = rng.binomial(n, p0, repeats) / n
            low, high = p_chart_limits(p0, n)
            known = np.mean((rate > high) | (rate < low))
            estimates = rng.binomial(2 * n, p0, repeats) / (2 * n)
            outside = np.zeros((2, repeats), dtype=bool)
            for r, estimate in enumerate(estimates):
                for m, n_reference in enumerate((None, 2 * n)):
                    low, high = p_chart_limits(float(estimate), n, n_reference)
                    outside[m, r] = rate[r] > high or rate[r] < low
            print(f"{p0:5.2f} {n:6d} {known:9.4f} {outside[0].mean():22.4f} {outside[1].mean():21.4f}")


def cusum_rates(rng: np.random.Generator, runs: int = 2000, periods: int = 365) -> None:
    print(f"\n2. CUSUM (k {CUSUM_K:g}, h {CUSUM_H:g}) over {periods} in-control periods of n rows, {runs} runs")
    print(f"{'p0':>5} {'n':>6} {'reference':>28} {'judged periods in alarm':>24} {'mean periods to 1st alarm':>26}")
    for p0 in (0.1, 0.3, 0.7):
        for n in (30, 100, 1000):
            for label in ("p0 known", "2 periods, fixed p0", "2 periods, self-starting"):
                in_alarm = 0
                first = []
                for _ in range(runs):
                    p_ref = p0 if label == "p0 known" else rng.binomial(2 * n, p0) / (2 * n)
                    counts = rng.binomial(n, p0, periods)
                    chart = cusum(counts, np.full(periods, n), p_ref,
                                  2 * n if label.endswith("self-starting") else None)
                    alarm = chart.alarm
                    in_alarm += int(alarm.sum())
                    hits = np.flatnonzero(alarm)
                    first.append(hits[0] + 1 if len(hits) else periods)
                print(f"{p0:5.2f} {n:6d} {label:>28} {in_alarm / (runs * periods):24.4f} "
                      f"{np.mean(first):20.0f}{' (cap)' if np.median(first) >= periods else '':>6}")


def psi_rates(rng: np.random.Generator, pool: Table, repeats: int = 2000) -> None:
    ok = pool.select(pool.ok)
    print(f"\n3. PSI >= {PSI_LIMIT:g}, real scores resampled from {len(ok)} children's films; "
          "reference of 2 periods of n rows")
    print(f"{'n':>6} {'probability':>12} {'ood_score':>10} {'either':>8} {'mean PSI prob':>14} {'mean PSI ood':>13}")
    for n in (100, 150, 200, 300, 1000):
        hits = np.zeros((repeats, 2), dtype=bool)
        values = np.zeros((repeats, 2))
        for r in range(repeats):
            ref = rng.integers(0, len(ok), 2 * n)
            new = rng.integers(0, len(ok), n)
            for k, score in enumerate((ok.probability, ok.ood_score)):
                values[r, k] = psi(score[ref], score[new])
        hits = values >= PSI_LIMIT
        print(f"{n:6d} {hits[:, 0].mean():12.4f} {hits[:, 1].mean():10.4f} {hits.any(axis=1).mean():8.4f} "
              f"{values[:, 0].mean():14.3f} {values[:, 1].mean():13.3f}")


def _periods(table: Table, parts: list[np.ndarray]) -> Table:
    """The rows ``parts`` as consecutive days from 2026-11-01."""
    chosen = table.select(np.concatenate(parts))
    days = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])
    when = np.datetime64("2026-11-01T10:00:00", "s") + (days * 86400).astype("timedelta64[s]")
    return replace(chosen, scored_at=when)


def split_rates(rng: np.random.Generator, children: Table, adults: Table, splits: int = 500, n: int = 100) -> None:
    settings = Settings(now=np.datetime64("2027-01-01T00:00:00", "s"))
    pool = Table.concat([children, adults])
    kids = np.flatnonzero(children.ok)
    grown = np.flatnonzero(adults.ok) + len(children)
    tallies: dict[str, dict[str, int]] = {"children": {}, "adults": {}}
    for _ in range(splits):
        order = rng.permutation(kids)
        base = [order[:n], order[n:2 * n]]
        for name, new in (("children", order[2 * n:3 * n]), ("adults", rng.choice(grown, n, replace=False))):
            alarms = judge(analyse(_periods(pool, [*base, new]), settings))
            for check in {a.check for a in alarms} | ({"any"} if alarms else set()):
                tallies[name][check] = tallies[name].get(check, 0) + 1
    print(f"\n4. {splits} random splits of real films: 2 reference days and 1 new day of {n} films each")
    for name, drift in (("children", "no drift"), ("adults", "drift")):
        shares = ", ".join(f"{k} {v / splits:.3f}" for k, v in sorted(tallies[name].items())) or "none"
        print(f"   new day from the {name} ({drift}), share of splits with an alarm: {shares}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--children", type=Path, help="results of real children's films (default: made once)")
    parser.add_argument("--adults", type=Path, help="results of real adults' films (default: made once)")
    parser.add_argument("--pool-dir", type=Path, default=Path("runs/monitor-pool"), help="where pools are made")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.children is None or args.adults is None:
        if not SHARED.is_dir():
            print(f"{SHARED} is missing: give --children and --adults", file=sys.stderr)
            return 1
        args.pool_dir.mkdir(parents=True, exist_ok=True)
        args.children = args.children or make_pool("children", SHARED / "cxr" / "images", 400,
                                                   args.pool_dir / "children.csv")
        args.adults = args.adults or make_pool("adults", SHARED / "cxr-adult" / "images", 200,
                                               args.pool_dir / "adults.csv")
    children, bad = read_tables([args.children])
    adults, bad_adults = read_tables([args.adults], children.positive_class if children else None)
    if children is None or adults is None:
        print(f"cannot read the pools: {bad + bad_adults}", file=sys.stderr)
        return 1
    rng = np.random.default_rng(SEED)
    p_chart_rates(rng)
    cusum_rates(rng)
    psi_rates(rng, children)
    split_rates(rng, children, adults)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
