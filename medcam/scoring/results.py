"""The results file: one CSV row per input, appended durably, resumable after any crash.

Columns: ``path, status, reason, sop_instance_uid, series_instance_uid, study_instance_uid,
prob_<class>..., label, flagged, ood_score, lung_evidence, quality, model, segmenter, calibration``, then
:data:`ACQUISITION_COLUMNS` (when the row was written and, from DICOM headers, what a monitor
groups by), then the columns of the files the run writes (see
:attr:`medcam.scoring.ScoreOptions.output_columns`). ``path`` is absolute; ``status`` is
``ok`` (analysed), ``not_analysed`` (refused: outside the model's intended use) or ``error``
(the file or its outputs failed), and ``reason`` says why for the last two; ``flagged`` is
``true`` when the positive class's probability is at or above the model's operating
threshold, and ``label`` is the positive class exactly then (otherwise the most probable of
the other classes). The README's "Results" section documents every column.

Durability: every batch of rows is written with one ``write``, flushed and ``fsync``-ed
before the next batch is scored. A crash (``kill -9``, power loss) can therefore leave at
most one torn row at the end; :meth:`ResultsFile.open` cuts it away and returns the paths
already present, which the next run skips, so the file ends with exactly one row per input.
Rows never contain a line break inside a field except in a path that has one (quoted), so a
row is complete when it ends in a newline outside quotes. An exclusive lock stops a second
run from appending to the same file; forked children (the decoding workers) get their copy
of the file's descriptor pointed at ``/dev/null``, so that they can neither keep the lock
alive after the run is killed nor write to the file.

The per-study file is rebuilt from the results file by :func:`write_studies`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO

from medcam.errors import MedcamError
from medcam.files import atomic_open
from medcam.models.checkpoint import Checkpoint

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, the rest works
    fcntl = None  # type: ignore[assignment]

__all__ = ["ACQUISITION_COLUMNS", "HEADER_COLUMNS", "HEADER_KEYWORDS", "STATUSES", "ModelInfo", "ResultsFile",
           "SkippedFile", "label_of", "make_row", "read_results", "results_columns", "skipped_path", "studies_path",
           "write_studies"]

ID_COLUMNS = ("path", "status", "reason", "sop_instance_uid", "series_instance_uid", "study_instance_uid")
# What monitoring a deployed model needs, never patient identity: the UTC time the row was
# written, then DICOM header values (empty for other formats), in this order.
HEADER_KEYWORDS = {"study_date": "StudyDate", "manufacturer": "Manufacturer",
                   "manufacturer_model": "ManufacturerModelName", "station_name": "StationName",
                   "view_position": "ViewPosition", "body_part": "BodyPartExamined",
                   "photometric": "PhotometricInterpretation", "bits_stored": "BitsStored"}
HEADER_COLUMNS = tuple(HEADER_KEYWORDS)
ACQUISITION_COLUMNS = ("scored_at", *HEADER_COLUMNS)
STATUSES = ("ok", "not_analysed", "error")
_ERRORS = "surrogateescape"  # with UTF-8: any path the OS gives round-trips

_LOCKED: set[int] = set()  # descriptors of the results files this process holds locked


def _release_in_child() -> None:
    if not _LOCKED:
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in _LOCKED:
        os.dup2(null, fd)
    os.close(null)
    _LOCKED.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_release_in_child)


@dataclass(frozen=True)
class ModelInfo:
    """What a row, or a prediction rebuilt away from the model, needs to know about the model."""

    model_id: str
    classes: tuple[str, ...]
    positive_class: str
    threshold: float
    temperature: float = 1.0
    class_bias: tuple[float, ...] | None = None
    segmenter_id: str = ""

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, segmenter_id: str = "") -> ModelInfo:
        return cls(checkpoint.model_id, checkpoint.model.classes, checkpoint.model.positive_class,
                   checkpoint.threshold, checkpoint.temperature, checkpoint.class_bias, segmenter_id)


def results_columns(classes: Sequence[str], outputs: Sequence[str] = ()) -> list[str]:
    """The header of a results file for a model with ``classes`` and the output columns ``outputs``."""
    return [*ID_COLUMNS, *(f"prob_{c}" for c in classes), "label", "flagged", "ood_score", "lung_evidence",
            "quality", "model", "segmenter", "calibration", *ACQUISITION_COLUMNS, *outputs]


def label_of(model: ModelInfo, probabilities: Sequence[float]) -> tuple[str, bool]:
    """The row's ``label`` and ``flagged``: the positive class exactly when it is flagged.

    Flagged means the positive class's calibrated probability reaches the operating
    threshold; otherwise the label is the most probable of the other classes, so that a row
    never says PNEUMONIA and not flagged at once.
    """
    positive = model.classes.index(model.positive_class)
    flagged = probabilities[positive] >= model.threshold
    if flagged:
        return model.positive_class, True
    others = [i for i in range(len(model.classes)) if i != positive]
    return model.classes[max(others, key=lambda i: probabilities[i])], False


def make_row(model: ModelInfo, path: str, status: str, reason: str, uids: Sequence[str],
             probabilities: Sequence[float] | None, outputs: Mapping[str, str] | None = None,
             columns: Sequence[str] = (), ood_score: float | None = None, *,
             lung_evidence: float | None = None, quality: str = "", calibration: str = "",
             header: Sequence[str] = ()) -> list[str]:
    """One row; ``probabilities`` (in class order) only for an ``ok`` row.

    ``reason`` says why for the other statuses; on an ``ok`` row it is empty or a note (an
    image analysed outside the intended use). ``ood_score`` is the out-of-distribution
    score of the image when the model has the statistics; ``lung_evidence``, ``quality``
    (see :attr:`medcam.models.Prediction.quality`) and ``calibration`` (the group of populations
    whose map gave the probabilities, :attr:`medcam.models.Prediction.calibration_group`) are kept
    on ``ok`` rows only. ``header`` holds
    the values of :data:`HEADER_COLUMNS` (empty for non-DICOM inputs); ``scored_at`` is now, in
    UTC. ``outputs`` fills the output ``columns`` (file paths, counts), empty where absent.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    reason = " ".join(reason.split())
    if status != "ok" or probabilities is None:
        status = "error" if status == "ok" else status
        values = [status, reason or "unknown error", *uids, *([""] * len(model.classes)), "", ""]
    else:
        label, flagged = label_of(model, probabilities)
        values = ["ok", reason, *uids, *(f"{p:.6f}" for p in probabilities), label, "true" if flagged else "false"]
    score = "" if ood_score is None else f"{ood_score:.3f}"
    analysed = values[0] == "ok"
    evidence = f"{lung_evidence:.4f}" if analysed and lung_evidence is not None else ""
    header = [*header, *[""] * (len(HEADER_COLUMNS) - len(header))]
    when = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return [path, *values, score, evidence, quality if analysed else "", model.model_id, model.segmenter_id,
            calibration if analysed else "", when, *header, *((outputs or {}).get(c, "") for c in columns)]


