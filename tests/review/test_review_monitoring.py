"""The reviewer app's Monitoring page: the review database read as ``medcam monitor`` reads results
files, the same verdict and figures, and the page itself through Streamlit's AppTest.

Rows are cached the way the worklist caches them (:func:`medcam.review.worklist.cache_result`)
from results rows that :func:`medcam.scoring.make_row` wrote, or that the bundled model gave for
20 real films of ../shared/data/cxr; only their ``scored_at`` is rewritten, to spread them over
days, as tests/test_monitor.py does with results files.
"""

from __future__ import annotations

import csv
import hashlib
import math
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from medcam.cli import main
from medcam.monitor import MonitorError, read_tables
from medcam.monitor.table import GROUP_COLUMNS
from medcam.review.launcher import ReviewConfig
from medcam.review.monitoring import monitor_store, score_table
from medcam.review.store import ImageRef, ReviewStore
from medcam.review.worklist import cache_result
from medcam.scoring import ModelInfo, make_row, read_results, results_columns

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
APP = Path(__file__).resolve().parents[2] / "apps" / "reviewer.py"
MODEL = ModelInfo("densenet121-test", ("NORMAL", "PNEUMONIA"), "PNEUMONIA", 0.5, segmenter_id="lungunet-test")
NOW = np.datetime64("2027-01-01T00:00:00", "s")
ONE_DAY = ("not judged: the rows fall in 1 day(s), and the first 2 are the reference: no day is left to judge "
           "(give --reference, or wait for more rows)")


def key_of(*parts: object) -> str:
    return hashlib.sha256("#".join(map(str, parts)).encode()).hexdigest()


