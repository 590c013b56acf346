"""Results files read into columns: one numpy array per field the monitor uses.

The files are the ones ``medcam score`` writes (:mod:`medcam.scoring.results`), the node's
per-series files (``SPOOL/results/<series>.csv``) included; folders are searched recursively
for ``*.csv``, leaving out the files written beside a results file (``*.studies.csv``,
``*.skipped.csv``, ``*.stowed.csv``). A file that cannot be used - missing, empty, not a
results file, or written by an older medcam without the ``scored_at`` and acquisition
columns - is returned as :class:`Unreadable` with the reason, never raised; rows of another
length than the header (a row torn by a crash, a damaged line) are left out and counted.

Only the columns that monitoring needs are kept (never ``path`` or the UIDs), so that the
report holds no patient identity. Reading is the ``csv`` module plus numpy; 100,000 rows take
well under a second.
"""

from __future__ import annotations

import csv
import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

__all__ = ["GROUP_COLUMNS", "NEEDED_COLUMNS", "SKIPPED_SUFFIXES", "STATUSES", "Table", "Unreadable",
           "find_results", "parse_dates", "parse_times", "read_tables"]

STATUSES = ("ok", "not_analysed", "error")
"""The ``status`` values of a results row, in the order of :attr:`Table.status` codes."""
NEEDED_COLUMNS = ("status", "reason", "label", "flagged", "ood_score", "lung_evidence", "quality", "model",
                  "segmenter", "scored_at", "study_date")
"""What a results file must have (besides ``prob_<class>``) to be monitored; a subset of
:func:`medcam.scoring.results.results_columns` (a test holds them together)."""
GROUP_COLUMNS = ("manufacturer", "station_name", "view_position")
"""The header values ``--by`` can split on."""
SKIPPED_SUFFIXES = (".studies.csv", ".skipped.csv", ".stowed.csv")
"""Files written beside a results file, not results themselves: left out of folders."""
_ERRORS = "surrogateescape"


