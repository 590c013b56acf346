"""The results file: one CSV row per input, appended durably, resumable after any crash.

Columns: ``path, status, error, sop_instance_uid, series_instance_uid, study_instance_uid,
prob_<class>..., label, flagged, model`` (and ``overlay, cam`` when CAM files are written).
``path`` is absolute; ``status`` is ``ok`` or ``error``; ``flagged`` is ``true`` when the
positive class's probability is at or above the model's operating threshold.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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

__all__ = ["ModelInfo", "ResultsFile", "make_row", "read_results", "results_columns", "studies_path",
           "write_studies"]

ID_COLUMNS = ("path", "status", "error", "sop_instance_uid", "series_instance_uid", "study_instance_uid")
CAM_COLUMNS = ("overlay", "cam")
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

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> ModelInfo:
        return cls(checkpoint.model_id, checkpoint.model.classes, checkpoint.model.positive_class,
                   checkpoint.threshold, checkpoint.temperature)


def results_columns(classes: Sequence[str], *, cams: bool = False) -> list[str]:
    """The header of a results file for a model with ``classes``."""
    return [*ID_COLUMNS, *(f"prob_{c}" for c in classes), "label", "flagged", "model",
            *(CAM_COLUMNS if cams else ())]


def make_row(model: ModelInfo, path: str, error: str, uids: Sequence[str],
             probabilities: Sequence[float] | None, files: dict[str, str] | None = None) -> list[str]:
    """One row; ``probabilities`` (in class order) is None for an error row.

    ``files``, when given, fills the CAM columns (``overlay`` and ``cam``)."""
    if probabilities is None or error:
        values = ["error", " ".join(error.split()) or "unknown error", *uids, *([""] * len(model.classes)), "", ""]
    else:
        best = max(range(len(model.classes)), key=lambda i: probabilities[i])
        positive = probabilities[model.classes.index(model.positive_class)]
        values = ["ok", "", *uids, *(f"{p:.6f}" for p in probabilities), model.classes[best],
                  "true" if positive >= model.threshold else "false"]
    row = [path, *values, model.model_id]
    if files is not None:
        row += [files.get(k, "") for k in CAM_COLUMNS]
    return row


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
    def open(cls, path: str | Path, columns: list[str], model_id: str) -> ResultsFile:
        """Open ``path`` for appending, creating it with ``columns`` as header if needed.

        An existing file is checked (same columns, same model), a torn last row is cut
        away, and the paths already present are collected in :attr:`done`.

        Raises:
            MedcamError: the file is locked by another run, has other columns, was scored
                by another model, or a row before the last is damaged.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", newline="", encoding="utf-8", errors=_ERRORS)  # noqa: SIM115 (closed by close())
        try:
            _lock(handle, path)
            done = _recover(handle, path, columns, model_id)
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


def studies_path(results: str | Path) -> Path:
    """Where the per-study file of ``results`` goes: ``RESULTS.csv`` -> ``RESULTS.studies.csv``."""
    results = Path(results)
    stem = results.name[:-4] if results.name.lower().endswith(".csv") else results.name
    return results.with_name(f"{stem}.studies.csv")


def write_studies(results: str | Path, positive_class: str, out: str | Path | None = None) -> Path:
    """(Re)build the per-study file from ``results``, atomically, and return its path.

    One row per Study Instance UID (non-DICOM inputs have none and are left out), highest
    ``max_prob_<positive_class>`` first: ``study_instance_uid, n_images, n_ok, n_error,
    max_prob_<positive>, flagged`` (any image flagged), ``model``.
    """
    out = Path(out) if out is not None else studies_path(results)
    column = f"prob_{positive_class}"
    studies: dict[str, list] = {}  # uid -> [n, n_ok, n_error, max probability or None, flagged, models]
    for row in read_results(results):
        uid = row.get("study_instance_uid", "")
        if not uid:
            continue
        entry = studies.setdefault(uid, [0, 0, 0, None, False, set()])
        entry[0] += 1
        entry[5].add(row.get("model", ""))
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
        writer.writerow(["study_instance_uid", "n_images", "n_ok", "n_error", f"max_{column}",
                         "flagged", "model"])
        for uid, (n, n_ok, n_error, best, flagged, models) in ordered:
            writer.writerow([uid, n, n_ok, n_error, "" if best is None else f"{best:.6f}",
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


def _recover(handle: IO[str], path: Path, columns: list[str], model_id: str) -> set[str]:
    """Check the existing rows, cut a torn last row, write the header of a new file."""
    handle.seek(0)
    model = columns.index("model")
    done: set[str] = set()
    good = 0
    header: list[str] | None = None
    for number, (fields, end) in enumerate(_rows_with_ends(handle), start=1):
        if header is None:
            header = fields
            if header != columns:
                raise MedcamError(
                    f"{path} has the columns {','.join(header)}, but this run writes "
                    f"{','.join(columns)} (another model, or --cams given on one run only); "
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
