"""Regenerate the RG1 test fixtures from the pydicom-data package (MIT licence).

Run from anywhere, with medcam and pydicom-data installed::

    python tests/data/rg1/make_samples.py

Every file is written next to this script; see ``README.md`` for what each one is. The
outputs are deterministic: re-encoded DICOM files get a UID derived from the source UID
and the transfer syntax, not a random one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image as PILImage
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, JPEGLSLossless, RLELossless, generate_uid

from medcam.io import load_image

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
SOURCE = "RG1_UNCR.dcm"
TWIN = "RG1_J2KR.dcm"
PNG_LONG_SIDE = 512
# Full-resolution float32 NIfTI is 10 MB gzipped; block means of 4x4 pixels keep it under 1 MB.
NIFTI_FACTOR = 4
# (file name, transfer syntax, encoder plugin, Image Comments / Derivation Description)
REENCODINGS = (
    ("RG1_JLSL.dcm", JPEGLSLossless, "pyjpegls", "JPEG-LS lossless"),
    ("RG1_RLE.dcm", RLELossless, "pylibjpeg", "RLE lossless"),
)


def _testdata(name: str) -> Path:
    found = get_testdata_file(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not in pydicom's test data; pip install pydicom-data")
    return Path(str(found))


def copy_originals(out: Path) -> None:
    """Copy RG1_UNCR.dcm and its JPEG 2000 lossless twin byte for byte."""
    for name in (SOURCE, TWIN):
        shutil.copyfile(_testdata(name), out / name)


def reencode(out: Path) -> None:
    """Write lossless JPEG-LS and RLE re-encodings of RG1_UNCR.dcm with pydicom's encoders."""
    for name, syntax, plugin, what in REENCODINGS:
        ds = dcmread(_testdata(SOURCE))
        ds.compress(syntax, encoding_plugin=plugin, generate_instance_uid=False)
        uid = generate_uid(entropy_srcs=[str(ds.SOPInstanceUID), str(syntax)])
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
        del ds.file_meta.SourceApplicationEntityTitle  # was the original writer's
        ds.ImageComments = f"{what} (re-encoded from RG1_UNCR by medcam make_samples.py)"
        ds.DerivationDescription = what
        ds.save_as(out / name, enforce_file_format=True)


def downsample(
    pixels: np.ndarray, affine: np.ndarray, factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """Block means of ``factor`` x ``factor`` pixels and the affine that keeps them in place.

    Trailing rows/columns that do not fill a block are dropped (the origin is unchanged).
    Output voxel ``(i, j)`` covers source voxels ``factor*i ... factor*i + factor - 1``, so
    its centre is source voxel ``factor*i + (factor - 1) / 2``.
    """
    rows, cols = (n // factor for n in pixels.shape)
    blocks = pixels[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor)
    centre = (factor - 1) / 2
    grid = np.array([[factor, 0, 0, centre], [0, factor, 0, centre], [0, 0, 1, 0], [0, 0, 0, 1]])
    return blocks.mean(axis=(1, 3)), affine @ grid


def derive_nifti_and_png(out: Path) -> None:
    """Write RG1's display pixels as a float32 NIfTI (with its affine) and a small 8-bit PNG."""
    image = load_image(out / "dicom" / SOURCE)
    if image.affine is None:
        raise ValueError(f"{SOURCE} loaded without an affine; the NIfTI would lose its geometry")
    plane, affine = downsample(image.pixels[0].astype(np.float64), image.affine, NIFTI_FACTOR)
    nii = nib.Nifti1Image(np.ascontiguousarray(plane.T, dtype=np.float32), affine)
    block = f"{NIFTI_FACTOR}x{NIFTI_FACTOR}"
    nii.header["descrip"] = f"medcam sample: RG1_UNCR display [0,1], {block} mean"
    nii.header["cal_min"], nii.header["cal_max"] = 0.0, 1.0  # already display values
    nii.header.set_xyzt_units("mm")
    nib.save(nii, out / "nifti" / "RG1.nii.gz")

    rows, cols = image.shape
    scale = PNG_LONG_SIDE / max(rows, cols)
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    gray = PILImage.fromarray(np.rint(image.pixels[0] * 255).astype(np.uint8))
    gray.resize(size, PILImage.Resampling.LANCZOS).save(out / "png" / "RG1.png", optimize=True)


def main(root: Path = HERE) -> None:
    """Regenerate every RG1 fixture under ``root``."""
    for sub in ("dicom", "nifti", "png"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    copy_originals(root / "dicom")
    reencode(root / "dicom")
    derive_nifti_and_png(root)


if __name__ == "__main__":
    main()
