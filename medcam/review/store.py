"""The review database: one SQLite file that survives restarts and is shared by every browser.

Tables (schema version :data:`SCHEMA_VERSION`, see :data:`MIGRATIONS`):

- ``schema_version``: one row per migration applied (``version``, ``applied_at``);
- ``reviews``: one row per image, keyed by the SHA-256 of the file's bytes (so a file keeps
  its review when it is moved or renamed): status, overall agreement with the AI finding,
  free-text note, reviewer, and the class and threshold of the last region decision, save
  or export (the viewer reopens the image there);
- ``region_decisions``: ``accept`` / ``reject`` per region, keyed by image, class,
  threshold and region id (region ids are only meaningful for one class and threshold), with
  the region's measurements as they were shown;
- ``audit``: an append-only trail of who did what to which image, and when (UTC);
- ``scores``: the score cache, keyed by file content hash and model id.

Version 2 adds, to ``reviews`` and to ``scores``, what the lung segmenter said of the image:
``lung_evidence`` (the share of the positive class's positive CAM evidence inside the lungs,
NULL without a segmenter), ``quality`` (the caution of a flagged image whose evidence lies
outside the lungs, "" when none; :attr:`medcam.models.Prediction.quality`) and ``segmenter``
(its id, "" when none). A review keeps them as they were when it was opened; a cached score
is reused only by the same segmenter (:meth:`ReviewStore.cached_scores`). Rows written by
version 1 have none: NULL and "".

Version 3 adds to ``scores`` what the app's Monitoring page (:mod:`medcam.review.monitoring`)
needs besides ``scored_at`` (the UTC time the score was cached, there since version 1):
``ood_score`` (the out-of-distribution score, NULL where the model has none) and
``acquisition`` (a JSON object of the DICOM header values ``medcam score`` writes to a results
file, :data:`medcam.scoring.results.HEADER_COLUMNS`, the empty ones left out; ``{}`` for other
formats). Rows written before version 3 have NULL and ``{}``: they count in volume, flag rate and
probability, not in the OOD score's drift nor in a split by header value.

**Status** of an image: ``unread`` (no review row), ``in review`` (opened or edited),
``reviewed`` (signed off with an overall agree / disagree), ``exported`` (accepted regions
written). Any later change to a reviewed or exported image's decisions or note puts it back
``in review``: it then needs signing off again.

**Concurrency**: the database runs in WAL mode (readers never block the writer) with a busy
timeout (:data:`BUSY_TIMEOUT_S`); every write is one short ``BEGIN IMMEDIATE`` transaction on
its own connection, together with its audit row, so two browser sessions (threads of one
server, or two servers on one file) writing at once are serialised by SQLite, never lost.
Connections are not shared between threads. The file must be on a local disk: SQLite's WAL
does not work over network file systems.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from medcam.errors import MedcamError

__all__ = ["BUSY_TIMEOUT_S", "MIGRATIONS", "NOT_ANALYSED", "SCHEMA_VERSION", "STATUSES", "Agreement", "AuditEntry",
           "CachedScore", "Decision", "ImageRef", "RegionDecision", "Review", "ReviewStore", "Status",
           "StoreError"]

Status = Literal["unread", "in review", "reviewed", "exported"]
STATUSES: tuple[Status, ...] = get_args(Status)
Agreement = Literal["agree", "disagree"]
Decision = Literal["accept", "reject"]
BUSY_TIMEOUT_S = 30.0
NOT_ANALYSED = "not analysed: "
"""How a cached score's ``error`` starts when the image was refused as outside the model's
intended use (a results file's ``not_analysed`` row), rather than unreadable."""

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE reviews (
        image_key   TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        path        TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('in review', 'reviewed', 'exported')),
        agreement   TEXT CHECK (agreement IN ('agree', 'disagree')),
        note        TEXT NOT NULL DEFAULT '',
        reviewer    TEXT NOT NULL,
        model_id    TEXT NOT NULL DEFAULT '',
        probability REAL,
        class_name  TEXT NOT NULL DEFAULT '',
        threshold   TEXT NOT NULL DEFAULT '',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE TABLE region_decisions (
        image_key    TEXT NOT NULL REFERENCES reviews (image_key),
        class_name   TEXT NOT NULL,
        threshold    TEXT NOT NULL,
        region_id    INTEGER NOT NULL,
        decision     TEXT NOT NULL CHECK (decision IN ('accept', 'reject')),
        measurements TEXT NOT NULL DEFAULT '{}',
        reviewer     TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        PRIMARY KEY (image_key, class_name, threshold, region_id)
    );
    CREATE TABLE audit (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        at        TEXT NOT NULL,
        reviewer  TEXT NOT NULL,
        image_key TEXT,
        action    TEXT NOT NULL,
        detail    TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_by_image ON audit (image_key, id);
    CREATE TABLE scores (
        image_key     TEXT NOT NULL,
        model_id      TEXT NOT NULL,
        probabilities TEXT NOT NULL DEFAULT '{}',
        error         TEXT NOT NULL DEFAULT '',
        scored_at     TEXT NOT NULL,
        PRIMARY KEY (image_key, model_id)
    );
    """,
    """
    ALTER TABLE reviews ADD COLUMN lung_evidence REAL;
    ALTER TABLE reviews ADD COLUMN quality TEXT NOT NULL DEFAULT '';
    ALTER TABLE reviews ADD COLUMN segmenter TEXT NOT NULL DEFAULT '';
    ALTER TABLE scores ADD COLUMN lung_evidence REAL;
    ALTER TABLE scores ADD COLUMN quality TEXT NOT NULL DEFAULT '';
    ALTER TABLE scores ADD COLUMN segmenter TEXT NOT NULL DEFAULT '';
    """,
    """
    ALTER TABLE scores ADD COLUMN ood_score REAL;
    ALTER TABLE scores ADD COLUMN acquisition TEXT NOT NULL DEFAULT '{}';
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(MedcamError):
    """The review database cannot be used (newer schema, not a database, bad write)."""


@dataclass(frozen=True)
class ImageRef:
    """The image a write is about: content hash, display name and path."""

    key: str
    name: str
    path: str


@dataclass(frozen=True)
class Review:
    """One image's review (see the module documentation for ``status`` and the lung columns)."""

    image_key: str
    name: str
    path: str
    status: Status
    agreement: Agreement | None
    note: str
    reviewer: str
    model_id: str
    probability: float | None
    lung_evidence: float | None
    quality: str
    segmenter: str
    class_name: str
    threshold: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class RegionDecision:
    """A reviewer's decision on one region at one class and threshold."""

    image_key: str
    class_name: str
    threshold: str
    region_id: int
    decision: Decision
    measurements: dict[str, Any]
    reviewer: str
    updated_at: str


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit trail."""

    id: int
    at: str
    reviewer: str
    image_key: str | None
    action: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class CachedScore:
    """A cached score: class probabilities, or the reason the file could not be scored; what
    the lung segmenter said; the OOD score, the DICOM header values and when it was cached
    (see the module documentation)."""

    probabilities: dict[str, float]
    error: str
    lung_evidence: float | None = None
    quality: str = ""
    segmenter: str = ""
    ood_score: float | None = None
    acquisition: dict[str, str] = field(default_factory=dict)
    scored_at: str = ""

    @property
    def status(self) -> str:
        """``ok``, ``not_analysed`` or ``error``, as in a results file."""
        if not self.error and self.probabilities:
            return "ok"
        return "not_analysed" if self.error.startswith(NOT_ANALYSED) else "error"

    @property
    def reason(self) -> str:
        """Why the image was not analysed or failed, as a results file says it ("" when scored)."""
        return self.error.removeprefix(NOT_ANALYSED)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _require_reviewer(reviewer: str) -> str:
    name = reviewer.strip()
    if not name:
        raise StoreError("a reviewer name is required for every change (it goes into the audit trail)")
    return name


class ReviewStore:
    """The review database at ``path`` (created and migrated to :data:`SCHEMA_VERSION`).

    Raises:
        StoreError: the file is not an SQLite database, or was written by a newer medcam
            (its schema version is higher than this one knows).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as con:
                con.execute("PRAGMA journal_mode=WAL")
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path}: not a usable review database ({err})") from err

    # --- connections -------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            con.execute("PRAGMA foreign_keys=ON")
            con.row_factory = sqlite3.Row
            yield con
        finally:
            con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as con:
            con.execute("CREATE TABLE IF NOT EXISTS schema_version "
                        "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            current = int(con.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
            if current > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: the review database has schema version {current}, this "
                                 f"medcam knows up to {SCHEMA_VERSION}; upgrade medcam to open it")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute("INSERT INTO schema_version VALUES (?, ?)", (version, _now()))

    @property
    def schema_version(self) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    @staticmethod
    def _audit(con: sqlite3.Connection, reviewer: str, image_key: str | None, action: str,
               detail: Mapping[str, Any], at: str) -> None:
        con.execute("INSERT INTO audit (at, reviewer, image_key, action, detail) VALUES (?, ?, ?, ?, ?)",
                    (at, reviewer, image_key, action, json.dumps(dict(detail), sort_keys=True)))

    @staticmethod
    def _ensure_review(con: sqlite3.Connection, image: ImageRef, reviewer: str, at: str) -> str | None:
        """Create the review row ``in review`` when absent; returns the previous status."""
        row = con.execute("SELECT status FROM reviews WHERE image_key = ?", (image.key,)).fetchone()
        if row is None:
            con.execute("INSERT INTO reviews (image_key, name, path, status, reviewer, created_at, updated_at) "
                        "VALUES (?, ?, ?, 'in review', ?, ?, ?)", (image.key, image.name, image.path, reviewer, at, at))
            return None
        return str(row["status"])

    # --- writes ------------------------------------------------------------------------

    def open_review(self, image: ImageRef, reviewer: str, *, model_id: str = "", probability: float | None = None,
                    lung_evidence: float | None = None, quality: str = "", segmenter: str = "") -> bool:
        """Mark an unread image ``in review`` by ``reviewer``, with what the AI said of it (model,
        probability, and the lung segmenter's share, caution and id); True when this call did it."""
        reviewer = _require_reviewer(reviewer)
        at = _now()
        with self._write() as con:
            if self._ensure_review(con, image, reviewer, at) is not None:
                return False
            con.execute("UPDATE reviews SET model_id = ?, probability = ?, lung_evidence = ?, quality = ?, "
                        "segmenter = ? WHERE image_key = ?",
                        (model_id, probability, lung_evidence, quality, segmenter, image.key))
            self._audit(con, reviewer, image.key, "open", {"name": image.name, "path": image.path}, at)
        return True

    def decide_region(self, image: ImageRef, reviewer: str, *, class_name: str, threshold: str, region_id: int,
                      decision: Decision | None, measurements: Mapping[str, Any] | None = None) -> None:
        """Accept or reject a region (``None`` withdraws the decision)."""
        reviewer = _require_reviewer(reviewer)
        if decision not in (None, "accept", "reject"):
            raise ValueError(f"decision must be 'accept', 'reject' or None, got {decision!r}")
        at = _now()
        with self._write() as con:
            self._ensure_review(con, image, reviewer, at)
            key = (image.key, class_name, threshold, int(region_id))
            if decision is None:
                con.execute("DELETE FROM region_decisions WHERE image_key = ? AND class_name = ? AND threshold = ? "
                            "AND region_id = ?", key)
            else:
                con.execute(
                    "INSERT INTO region_decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
                    "(image_key, class_name, threshold, region_id) DO UPDATE SET decision = excluded.decision, "
                    "measurements = excluded.measurements, reviewer = excluded.reviewer, "
                    "updated_at = excluded.updated_at",
                    (*key, decision, json.dumps(dict(measurements or {}), sort_keys=True), reviewer, at))
            con.execute("UPDATE reviews SET status = 'in review', reviewer = ?, class_name = ?, threshold = ?, "
                        "updated_at = ? WHERE image_key = ?", (reviewer, class_name, threshold, at, image.key))
            self._audit(con, reviewer, image.key, f"region {decision or 'withdrawn'}",
                        {"class": class_name, "threshold": threshold, "region_id": int(region_id)}, at)

    def save_review(self, image: ImageRef, reviewer: str, *, agreement: Agreement | None, note: str,
                    class_name: str, threshold: str, sign_off: bool = False) -> Status:
        """Save the overall agreement and note; ``sign_off`` marks the image ``reviewed``.

        Raises:
            StoreError: signing off without an overall agree / disagree.
        """
        reviewer = _require_reviewer(reviewer)
        if agreement not in (None, "agree", "disagree"):
            raise ValueError(f"agreement must be 'agree', 'disagree' or None, got {agreement!r}")
        if sign_off and agreement is None:
            raise StoreError("choose agree or disagree with the AI finding before marking the image reviewed")
        status: Status = "reviewed" if sign_off else "in review"
        at = _now()
        with self._write() as con:
            self._ensure_review(con, image, reviewer, at)
            con.execute("UPDATE reviews SET status = ?, agreement = ?, note = ?, reviewer = ?, class_name = ?, "
                        "threshold = ?, updated_at = ? WHERE image_key = ?",
                        (status, agreement, note, reviewer, class_name, threshold, at, image.key))
            self._audit(con, reviewer, image.key, "sign off" if sign_off else "save",
                        {"agreement": agreement, "note": note, "class": class_name, "threshold": threshold}, at)
        return status

    def mark_exported(self, image: ImageRef, reviewer: str, *, class_name: str, threshold: str,
                      region_ids: Sequence[int], files: Mapping[str, str]) -> None:
        """Record an export of the accepted regions: status ``exported`` and an audit line."""
        reviewer = _require_reviewer(reviewer)
        at = _now()
        with self._write() as con:
            self._ensure_review(con, image, reviewer, at)
            con.execute("UPDATE reviews SET status = 'exported', class_name = ?, threshold = ?, updated_at = ? "
                        "WHERE image_key = ?", (class_name, threshold, at, image.key))
            self._audit(con, reviewer, image.key, "export",
                        {"class": class_name, "threshold": threshold, "region_ids": [int(i) for i in region_ids],
                         "files": dict(files)}, at)

    def save_score(self, image_key: str, model_id: str, *, probabilities: Mapping[str, float] | None = None,
                   error: str = "", lung_evidence: float | None = None, quality: str = "",
                   segmenter: str = "", ood_score: float | None = None,
                   acquisition: Mapping[str, str] | None = None) -> None:
        """Cache a score (or the reason there is none) for a file content hash and model, now, with
        the lung segmenter's share, caution and id (replacing what another segmenter said), the OOD
        score and the non-empty DICOM header values."""
        header = {k: str(v) for k, v in (acquisition or {}).items() if v}
        with self._write() as con:
            con.execute("INSERT OR REPLACE INTO scores (image_key, model_id, probabilities, error, scored_at, "
                        "lung_evidence, quality, segmenter, ood_score, acquisition) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (image_key, model_id, json.dumps(dict(probabilities or {})), error, _now(), lung_evidence,
                         quality, segmenter, ood_score, json.dumps(header, sort_keys=True)))

    # --- reads -------------------------------------------------------------------------

    def review(self, image_key: str) -> Review | None:
        with self._connect() as con:
            row = con.execute("SELECT * FROM reviews WHERE image_key = ?", (image_key,)).fetchone()
        return None if row is None else Review(**dict(row))

    def reviews(self) -> list[Review]:
        """Every review, most recently changed first."""
        with self._connect() as con:
            rows = con.execute("SELECT * FROM reviews ORDER BY updated_at DESC").fetchall()
        return [Review(**dict(row)) for row in rows]

    def status(self, image_key: str) -> Status:
        review = self.review(image_key)
        return "unread" if review is None else review.status

    def region_decisions(self, image_key: str, *, class_name: str | None = None,
                         threshold: str | None = None) -> dict[int, RegionDecision]:
        """Decisions on one image's regions, by region id, for one class and threshold.

        Without ``class_name`` and ``threshold``, those of the review's own class and
        threshold (where the last save put them).
        """
        with self._connect() as con:
            if class_name is None or threshold is None:
                row = con.execute("SELECT class_name, threshold FROM reviews WHERE image_key = ?",
                                  (image_key,)).fetchone()
                if row is None:
                    return {}
                class_name, threshold = class_name or row["class_name"], threshold or row["threshold"]
            rows = con.execute("SELECT * FROM region_decisions WHERE image_key = ? AND class_name = ? "
                               "AND threshold = ? ORDER BY region_id", (image_key, class_name, threshold)).fetchall()
        return {int(r["region_id"]): self._decision(r) for r in rows}

    def all_region_decisions(self) -> list[RegionDecision]:
        with self._connect() as con:
            rows = con.execute("SELECT * FROM region_decisions ORDER BY image_key, class_name, threshold, "
                               "region_id").fetchall()
        return [self._decision(r) for r in rows]

    @staticmethod
    def _decision(row: sqlite3.Row) -> RegionDecision:
        values = dict(row)
        values["measurements"] = json.loads(values["measurements"])
        return RegionDecision(**values)

    def audit(self, image_key: str | None = None, *, limit: int | None = None) -> list[AuditEntry]:
        """The audit trail, oldest first (of one image when ``image_key`` is given)."""
        query = "SELECT * FROM audit" + (" WHERE image_key = ?" if image_key else "") + " ORDER BY id"
        params: tuple[Any, ...] = (image_key,) if image_key else ()
        with self._connect() as con:
            rows = con.execute(query, params).fetchall()
        entries = [AuditEntry(**{**dict(r), "detail": json.loads(r["detail"])}) for r in rows]
        return entries[-limit:] if limit else entries

    def cached_scores(self, model_id: str, *, segmenter: str | None = None) -> dict[str, CachedScore]:
        """Every cached score of ``model_id`` (made with the lung segmenter ``segmenter`` when
        given, "" for none), by file content hash, oldest first."""
        query = ("SELECT image_key, probabilities, error, lung_evidence, quality, segmenter, ood_score, acquisition, "
                 "scored_at FROM scores WHERE model_id = ?" + ("" if segmenter is None else " AND segmenter = ?")
                 + " ORDER BY scored_at, image_key")
        params = (model_id,) if segmenter is None else (model_id, segmenter)
        with self._connect() as con:
            rows = con.execute(query, params).fetchall()
        return {r["image_key"]: CachedScore(json.loads(r["probabilities"]), r["error"], r["lung_evidence"],
                                            r["quality"], r["segmenter"], r["ood_score"], json.loads(r["acquisition"]),
                                            r["scored_at"]) for r in rows}

    def scored_models(self) -> dict[str, int]:
        """How many images each model id has a cached score for."""
        with self._connect() as con:
            rows = con.execute("SELECT model_id, COUNT(*) FROM scores GROUP BY model_id").fetchall()
        return {str(model): int(n) for model, n in rows}

    def reviews_csv(self) -> str:
        """Every review as CSV: one row per image, with its accepted and rejected regions.

        Regions are listed as ``id:area`` (mm^2 when the spacing is known, else pixels) for
        the review's class and threshold. Text that a spreadsheet would take for a formula
        (starting with ``=``, ``+``, ``-`` or ``@``) is prefixed with ``'``.
        """
        names = [f.name for f in fields(Review)]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([*names, "accepted_regions", "rejected_regions"])
        decisions: dict[tuple[str, str, str], list[RegionDecision]] = {}
        for d in self.all_region_decisions():
            decisions.setdefault((d.image_key, d.class_name, d.threshold), []).append(d)
        for review in sorted(self.reviews(), key=lambda r: r.created_at):
            mine = decisions.get((review.image_key, review.class_name, review.threshold), [])
            listed = {kind: ";".join(f"{d.region_id}:{_area(d.measurements)}" for d in mine if d.decision == kind)
                      for kind in ("accept", "reject")}
            writer.writerow([_cell(getattr(review, n)) for n in names] + [listed["accept"], listed["reject"]])
        return out.getvalue()


def _area(measurements: Mapping[str, Any]) -> str:
    if measurements.get("area_mm2") is not None:
        return f"{float(measurements['area_mm2']):.1f}mm2"
    if measurements.get("area_px") is not None:
        return f"{int(measurements['area_px'])}px"
    return ""


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    text = str(value)
    # a spreadsheet would run a cell that starts like a formula: keep free text inert
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
