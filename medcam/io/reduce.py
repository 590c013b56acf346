"""Decoding a DICOM image at reduced resolution, when the model needs far fewer pixels.

A 1955 x 1841 CR resized to 320 x 320 does not need its full resolution decoded. Given the
smallest side the caller needs (``min_size``), :func:`reduction_factor` picks the largest
integer factor ``f`` that keeps both sides at least ``1.25 * min_size`` (a margin for the
resize that follows), and :func:`decode_reduced` decodes the stored values at ``1/f``:

- **JPEG 2000**: OpenJPEG decodes ``log2 f`` resolution levels fewer (``f`` a power of two,
  at most the codestream's decomposition levels); see :mod:`medcam.io.openjpeg`.
- **JPEG baseline (8-bit)**: libjpeg-turbo's scaled inverse DCT through Pillow's
  ``Image.draft`` (``f`` of 2, 4 or 8), which gives the mean of each ``f x f`` block.
- **Everything else** (uncompressed, RLE, JPEG-LS, JPEG lossless, or when the above cannot
  be used): the full decode, then the mean of each whole ``f x f`` block of stored values
  (the last ``rows % f`` rows and ``cols % f`` columns are dropped), rounded to integers,
  so that the display steps run on ``f**2`` times fewer pixels.

Geometry, in the pixel-edge convention of :mod:`medcam.models.grid` (pixel ``i`` covers
``[i, i + 1)``): reduced pixel ``j`` stands for the source block ``[f j, f (j + 1))``, its
centre at source index ``(j + 0.5) f - 0.5``; a reduced coordinate ``x`` is the source
coordinate ``f x``. Block means and the scaled DCT give exactly that. JPEG 2000's level-``r``
sample ``j`` is centred on source index ``f j`` instead (its sub-band sampling), so it is
moved ``(f - 1) / 2`` source pixels onto the block centre by linear interpolation between
neighbouring samples. Block means cover ``rows // f`` blocks; the scaled DCT and JPEG 2000
``ceil(rows / f)``, the last one partly beyond the image.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from pydicom.encaps import generate_frames
from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit

from medcam.io.openjpeg import OpenJpegError, decode_reduced, decoded_levels

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydicom import Dataset

__all__ = ["MARGIN", "MAX_BLOCK_FACTOR", "Reduced", "block_mean", "decode_reduced_dicom", "reduction_factor"]

#: Both reduced sides stay at least ``MARGIN * min_size``.
MARGIN = 1.25
_DCT_FACTORS = (8, 4)
"""libjpeg-turbo's DCT scaling at 1/2 moved the bundled model's probability of an RSNA film
(1024x1024) by 0.0105, beyond the exactness budget (``tests/test_reduced_scoring.py``); at a
factor of 2 a JPEG is decoded in full and block-averaged like the other syntaxes (0.0097)."""


@dataclass(frozen=True)
class Reduced:
    """Stored values decoded at ``1/factor``.

    Attributes:
        stored: the reduced stored values (an integer array, as pydicom would decode them).
        factor: source pixels per reduced pixel along each axis.
        how: how it was reduced, for :attr:`medcam.io.Image.display`.
    """

    stored: np.ndarray
    factor: int
    how: str


MAX_BLOCK_FACTOR = 2
"""The largest block mean used after a full decode: larger ones moved RG1's probability beyond
the budget that ``tests/test_reduced_scoring.py`` holds every radiograph to (the README's
"Full-size radiographs" says by how much); the decoders' own reductions stay within it."""


MAX_LEVELS = 1
"""Resolution levels dropped at most from JPEG 2000: at two, RG3_J2KI's probability moved beyond
the exactness budget (``tests/test_reduced_scoring.py``) with the two-source model, and RG1_J2KR's
(0.0135 > 0.01) and RG3_J2KR's map with the three-source model; at one they stay within it."""


def reduction_factor(shape: tuple[int, int], min_size: int | None, *, powers_of_two: bool = False,
                     rounding: Callable[[float], int] = math.floor) -> int:
    """The largest factor ``f`` with ``rounding(side / f) >= MARGIN * min_size`` for both sides.

    Args:
        shape: ``(rows, cols)`` of the full image.
        min_size: the smallest side the caller needs; None asks for no reduction.
        powers_of_two: restrict ``f`` to powers of two (JPEG 2000 levels, DCT scaling).
        rounding: how a decoder rounds ``side / f`` (floor for whole blocks, ceil for
            JPEG 2000 and the scaled DCT).

    Raises:
        ValueError: ``min_size`` is not a positive integer.
    """
    if min_size is None:
        return 1
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise ValueError(f"min_size must be a positive integer or None, got {min_size!r}")
    need = MARGIN * min_size
    factor, candidate = 1, 2
    while all(rounding(n / candidate) >= need for n in shape):
        factor = candidate
        candidate = candidate * 2 if powers_of_two else candidate + 1
    return factor


