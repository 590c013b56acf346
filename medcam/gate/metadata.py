"""Adding gate entries (intended use, image-gate statistics) to an existing checkpoint file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medcam.errors import CheckpointError

__all__ = ["update_checkpoint"]

# Metadata that save_checkpoint writes from its own arguments; everything else travels in ``extra``.
_REWRITTEN = ("model", "preprocess", "temperature", "threshold", "trained")


def update_checkpoint(path: str | Path, updates: dict[str, Any], *, out: str | Path | None = None) -> str:
    """Re-save a checkpoint with metadata entries added or replaced; returns the new model id.

    Weights, their storage precision (float16 stays float16) and every other metadata entry
    (training record, versions, calibration) are kept as they were; the file is written
    atomically, at ``out`` when given, else over ``path``. The model id changes, since it is
    the hash of the file.

    Args:
        path: the checkpoint, or ``"bundled"`` (then ``out`` is required).
        updates: metadata entries to add or replace: plain containers, scalars and tensors.
        out: where to write the updated checkpoint.

    Raises:
        CheckpointError: ``path`` is not a readable checkpoint, ``out`` is missing for the
            bundled model, or ``updates`` would replace an entry that describes the weights
            (model, preprocess, temperature, threshold, trained).
    """
    from medcam.models.checkpoint import BUNDLED_MODEL, load_checkpoint, save_checkpoint

    if str(path) == BUNDLED_MODEL and out is None:
        raise CheckpointError("the bundled model is part of the package; give out= for an updated copy")
    clash = sorted(set(updates) & set(_REWRITTEN))
    if clash:
        raise CheckpointError(
            f"update_checkpoint does not change {', '.join(clash)}; retrain or recalibrate instead"
        )
    ckpt = load_checkpoint(path)
    payload = torch.load(ckpt.path, map_location="cpu", weights_only=True)
    floats = [v.dtype for v in payload["state_dict"].values() if v.is_floating_point()]
    half = bool(floats) and all(dtype == torch.float16 for dtype in floats)
    extra = {k: v for k, v in ckpt.metadata.items() if k not in _REWRITTEN}
    extra.update(updates)
    return save_checkpoint(out if out is not None else ckpt.path, ckpt.network, ckpt.model,
                           ckpt.preprocess, temperature=ckpt.temperature, threshold=ckpt.threshold,
                           trained=ckpt.trained, half=half, extra=extra)