def write_results(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def cache_rows(store: ReviewStore, rows: Sequence[dict[str, str]], day: str, tag: str = "") -> list[str]:
    """Cache ``rows`` (results rows as read_results gives them) as the scores of distinct images,
    scored on ``day``; returns their keys."""
    keys = [key_of(tag, day, i, row["path"]) for i, row in enumerate(rows)]
    for key, row in zip(keys, rows, strict=True):
        cache_result(store, key, row)
    with sqlite3.connect(store.path) as con:
        con.executemany("UPDATE scores SET scored_at = ? WHERE image_key = ?",
                        [(f"{day}T09:30:00.000+00:00", key) for key in keys])
    con.close()
    return keys


def synthetic(rng: np.random.Generator, n: int, day: str, flag_share: float, ood: float) -> list[list[str]]:
    """``n`` analysed rows and two refused ones, by the writer ``medcam score`` uses, scored on ``day``."""
    rows = []
    for i in range(n):
        p = rng.beta(8, 2) if rng.random() < flag_share else rng.beta(2, 8)
        maker = ("ACME", "NEWCO")[i % 2]
        rows.append(make_row(MODEL, f"/data/{day}/{i}.dcm", "ok", "", ("1.2", "1.3", "1.4"), (1 - p, p),
                             ood_score=float(rng.normal(ood, 3)), lung_evidence=float(rng.uniform(0.1, 0.9)),
                             quality="evidence outside the lungs" if i % 7 == 0 and p >= 0.5 else "",
                             header=(day.replace("-", ""), maker, "X1", f"ROOM{i % 3}", "PA", "CHEST", "MONOCHROME2",
                                     "12")))
    for i in range(2):
        rows.append(make_row(MODEL, f"/data/{day}/r{i}.dcm", "not_analysed", f"not a frontal chest view ({i}.5)",
                             ("", "", ""), None, ood_score=70.0 + i))
    column = results_columns(MODEL.classes).index("scored_at")
    return [[*r[:column], f"{day}T09:30:00Z", *r[column + 1:]] for r in rows]


# --- the store read as results rows ----------------------------------------------------------------


def test_the_store_gives_the_rows_and_the_verdict_of_the_same_results_file(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(7)
    days = {"2026-11-01": (0.3, 25.0), "2026-11-02": (0.3, 25.0), "2026-11-03": (0.6, 32.0)}
    rows = [row for day, (share, ood) in days.items() for row in synthetic(rng, 120, day, share, ood)]
    results = write_results(tmp_path / "results.csv", results_columns(MODEL.classes), rows)
    store = ReviewStore(tmp_path / "review.db")
    for day in days:
        cache_rows(store, [r for r in read_results(results) if r["scored_at"].startswith(day)], day)
    store.save_score(key_of("other"), "another-model", probabilities={"NORMAL": 0.1, "PNEUMONIA": 0.9})

    from_file, unreadable = read_tables([results])
    from_store = score_table(store, MODEL)
    assert from_file is not None and from_store is not None and not unreadable
    order_file = np.lexsort((from_file.ood_score, from_file.probability, from_file.scored_at))
    order_store = np.lexsort((from_store.ood_score, from_store.probability, from_store.scored_at))
    assert len(from_store) == len(rows) == 366  # the other model's score is left out
    for name in ("status", "reason", "probability", "flagged", "ood_score", "lung_evidence", "caution", "model",
                 "segmenter", "scored_at", "study_date"):
        np.testing.assert_array_equal(getattr(from_store, name)[order_store], getattr(from_file, name)[order_file],
                                      err_msg=name)
    for column in GROUP_COLUMNS:
        np.testing.assert_array_equal(from_store.groups[column][order_store], from_file.groups[column][order_file])
    assert from_store.positive_class == "PNEUMONIA" and from_store.flagged.any() and (from_store.status == 1).sum() == 6

    page = monitor_store(store, MODEL, by="manufacturer", now=NOW)
    status = main(["monitor", str(results), "--out", str(tmp_path / "out"), "--by", "manufacturer"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert (page.findings.exit_status, page.findings.last_line) == (status, last) == (4, page.summary["last_line"])
    assert {a.check for a in page.findings.alarms} >= {"p_chart", "psi"}
    assert page.other_models == {"another-model": 1}
    report = page.report
    assert report.startswith("<!DOCTYPE html>") and "medcam review (Monitoring page)" in report
    assert report.count('src="data:image/png;base64,') == len(page.pictures) >= 7
    assert {p.section for p in page.pictures} == {"volume", "flag_rate", "psi", "distributions"}  # no decision yet


def test_an_empty_store_and_a_single_day_say_what_medcam_monitor_says(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    store = ReviewStore(tmp_path / "review.db")
    with pytest.raises(MonitorError, match=r"no readable rows in the review database .*review\.db: no image has "
                                           "been scored by model densenet121-test yet"):
        monitor_store(store, MODEL, now=NOW)
    rows = synthetic(np.random.default_rng(3), 1, "2026-11-01", 0.5, 25.0)
    results = write_results(tmp_path / "one.csv", results_columns(MODEL.classes), rows)
    keys = cache_rows(store, list(read_results(results)), "2026-11-01")
    page = monitor_store(store, MODEL, now=NOW)
    assert main(["monitor", str(results), "--out", str(tmp_path / "out")]) == page.findings.exit_status == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == page.findings.last_line == ONE_DAY
    assert page.summary["verdict"] == "not judged" and not page.findings.alarms
    with pytest.raises(MonitorError, match="no image among the 1 image"):
        monitor_store(store, MODEL, keys={key_of("not in the store")}, now=NOW)
    assert len(score_table(store, MODEL, keys=keys[:1]) or ()) == 1


# --- the page, on real films ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    """Results rows of 10 normal and 10 pneumonia films (children's, ../shared/data/cxr), scored
    once by the bundled model with its lung segmenter."""
    images = SHARED / "cxr" / "images"
    films = {label: sorted((images / label).glob("*.png"))[:10] for label in ("NORMAL", "PNEUMONIA")}
    if not all(len(f) == 10 for f in films.values()):
        pytest.skip(f"no films in {images} (../shared is not checked out here)")
    from medcam.gate import ServedModel
    from medcam.scoring import ScoreOptions, score

    model = ServedModel("bundled")
    out = tmp_path_factory.mktemp("real") / "results.csv"
    score([*films["NORMAL"], *films["PNEUMONIA"]], model, ScoreOptions(out=out, workers=0, progress=False))
    rows = list(read_results(out))
    return {label: [r for r in rows if f"/{label}/" in r["path"]] for label in films}


def fill(store: ReviewStore, days: Sequence[Sequence[dict[str, str]]]) -> None:
    """One day per entry, each a set of rows copied to at least 100 analysed images (a PSI alarm
    needs 100); the days end yesterday, so that all are complete; two decisions and a sign-off."""
    first = datetime.now(timezone.utc).date() - timedelta(days=len(days))
    for n, rows in enumerate(days):
        copies = math.ceil(100 / max(1, sum(r["status"] == "ok" for r in rows)))
        cache_rows(store, [r for _ in range(copies) for r in rows], (first + timedelta(days=n)).isoformat(), "real")
    image = ImageRef(key_of("reviewed"), "chest.png", "/data/chest.png")
    for region, decision in ((1, "accept"), (2, "reject")):
        store.decide_region(image, "Dr Ada", class_name="PNEUMONIA", threshold="fraction:0.50", region_id=region,
                            decision=decision)  # type: ignore[arg-type]
    store.save_review(image, "Dr Ada", agreement="agree", note="", class_name="PNEUMONIA", threshold="fraction:0.50",
                      sign_off=True)


def open_monitoring(db: Path, model: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    pytest.importorskip("streamlit", reason='the reviewer app needs Streamlit: pip install -e ".[test]"')
    from streamlit.testing.v1 import AppTest

    config = ReviewConfig(folder=None, db=db, model=model, segmenter="none")
    for name, value in config.to_env().items():
        monkeypatch.setenv(name, value)
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    at.sidebar.radio(key="page").set_value("Monitoring").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def captions(at) -> list[str]:  # type: ignore[no-untyped-def]
    return [image.proto.imgs[0].caption for image in at.get("image")]


@pytest.mark.slow
def test_the_page_shows_the_figures_and_an_alarm_when_the_mix_of_films_changes(
        real_rows: dict[str, list[dict[str, str]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two days of normal films, then a day of pneumonia films: the flag rate and the probabilities move."""
    normal, pneumonia = real_rows["NORMAL"], real_rows["PNEUMONIA"]
    store = ReviewStore(tmp_path / "review.db")
    fill(store, [normal, normal, pneumonia])
    at = open_monitoring(store.path, "bundled", monkeypatch)
    (verdict,) = [e.value for e in at.error]
    assert verdict.startswith("**ALARM** · ALARM (") and "p-chart limit" in verdict, verdict
    alarms = at.dataframe[0].value
    assert {"p_chart", "psi"} <= set(alarms["check"]), alarms
    assert "probability" in set(alarms[alarms["check"] == "psi"]["on"])
    assert captions(at) == ["rows per period by status", "flag rate per period with p-chart limits",
                            "CUSUM of the flag rate", "PSI per period", "probability against the reference",
                            "ood_score against the reference", "lung_evidence against the reference",
                            "reviewers' decisions per period"]
    assert [h.value for h in at.subheader][:3] == ["Volume and status", "Flag rate",
                                                  "Score distributions: probability, OOD score, lung evidence"]
    assert at.get("download_button")

    again = ReviewStore(tmp_path / "same.db")  # the same films every day: no alarm
    fill(again, [normal + pneumonia] * 3)
    quiet = open_monitoring(again.path, "bundled", monkeypatch)
    assert not quiet.error and [s.value for s in quiet.success] == [
        f"**OK** · no alarm ({datetime.now(timezone.utc).date() - timedelta(days=1)})"]


def test_the_page_of_an_empty_store_says_there_is_nothing_to_monitor(tmp_path: Path, tiny_checkpoint: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_monitoring(tmp_path / "review.db", str(tiny_checkpoint), monkeypatch)
    (message,) = [i.value for i in at.info]
    assert message.startswith("no readable rows in the review database ") and "nothing to monitor" in message
    assert not at.get("image") and not at.error
