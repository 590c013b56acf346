"""Maps and masks as NIfTI, on the source image's geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medcam.io.image import Image
from medcam.io.provenance import NIFTI_MARK, SOFTWARE

__all__ = ["write_nifti"]


def write_nifti(path: str | Path, image: Image, planes: np.ndarray, *, description: str = "") -> Path:
    """Write ``planes`` ``(K, rows, cols)`` as NIfTI with ``image``'s affine.

    The array is stored as ``(cols, rows, 1, K)`` so that voxel ``(i, j, 0)`` is column ``i``
    and row ``j``, the convention of :class:`~medcam.io.Image.affine`; a single plane is
    stored 3D. The affine is never an identity by default: an image without one (PNG/JPEG)
    is refused. The header description begins with ``medcam output:``, so that medcam never
    reads the file back as an input (:func:`medcam.io.provenance.own_nifti`).
    """
    if image.affine is None:
        raise ValueError(f"{image.path}: a {image.format} image has no geometry to write NIfTI with")
    planes = np.asarray(planes)
    if planes.ndim != 3 or planes.shape[1:] != image.shape:
        raise ValueError(f"planes must have shape (K, {image.shape[0]}, {image.shape[1]}), got {planes.shape}")
    data = np.transpose(planes, (2, 1, 0))[:, :, None, :]
    if data.shape[-1] == 1:
        data = data[..., 0]
    nii = nib.Nifti1Image(data, image.affine)
    nii.header.set_xyzt_units("mm")
    text = f"{NIFTI_MARK} {description.removeprefix(SOFTWARE).strip()}".strip()
    nii.header["descrip"] = text[:79].encode()  # marks it as medcam's output: read_nifti refuses it
    path = Path(path)
    nib.save(nii, path)
    return path
