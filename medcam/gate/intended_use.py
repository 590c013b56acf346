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

from pathlib import Path

from medcam.config import IntendedUse
from medcam.errors import CheckpointError, ConfigError
from medcam.gate.metadata import update_checkpoint
from medcam.models.checkpoint import Checkpoint

__all__ = ["METADATA_KEY", "IntendedUse", "read_intended_use", "write_intended_use"]

METADATA_KEY = "intended_use"


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
