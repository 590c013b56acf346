"""Safe output file names, whatever the input path or a DICOM tag contains.

A name is reduced to letters, digits, ``.``, ``_`` and ``-``; it never starts with a dot,
never is empty and is at most ``max_length`` characters (a hash of the full original keeps
long or rewritten names distinct). :func:`safe_path` joins such a name to an output folder
and checks that the result lies inside it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = ["result_stem", "safe_name", "safe_path"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, *, max_length: int = 96) -> str:
    """A file-name-safe version of ``text`` (not including any extension you add later)."""
    cleaned = _UNSAFE.sub("_", text).strip("._-")
    if cleaned == text and 0 < len(text) <= max_length:
        return cleaned
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    head = cleaned[: max_length - len(digest) - 1].rstrip("._-")
    return f"{head}-{digest}" if head else digest


def safe_path(folder: str | Path, name: str) -> Path:
    """``folder / safe_name(name)``, guaranteed to be inside ``folder``.

    ``name`` may carry an extension: the last suffix is kept when it is a plain one.
    """
    stem, dot, suffix = name.rpartition(".")
    if dot and stem and re.fullmatch(r"[A-Za-z0-9]{1,8}", suffix):
        file_name = f"{safe_name(stem)}.{suffix}"
    else:
        file_name = safe_name(name)
    root = Path(folder).resolve()
    path = (root / file_name).resolve()
    if path.parent != root:  # cannot happen with a cleaned name; kept as a guard
        raise ValueError(f"refusing to write {path}: outside {root}")
    return path


def result_stem(name: str, class_name: str) -> str:
    """The file name stem ``<name>_<class>`` of one image's results, short enough for any suffix."""
    return safe_name(f"{name}_{class_name}", max_length=80)