class ResultsFile:
    """An append-only results CSV, opened for a run with :meth:`open` (a context manager).

    Attributes:
        done: paths that already have a row (skip them).
    """

    def __init__(self, path: Path, columns: list[str], handle: IO[str], done: set[str]) -> None:
        self.path = path
        self.columns = columns
        self.done = done
        self._handle = handle

    @classmethod
    def open(cls, path: str | Path, columns: list[str], model_id: str, *, resume: bool = True,
             segmenter_id: str = "") -> ResultsFile:
        """Open ``path`` for appending, creating it with ``columns`` as header if needed.

        An existing file is checked (same columns, same model), a torn last row is cut
        away, and the paths already present are collected in :attr:`done`. With
        ``resume=False`` an existing file is started afresh instead (``predict``, ``export``).

        Raises:
            MedcamError: the file is locked by another run, has other columns, was scored
                by another model or lung segmenter, or a row before the last is damaged.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", newline="", encoding="utf-8", errors=_ERRORS)  # noqa: SIM115 (closed by close())
        try:
            _lock(handle, path)
            if not resume:
                handle.truncate(0)
            done = _recover(handle, path, columns, model_id, segmenter_id)
        except BaseException:
            _LOCKED.discard(handle.fileno())
            handle.close()
            raise
        return cls(path, columns, handle, done)

    def append(self, rows: Sequence[Sequence[str]]) -> None:
        """Write ``rows`` in one go and make them durable before returning."""
        if not rows:
            return
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        self._handle.write(buffer.getvalue())
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.done.update(row[0] for row in rows)

    def close(self) -> None:
        _LOCKED.discard(self._handle.fileno())
        self._handle.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def read_results(path: str | Path) -> Iterator[dict[str, str]]:
    """The rows of a results file as dictionaries, streamed (a torn last row is left out)."""
    with open(path, newline="", encoding="utf-8", errors=_ERRORS) as f:
        rows = _complete_rows(f)
        header = next(rows, None)
        for fields in rows:
            yield dict(zip(header or (), fields, strict=False))


def _beside(results: str | Path, kind: str) -> Path:
    results = Path(results)
    stem = results.name[:-4] if results.name.lower().endswith(".csv") else results.name
    return results.with_name(f"{stem}.{kind}.csv")


def studies_path(results: str | Path) -> Path:
    """Where the per-study file of ``results`` goes: ``RESULTS.csv`` -> ``RESULTS.studies.csv``."""
    return _beside(results, "studies")


def skipped_path(results: str | Path) -> Path:
    """Where the files a run passed over are listed: ``RESULTS.csv`` -> ``RESULTS.skipped.csv``."""
    return _beside(results, "skipped")


class SkippedFile:
    """``RESULTS.skipped.csv``: ``path, reason`` of every file found in a folder that is not an
    input (a DICOMDIR, a text file ...). Written afresh by every run, since every run walks the
    folders again; appended per batch."""

    def __init__(self, results: str | Path) -> None:
        self.path = skipped_path(results)
        with open(self.path, "w", newline="", encoding="utf-8", errors=_ERRORS) as f:
            csv.writer(f, lineterminator="\n").writerow(["path", "reason"])

    def append(self, rows: Sequence[tuple[str, str]]) -> None:
        if rows:
            with open(self.path, "a", newline="", encoding="utf-8", errors=_ERRORS) as f:
                csv.writer(f, lineterminator="\n").writerows(rows)


def write_studies(results: str | Path, positive_class: str, out: str | Path | None = None) -> Path:
    """(Re)build the per-study file from ``results``, atomically, and return its path.

    One row per Study Instance UID (non-DICOM inputs have none and are left out), highest
    ``max_prob_<positive_class>`` first: ``study_instance_uid, n_images, n_ok,
    n_not_analysed, n_error, max_prob_<positive>, flagged`` (any image flagged), ``model``.
    """
    out = Path(out) if out is not None else studies_path(results)
    column = f"prob_{positive_class}"
    studies: dict[str, list] = {}  # uid -> [n, n_ok, n_error, max p or None, flagged, models, n_not_analysed]
    for row in read_results(results):
        uid = row.get("study_instance_uid", "")
        if not uid:
            continue
        entry = studies.setdefault(uid, [0, 0, 0, None, False, set(), 0])
        entry[0] += 1
        entry[5].add(row.get("model", ""))
        if row.get("status") == "not_analysed":
            entry[6] += 1
            continue
        if row.get("status") != "ok":
            entry[2] += 1
            continue
        entry[1] += 1
        p = float(row[column])
        entry[3] = p if entry[3] is None else max(entry[3], p)
        entry[4] = entry[4] or row.get("flagged") == "true"
    ordered = sorted(studies.items(), key=lambda kv: (-(kv[1][3] if kv[1][3] is not None else -1.0), kv[0]))
    with atomic_open(out, "w", newline="", encoding="utf-8", errors=_ERRORS) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["study_instance_uid", "n_images", "n_ok", "n_not_analysed", "n_error", f"max_{column}",
                         "flagged", "model"])
        for uid, (n, n_ok, n_error, best, flagged, models, n_refused) in ordered:
            writer.writerow([uid, n, n_ok, n_refused, n_error, "" if best is None else f"{best:.6f}",
                             "true" if flagged else "false" if best is not None else "",
                             ";".join(sorted(models))])
    return out


def _lock(handle: IO[str], path: Path) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        raise MedcamError(f"{path} is being written by another medcam score run; wait for it "
                          "or choose another --out") from err
    _LOCKED.add(handle.fileno())


def _recover(handle: IO[str], path: Path, columns: list[str], model_id: str, segmenter_id: str) -> set[str]:
    """Check the existing rows, cut a torn last row, write the header of a new file."""
    handle.seek(0)
    model = columns.index("model")
    segmenter = columns.index("segmenter")
    done: set[str] = set()
    good = 0
    header: list[str] | None = None
    for number, (fields, end) in enumerate(_rows_with_ends(handle), start=1):
        if header is None:
            header = fields
            if header[:3] == ["path", "status", "error"]:
                raise MedcamError(
                    f"{path} was written by an older medcam (an 'error' column where rows now have "
                    "'reason' and the status not_analysed); score into a new --out, or rename the old file"
                )
            missing = [c for c in results_columns(()) if c not in header]
            if "model" in header and missing:  # a medcam results file, from before these columns
                raise MedcamError(
                    f"{path} was written by an older medcam (no {', '.join(missing)} "
                    f"column{'s' if len(missing) > 1 else ''}); score into a new --out, or rename the old file"
                )
            if header != columns:
                raise MedcamError(
                    f"{path} has the columns {','.join(header)}, but this run writes "
                    f"{','.join(columns)} (another model, or --cams/--regions given on one run only); "
                    "choose another --out"
                )
        elif len(fields) != len(columns):
            raise MedcamError(f"{path}, row {number}: {len(fields)} fields instead of {len(columns)}; "
                              "the file was edited or damaged, repair or remove that row")
        else:
            if fields[model] != model_id:
                raise MedcamError(
                    f"{path}, row {number} was scored by model {fields[model]}, "
                    f"this run uses {model_id}; use the same --model or another --out"
                )
            if fields[segmenter] != segmenter_id:
                raise MedcamError(
                    f"{path}, row {number} was scored with the lung segmenter {fields[segmenter] or '(none)'}, "
                    f"this run uses {segmenter_id or '(none)'}; use the same --segmenter or another --out"
                )
            done.add(fields[0])
        good = end
    if os.fstat(handle.fileno()).st_size != good:  # a torn row (or header) from an interrupted write
        os.ftruncate(handle.fileno(), good)
        os.fsync(handle.fileno())
    handle.seek(0, os.SEEK_END)
    if header is None:
        csv.writer(handle, lineterminator="\n").writerow(columns)
        handle.flush()
        os.fsync(handle.fileno())
        _fsync_folder(path.parent)
    handle.seek(0, os.SEEK_END)
    return done


def _rows_with_ends(handle: IO[str]) -> Iterator[tuple[list[str], int]]:
    """Complete rows and the byte offset just after each; a torn tail is not yielded.

    A row is complete when it ends with a newline and has an even number of quotes (csv
    doubles quotes inside quoted fields, so an odd count means a line break inside a field).
    """
    pending = ""
    offset = 0
    for line in handle:
        pending += line
        if not pending.endswith("\n") or pending.count('"') % 2:
            continue
        offset += len(pending.encode("utf-8", "surrogateescape"))
        yield next(csv.reader(io.StringIO(pending, newline=""))), offset
        pending = ""


def _complete_rows(handle: IO[str]) -> Iterator[list[str]]:
    for fields, _ in _rows_with_ends(handle):
        yield fields


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the file itself is synced
    finally:
        os.close(fd)
