"""``medcam monitor``: the statistics on known distributions, reading results files, periods,
alarms and exit statuses, the report and summary, and drift made from real films.

Real scores: 60 children's films (../shared/data/cxr) and 104 adults' films (../shared/data/
cxr-adult) are scored once by the bundled model; results files for baseline and new periods are
made from those rows by rewriting ``scored_at``. A PSI alarm needs a period of at least 100
analysed rows, hence the 104 adults. Other files are written with :func:`make_row`, the writer
``medcam score`` uses, so that their format is the real one.
"""

from __future__ import annotations

import csv
import json
import random
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medcam.cli import main
from medcam.monitor import Settings, analyse, read_tables
from medcam.monitor.alarms import judge, on_alarm_command
from medcam.monitor.analysis import common_reason
from medcam.monitor.periods import make_periods, parse_date
from medcam.monitor.statistics import (
    CUSUM_H,
    PSI_LIMIT,
    cusum,
    p_chart_limits,
    psi,
    psi_edges,
    two_sample,
)
from medcam.monitor.table import GROUP_COLUMNS, NEEDED_COLUMNS, find_results
from medcam.scoring import ModelInfo, make_row, results_columns

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODEL = ModelInfo("densenet121-test", ("NORMAL", "PNEUMONIA"), "PNEUMONIA", 0.5, segmenter_id="lungunet-test")
HEADER = results_columns(MODEL.classes)
NOW = np.datetime64("2027-01-01T00:00:00", "s")


# --- helpers -----------------------------------------------------------------------------------


