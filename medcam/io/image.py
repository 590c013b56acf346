"""The loaded image: display pixels with the geometry and identity that exports need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["DicomIdentity", "Image", "ImageFormat"]

ImageFormat = Literal["dicom", "nifti", "png", "jpeg"]


@dataclass(frozen=True)
class DicomIdentity:
    """The UIDs that results and derived DICOM objects must carry (empty when absent)."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    patient_id: str


@dataclass(frozen=True, eq=False)
class Image:
    """One 2D image, ready for the model and for export.

    Attributes:
        pixels: float32 array ``(1, rows, cols)`` of display intensities in [0, 1], air dark
            (see :mod:`medcam.io.dicom` for the DICOM display pipeline).
        path: the file it came from.
        format: ``dicom``, ``nifti``, ``png`` or ``jpeg``.
        spacing: ``(row, col)`` pixel spacing in mm, ``None`` when unknown.
        affine: 4x4 voxel-to-world matrix in the NIfTI (RAS+) convention, where voxel
            ``(i, j, 0)`` is column ``i`` and row ``j`` of :attr:`pixels`; ``None`` for PNG/JPEG.
        identity: DICOM UIDs, ``None`` for other formats.
        dicom: the DICOM header without its pixel data (patient, study and series modules for
            derived objects), ``None`` for other formats. Treat it as read-only.
        display: how the pixels were derived, e.g. ``"rescale; window C=2048 W=4096; inverted"``.
        reduction: source pixels per pixel of :attr:`pixels` along each axis: 1 for a full
            decode, ``f`` when decoded at ``1/f`` (``load_image(..., min_size=...)``, see
            :mod:`medcam.io.reduce`). :attr:`spacing` and :attr:`affine` describe the reduced
            pixels. Pixel ``j`` stands for the source block ``[f j, f (j + 1))`` (centre at
            source index ``(j + 0.5) f - 0.5``): in the pixel-edge convention of
            :mod:`medcam.models.grid` a coordinate ``x`` is the source coordinate ``f x``.
        full_shape: ``(rows, cols)`` of the full source image; :attr:`shape` when not reduced.
    """

    pixels: np.ndarray
    path: str
    format: ImageFormat
    spacing: tuple[float, float] | None = None
    affine: np.ndarray | None = None
    identity: DicomIdentity | None = None
    dicom: Dataset | None = None
    display: str = ""
    reduction: int = 1
    full_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.reduction < 1:
            raise ValueError(f"reduction must be at least 1, got {self.reduction!r}")
        if self.full_shape is None:
            object.__setattr__(self, "full_shape", self.shape)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])