def block_mean(stored: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each whole ``factor x factor`` block, rounded (half to even) to the input's
    integer type.

    8- and 16-bit values: OpenCV's area resize in float32, an exact block mean at integer
    factors (every sum of up to 16 x 16 such values is a float32 integer); any other type:
    numpy's strided sums in a type wide enough.
    """
    if factor == 1:
        return stored
    rows, cols = (n // factor for n in stored.shape)
    whole = stored[: rows * factor, : cols * factor]
    if stored.dtype in (np.uint8, np.uint16, np.int16) and factor <= 16 and rows and cols:
        means = cv2.resize(whole.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
        return np.rint(means).astype(stored.dtype)
    integer = stored.dtype.kind in "iu"
    wide = np.int64 if not integer or stored.dtype.itemsize > 2 or factor > 128 else np.int32
    accumulator = np.zeros((rows * factor, cols), dtype=wide if integer else np.float64)
    for offset in range(factor):
        accumulator += whole[:, offset::factor]
    sums = np.zeros((rows, cols), dtype=accumulator.dtype)
    for offset in range(factor):
        sums += accumulator[offset::factor]
    means = sums / factor**2
    return (np.rint(means) if integer else means).astype(stored.dtype)


def decode_reduced_dicom(ds: Dataset, min_size: int | None,
                         decode_full: Callable[[Dataset], np.ndarray]) -> Reduced:
    """The stored values of ``ds`` at the largest reduction ``min_size`` allows.

    Args:
        ds: a single-frame grayscale image (already checked by the reader).
        min_size: the smallest side needed, or None for the full resolution.
        decode_full: the reader's full decode, used for block means and as the fallback.
    """
    shape = (int(ds.Rows), int(ds.Columns))
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if reduction_factor(shape, min_size) > 1:
        if syntax in (JPEG2000Lossless, JPEG2000):
            reduced = _jpeg2000(ds, shape, min_size)
            if reduced is not None:
                return reduced
        elif syntax == JPEGBaseline8Bit:
            reduced = _jpeg_dct(ds, shape, min_size)
            if reduced is not None:
                return reduced
    stored = decode_full(ds)
    factor = min(MAX_BLOCK_FACTOR, reduction_factor(stored.shape[:2], min_size))
    how = f"block mean {factor}x{factor} of stored values" if factor > 1 else ""
    return Reduced(block_mean(stored, factor), factor, how)


def _frame(ds: Dataset) -> bytes:
    return next(iter(generate_frames(ds.PixelData, number_of_frames=1)))


def _jpeg2000(ds: Dataset, shape: tuple[int, int], min_size: int | None) -> Reduced | None:
    """OpenJPEG's reduced decode, or None when it does not apply (the caller falls back)."""
    factor = reduction_factor(shape, min_size, powers_of_two=True, rounding=math.ceil)
    try:
        codestream = _frame(ds)
        levels = min(int(math.log2(factor)), decoded_levels(codestream), MAX_LEVELS)
        if levels < 1:
            return None
        samples, precision, signed = decode_reduced(codestream, levels)
    except (OpenJpegError, StopIteration, ValueError):
        return None
    # What pydicom's decoders would give, or fall back to them when the codestream and the
    # header disagree (pydicom then corrects signedness and bit depth)
    if signed != bool(ds.PixelRepresentation) or precision != int(ds.BitsStored):
        return None
    factor = 2**levels
    expected = tuple(math.ceil(n / factor) for n in shape)
    if samples.shape != expected:
        return None
    dtype = np.dtype(f"{'i' if signed else 'u'}{max(1, (int(ds.BitsAllocated) + 7) // 8)}")
    return Reduced(np.rint(_onto_blocks(samples, factor, precision)).astype(dtype), factor,
                   f"JPEG 2000 decoded {levels} resolution levels down (1/{factor})")


def _onto_blocks(samples: np.ndarray, factor: int, precision: int) -> np.ndarray:
    """JPEG 2000 samples centred on source ``f j`` moved onto the block centres ``f j +
    (f - 1) / 2``: a linear interpolation ``(f - 1) / (2 f)`` of the way to the next sample
    along each axis (the last one is repeated).

    ``f`` is a power of two (resolution levels) and ``precision`` the samples' bit depth. The
    weight has ``log2 f + 1`` fractional bits, so after both axes a value is a multiple of
    ``(2 f)^-2`` no larger in magnitude than the largest sample: float32 holds every
    intermediate exactly for samples of up to 16 bits at ``f <= 8``, float64 is used otherwise;
    the values are the same either way.
    """
    exact32 = precision <= 16 and factor <= 8
    out: npt.NDArray[np.floating[Any]] = samples.astype(np.float32 if exact32 else np.float64)
    weight = (factor - 1) / (2 * factor)
    out[:-1] += weight * (out[1:] - out[:-1])
    out[:, :-1] += weight * (out[:, 1:] - out[:, :-1])
    return out


def _jpeg_dct(ds: Dataset, shape: tuple[int, int], min_size: int | None) -> Reduced | None:
    """libjpeg-turbo's scaled DCT (8-bit grayscale only), or None when it does not apply."""
    if int(ds.BitsAllocated) != 8 or int(ds.PixelRepresentation) != 0:
        return None
    factor = reduction_factor(shape, min_size, powers_of_two=True, rounding=math.ceil)
    factor = next((f for f in _DCT_FACTORS if f <= factor), 1)
    if factor == 1:
        return None
    try:
        with PILImage.open(io.BytesIO(_frame(ds))) as img:
            if img.mode != "L":
                return None
            img.draft("L", (shape[1] // factor, shape[0] // factor))
            samples = np.asarray(img)
    except (OSError, StopIteration, ValueError):
        return None
    if samples.shape != tuple(math.ceil(n / factor) for n in shape):
        return None
    return Reduced(samples, factor, f"JPEG DCT scaled 1/{factor}")
