"""The review database: schema versions, status rules, audit trail, CSV and concurrent writers."""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from medcam.review.store import MIGRATIONS, SCHEMA_VERSION, ImageRef, ReviewStore, StoreError

IMAGE = ImageRef("a" * 64, "chest.dcm", "/data/chest.dcm")
OTHER = ImageRef("b" * 64, "other.png", "/data/other.png")


def test_new_database_is_migrated_in_wal_mode(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "sub" / "review.db")
    assert store.schema_version == SCHEMA_VERSION
    with sqlite3.connect(store.path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        applied = con.execute("SELECT version FROM schema_version").fetchall()
    assert {"schema_version", "reviews", "region_decisions", "audit", "scores"} <= tables
    assert applied == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    ReviewStore(store.path)  # reopening applies nothing twice
    with sqlite3.connect(store.path) as con:
        assert con.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION


def test_a_version_1_database_gains_the_lung_columns(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as con:  # a database as medcam wrote it before the lung segmenter
        con.executescript(MIGRATIONS[0])
        con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        con.execute("INSERT INTO schema_version VALUES (1, 'then')")
        con.execute("INSERT INTO reviews (image_key, name, path, status, reviewer, model_id, probability, created_at, "
                    "updated_at) VALUES (?, 'chest.dcm', '/data/chest.dcm', 'reviewed', 'Dr A', 'm1', 0.8, 't', 't')",
                    (IMAGE.key,))
        con.execute("INSERT INTO scores VALUES (?, 'm1', '{\"PNEUMONIA\": 0.8}', '', 't')", (IMAGE.key,))
    store = ReviewStore(path)
    assert store.schema_version == SCHEMA_VERSION
    review = store.review(IMAGE.key)
    assert review is not None and (review.status, review.probability) == ("reviewed", 0.8)
    assert (review.lung_evidence, review.quality, review.segmenter) == (None, "", "")
    (old,) = store.cached_scores("m1").values()
    assert (old.probabilities, old.lung_evidence, old.quality, old.segmenter) == ({"PNEUMONIA": 0.8}, None, "", "")
    assert store.cached_scores("m1", segmenter="lungunet-x") == {}  # scored again by a segmenter


def test_a_version_2_database_gains_the_monitoring_columns_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as con:  # a database as medcam wrote it before the Monitoring page
        con.executescript(MIGRATIONS[0] + MIGRATIONS[1])
        con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        con.executemany("INSERT INTO schema_version VALUES (?, 'then')", [(1,), (2,)])
        con.execute("INSERT INTO scores (image_key, model_id, probabilities, error, scored_at, lung_evidence, quality, "
                    "segmenter) VALUES (?, 'm1', '{\"PNEUMONIA\": 0.8}', '', '2020-11-02T09:30:00.000+00:00', 0.6, "
                    "'', 'lungunet-x')", (IMAGE.key,))
        con.execute("INSERT INTO scores (image_key, model_id, error, scored_at) VALUES (?, 'm1', ?, 't')",
                    (OTHER.key, "not analysed: not a frontal chest view"))
        con.execute("INSERT INTO reviews (image_key, name, path, status, reviewer, created_at, updated_at) "
                    "VALUES (?, 'chest.dcm', '/data/chest.dcm', 'in review', 'Dr A', 't', 't')", (IMAGE.key,))
    before = path.stat().st_ino
    store = ReviewStore(path)
    assert store.schema_version == SCHEMA_VERSION == 3
    assert path.stat().st_ino == before  # migrated in place, not rewritten
    with sqlite3.connect(path) as con:
        assert [v for (v,) in con.execute("SELECT version FROM schema_version ORDER BY version")] == [1, 2, 3]
    old = store.cached_scores("m1")
    assert (old[IMAGE.key].probabilities, old[IMAGE.key].lung_evidence, old[IMAGE.key].segmenter) == (
        {"PNEUMONIA": 0.8}, 0.6, "lungunet-x")
    assert (old[IMAGE.key].ood_score, old[IMAGE.key].acquisition) == (None, {})  # unknown before version 3
    assert old[IMAGE.key].scored_at == "2020-11-02T09:30:00.000+00:00"  # kept as it was
    assert (old[IMAGE.key].status, old[IMAGE.key].reason) == ("ok", "")
    assert (old[OTHER.key].status, old[OTHER.key].reason) == ("not_analysed", "not a frontal chest view")
    review = store.review(IMAGE.key)
    assert review is not None and review.status == "in review"
    store.save_score(OTHER.key, "m1", probabilities={"PNEUMONIA": 0.2}, ood_score=31.5,
                     acquisition={"manufacturer": "ACME", "station_name": "", "study_date": "20261103"})
    new = ReviewStore(path).cached_scores("m1")[OTHER.key]
    assert (new.ood_score, new.acquisition) == (31.5, {"manufacturer": "ACME", "study_date": "20261103"})
    assert new.status == "ok" and new.scored_at > old[IMAGE.key].scored_at
    store.save_score(IMAGE.key, "m1", error="a structured report")
    assert ReviewStore(path).cached_scores("m1")[IMAGE.key].status == "error"
    assert store.scored_models() == {"m1": 2}


def test_the_lung_columns_round_trip(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "review.db")
    caution = "evidence outside the lungs (lung_evidence 0.41 < 0.50)"
    assert store.open_review(IMAGE, "Dr A", model_id="m1", probability=0.9, lung_evidence=0.41, quality=caution,
                             segmenter="lungunet-x")
    store.open_review(OTHER, "Dr A", model_id="m1", probability=0.2)
    review = store.review(IMAGE.key)
    assert review is not None and (review.lung_evidence, review.quality, review.segmenter) == (
        0.41, caution, "lungunet-x")
    other = store.review(OTHER.key)
    assert other is not None and (other.lung_evidence, other.quality, other.segmenter) == (None, "", "")
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(store.reviews_csv()))}
    assert (rows["chest.dcm"]["lung_evidence"], rows["chest.dcm"]["quality"]) == ("0.410000", caution)
    assert rows["chest.dcm"]["segmenter"] == "lungunet-x" and rows["other.png"]["lung_evidence"] == ""

    store.save_score(IMAGE.key, "m1", probabilities={"PNEUMONIA": 0.9}, lung_evidence=0.41, quality=caution,
                     segmenter="lungunet-x")
    store.save_score(OTHER.key, "m1", probabilities={"PNEUMONIA": 0.2})
    scores = ReviewStore(store.path).cached_scores("m1")
    assert (scores[IMAGE.key].lung_evidence, scores[IMAGE.key].quality, scores[IMAGE.key].segmenter) == (
        0.41, caution, "lungunet-x")
    assert set(store.cached_scores("m1", segmenter="lungunet-x")) == {IMAGE.key}
    assert set(store.cached_scores("m1", segmenter="")) == {OTHER.key}  # served without a segmenter
    store.save_score(IMAGE.key, "m1", probabilities={"PNEUMONIA": 0.9}, segmenter="")  # another segmenter replaces
    assert store.cached_scores("m1", segmenter="lungunet-x") == {}