def write_rows(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def dated(header: Sequence[str], rows: Sequence[list[str]], day: str) -> list[list[str]]:
    """``rows`` as if scored on ``day`` (``scored_at`` rewritten)."""
    column = list(header).index("scored_at")
    return [[*r[:column], f"{day}T09:30:00Z", *r[column + 1:]] for r in rows]


def synthetic_rows(rng: np.random.Generator, n: int, day: str, flag_share: float, *, model: ModelInfo = MODEL,
                   manufacturer: str = "ACME", refused: int = 0, ood: float = 25.0,
                   study_date: str = "20261101") -> list[list[str]]:
    """``n`` analysed rows scored on ``day`` (about ``flag_share`` flagged), then ``refused``
    not-analysed ones; probabilities from two beta distributions, OOD scores from a normal."""
    rows = []
    for i in range(n):
        p = rng.beta(8, 2) if rng.random() < flag_share else rng.beta(2, 8)
        rows.append(make_row(model, f"/data/{day}/{i}.dcm", "ok", "", ("1.2", "1.3", "1.4"), (1 - p, p),
                             ood_score=float(rng.normal(ood, 3)), lung_evidence=float(rng.uniform(0.1, 0.9)),
                             header=(study_date, manufacturer, "X1", "ROOM1", "PA", "CHEST", "MONOCHROME2", "12")))
    for i in range(refused):
        rows.append(make_row(model, f"/data/{day}/r{i}.dcm", "not_analysed",
                             f"the image does not resemble the chest radiographs (out-of-distribution score {60 + i}.5"
                             " > 51.8)", ("", "", ""), None))
    return dated(HEADER, rows, day)


def synthetic_days(folder: Path, shares: Sequence[float], n: int = 200, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    return [write_rows(folder / f"day{d + 1}.csv", HEADER, synthetic_rows(rng, n, f"2026-11-{d + 1:02d}", share))
            for d, share in enumerate(shares)]


def run(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["monitor", *args])
    out, err = capsys.readouterr()
    return status, out, err


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_self_contained(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    sources = page.split('src="')[1:]
    assert sources, "the report has no figures"
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "<script" not in page


# --- statistics on known distributions ---------------------------------------------------------


def test_p_chart_limits_are_three_binomial_sigmas_and_hold_their_false_alarm_rate() -> None:
    low, high = p_chart_limits(0.2, np.array([100, 0, 10_000]))
    assert low[0] == pytest.approx(0.2 - 3 * 0.04) and high[0] == pytest.approx(0.2 + 3 * 0.04)
    assert np.isnan(low[1]) and np.isnan(high[1])
    assert high[2] - low[2] == pytest.approx(6 * np.sqrt(0.16 / 10_000))
    wider_low, wider_high = p_chart_limits(0.2, np.array([100]), n_reference=200)
    assert wider_high[0] == pytest.approx(0.2 + 3 * np.sqrt(0.16 * (1 / 100 + 1 / 200)))
    assert wider_low[0] == pytest.approx(0.4 - wider_high[0])
    assert p_chart_limits(0.01, np.array([10]))[0][0] == 0.0  # cut at 0
    rng = np.random.default_rng(1)
    rates = rng.binomial(1000, 0.3, 100_000) / 1000
    low, high = p_chart_limits(0.3, np.array([1000]))
    outside = np.mean((rates > high[0]) | (rates < low[0]))
    assert 0.001 < outside < 0.005  # 0.27 % for a normal; the binomial is close at n p = 300
    with pytest.raises(ValueError, match="flag rate"):
        p_chart_limits(1.5, np.array([10]))


def test_cusum_sums_standardised_rates_and_catches_a_shift_of_two_standard_errors() -> None:
    chart = cusum(np.array([20, 20, 40, 20]), np.array([100, 100, 100, 100]), 0.2)
    assert chart.upper.tolist() == pytest.approx([0.0, 0.0, 4.5, 4.0])  # z = 0, 0, 5, 0 minus k = 0.5
    assert not chart.alarm.any()
    rng = np.random.default_rng(2)
    n, p0 = 400, 0.25
    se = np.sqrt(p0 * (1 - p0) / n)
    counts = np.concatenate([rng.binomial(n, p0, 60), rng.binomial(n, p0 + 2 * se, 20)])
    chart = cusum(counts, np.full(len(counts), n), p0)
    assert not chart.alarm[:60].any()
    first = int(np.flatnonzero(chart.alarm)[0])
    assert 60 <= first < 60 + 10  # ARL of k 0.5, h 5 at a 2-sigma shift: about 4 periods
    assert chart.upper[first] > CUSUM_H and chart.lower[first] == 0.0
    falling = cusum(rng.binomial(n, p0 - 2 * se, 20), np.full(20, n), p0)
    assert falling.alarm.any() and falling.upper.max() < CUSUM_H


def test_self_starting_cusum_does_not_add_up_the_error_of_a_short_reference() -> None:
    """A reference rate off by one standard error of a period (what two reference days give
    often) makes a fixed-rate CUSUM alarm within weeks; the self-starting one does not."""
    rng = np.random.default_rng(3)
    n, p0 = 100, 0.3
    wrong = p0 - np.sqrt(p0 * (1 - p0) / n)
    counts = rng.binomial(n, p0, 200)
    assert cusum(counts, np.full(200, n), wrong).alarm.any()
    assert not cusum(counts, np.full(200, n), wrong, n_reference=2 * n).alarm.any()
    shifted = np.concatenate([counts[:30], rng.binomial(n, 0.5, 10)])
    assert cusum(shifted, np.full(40, n), wrong, n_reference=2 * n).alarm[30:].any()


def test_psi_on_known_distributions() -> None:
    rng = np.random.default_rng(4)
    reference = rng.normal(size=200_000)
    assert psi(reference, rng.normal(size=200_000)) < 0.001
    # a shift of one standard deviation: J-divergence 1 for the continuous normals, a little
    # less over ten bins
    assert 0.85 < psi(reference, rng.normal(1.0, 1.0, size=200_000)) < 1.0
    assert psi(reference, rng.normal(0.1, 1.0, size=200_000)) < 0.1 < psi(reference, rng.normal(0.5, 1, 200_000))
    # chance alone: PSI of a sample of n against a reference of N averages (bins - 1)(1/n + 1/N)
    draws = [psi(rng.normal(size=200), rng.normal(size=100)) for _ in range(400)]
    assert np.mean(draws) == pytest.approx(9 * (1 / 100 + 1 / 200), rel=0.2)
    edges = psi_edges(np.r_[np.zeros(50), np.linspace(0, 1, 50)])  # tied deciles merge bins
    assert len(edges) < 9 and np.all(np.diff(edges) > 0)
    assert np.isnan(psi(reference, np.array([np.nan])))
    with pytest.raises(ValueError, match="no values"):
        psi_edges(np.array([np.nan]))


def test_two_sample_test_tells_shifted_from_alike() -> None:
    rng = np.random.default_rng(5)
    assert two_sample(rng.normal(size=500), rng.normal(size=500))[1] > 0.01
    statistic, p_value = two_sample(rng.normal(size=500), rng.normal(0.5, 1, size=500))
    assert statistic > 0.15 and p_value < 1e-6
    assert all(np.isnan(two_sample(np.array([]), np.array([1.0]))))


# --- reading, periods ----------------------------------------------------------------------------


def test_the_monitor_needs_columns_that_results_files_have() -> None:
    assert set(NEEDED_COLUMNS) | set(GROUP_COLUMNS) <= set(results_columns(("NORMAL", "PNEUMONIA")))


def test_a_results_file_from_before_the_calibration_column_is_monitored(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = synthetic_rows(rng, 20, "2026-11-02", 0.5)
    drop = HEADER.index("calibration")
    older = write_rows(tmp_path / "older.csv", [c for i, c in enumerate(HEADER) if i != drop],
                       [[v for i, v in enumerate(row) if i != drop] for row in rows])
    table, unreadable = read_tables([older])
    assert not unreadable and table is not None and len(table) == 20


def test_reading_keeps_columns_drops_torn_rows_and_reports_unusable_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    good = write_rows(tmp_path / "in" / "a.csv", HEADER, synthetic_rows(rng, 30, "2026-11-02", 0.5, refused=2))
    with open(good, "a", encoding="utf-8") as f:
        f.write("/data/torn.dcm,ok,,1")  # a row cut by a crash
    write_rows(tmp_path / "in" / "a.studies.csv", ["study_instance_uid", "n_images"], [["1.2", "3"]])
    old = write_rows(tmp_path / "in" / "old" / "b.csv", ["path", "status", "error", "prob_PNEUMONIA"],
                     [["/x.dcm", "ok", "", "0.3"]])
    other = write_rows(tmp_path / "in" / "c.csv", ["file", "label"], [["x.png", "1"]])
    files, missing = find_results([tmp_path / "in", tmp_path / "nowhere"])
    assert sorted(p.name for p in files) == ["a.csv", "b.csv", "c.csv"]  # a.studies.csv left out
    assert missing[0].reason == "no such file or folder"
    table, unreadable = read_tables(files)
    assert table is not None and len(table) == 32 and table.dropped == 1
    assert table.positive_class == "PNEUMONIA"
    assert table.ok.sum() == 30 and np.isnan(table.probability[~table.ok]).all()
    assert table.scored_at[0] == np.datetime64("2026-11-02T09:30:00")
    assert table.study_date[0] == np.datetime64("2026-11-01")
    assert (table.groups["manufacturer"][table.ok] == "ACME").all()
    reasons = {Path(u.path).name: u.reason for u in unreadable}
    assert "older medcam" in reasons[old.name] and "not a medcam results file" in reasons[other.name]
    assert common_reason("out-of-distribution score 60.5 > 51.8 in /data/p/Smith^John.dcm") == \
        "out-of-distribution score # > # in <file>"


def test_periods_are_utc_days_or_iso_weeks_without_gaps() -> None:
    when = np.array(["2026-11-30T23:59:59", "2026-12-02T00:00:00", "NaT", "2026-12-07T08:00:00"],
                    dtype="datetime64[s]")
    days = make_periods(when, "day")
    assert days.labels == [f"2026-{d}" for d in ("11-30", "12-01", "12-02", "12-03", "12-04", "12-05", "12-06",
                                                 "12-07")]
    assert days.index.tolist() == [0, 2, -1, 7] and days.counts().tolist()[:3] == [1, 0, 1]
    weeks = make_periods(when, "week")
    assert weeks.labels == ["2026-W49", "2026-W50"] and weeks.starts[0] == np.datetime64("2026-11-30")
    assert weeks.complete(np.datetime64("2026-12-07T00:00:00")).tolist() == [True, False]
    assert parse_date("20261201") == parse_date("2026-12-01")
    with pytest.raises(Exception, match="YYYY-MM-DD"):
        parse_date("1 Dec")


def test_the_period_still_filling_is_not_judged(tmp_path: Path) -> None:
    table, _ = read_tables(synthetic_days(tmp_path, [0.3, 0.3, 0.9], n=120))
    assert table is not None
    settings = Settings(now=np.datetime64("2026-11-03T12:00:00", "s"))
    analysis = analyse(table, settings)
    assert analysis.judged is None and "still filling" in analysis.why_not_judged and not judge(analysis)
    later = analyse(table, Settings(now=np.datetime64("2026-11-04T00:00:00", "s")))
    assert later.judged_label == "2026-11-03" and {a.check for a in judge(later)} >= {"p_chart", "psi"}


# --- the command: alarms, exit statuses, outputs ------------------------------------------------


def test_a_jump_of_the_flag_rate_alarms_runs_on_alarm_and_marks_a_model_change(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    synthetic_days(inputs, [0.3, 0.3, 0.3])
    rng = np.random.default_rng(9)
    newer = ModelInfo("densenet121-newer", MODEL.classes, "PNEUMONIA", 0.5, segmenter_id="lungunet-test")
    write_rows(inputs / "day4.csv", HEADER, synthetic_rows(rng, 200, "2026-11-04", 0.6, model=newer))
    marker = tmp_path / "hook" / "called"
    hook = tmp_path / "hook.py"
    hook.write_text("import sys, pathlib\npathlib.Path(sys.argv[1]).write_text(sys.argv[-1])\n")
    marker.parent.mkdir()
    before = files_under(inputs)
    status, out, _ = run([str(inputs), "--out", str(tmp_path / "out"),
                          "--on-alarm", f"{sys.executable} {hook} {marker}"], capsys)
    assert status == 4
    last = out.strip().splitlines()[-1]
    assert last.startswith("ALARM") and "p-chart" in last and "CUSUM" in last
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    alarms = {a["check"]: a for a in summary["alarms"]}
    assert alarms["p_chart"]["figure"] > alarms["p_chart"]["limit"] and alarms["p_chart"]["period"] == "2026-11-04"
    assert alarms["cusum_up"]["limit"] == CUSUM_H and summary["exit_status"] == 4
    assert summary["model_changes"] == [{"period": "2026-11-04",
                                         "change": "model densenet121-test -> densenet121-newer"}]
    assert marker.read_text() == str(tmp_path / "out" / "summary.json")
    assert files_under(inputs) == before and sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["report.html", "summary.json"]
    assert_self_contained(tmp_path / "out" / "report.html")
    # one model's rows only: the older model's three days leave nothing after the reference
    status, out, _ = run([str(inputs), "--out", str(tmp_path / "out2"), "--model", "densenet121-test"], capsys)
    assert status == 0 and out.strip().endswith("no alarm (2026-11-03)")
    status, _, err = run([str(inputs), "--out", str(tmp_path / "out3"), "--model", "densenet121-nope"], capsys)
    assert status == 1 and "densenet121-newer, densenet121-test" in err


def test_a_new_unit_is_held_against_the_whole_reference_per_group(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--reference, --by and --by-study-date: a manufacturer absent from the reference, whose
    images score higher on the OOD scale, alarms in its own group against all reference rows."""
    rng = np.random.default_rng(14)
    reference = write_rows(tmp_path / "ref" / "baseline.csv", HEADER,
                           synthetic_rows(rng, 400, "2026-10-01", 0.3, study_date="20261001"))
    same = synthetic_rows(rng, 300, "2026-11-03", 0.3, study_date="20261102")
    newco = synthetic_rows(rng, 120, "2026-11-03", 0.3, manufacturer="NEWCO", ood=31.0, study_date="20261102")
    write_rows(tmp_path / "in" / "now.csv", HEADER, same + newco)
    status, out, _ = run([str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--reference", str(reference),
                          "--by", "manufacturer", "--by-study-date"], capsys)
    assert status == 4
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["judged_period"] == "2026-11-02" and summary["settings"]["periods_from"] == "study_date"
    shifts = {(s["score"], s["group"]): s for s in summary["shifts"]}
    assert shifts["ood_score", "manufacturer=NEWCO"]["against"] == "all"
    assert shifts["ood_score", "manufacturer=ACME"]["against"] == "group"
    assert shifts["ood_score", "manufacturer=ACME"]["psi"] < PSI_LIMIT
    alarmed = {(a["variable"], a["group"]) for a in summary["alarms"]}
    assert ("ood_score", "manufacturer=NEWCO") in alarmed and ("ood_score", "manufacturer=ACME") not in alarmed
    assert "manufacturer=NEWCO" in out.strip().splitlines()[-1]


def test_an_unreadable_file_gives_exit_3_when_the_others_are_fine(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    synthetic_days(inputs, [0.3, 0.3, 0.3], seed=10)
    write_rows(inputs / "old.csv", ["path", "status", "error", "prob_NORMAL", "prob_PNEUMONIA"],
               [["/x.dcm", "ok", "", "0.7", "0.3"]])
    status, out, err = run([str(inputs), "--out", str(tmp_path / "out")], capsys)
    assert status == 3
    assert "old.csv" in err and "older medcam" in err
    assert out.strip().splitlines()[-1] == "no alarm (2026-11-03); 1 input(s) could not be read"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["verdict"] == "unreadable input" and "older medcam" in summary["inputs"]["unreadable"][0]["reason"]


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    (",".join(HEADER) + "\n", "has a header but no rows"),
])
def test_empty_files_say_so_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                       message: str) -> None:
    (tmp_path / "r.csv").write_text(content)
    status, _, err = run([str(tmp_path / "r.csv"), "--out", str(tmp_path / "out")], capsys)
    assert status == 1 and "no readable rows" in err and message in err
    assert not (tmp_path / "out").exists()


def test_a_single_row_is_read_but_leaves_nothing_to_judge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_rows(tmp_path / "r.csv", HEADER, synthetic_rows(np.random.default_rng(11), 1, "2026-11-01", 0.5))
    status, out, _ = run([str(path), "--out", str(tmp_path / "out")], capsys)
    assert status == 1
    assert out.strip().splitlines()[-1] == ("not judged: the rows fall in 1 day(s), and the first 2 are the reference: "
                                            "no day is left to judge (give --reference, or wait for more rows)")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["verdict"] == "not judged"


def test_bad_arguments_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synthetic_days(tmp_path / "in", [0.3], n=5)
    common = [str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as caught:
        main(["monitor", *common, "--period", "month"])
    assert caught.value.code == 1 and "invalid choice: 'month'" in capsys.readouterr().err
    for extra, message in ((["--since", "1 Dec"], "YYYY-MM-DD"), (["--on-alarm", "'unbalanced"], "cannot be split"),
                           (["--baseline-periods", "0"], "1 or more")):
        status, _, err = run([*common, *extra], capsys)
        assert status == 1 and message in err, (extra, err)
    assert not (tmp_path / "out").exists()
    assert on_alarm_command("logger -t 'medcam monitor'") == ["logger", "-t", "medcam monitor"]


def test_reviews_and_node_health_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medcam.node.spool import Spool
    from medcam.review.store import ImageRef, ReviewStore

    spool = Spool(tmp_path / "spool")
    synthetic_days(spool.results, [0.3, 0.3, 0.32], seed=12)
    (spool.outbox / "sr-1.dcm").write_bytes(b"x")
    (spool.rejected / "sr-0.dcm").write_bytes(b"x")
    (spool.rejected / "sr-0.reason").write_text("http://pacs:8042 refused it (failure reason 272)\n")
    (spool.incoming / "1.2.3").mkdir()
    (spool.incoming / "1.2.3" / "4.dcm").write_bytes(b"x")
    db = tmp_path / "review.db"
    store = ReviewStore(db)
    image = ImageRef("abc", "a.dcm", "/data/a.dcm")
    store.decide_region(image, "dr a", class_name="PNEUMONIA", threshold="fraction:0.5", region_id=1,
                        decision="accept")
    store.decide_region(image, "dr a", class_name="PNEUMONIA", threshold="fraction:0.5", region_id=2,
                        decision="reject")
    store.save_review(image, "dr a", agreement="agree", note="", class_name="PNEUMONIA", threshold="fraction:0.5",
                      sign_off=True)
    before = files_under(tmp_path / "spool"), db.read_bytes()
    status, _, _ = run([str(spool.results), "--out", str(tmp_path / "out"), "--reviews", str(db)], capsys)
    assert status == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (node,) = summary["node"]
    assert node["outbox"] == 1 and node["rejected"] == 1 and node["incoming_instances"] == 1
    assert node["rejected_reasons"] == [["<url> refused it (failure reason #)", 1]]
    (day,) = summary["reviews"]["periods"]
    assert (day["regions_accepted"], day["regions_rejected"], day["agree"]) == (1, 1, 1)
    assert (files_under(tmp_path / "spool"), db.read_bytes()) == before
    with sqlite3.connect(db) as con:
        con.execute("INSERT INTO schema_version VALUES (99, 'x')")
    status, _, err = run([str(spool.root), "--out", str(tmp_path / "out"), "--reviews", str(db)], capsys)  # the spool
    assert status == 3 and "schema version 99" in err
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"]["files"] == 3


# --- drift made from real films ------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_scores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Rows of 60 children's and 104 adults' real films, scored once by the bundled model."""
    children = sorted((SHARED / "cxr" / "images").rglob("*.png"))
    adults = sorted((SHARED / "cxr-adult" / "images").rglob("*.png"))
    if not children or not adults:
        pytest.skip(f"no films in {SHARED}/cxr and cxr-adult (../shared is not checked out here)")
    from medcam.gate import ServedModel
    from medcam.scoring import ScoreOptions, score

    model = ServedModel("bundled", segmenter=None)  # the drift is in the probabilities and OOD scores
    folder = tmp_path_factory.mktemp("real")
    rows = {}
    for name, files, n in (("children", children, 60), ("adults", adults, 104)):
        chosen = random.Random(24).sample(files, n)
        out = folder / f"{name}.csv"
        score(chosen, model, ScoreOptions(out=out, workers=0, progress=False))
        with open(out, newline="") as f:
            header, *body = list(csv.reader(f))
        rows[name] = (header, body)
    return rows


@pytest.mark.slow
def test_adults_after_a_childrens_baseline_raise_the_psi_alarm(
        real_scores: dict[str, tuple[list[str], list[list[str]]]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Children's films on two days, then a day of adults' films (a new patient population):
    the OOD score moves far beyond what chance gives at these sizes (PSI about 9 (1/n + 1/N),
    0.24 for 100 against 60 rows)."""
    header, children = real_scores["children"]
    _, adults = real_scores["adults"]
    assert sum(row[1] == "ok" for row in adults) >= 100  # a PSI alarm needs 100 analysed rows in the period
    inputs = tmp_path / "in"
    write_rows(inputs / "d1.csv", header, dated(header, children[:30], "2026-11-01"))
    write_rows(inputs / "d2.csv", header, dated(header, children[30:], "2026-11-02"))
    write_rows(inputs / "d3.csv", header, dated(header, adults, "2026-11-03"))
    status, out, _ = run([str(inputs), "--out", str(tmp_path / "out"), "--model", "bundled"], capsys)
    assert status == 4, out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    ood = next(a for a in summary["alarms"] if a["check"] == "psi" and a["variable"] == "ood_score")
    assert ood["group"] == "all" and ood["limit"] == PSI_LIMIT and ood["figure"] > 1.0
    last = out.strip().splitlines()[-1]
    assert last.startswith("ALARM") and f"PSI of ood_score {ood['figure']:.3f} >= 0.25" in last
    # from the checkpoint's recalibration record (620 of 862 validation films flagged), not alarmed
    assert summary["validation"]["flag_rate"] == pytest.approx(620 / 862, abs=1e-4)
    assert_self_contained(tmp_path / "out" / "report.html")


@pytest.mark.slow
def test_a_second_sample_of_children_raises_no_alarm(real_scores: dict[str, tuple[list[str], list[list[str]]]],
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header, children = real_scores["children"]
    inputs = tmp_path / "in"
    for day in range(3):
        write_rows(inputs / f"d{day}.csv", header, dated(header, children[20 * day:20 * (day + 1)],
                                                         f"2026-11-0{day + 1}"))
    status, out, _ = run([str(inputs), "--out", str(tmp_path / "out")], capsys)
    assert status == 0 and out.strip().splitlines()[-1] == "no alarm (2026-11-03)"
    # repeated random splits of the same films into two reference days and a new day
    table, _ = read_tables(sorted(inputs.glob("*.csv")))
    assert table is not None
    rng = np.random.default_rng(13)
    alarmed = 0
    splits = 40
    for _ in range(splits):
        order = rng.permutation(len(table))
        days = np.empty(len(table), dtype="timedelta64[s]")
        days[order] = (np.arange(len(table)) // 20 * 86400).astype("timedelta64[s]")
        shuffled = replace(table, scored_at=np.datetime64("2026-11-01T10:00:00", "s") + days)
        alarmed += bool(judge(analyse(shuffled, Settings(now=NOW))))
    assert alarmed <= 2, f"{alarmed} of {splits} splits of the same films alarmed"
