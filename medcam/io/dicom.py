"""DICOM reading and the display pipeline.

The pixels a radiologist sees are derived in the order of DICOM PS3.3 C.11 (the grayscale
pipeline), with pydicom's implementations:

1. **Modality LUT** — Rescale Slope/Intercept or the Modality LUT Sequence
   (:func:`pydicom.pixels.apply_modality_lut`).
2. **VOI** — chosen by ``voi``:

   - ``"auto"`` (default): the VOI LUT Sequence if present, else the first Window
     Center/Width, else ``"none"``;
   - ``"lut"`` / ``"window"``: that one, refused if the file has none;
   - ``(center, width)``: this window, with the file's VOI LUT Function;
   - ``"none"``: no VOI; values are clipped to their 0.5th-99.5th percentiles.

   The VOI output range is scaled to [0, 1]: the window's full output range, or the lowest
   to highest entry of the LUT (values beyond the LUT's inputs take its first/last entry).
3. **Polarity** — the output is inverted (``1 - x``) so that air is dark in every image when
   the Presentation LUT Shape (2050,0020) is ``INVERSE``, or when it is absent and the
   Photometric Interpretation is ``MONOCHROME1``. A shape of ``IDENTITY`` means the VOI output
   is already in P-values and is not inverted. The shape and MONOCHROME1 are one inversion,
   not two: PS3.3 C.8.11.3 requires ``INVERSE`` *because* an image is MONOCHROME1 (DCMTK and
   Weasis >= 4.1 display it the same way). pydicom's
   :func:`~pydicom.pixels.apply_presentation_lut` applies the shape alone.

Refused, with :class:`~medcam.errors.UnsupportedInputError`: medcam's own results
(:mod:`medcam.io.provenance`), empty files, files that are not DICOM, truncated files (cut
inside an element, its header, or before a delimiter), DICOMDIRs (media directories;
:func:`is_dicomdir` tells them apart without reading them whole), non-image objects (no
Pixel Data, or SEG, RT Dose, presentation states, SR ...), multi-frame images with more than
one frame (choose a frame upstream), colour or palette images (a grayscale model must not
guess at luminance of a colour DICOM), truncated or undecodable pixel data, and non-finite
values.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, get_decoder
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MediaStorageDirectoryStorage,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from medcam.errors import UnsupportedInputError
from medcam.io.image import DicomIdentity, Image
from medcam.io.provenance import own_dicom
from medcam.io.reduce import decode_reduced_dicom, reduction_factor

__all__ = ["DICOMDIR_REASON", "VOI", "identity_of", "is_dicom", "is_dicomdir", "read_dataset", "read_dicom",
           "read_identity"]

VOI = Literal["auto", "lut", "window", "none"] | tuple[float, float]

#: The reason given when a DICOMDIR is passed as an image.
DICOMDIR_REASON = "DICOMDIR (a media directory, not an image)"
_UNDEFINED_LENGTH = 0xFFFFFFFF

# SOP classes that carry pixel data but are not images of the patient.
_NON_IMAGE_PREFIXES = {
    "1.2.840.10008.5.1.4.1.1.66": "a segmentation/registration/raw-data object",
    "1.2.840.10008.5.1.4.1.1.481.2": "an RT dose grid",
    "1.2.840.10008.5.1.4.1.1.30": "a parametric map",
    "1.2.840.10008.5.1.4.1.1.11.": "a presentation state",
    "1.2.840.10008.5.1.4.1.1.88.": "a structured report",
    "1.2.840.10008.5.1.4.1.1.104.": "an encapsulated document",
}
# The decoder that spends the least CPU time on each syntax, where pydicom's first choice is
# another (measured by ``benchmarks/bench_decode.py``; figures in the README): for JPEG 2000,
# GDCM's threads finish sooner but spend more CPU than OpenJPEG, and batch scoring already
# keeps every core decoding.
_FAST_PLUGINS: dict[str, str] = {
    JPEGBaseline8Bit: "pillow",
    JPEGLSLossless: "pyjpegls",
    JPEGLSNearLossless: "pyjpegls",
    JPEG2000Lossless: "pylibjpeg",
    JPEG2000: "pylibjpeg",
}
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT",
           "PALETTE COLOR", "ARGB", "CMYK", "HSV")


def is_dicom(path: str | Path) -> bool:
    """True when the file starts with a DICOM preamble or parses as a DICOM data set."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
            if len(head) == 132 and head[128:] == b"DICM":
                return True
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=[
            "SOPClassUID", "Modality", "Rows"])
    except Exception:  # pydicom raises a variety of errors on junk; junk is simply "no"
        return False
    return any(tag in ds for tag in ("SOPClassUID", "Modality", "Rows"))