def test_newer_schema_and_non_database_are_refused(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "review.db")
    with sqlite3.connect(store.path) as con:
        con.execute("INSERT INTO schema_version VALUES (?, 'later')", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}.*upgrade medcam"):
        ReviewStore(store.path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable review database"):
        ReviewStore(junk)


def test_status_follows_the_review(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "review.db")
    assert store.status(IMAGE.key) == "unread"
    assert store.open_review(IMAGE, "Dr A", model_id="m1", probability=0.8)
    assert not store.open_review(IMAGE, "Dr B")  # already open: no change, no audit line
    assert store.status(IMAGE.key) == "in review"
    store.decide_region(IMAGE, "Dr A", class_name="PNEUMONIA", threshold="fraction:0.50", region_id=1,
                        decision="accept", measurements={"area_mm2": 120.5})
    store.decide_region(IMAGE, "Dr A", class_name="PNEUMONIA", threshold="fraction:0.50", region_id=2,
                        decision="reject", measurements={"area_px": 40})
    with pytest.raises(StoreError, match="choose agree or disagree"):
        store.save_review(IMAGE, "Dr A", agreement=None, note="", class_name="PNEUMONIA",
                          threshold="fraction:0.50", sign_off=True)
    assert store.save_review(IMAGE, "Dr A", agreement="agree", note="RLL consolidation", class_name="PNEUMONIA",
                             threshold="fraction:0.50", sign_off=True) == "reviewed"
    review = store.review(IMAGE.key)
    assert review is not None
    assert (review.status, review.agreement, review.note, review.model_id) == ("reviewed", "agree",
                                                                                "RLL consolidation", "m1")
    decisions = store.region_decisions(IMAGE.key)  # the review's own class and threshold
    assert {i: d.decision for i, d in decisions.items()} == {1: "accept", 2: "reject"}
    assert decisions[1].measurements == {"area_mm2": 120.5}
    assert store.region_decisions(IMAGE.key, class_name="PNEUMONIA", threshold="fraction:0.40") == {}
    store.mark_exported(IMAGE, "Dr A", class_name="PNEUMONIA", threshold="fraction:0.50", region_ids=[1],
                        files={"seg": "/out/x_seg.dcm"})
    assert store.status(IMAGE.key) == "exported"
    store.decide_region(IMAGE, "Dr B", class_name="PNEUMONIA", threshold="fraction:0.50", region_id=1,
                        decision=None)  # a change after sign-off needs signing off again
    assert store.status(IMAGE.key) == "in review"
    assert set(store.region_decisions(IMAGE.key)) == {2}


def test_audit_trail_records_who_what_when(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "review.db")
    store.open_review(IMAGE, "Dr A")
    store.decide_region(IMAGE, "Dr B", class_name="PNEUMONIA", threshold="fraction:0.50", region_id=3,
                        decision="accept")
    store.save_review(IMAGE, "Dr B", agreement="disagree", note="atelectasis", class_name="PNEUMONIA",
                      threshold="fraction:0.50")
    store.open_review(OTHER, "Dr C")
    trail = store.audit(IMAGE.key)
    assert [(e.reviewer, e.action) for e in trail] == [("Dr A", "open"), ("Dr B", "region accept"), ("Dr B", "save")]
    assert trail[1].detail == {"class": "PNEUMONIA", "threshold": "fraction:0.50", "region_id": 3}
    assert trail[2].detail["note"] == "atelectasis"
    assert all(e.at.endswith("+00:00") for e in trail)  # UTC
    assert [e.at for e in trail] == sorted(e.at for e in trail)
    assert len(store.audit()) == 4


def test_every_change_needs_a_reviewer_and_valid_values(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "review.db")
    with pytest.raises(StoreError, match="reviewer name is required"):
        store.open_review(IMAGE, "   ")
    with pytest.raises(ValueError, match="decision must be"):
        store.decide_region(IMAGE, "Dr A", class_name="P", threshold="t", region_id=1, decision="maybe")  # type: ignore[arg-type]
    assert store.review(IMAGE.key) is None  # the failed write left nothing behind
    assert store.audit() == []


def test_reviews_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "review.db"
    store = ReviewStore(path)
    store.save_review(IMAGE, "Dr A", agreement="agree", note="n", class_name="PNEUMONIA", threshold="fraction:0.50")
    store.save_score(IMAGE.key, "m1", probabilities={"NORMAL": 0.3, "PNEUMONIA": 0.7})
    store.save_score(OTHER.key, "m1", error="a structured report")
    del store
    again = ReviewStore(path)
    review = again.review(IMAGE.key)
    assert review is not None and review.note == "n"
    scores = again.cached_scores("m1")
    assert scores[IMAGE.key].probabilities == {"NORMAL": 0.3, "PNEUMONIA": 0.7}
    assert scores[OTHER.key].error == "a structured report"
    assert again.cached_scores("another model") == {}


def test_reviews_csv_lists_regions_and_defuses_formulas(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "review.db")
    store.decide_region(IMAGE, "Dr A", class_name="PNEUMONIA", threshold="fraction:0.50", region_id=1,
                        decision="accept", measurements={"area_mm2": 120.54, "area_px": 3936})
    store.decide_region(IMAGE, "Dr A", class_name="PNEUMONIA", threshold="fraction:0.50", region_id=2,
                        decision="reject", measurements={"area_mm2": None, "area_px": 40})
    store.save_review(IMAGE, "Dr A", agreement="agree", note="=HYPERLINK(\"http://x\")", class_name="PNEUMONIA",
                      threshold="fraction:0.50", sign_off=True)
    store.open_review(OTHER, "Dr B")
    rows = list(csv.DictReader(io.StringIO(store.reviews_csv())))
    assert [r["name"] for r in rows] == ["chest.dcm", "other.png"]
    first = rows[0]
    assert (first["status"], first["agreement"], first["reviewer"]) == ("reviewed", "agree", "Dr A")
    assert first["accepted_regions"] == "1:120.5mm2"
    assert first["rejected_regions"] == "2:40px"
    assert first["note"] == "'=HYPERLINK(\"http://x\")"
    assert rows[1]["status"] == "in review" and rows[1]["accepted_regions"] == ""


_WRITER = """
import sys
from medcam.review.store import ImageRef, ReviewStore
store = ReviewStore(sys.argv[1])
who = sys.argv[2]
for i in range(int(sys.argv[3])):
    image = ImageRef(f"{who}-{i % 5}", f"{who}{i % 5}.dcm", "/x")
    store.decide_region(image, who, class_name="PNEUMONIA", threshold="fraction:0.50", region_id=i,
                        decision="accept" if i % 2 else "reject", measurements={"i": i})
    store.save_review(image, who, agreement="agree", note=str(i), class_name="PNEUMONIA",
                      threshold="fraction:0.50")
"""


def test_two_processes_and_two_threads_write_at_once(tmp_path: Path) -> None:
    """Like two browser sessions (threads of one server) and two servers on one file."""
    path = tmp_path / "review.db"
    ReviewStore(path)
    n = 40
    processes = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), who, str(n)],
                                  stderr=subprocess.PIPE, text=True) for who in ("proc1", "proc2")]
    errors: list[BaseException] = []

    def session(who: str) -> None:
        try:
            store = ReviewStore(path)
            for i in range(n):
                image = ImageRef(f"{who}-{i % 5}", f"{who}.dcm", "/x")
                store.decide_region(image, who, class_name="PNEUMONIA", threshold="fraction:0.50", region_id=i,
                                    decision="accept", measurements={"i": i})
                store.save_review(image, who, agreement="disagree", note=str(i), class_name="PNEUMONIA",
                                  threshold="fraction:0.50")
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=session, args=(who,)) for who in ("thread1", "thread2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outputs = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in processes]
    assert not errors, errors
    assert all(code == 0 for code, _ in outputs), outputs
    store = ReviewStore(path)
    writers = ("proc1", "proc2", "thread1", "thread2")
    assert len(store.all_region_decisions()) == 4 * n  # nothing lost
    assert len(store.audit()) == 4 * 2 * n
    assert len(store.reviews()) == 4 * 5
    for who in writers:
        notes = {r.note for r in store.reviews() if r.reviewer == who}
        assert notes == {str(i) for i in range(n - 5, n)}  # each image keeps its writer's last note
