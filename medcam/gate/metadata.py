"""Adding gate entries (intended use, image-gate statistics) to an existing checkpoint file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcam.models.checkpoint import resave_checkpoint

__all__ = ["update_checkpoint"]


def update_checkpoint(path: str | Path, updates: dict[str, Any], *, out: str | Path | None = None) -> str:
    """Re-save a checkpoint with metadata entries added or replaced; returns the new model id.

    Weights, their storage precision (float16 stays float16) and every other metadata entry
    (training record, versions, calibration) are kept as they were
    (:func:`~medcam.models.checkpoint.resave_checkpoint`); the file is written atomically, at
    ``out`` when given, else over ``path``. The model id changes, since it is the hash of the file.

    Args:
        path: the checkpoint, or ``"bundled"`` (then ``out`` is required).
        updates: metadata entries to add or replace: plain containers, scalars and tensors.
        out: where to write the updated checkpoint.

    Raises:
        CheckpointError: ``path`` is not a readable checkpoint, ``out`` is missing for the
            bundled model, or ``updates`` would replace an entry that describes the weights
            (model, preprocess, temperature, class_bias, threshold, trained).
    """
    return resave_checkpoint(path, out=out, updates=updates)
