"""The inputs of a scoring run, streamed: one :class:`Item` per file, never a full list.

Folders are walked with :func:`medcam.io.discover.iter_files` (sorted, symbolic-link loops
skipped, unreadable folders reported). Whether a file found inside a folder is an image is
decided later, by the decoding workers (:func:`medcam.scoring.dataset.load_record`), so that
content sniffing runs in parallel; files named explicitly are always scored or refused.
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from medcam.io.discover import iter_files

__all__ = ["Item", "count_items", "iter_items"]


@dataclass(frozen=True)
class Item:
    """One input: its absolute path, whether it was named explicitly, and an error found
    while walking (a missing path, an unreadable folder), empty otherwise."""

    path: str
    named: bool
    error: str = ""


def iter_items(inputs: Iterable[str | Path], *, skip: Container[str] = (),
               outputs: Iterable[str | Path] = ()) -> Iterator[Item]:
    """Yield an :class:`Item` per file in or under ``inputs``, leaving out paths in ``skip``.

    Paths are made absolute (symbolic links are kept as given), so that a results file
    written from one working folder is resumed from any other. A path reached twice (named
    and inside a named folder) is yielded once. Files in or below ``outputs`` (the run's own
    results and CAM folder, when they lie inside an input folder) are left out.
    """
    inputs = list(inputs)
    own = tuple(os.path.abspath(p) for p in outputs)
    named = {os.path.abspath(p) for p in inputs}
    problems: list[Item] = []
    seen: set[str] = set()

    def report(path: Path, reason: str) -> None:
        problems.append(Item(os.path.abspath(path), named=True, error=reason))

    def fresh(path: str) -> bool:
        if path in skip or path in seen or any(path == o or path.startswith(o + os.sep) for o in own):
            return False
        seen.add(path)
        return True

    for path in iter_files(inputs, on_error=report):
        yield from (item for item in _drain(problems) if fresh(item.path))
        absolute = os.path.abspath(path)
        if fresh(absolute):
            yield Item(absolute, absolute in named)
    yield from (item for item in _drain(problems) if fresh(item.path))


def count_items(inputs: Iterable[str | Path], *, skip: Container[str] = (),
                outputs: Iterable[str | Path] = ()) -> int:
    """How many items :func:`iter_items` yields (a walk of the folders, no file is read)."""
    return sum(1 for _ in iter_items(inputs, skip=skip, outputs=outputs))


def _drain(problems: list[Item]) -> Iterator[Item]:
    while problems:
        yield problems.pop(0)