def is_dicomdir(path: str | Path) -> bool:
    """True when the file is a DICOMDIR (Media Storage Directory), judged from its File Meta.

    Reads only the File Meta group, so that a batch can skip a DICOMDIR found among the
    images of a folder without parsing its directory records.
    """
    try:
        meta = read_file_meta_info(path)
    except Exception:  # no File Meta (or junk): a DICOMDIR always has one
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) == MediaStorageDirectoryStorage


def read_identity(path: str | Path) -> DicomIdentity | None:
    """The UIDs in a DICOM file's header, without its pixels; None when there are none.

    For reports about files whose pixels were refused (truncated, undecodable ...), so that
    the refusal can still be placed in its study. A header that does not parse has no UIDs.
    """
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=[
            "SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID",
            "FrameOfReferenceUID", "PatientID"])
    except Exception:  # junk has no header, which is the answer
        return None
    return identity_of(ds)


def identity_of(ds: Dataset) -> DicomIdentity | None:
    """The UIDs of a data set already read; None when it has none."""
    identity = _identity(ds)
    return identity if identity.sop_instance_uid or identity.study_instance_uid else None


def read_dicom(path: str | Path, *, voi: VOI = "auto", min_size: int | None = None,
               dataset: Dataset | None = None) -> Image:
    """Read a single-frame grayscale DICOM image through the display pipeline.

    Args:
        path: the file.
        voi: the VOI step (see the module documentation).
        min_size: the smallest side the caller needs (e.g. the model's input size); the
            image is then decoded at the largest reduction that keeps both sides at least
            1.25 times that (:mod:`medcam.io.reduce`); :attr:`Image.reduction` and
            :attr:`Image.full_shape` say how it maps onto the full image. None (default)
            decodes the full resolution.
        dataset: ``path`` as :func:`read_dataset` read it, when the caller has already read
            it (e.g. to check its header); it is not read again.

    Raises:
        UnsupportedInputError: with the file name and the reason it was refused.
        ValueError: ``min_size`` is not a positive integer.
    """
    path = Path(path)
    reduction_factor((1, 1), min_size)  # the argument is checked before the file is read
    ds = dataset if dataset is not None else read_dataset(path)
    _check_image(ds, path)
    try:
        reduced = decode_reduced_dicom(ds, min_size, _stored_pixels)
    except Exception as err:  # decoders raise ValueError, RuntimeError, NotImplementedError ...
        raise UnsupportedInputError(path, _decode_reason(ds, err)) from err
    pixels, steps = _display(reduced.stored, ds, voi, path)
    if reduced.how:
        steps.insert(0, reduced.how)
    header = copy.copy(ds)
    for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if tag in header:
            del header[tag]
    spacing = _spacing(ds)
    affine = _affine(ds, spacing)
    factor = reduced.factor
    if factor > 1:
        # reduced voxel (i, j) is centred on source voxel f * (i, j) + (f - 1) / 2
        centre = (factor - 1) / 2
        affine = affine @ np.array([[factor, 0, 0, centre], [0, factor, 0, centre],
                                    [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
        spacing = None if spacing is None else (spacing[0] * factor, spacing[1] * factor)
    return Image(
        pixels=pixels[None],
        path=str(path),
        format="dicom",
        spacing=spacing,
        affine=affine,
        identity=_identity(ds),
        dicom=header,
        display="; ".join(steps),
        reduction=factor,
        full_shape=(int(ds.Rows), int(ds.Columns)),
    )


def read_dataset(path: str | Path) -> Dataset:
    """The whole data set of ``path``, pixels not yet decoded.

    Raises:
        UnsupportedInputError: the file is empty, not DICOM, a DICOMDIR, cut short or corrupt.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size == 0:
                raise UnsupportedInputError(path, "empty file")
            ds, forced = _parse(f, path, size)
            if _is_dicomdir(ds):
                raise UnsupportedInputError(path, DICOMDIR_REASON)
            truncated = _truncation(ds, f, size)
    except OSError as err:
        raise UnsupportedInputError(path, f"cannot read the file ({err.strerror or err})") from err
    if truncated:
        raise UnsupportedInputError(path, truncated)
    if forced:
        _infer_transfer_syntax(ds)
    return ds


def _parse(f: BinaryIO, path: Path, size: int) -> tuple[Dataset, bool]:
    """``(data set, whether it was read without a DICM preamble)``. A parse error raised
    once the reader has reached the end of the file is reported as a truncation."""
    what: Exception
    try:
        try:
            return pydicom.dcmread(f), False
        except InvalidDicomError:
            if not is_dicom(path):
                raise UnsupportedInputError(
                    path, "not a DICOM file (no DICM preamble and no DICOM data set)") from None
        f.seek(0)
        return pydicom.dcmread(f, force=True), True
    except UnsupportedInputError:
        raise
    except OSError as err:
        if err.errno is not None:  # the operating system's, not pydicom's parse error
            raise UnsupportedInputError(path, f"cannot read the file ({err.strerror or err})") from err
        what = err
    except Exception as err:  # pydicom raises struct.error, BytesLengthException ... on bad bytes
        what = err
    if f.tell() >= size:
        raise UnsupportedInputError(
            path, f"truncated file: it ends inside a data element ({type(what).__name__}: {what})"
        ) from what
    raise UnsupportedInputError(path, f"corrupt DICOM ({type(what).__name__}: {what})") from what


def _is_dicomdir(ds: Dataset) -> bool:
    meta_class = str(getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", ""))
    return meta_class == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds


def _truncation(ds: Dataset, f: BinaryIO, size: int) -> str | None:
    """Why the data set read from ``f``, a file of ``size`` bytes, is cut short; None when it
    is whole (or cut exactly between two elements, which no reader can tell).

    pydicom keeps what it read of a cut file without an error: a value shorter than its
    length, nothing of an element whose header is cut, and nothing of an undefined-length
    value whose delimiter is missing (it rewinds to the start of that value).
    """
    if str(ds.file_meta.get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
        return None  # zlib refuses a cut stream, and pydicom's offsets are in the inflated one
    stopped = f.tell()
    if stopped < size:
        return (f"truncated file: an undefined-length value is not closed by its delimiter "
                f"(pydicom stopped at byte {stopped} of {size})")
    tags = list(ds.keys())
    if not tags:
        return "truncated file: nothing follows its File Meta header"
    last = ds.get_item(tags[-1])
    name = keyword_for_tag(last.tag) or str(last.tag)
    if isinstance(last, RawDataElement):
        start, length = last.value_tell, last.length
    elif last.file_tell is not None and not last.is_undefined_length:
        start = last.file_tell  # converted while reading, e.g. Specific Character Set
        implicit, little = ds.original_encoding
        width = 4 if implicit or last.VR in EXPLICIT_VR_LENGTH_32 else 2
        f.seek(start - width)
        length = int.from_bytes(f.read(width), "little" if little else "big")
    else:
        return None
    if length == _UNDEFINED_LENGTH:
        return None
    if start + length > size and not keyword_for_tag(last.tag) and length > size:
        return (f"corrupt DICOM: an element {name} that no dictionary knows claims {length} bytes, "
                f"more than the whole file ({size} bytes)")
    if start + length > size:
        return f"truncated file: {name} has {size - start} of its {length} bytes"
    if start + length < size:
        return f"truncated file: it ends inside a data element header, after {name}"
    return None


def _infer_transfer_syntax(ds: Dataset) -> None:
    """A data set written without File Meta is encoded in its (native) transfer syntax."""
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        return
    explicit = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else explicit


def _check_image(ds: Dataset, path: Path) -> None:
    own = own_dicom(ds)
    if own:
        raise UnsupportedInputError(path, own)
    sop_class = str(ds.get("SOPClassUID", ""))
    for prefix, what in _NON_IMAGE_PREFIXES.items():
        if sop_class.startswith(prefix):
            name = getattr(ds.SOPClassUID, "name", sop_class)
            raise UnsupportedInputError(path, f"{what} ({name}), not an image")
    if "PixelData" not in ds:
        uid = ds.get("SOPClassUID") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
        name = getattr(uid, "name", "") or "unknown SOP class"
        if "Image Storage" in name:  # an image object without its pixels: cut between elements?
            raise UnsupportedInputError(
                path, f"no pixel data in a {name} object (the file is cut short, or its pixels "
                "were removed)")
        raise UnsupportedInputError(path, f"no pixel data ({name}), not an image")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric in _COLOUR or int(ds.get("SamplesPerPixel", 1)) != 1:
        raise UnsupportedInputError(
            path, f"colour image (Photometric Interpretation {photometric or 'unknown'}); "
            "the model reads grayscale radiographs only"
        )
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedInputError(
            path, f"Photometric Interpretation {photometric or '(missing)'} is not MONOCHROME1/2"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnsupportedInputError(
            path, f"multi-frame image ({frames} frames); medcam reads single-frame radiographs, "
            "split the frames first"
        )


def _stored_pixels(ds: Dataset) -> np.ndarray:
    """The stored pixel values, decoded by the fastest installed plugin for the transfer syntax.

    pydicom tries GDCM first for JPEG baseline, JPEG-LS and JPEG 2000; see :data:`_FAST_PLUGINS`
    for what is used instead. When the preferred plugin is missing or fails, pydicom's own
    order decides.
    """
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    plugin = _FAST_PLUGINS.get(syntax)
    if plugin and plugin in get_decoder(syntax).available_plugins:
        try:
            ds.pixel_array_options(decoding_plugin=plugin)
            return ds.pixel_array
        except Exception:  # the default plugins below decode it, or give the reason
            pass
        finally:
            ds.pixel_array_options(decoding_plugin="")
    return ds.pixel_array


def _decode_reason(ds: Dataset, err: Exception) -> str:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    message = str(err)
    lowered = message.lower()
    if "less than expected" in lowered or (
        "length" in lowered and ("expected" in lowered or "match" in lowered)
    ):
        return f"truncated pixel data ({message})"
    name = getattr(syntax, "name", str(syntax)) if syntax else "unknown transfer syntax"
    return f"cannot decode the pixel data ({name}): {type(err).__name__}: {message}"


def _display(stored: np.ndarray, ds: Dataset, voi: VOI, path: Path) -> tuple[np.ndarray, list[str]]:
    """Stored values to display values in [0, 1] (float32): modality LUT, VOI, polarity.

    Each step maps every stored value on its own, so an integer image goes through a lookup
    table: the steps run once on each value from the image's minimum to its maximum, and the
    image indexes the result. The pixels are those of running the steps on every pixel (to
    the bit, but for float64 rounding in the ``"none"`` VOI's percentiles), at a fraction of
    the cost (``benchmarks/bench_decode.py``).
    """
    index, values = _lookup(stored)
    modality = apply_modality_lut(values, ds).astype(np.float64, copy=False)
    # A table also holds values between the image's that no pixel has; that changes nothing
    # here: a rescale is monotonic (non-finite at an extreme if anywhere), a LUT is integers.
    if not np.isfinite(modality).all():
        raise UnsupportedInputError(path, "pixel values are not finite (NaN or Inf)")
    display, steps = _apply_voi(modality, ds, voi, path, index)
    inverted, how = _polarity(ds)
    if inverted:
        display = 1.0 - display
    if how:
        steps.append(how)
    display = display.astype(np.float32)
    return (display if index is None else display[index]), steps


def _polarity(ds: Dataset) -> tuple[bool, str]:
    """Whether the VOI output is inverted for display, and the step's description ("" for none).

    See the module documentation: Presentation LUT Shape when present, else MONOCHROME1.
    """
    monochrome1 = str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if shape == "INVERSE":
        return True, ("MONOCHROME1 inverted" if monochrome1 else "inverted") + \
            " (Presentation LUT Shape INVERSE)"
    if shape == "IDENTITY":
        return False, "not inverted (Presentation LUT Shape IDENTITY)" if monochrome1 else ""
    note = f" (Presentation LUT Shape {shape} ignored)" if shape else ""
    return monochrome1, ("MONOCHROME1 inverted" if monochrome1 else "") + note


def _lookup(stored: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """``(index, table)`` with ``table[index] == stored`` for an integer image whose values
    span no more entries than it has pixels; ``(None, stored)`` for any other."""
    if stored.dtype.kind not in "iu" or stored.size == 0:
        return None, stored
    low, high = int(stored.min()), int(stored.max())
    if high - low >= stored.size:
        return None, stored
    table = np.arange(low, high + 1, dtype=stored.dtype)
    # In intp, not the image's type: int16 values from -1000 to 32000 differ by more than 32767
    return np.subtract(stored, low, dtype=np.intp), table


def _apply_voi(values: np.ndarray, ds: Dataset, voi: VOI, path: Path,
               index: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """VOI on ``values``, scaled to [0, 1]: the image's values, or a table of them that the
    image reads through ``index`` (for the ``"none"`` percentiles)."""
    steps = ["modality LUT" if "ModalityLUTSequence" in ds else
             f"rescale x{float(ds.get('RescaleSlope', 1)):g} {float(ds.get('RescaleIntercept', 0)):+g}"]
    has_lut = "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    choice = voi
    if choice == "auto":
        choice = "lut" if has_lut else "window" if has_window else "none"
    if choice == "lut" and not has_lut:
        raise UnsupportedInputError(path, "voi='lut' asked for, but the file has no VOI LUT Sequence")
    if choice == "window" and not has_window:
        raise UnsupportedInputError(path, "voi='window' asked for, but the file has no Window Center/Width")
    source = ds
    if isinstance(choice, tuple):
        center, width = (float(v) for v in choice)
        if width <= 0:
            raise ValueError(f"window width must be positive, got {width!r}")
        source = Dataset()
        for keyword in ("BitsStored", "PixelRepresentation", "PhotometricInterpretation",
                        "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence",
                        "VOILUTFunction"):
            if keyword in ds:
                setattr(source, keyword, ds[keyword].value)
        source.WindowCenter, source.WindowWidth = center, width
        choice = "window"
    if choice == "none":
        low, high = np.percentile(values, [0.5, 99.5]) if index is None else _percentiles(values, index, [0.5, 99.5])
        steps.append("no VOI: 0.5-99.5 percentile range")
        return _unit(values, low, high), steps
    if choice == "lut":  # a LUT is indexed by integers
        # Clipped to the LUT's inputs first (as the standard maps values beyond them): pydicom
        # stores ``value - first`` in the LUT's own uint8/uint16 type, where larger ones wrap.
        descriptor = source.VOILUTSequence[0].LUTDescriptor
        first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
        inputs = np.arange(first, first + entries, dtype=np.int64)
        out = apply_voi(np.clip(np.rint(values), inputs[0], inputs[-1]).astype(np.int64),
                        source).astype(np.float64)
        table = apply_voi(inputs, source)
        extremes = np.array([table.min(), table.max()])  # the LUT's output range
    else:
        out = apply_windowing(values, source).astype(np.float64)
        with np.errstate(over="ignore"):  # a SIGMOID's exp(+-huge) is its limit, 0 or inf
            extremes = apply_windowing(np.array([-1e30, 1e30]), source)
    low, high = (float(v) for v in extremes)
    if choice == "window":
        center, width = _window_values(source)
        steps.append(f"window C={center:g} W={width:g}")
    else:
        steps.append("VOI LUT")
    if not high > low:
        low, high = float(out.min()), float(out.max())
    return _unit(out, min(low, high), max(low, high)), steps


def _percentiles(table: np.ndarray, index: np.ndarray, q: list[float]) -> np.ndarray:
    """``np.percentile(table[index], q)`` without making ``table[index]``: the order statistics
    come from a count of each table entry, interpolated linearly as numpy's default method
    is. The same to within float64 rounding (numpy orders the arithmetic differently)."""
    counts = np.bincount(index.ravel(), minlength=table.size)
    order = np.argsort(table, kind="stable")
    ranked = table[order]
    through = np.cumsum(counts[order])  # pixels with a value at or below each ranked entry
    position = np.asarray(q, dtype=np.float64) / 100 * (through[-1] - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, through[-1] - 1)
    low = ranked[np.searchsorted(through, below, side="right")]
    high = ranked[np.searchsorted(through, above, side="right")]
    return low + (high - low) * (position - below)


def _window_values(ds: Dataset) -> tuple[float, float]:
    def first(value: object) -> float:
        return float(value[0]) if isinstance(value, (list, pydicom.multival.MultiValue)) else float(value)  # type: ignore[arg-type]

    return first(ds.WindowCenter), first(ds.WindowWidth)


def _unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _positive_pair(value: object) -> tuple[float, float] | None:
    try:
        row, col = (float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return (row, col) if row > 0 and col > 0 else None


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    """PixelSpacing, else ImagerPixelSpacing (detector plane); None when absent or zero."""
    return _positive_pair(ds.get("PixelSpacing")) or _positive_pair(ds.get("ImagerPixelSpacing"))


def _affine(ds: Dataset, spacing: tuple[float, float] | None) -> np.ndarray:
    """Voxel (col, row, 0) to RAS+ world, from the patient position/orientation when present.

    Projection radiographs (CR, DX) have no Image Position/Orientation: their affine has
    the pixel spacing (1 mm when unknown) and the DICOM patient axes (rows go down = +y in
    LPS, columns go right = +x in LPS), with the origin at the first pixel.
    """
    row_mm, col_mm = spacing or (1.0, 1.0)
    orientation = ds.get("ImageOrientationPatient")
    position = ds.get("ImagePositionPatient")
    if orientation is not None and position is not None and len(orientation) == 6:
        row_dir = np.asarray(orientation[:3], dtype=float)  # direction along a row (columns increase)
        col_dir = np.asarray(orientation[3:], dtype=float)
        origin = np.asarray(position, dtype=float)
    else:
        row_dir, col_dir, origin = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.zeros(3)
    normal = np.cross(row_dir, col_dir)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_mm
    lps[:3, 1] = col_dir * row_mm
    lps[:3, 2] = normal
    lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _identity(ds: Dataset) -> DicomIdentity:
    return DicomIdentity(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        patient_id=str(ds.get("PatientID", "")),
    )
