"""NIfTI images, read with nibabel, keeping the file's affine.

A radiograph in NIfTI is a 2D array, or 3D/4D with singleton trailing axes. NIfTI stores
``data[i, j]`` with ``i`` the first voxel axis; medcam's pixels are ``data[:, :, 0].T``, so
that voxel ``(i, j, 0)`` is column ``i`` and row ``j`` and the file's affine applies unchanged.
Intensities are scaled to [0, 1] by ``cal_min``/``cal_max`` when the header sets them, else
by the 0.5th-99.5th percentiles.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from medcam.errors import UnsupportedInputError
from medcam.io.image import Image
from medcam.io.provenance import own_nifti

__all__ = ["read_nifti"]


def read_nifti(path: str | Path) -> Image:
    """Read a 2D NIfTI image (``.nii`` or ``.nii.gz``)."""
    path = Path(path)
    try:
        nii = nib.load(path)
    except (ImageFileError, OSError, EOFError, ValueError) as err:
        raise UnsupportedInputError(path, f"not a readable NIfTI file ({err})") from err
    if not isinstance(nii, (nib.Nifti1Image, nib.Nifti2Image)):
        raise UnsupportedInputError(path, f"{type(nii).__name__} is not NIfTI")
    own = own_nifti(np.asarray(nii.header["descrip"]).item())
    if own:
        raise UnsupportedInputError(path, own)
    try:
        data = np.asarray(nii.dataobj, dtype=np.float64)
    except (OSError, EOFError, ValueError) as err:
        raise UnsupportedInputError(path, f"truncated or corrupt NIfTI data ({err})") from err
    shape = data.shape
    if data.ndim < 2 or any(n != 1 for n in shape[2:]) or min(shape[:2]) < 2:
        raise UnsupportedInputError(
            path, f"unsupported NIfTI dimensions {shape}; expected a 2D image (X, Y[, 1, ...])"
        )
    plane = data.reshape(shape[:2]).T
    if not np.isfinite(plane).all():
        raise UnsupportedInputError(path, "pixel values are not finite (NaN or Inf)")
    header = nii.header
    cal_min, cal_max = float(header["cal_min"]), float(header["cal_max"])
    if cal_max > cal_min:
        low, high, how = cal_min, cal_max, "cal_min/cal_max"
    else:
        low, high = (float(v) for v in np.percentile(plane, [0.5, 99.5]))
        how = "0.5-99.5 percentile range"
    pixels = np.clip((plane - low) / (high - low), 0, 1) if high > low else np.zeros_like(plane)
    zooms = header.get_zooms()
    spacing = (float(zooms[1]), float(zooms[0])) if min(zooms[:2]) > 0 else None
    return Image(pixels=pixels.astype(np.float32)[None], path=str(path), format="nifti",
                 spacing=spacing, affine=np.asarray(nii.affine, dtype=float), display=how)