@dataclass(frozen=True)
class Unreadable:
    """An input that could not be read, and why (a sentence fragment)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Table:
    """The rows of one or more results files, a numpy array per field (all of one length).

    Attributes:
        status: index into :data:`STATUSES`.
        reason: why a row was not analysed, or a note on an analysed one ("" when none).
        probability: the positive class's probability; NaN on rows not analysed.
        flagged: the positive class reached the operating threshold (False on rows not analysed).
        ood_score: the out-of-distribution score; NaN where the model has none.
        lung_evidence: the share of the positive class's evidence inside the lungs; NaN without
            a lung segmenter.
        caution: an analysed row with a ``quality`` caution (evidence outside the lungs).
        model, segmenter: the ids that scored the row.
        scored_at: when the row was written (UTC); NaT where unreadable.
        study_date: the DICOM Study Date; NaT for other formats.
        groups: the :data:`GROUP_COLUMNS` values by column name.
        source: index into ``files`` of the file each row came from.
        files: the files read.
        positive_class: the class whose probability ``probability`` holds.
        dropped: rows left out because they had another number of fields than the header.
    """

    status: np.ndarray
    reason: np.ndarray
    probability: np.ndarray
    flagged: np.ndarray
    ood_score: np.ndarray
    lung_evidence: np.ndarray
    caution: np.ndarray
    model: np.ndarray
    segmenter: np.ndarray
    scored_at: np.ndarray
    study_date: np.ndarray
    groups: dict[str, np.ndarray]
    source: np.ndarray
    files: tuple[str, ...] = ()
    positive_class: str = ""
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.status)

    @property
    def ok(self) -> np.ndarray:
        """Which rows were analysed."""
        return self.status == 0

    def select(self, mask: np.ndarray) -> Table:
        """The rows where ``mask`` is true (or at the indices ``mask`` holds)."""
        columns = {f.name: getattr(self, f.name)[mask] for f in fields(self) if _is_column(f.name)}
        return replace(self, **columns, groups={k: v[mask] for k, v in self.groups.items()})

    @classmethod
    def concat(cls, tables: Sequence[Table]) -> Table:
        """One table of the rows of ``tables`` (which share their positive class)."""
        files: list[str] = []
        sources = []
        for table in tables:
            sources.append(table.source + len(files))
            files.extend(table.files)
        columns = {f.name: np.concatenate([getattr(t, f.name) for t in tables]) for f in fields(cls)
                   if _is_column(f.name) and f.name != "source"}
        groups = {k: np.concatenate([t.groups[k] for t in tables]) for k in GROUP_COLUMNS}
        return cls(**columns, groups=groups, source=np.concatenate(sources), files=tuple(files),
                   positive_class=tables[0].positive_class if tables else "",
                   dropped=sum(t.dropped for t in tables))


def _is_column(name: str) -> bool:
    return name not in ("groups", "files", "positive_class", "dropped")


def find_results(inputs: Iterable[str | Path], exclude: Path | None = None) -> tuple[list[Path], list[Unreadable]]:
    """The results files named in or found under ``inputs``, each once, and the inputs that are
    missing or hold none. ``exclude`` (the report's folder) is never searched."""
    found: dict[Path, None] = {}
    missing: list[Unreadable] = []
    skip = exclude.resolve() if exclude is not None else None
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = [p for p in sorted(path.rglob("*.csv"))
                     if p.is_file() and not p.name.lower().endswith(SKIPPED_SUFFIXES)
                     and (skip is None or skip not in p.resolve().parents)]
            if not files:
                missing.append(Unreadable(str(path), "no results files (*.csv) in this folder or below it"))
            found.update(dict.fromkeys(p.resolve() for p in files))
        elif path.is_file():
            found[path.resolve()] = None
        else:
            missing.append(Unreadable(str(path), "no such file or folder"))
    return list(found), missing


@dataclass
class _Raw:
    """One file's needed columns as strings, before the positive class is known."""

    path: str
    classes: tuple[str, ...]
    columns: dict[str, tuple[str, ...]]
    dropped: int
    positive: str | None = None
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = len(self.columns["status"]) if self.columns else 0


def read_tables(paths: Iterable[Path], positive_class: str | None = None) -> tuple[Table | None, list[Unreadable]]:
    """Read ``paths`` into one :class:`Table`, and say which files could not be used.

    The positive class is ``positive_class`` when given (the checkpoint's), else the ``label``
    of any flagged row, else the one class not called NORMAL. Files without a probability
    column for it (another model's classes) are unreadable. The table is None when no file
    has a row.
    """
    raws: list[_Raw] = []
    unreadable: list[Unreadable] = []
    for path in paths:
        try:
            raw = _read_raw(path)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            unreadable.append(Unreadable(str(path), f"cannot be read ({err})"))
            continue
        if isinstance(raw, Unreadable):
            unreadable.append(raw)
        else:
            raws.append(raw)
    positive = positive_class or next((r.positive for r in raws if r.positive), None) or _guess_positive(raws)
    tables: list[Table] = []
    for raw in raws:
        if not raw.rows:
            unreadable.append(Unreadable(raw.path, "has a header but no rows: nothing to monitor"))
        elif positive is None:
            unreadable.append(Unreadable(raw.path, f"no row is flagged, so its positive class (one of "
                                                   f"{', '.join(raw.classes)}) is unknown; give --model"))
        elif positive not in raw.classes:
            unreadable.append(Unreadable(raw.path, f"has no probability column for {positive} (its classes: "
                                                   f"{', '.join(raw.classes)}); monitor one model's classes at once"))
        else:
            tables.append(_to_table(raw, positive, len(tables)))
    return (Table.concat(tables) if tables else None), unreadable


def _guess_positive(raws: Sequence[_Raw]) -> str | None:
    for raw in raws:
        others = [c for c in raw.classes if c.upper() != "NORMAL"]
        if len(others) == 1:
            return others[0]
    return None


def _read_raw(path: Path) -> _Raw | Unreadable:
    with open(path, newline="", encoding="utf-8", errors=_ERRORS) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return Unreadable(str(path), "is empty (not even a header): nothing to monitor")
        problem = _check_header(header)
        if problem:
            return Unreadable(str(path), problem)
        classes = tuple(c[5:] for c in header if c.startswith("prob_"))
        wanted = [*NEEDED_COLUMNS, *GROUP_COLUMNS, *(f"prob_{c}" for c in classes)]
        index = {name: i for i, name in enumerate(header)}
        get = operator.itemgetter(*(index[name] for name in wanted))
        width = len(header)
        kept = []
        dropped = 0
        for fields_ in reader:
            if len(fields_) == width:
                kept.append(get(fields_))
            elif fields_:
                dropped += 1
    columns = dict(zip(wanted, zip(*kept, strict=True), strict=True)) if kept else {}
    positive = None
    if kept:
        flagged = columns["flagged"]
        first = next((i for i, value in enumerate(flagged) if value == "true"), None)
        positive = columns["label"][first] if first is not None else None
    return _Raw(str(path), classes, columns, dropped, positive)


def _check_header(header: list[str]) -> str:
    lowered = {h.strip().lower() for h in header}
    if lowered >= {"study_instance_uid", "n_images"}:
        return "is a per-study file (RESULTS.studies.csv), not a results file"
    if not {"path", "status"} <= lowered:
        return f"is not a medcam results file (its columns: {', '.join(header[:8])}{' ...' if len(header) > 8 else ''})"
    missing = [c for c in (*NEEDED_COLUMNS, *GROUP_COLUMNS) if c not in header]
    if "error" in header or "scored_at" in missing:
        return ("was written by an older medcam (no scored_at and acquisition columns): score those images again "
                "into a new results file, or leave this file out")
    if missing:
        return f"lacks the column(s) {', '.join(missing)}; it was written by another version of medcam"
    if not any(h.startswith("prob_") for h in header):
        return "has no prob_<class> columns"
    return ""


def _to_table(raw: _Raw, positive: str, number: int) -> Table:
    c = raw.columns
    status_codes = {s: i for i, s in enumerate(STATUSES)}
    status = np.fromiter((status_codes.get(s, 2) for s in c["status"]), dtype=np.int8, count=raw.rows)
    ok = status == 0
    probability = _floats(c[f"prob_{positive}"])
    probability[~ok] = np.nan
    flagged = (np.array(c["flagged"], dtype=object) == "true") & ok
    return Table(
        status=status,
        reason=np.array(c["reason"], dtype=object),
        probability=probability,
        flagged=flagged.astype(bool),
        ood_score=_floats(c["ood_score"]),
        lung_evidence=_floats(c["lung_evidence"]),
        caution=(np.array(c["quality"], dtype=object) != "") & ok,
        model=np.array(c["model"], dtype=object),
        segmenter=np.array(c["segmenter"], dtype=object),
        scored_at=parse_times(c["scored_at"]),
        study_date=parse_dates(c["study_date"]),
        groups={k: np.array(c[k], dtype=object) for k in GROUP_COLUMNS},
        source=np.full(raw.rows, number, dtype=np.int32),
        files=(raw.path,),
        positive_class=positive,
        dropped=raw.dropped,
    )


def _floats(values: Sequence[str]) -> np.ndarray:
    try:
        return np.array([float(v) if v else np.nan for v in values], dtype=np.float64)
    except ValueError:
        return np.array([_float(v) for v in values], dtype=np.float64)


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return np.nan


_ZULU = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def parse_times(values: Sequence[str]) -> np.ndarray:
    """ISO 8601 times as UTC ``datetime64[s]``: medcam writes ``YYYY-MM-DDTHH:MM:SSZ``; other
    offsets are converted; anything else is NaT."""
    if all(len(v) == 20 for v in values):
        try:
            return np.array([v[:19] for v in values], dtype="datetime64[s]")
        except ValueError:
            pass
    return np.array([_time(v) for v in values], dtype="datetime64[s]")


def _time(value: str) -> np.datetime64:
    if _ZULU.fullmatch(value):
        return np.datetime64(value[:19], "s")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return np.datetime64("NaT", "s")
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return np.datetime64(when.replace(microsecond=0), "s")


def parse_dates(values: Sequence[str]) -> np.ndarray:
    """DICOM dates (``YYYYMMDD``) as ``datetime64[D]``; empty or malformed ones are NaT."""
    text = [f"{v[:4]}-{v[4:6]}-{v[6:8]}" if len(v) == 8 and v.isdigit() else "NaT" for v in values]
    try:
        return np.array(text, dtype="datetime64[D]")
    except ValueError:
        return np.array([_date(t) for t in text], dtype="datetime64[D]")


def _date(text: str) -> np.datetime64:
    try:
        return np.datetime64(text, "D")
    except ValueError:
        return np.datetime64("NaT", "D")
