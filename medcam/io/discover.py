"""Finding input files under folders, safely.

Folders are walked recursively in sorted order; symbolic links to folders are followed once
(a link loop or a second path to the same folder is skipped) and unreadable folders are
reported, not fatal. Hidden files and folders (``.name``) are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from medcam.errors import MedcamError

if TYPE_CHECKING:
    from medcam.io.dicom import VOI
    from medcam.io.image import Image

__all__ = ["iter_files", "iter_image_batches", "iter_images"]


def iter_files(paths: Iterable[str | Path], *,
               on_error: Callable[[Path, str], None] | None = None) -> Iterator[Path]:
    """Yield every regular file named in ``paths`` or found below the folders among them.

    Args:
        paths: files and folders.
        on_error: called with ``(path, reason)`` for a missing path or an unreadable folder.
    """
    seen: set[tuple[int, int]] = set()
    for start in paths:
        path = Path(start)
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from _walk(path, seen, on_error)
        elif on_error is not None:
            on_error(path, "no such file or folder")


def iter_images(paths: Iterable[str | Path], *,
                on_error: Callable[[Path, str], None] | None = None) -> Iterator[Path]:
    """Like :func:`iter_files`, but files found inside folders are kept only when their
    content is DICOM, PNG or JPEG, or their name ends in ``.nii``/``.nii.gz``; a DICOMDIR
    found inside a folder is an index of the images beside it, not an image, and is skipped.
    Files named explicitly are always yielded, so that a wrong one is reported rather than
    skipped."""
    from medcam.io import detect_format, is_dicomdir

    paths = list(paths)
    named = {Path(p) for p in paths}
    for path in iter_files(paths, on_error=on_error):
        if path in named:
            yield path
            continue
        fmt = detect_format(path)
        if fmt is not None and not (fmt == "dicom" and is_dicomdir(path)):
            yield path


def _walk(folder: Path, seen: set[tuple[int, int]],
          on_error: Callable[[Path, str], None] | None) -> Iterator[Path]:
    try:
        info = folder.stat()
    except OSError as err:
        if on_error is not None:
            on_error(folder, f"cannot read folder ({err.strerror})")
        return
    key = (info.st_dev, info.st_ino)
    if key in seen:
        return
    seen.add(key)
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as err:
        if on_error is not None:
            on_error(folder, f"cannot read folder ({err.strerror})")
        return
    for entry in entries:
        try:
            if entry.is_dir():
                yield from _walk(Path(entry.path), seen, on_error)
            elif entry.is_file():
                yield Path(entry.path)
        except OSError as err:
            if on_error is not None:
                on_error(Path(entry.path), f"cannot read ({err.strerror})")


def iter_image_batches(paths: Iterable[str | Path], batch_size: int, *,
                       on_error: Callable[[Path, str], None], voi: VOI = "auto",
                       min_size: int | None = None) -> Iterator[list[Image]]:
    """Load the images of :func:`iter_images` ``batch_size`` at a time, in discovery order
    (``voi`` and ``min_size`` as for :func:`medcam.io.load_image`).

    A path that is missing, unreadable or refused by its reader goes to ``on_error`` with the
    reason, and loading goes on. At most one batch of decoded images is held at a time.
    """
    from medcam.io import load_image

    batch: list[Image] = []
    for path in iter_images(paths, on_error=on_error):
        try:
            batch.append(load_image(path, voi=voi, min_size=min_size))
        except MedcamError as err:
            on_error(path, str(err))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
