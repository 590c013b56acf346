"""One exception family for everything medcam refuses.

Every message names the file (or argument) and the reason, in a sentence a radiographer can
act on. Catch :class:`MedcamError` to handle any refusal; the subclasses say which kind.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CheckpointError", "ConfigError", "MedcamError", "UnsupportedInputError",
           "UnsupportedModelError"]


class MedcamError(Exception):
    """Base class of every error medcam raises on purpose."""


class UnsupportedInputError(MedcamError, ValueError):
    """An input file that medcam cannot or will not read, and why.

    Args:
        path: the file that was refused.
        reason: what is wrong with it, as a sentence fragment ("no pixel data").
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedModelError(MedcamError, TypeError):
    """A network that cannot be converted to a single-pass CAM model."""


class CheckpointError(MedcamError, ValueError):
    """A checkpoint file that is missing, corrupt or lacks its metadata."""


class ConfigError(MedcamError, ValueError):
    """A configuration value that is missing or wrong."""
