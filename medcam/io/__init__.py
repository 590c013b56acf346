"""Loading images: one entry point, :func:`load_image`, for DICOM, NIfTI, PNG and JPEG.

DICOM is recognised by content (preamble or a parse), not by extension; NIfTI by its
``.nii``/``.nii.gz`` suffix; PNG/JPEG by their signature. Everything refused raises
:class:`~medcam.errors.UnsupportedInputError` naming the file and the reason: an empty file
is an ``"empty file"``, a ``.dcm``/``.dicom`` file that is not DICOM is ``"not a DICOM file"``,
a DICOMDIR is refused with :data:`DICOMDIR_REASON` (:func:`is_dicomdir` tells one apart first).
"""

from __future__ import annotations

from pathlib import Path

from medcam.errors import UnsupportedInputError
from medcam.io.dicom import (
    DICOMDIR_REASON,
    VOI,
    identity_of,
    is_dicom,
    is_dicomdir,
    read_dataset,
    read_dicom,
    read_identity,
)
from medcam.io.image import DicomIdentity, Image, ImageFormat
from medcam.io.nifti import read_nifti
from medcam.io.raster import read_raster

__all__ = ["DICOMDIR_REASON", "VOI", "DicomIdentity", "Image", "ImageFormat", "detect_format", "identity_of",
           "is_dicom", "is_dicomdir", "load_image", "read_dataset", "read_dicom", "read_identity", "read_nifti",
           "read_raster"]

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


def detect_format(path: str | Path) -> ImageFormat | None:
    """The format of ``path`` judged from its content (NIfTI from its suffix), or None."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head.startswith(_PNG):
        return "png"
    if head.startswith(_JPEG):
        return "jpeg"
    return "dicom" if is_dicom(path) else None


def load_image(path: str | Path, *, voi: VOI = "auto", min_size: int | None = None) -> Image:
    """Load a DICOM, NIfTI, PNG or JPEG file as an :class:`Image`.

    Args:
        path: the file.
        voi: the DICOM VOI step, see :mod:`medcam.io.dicom`; ignored for other formats.
        min_size: for DICOM, the smallest side the caller needs: the image is decoded at the
            largest reduction that keeps both sides at least 1.25 times that
            (:mod:`medcam.io.reduce`; :attr:`Image.reduction` says by how much). Other
            formats are read at full resolution. None (default): full resolution.

    Raises:
        UnsupportedInputError: the file does not exist, is of an unknown format, or is
            refused by its reader; the message names the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        reason = "is a folder, not a file" if path.is_dir() else "no such file"
        raise UnsupportedInputError(path, reason)
    try:
        empty = path.stat().st_size == 0
    except OSError as err:
        raise UnsupportedInputError(path, f"cannot read the file ({err.strerror or err})") from err
    if empty:
        raise UnsupportedInputError(path, "empty file")
    fmt = detect_format(path)
    if fmt == "dicom":
        return read_dicom(path, voi=voi, min_size=min_size)
    if fmt == "nifti":
        return read_nifti(path)
    if fmt in ("png", "jpeg"):
        return read_raster(path)
    if path.suffix.lower() in _DICOM_SUFFIXES:
        raise UnsupportedInputError(path, "not a DICOM file (no DICM preamble and no DICOM data set)")
    raise UnsupportedInputError(path, "unknown format; expected DICOM, NIfTI (.nii/.nii.gz), PNG or JPEG")
