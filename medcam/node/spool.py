"""The node's spool: received instances, results waiting to be sent, and nothing half-written.

Layout under the spool folder (every name below a fixed folder comes from :func:`uid_name`,
never from another tag value, so nothing can be written outside it)::

    lock                         held by the process using the spool (its pid inside)
    tmp/                         files being written; emptied at every start
    incoming/<series>/<sop>.dcm  received instances, durable before their success response
    results/<series>.csv         the results file of each series (``medcam score``'s columns)
    outputs/<series>/            the DICOM results as the pipeline writes them
    outbox/<file>.dcm            results waiting for the destination's success
    failed/<series>/<sop>.dcm    received instances that could not be analysed (error rows)
    rejected/<file>.dcm          results the destination refused for good, with ``.reason``

Every move between these folders is an ``os.replace`` within one file system followed by an
``fsync`` of the folder, so a file is in one place or the other, whole, whenever the process
dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from medcam.errors import MedcamError

__all__ = ["Series", "Spool", "uid_name"]

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def uid_name(value: object) -> str:
    """A file name for a UID: the UID itself when it is a valid one, else a hash of the value.

    A valid UID (digits and dots, at most 64 characters) cannot contain a path separator or
    ``..``; anything else a sender puts in the tag becomes ``x`` and 32 hex digits.
    """
    text = str(value if value is not None else "").strip().rstrip("\0")
    if 0 < len(text) <= 64 and _UID.fullmatch(text):
        return text
    return "x" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def fsync_folder(folder: Path) -> None:
    """Make a rename or a removal in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Series:
    """One series waiting in ``incoming/``: its folder and its instances."""

    folder: Path
    files: tuple[Path, ...]

    @property
    def key(self) -> str:
        return self.folder.name


class Spool:
    """The folders of one node (module doc); safe to share between the receiving threads and
    the worker of one process. A second process is kept out by :meth:`lock`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.tmp = self.root / "tmp"
        self.incoming = self.root / "incoming"
        self.results = self.root / "results"
        self.outputs = self.root / "outputs"
        self.outbox = self.root / "outbox"
        self.failed = self.root / "failed"
        self.rejected = self.root / "rejected"
        for folder in (self.tmp, self.incoming, self.results, self.outputs, self.outbox, self.failed,
                       self.rejected):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # a series folder is never removed while an instance lands in it
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Hold the spool for this process until it ends (``SPOOL/lock``, an advisory ``flock``
        that the kernel releases whenever the process dies, ``kill -9`` included).

        Raises:
            MedcamError: another process holds it.
        """
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise MedcamError(f"{self.root} is in use by another medcam listen (pid {holder}); give each node "
                              "its own --spool") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def recover(self) -> int:
        """Remove what a previous process left half-written; returns how many files went."""
        removed = 0
        for path in self.tmp.iterdir():
            path.unlink(missing_ok=True)
            removed += 1
        if removed:
            fsync_folder(self.tmp)
        return removed

    # --- receiving -------------------------------------------------------------------------

    def store(self, chunks: Iterable[bytes], series_uid: object, sop_uid: object) -> Path:
        """Write one received instance durably into ``incoming/`` and return its path.

        The bytes go to a file in ``tmp/``, are flushed and ``fsync``-ed, and the file is
        renamed into its series folder, which is ``fsync``-ed too: when this returns, the
        instance survives a crash or power cut. The same instance received again replaces
        the first copy (same UIDs, same name).
        """
        part = self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            with open(part, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            with self._lock:
                folder = self.incoming / uid_name(series_uid)
                created = not folder.exists()
                folder.mkdir(exist_ok=True)
                target = folder / f"{uid_name(sop_uid)}.dcm"
                os.replace(part, target)
                fsync_folder(folder)
                if created:
                    fsync_folder(self.incoming)
        finally:
            part.unlink(missing_ok=True)
        return target

    # --- scoring ---------------------------------------------------------------------------

    def settled(self, settle: float, now: float | None = None) -> Iterator[Series]:
        """The series in ``incoming/`` whose newest instance arrived at least ``settle`` s ago,
        oldest first."""
        now = time.time() if now is None else now
        waiting = []
        for folder in self.incoming.iterdir():
            files = tuple(sorted(p for p in folder.glob("*.dcm") if p.is_file())) if folder.is_dir() else ()
            if not files:
                continue
            try:
                newest = max(p.stat().st_mtime for p in files)
            except FileNotFoundError:  # being replaced right now: not quiet
                continue
            if now - newest >= settle:
                waiting.append((newest, Series(folder, files)))
        for _, series in sorted(waiting, key=lambda item: item[0]):
            yield series

    def results_of(self, series: Series) -> Path:
        return self.results / f"{series.key}.csv"

    def outputs_of(self, series: Series) -> Path:
        return self.outputs / series.key

    def queue(self, series: Series) -> list[Path]:
        """Move the series' DICOM results from ``outputs/`` into the outbox; returns them.

        What else the pipeline wrote there (the lung mask's PNG and NIfTI beside its SEG) is
        not sent and is removed, with the emptied folder.
        """
        folder = self.outputs_of(series)
        if not folder.is_dir():
            return []
        moved = []
        for path in sorted(folder.glob("*.dcm")):
            target = self.outbox / path.name
            os.replace(path, target)
            moved.append(target)
        if moved:
            fsync_folder(self.outbox)
        for path in folder.iterdir():
            if path.is_file() and path.suffix != ".dcm":
                path.unlink()
        try:
            folder.rmdir()
            fsync_folder(self.outputs)
        except OSError:  # something other than a file, or a result written meanwhile: kept
            fsync_folder(folder)
        return moved

    def finish(self, series: Series, done: Iterable[Path], failed: Iterable[Path]) -> None:
        """Remove the series' scored instances and keep the failed ones in ``failed/``; the
        folder goes when nothing else arrived in it meanwhile."""
        keep = self.failed / series.key
        failed = list(failed)
        if failed:
            keep.mkdir(exist_ok=True)
        for path in failed:
            if path.exists():
                os.replace(path, keep / path.name)
        if failed:
            fsync_folder(keep)
        for path in done:
            path.unlink(missing_ok=True)
        with self._lock:
            fsync_folder(series.folder)
            try:
                series.folder.rmdir()
            except OSError:  # an instance arrived since: its series is scored again when quiet
                return
            fsync_folder(self.incoming)

    # --- sending ---------------------------------------------------------------------------

    def waiting(self) -> list[Path]:
        """The results in the outbox, oldest first."""
        files = [p for p in self.outbox.glob("*.dcm") if p.is_file()]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    def sent(self, path: Path) -> None:
        """The destination confirmed ``path``: it leaves the outbox."""
        path.unlink(missing_ok=True)
        fsync_folder(self.outbox)

    def reject(self, path: Path, reason: str) -> Path:
        """The destination refused ``path`` for good: keep it in ``rejected/`` with the reason."""
        target = self.rejected / path.name
        target.with_suffix(".reason").write_text(reason + "\n", encoding="utf-8")
        os.replace(path, target)
        fsync_folder(self.rejected)
        fsync_folder(self.outbox)
        return target
