"""What a model is meant to read, kept as data in its checkpoint.

A model trained on frontal chest radiographs of children says nothing useful about a CT
slice, a lateral film or an adult's chest. :class:`IntendedUse` records what the model may
read; :func:`medcam.gate.tags.check_tags` holds a DICOM header against it. It lives in the
checkpoint's metadata under :data:`METADATA_KEY`, as a plain dictionary, so that whoever
trained the model states its intended use once and every front end applies the same one.

Example:
    >>> use = IntendedUse(min_age=1, max_age=5)
    >>> IntendedUse.from_dict(use.to_dict()) == use
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcam.errors import CheckpointError, ConfigError
from medcam.gate.metadata import update_checkpoint

if TYPE_CHECKING:
    from medcam.models.checkpoint import Checkpoint

__all__ = ["METADATA_KEY", "IntendedUse", "read_intended_use", "write_intended_use"]

METADATA_KEY = "intended_use"


@dataclass(frozen=True)
class IntendedUse:
    """The images a model is meant to read.

    Attributes:
        modalities: DICOM Modality values accepted (``CR`` computed, ``DX`` digital radiography).
        views: View Position values accepted (``PA``, ``AP``: frontal films).
        body_parts: Body Part Examined values accepted (``THORAX`` counts as ``CHEST``).
        min_age: youngest patient, in years; None for no lower bound.
        max_age: oldest patient, in years; None for no upper bound.
        greyscale_only: refuse colour images.
        min_size: smallest accepted number of rows and of columns, in pixels.
        allow_secondary_capture: accept Secondary Capture objects (screenshots, scanned
            films), which are not original radiographs.
    """

    modalities: tuple[str, ...] = ("CR", "DX")
    views: tuple[str, ...] = ("PA", "AP")
    body_parts: tuple[str, ...] = ("CHEST",)
    min_age: float | None = None
    max_age: float | None = None
    greyscale_only: bool = True
    min_size: int = 256
    allow_secondary_capture: bool = False

    def __post_init__(self) -> None:
        for name in ("modalities", "views", "body_parts"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"{name} must be a sequence of strings, got {value!r}")
            object.__setattr__(self, name, tuple(v.strip().upper() for v in value))
        for name in ("min_age", "max_age"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise TypeError(f"{name} must be a number of years or None, got {value!r}")
            if value is not None and value < 0:
                raise ValueError(f"{name} must be at least 0 years, got {value}")
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError(f"min_age ({self.min_age}) is above max_age ({self.max_age})")
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int):
            raise TypeError(f"min_size must be a whole number of pixels, got {self.min_size!r}")
        if self.min_size < 1:
            raise ValueError(f"min_size must be at least 1 pixel, got {self.min_size}")

    @property
    def age_range(self) -> str:
        """The age range in words: ``"18-90"``, ``"at least 18"``, ``"up to 5"`` or ``"any"``."""
        low, high = _years(self.min_age), _years(self.max_age)
        if self.min_age is not None and self.max_age is not None:
            return f"{low}-{high}"
        if self.min_age is not None:
            return f"at least {low}"
        return f"up to {high}" if self.max_age is not None else "any"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, numbers, None, booleans) for checkpoint metadata or JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntendedUse:
        """Read back :meth:`to_dict`; missing keys take their defaults.

        Raises:
            ConfigError: an unknown key or a wrong value, named.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"intended use: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"intended use: {err}") from err


def _years(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def read_intended_use(checkpoint: Checkpoint) -> IntendedUse:
    """The checkpoint's intended use; the defaults when it records none.

    Raises:
        CheckpointError: the stored intended use is malformed.
    """
    data = checkpoint.metadata.get(METADATA_KEY)
    if data is None:
        return IntendedUse()
    if not isinstance(data, dict):
        raise CheckpointError(f"{checkpoint.path}: {METADATA_KEY!r} metadata is not a mapping")
    try:
        return IntendedUse.from_dict(data)
    except ConfigError as err:
        raise CheckpointError(f"{checkpoint.path}: {err}") from err


def write_intended_use(path: str | Path, use: IntendedUse, *, out: str | Path | None = None) -> str:
    """Record ``use`` in the checkpoint at ``path`` (or a copy at ``out``); returns the new model id.

    The model id changes: it is the hash of the file.
    """
    return update_checkpoint(path, {METADATA_KEY: use.to_dict()}, out=out)
