"""JPEG 2000 decoding at a reduced resolution level, through OpenJPEG's C API.

A JPEG 2000 codestream holds its image as a pyramid of wavelet resolution levels: decoding
``reduce`` levels fewer gives an image ``2**reduce`` times smaller per side at a fraction of
the cost (the finer sub-bands are not decoded at all). Neither pydicom's plugins nor
pylibjpeg-openjpeg expose OpenJPEG's ``reduce``, and Pillow's (``Image.reduce`` of its
JPEG 2000 plugin) fails beyond level 1 on odd-sized images such as pydicom-data's RG1
(1955 x 1841); so the library is called here with :mod:`ctypes`: the system's
``libopenjp2`` when installed, else the copy that Pillow's wheels bundle.

Geometry: sample ``j`` of level ``r`` is the low-pass output of the wavelet filters centred on
source sample ``j * 2**r`` (JPEG 2000's sub-band sampling for an image origin at 0), not the
centre of the block ``[j * 2**r, (j + 1) * 2**r)``; :mod:`medcam.io.reduce` moves it there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import threading
from pathlib import Path

import numpy as np

__all__ = ["OpenJpegError", "decode_reduced", "decoded_levels", "library_version"]

_CODEC_J2K = 0
_SOC_SIZ = b"\xff\x4f\xff\x51"
_COD = b"\xff\x52"
_READ_FAILED = ctypes.c_size_t(-1).value  # OpenJPEG's (OPJ_SIZE_T)-1: end of stream
_PARAMETERS_BYTES = 1 << 16  # opj_dparameters_t is ~8.5 kB in OpenJPEG 2.x: room to spare


class OpenJpegError(RuntimeError):
    """OpenJPEG is not available, or refused the codestream at the asked level."""


_U32 = ctypes.c_uint32


class _Component(ctypes.Structure):  # opj_image_comp_t (OpenJPEG 2.x)
    _fields_ = [
        ("dx", _U32), ("dy", _U32), ("w", _U32), ("h", _U32), ("x0", _U32), ("y0", _U32),
        ("prec", _U32), ("bpp", _U32), ("sgnd", _U32), ("resno_decoded", _U32), ("factor", _U32),
        ("data", ctypes.POINTER(ctypes.c_int32)), ("alpha", ctypes.c_uint16),
    ]


class _Image(ctypes.Structure):  # opj_image_t (OpenJPEG 2.x)
    _fields_ = [
        ("x0", _U32), ("y0", _U32), ("x1", _U32), ("y1", _U32), ("numcomps", _U32),
        ("color_space", ctypes.c_int), ("comps", ctypes.POINTER(_Component)),
        ("icc_profile_buf", ctypes.c_void_p), ("icc_profile_len", _U32),
    ]


_Read = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_Skip = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_Seek = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int64, ctypes.c_void_p)

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_library_error = ""


def _candidates() -> list[str]:
    found = ctypes.util.find_library("openjp2")
    names = [found] if found else []
    try:
        import PIL

        bundled = Path(PIL.__file__).resolve().parent.parent / "pillow.libs"
        names += sorted(str(p) for p in bundled.glob("libopenjp2*.so*"))
    except ImportError:
        pass
    return names


def _load() -> ctypes.CDLL:
    """The OpenJPEG library with its prototypes declared, loaded once."""
    global _library, _library_error
    with _lock:
        if _library is not None:
            return _library
        if _library_error:
            raise OpenJpegError(_library_error)
        for name in _candidates():
            try:
                lib = ctypes.CDLL(name)
                _declare(lib)
            except (OSError, AttributeError):
                continue
            _library = lib
            return lib
        _library_error = "no OpenJPEG library (libopenjp2) was found"
        raise OpenJpegError(_library_error)


def _declare(lib: ctypes.CDLL) -> None:
    ptr, handle = ctypes.c_void_p, ctypes.c_void_p
    lib.opj_version.restype = ctypes.c_char_p
    lib.opj_create_decompress.restype = handle
    lib.opj_create_decompress.argtypes = [ctypes.c_int]
    lib.opj_set_default_decoder_parameters.argtypes = [ptr]
    lib.opj_setup_decoder.argtypes = [handle, ptr]
    lib.opj_set_decoded_resolution_factor.argtypes = [handle, ctypes.c_uint32]
    lib.opj_stream_create.restype = handle
    lib.opj_stream_create.argtypes = [ctypes.c_size_t, ctypes.c_int]
    lib.opj_stream_set_read_function.argtypes = [handle, _Read]
    lib.opj_stream_set_skip_function.argtypes = [handle, _Skip]
    lib.opj_stream_set_seek_function.argtypes = [handle, _Seek]
    lib.opj_stream_set_user_data_length.argtypes = [handle, ctypes.c_uint64]
    lib.opj_read_header.argtypes = [handle, handle, ctypes.POINTER(ctypes.POINTER(_Image))]
    lib.opj_decode.argtypes = [handle, handle, ctypes.POINTER(_Image)]
    lib.opj_end_decompress.argtypes = [handle, handle]
    lib.opj_stream_destroy.argtypes = [handle]
    lib.opj_destroy_codec.argtypes = [handle]
    lib.opj_image_destroy.argtypes = [ctypes.POINTER(_Image)]


def library_version() -> str | None:
    """The version of the OpenJPEG library used, or None when there is none."""
    try:
        return str(_load().opj_version().decode())
    except OpenJpegError:
        return None


def decoded_levels(codestream: bytes) -> int:
    """The number of wavelet decomposition levels of a J2K codestream (its COD marker), 0
    when it cannot be read: ``decode_reduced`` accepts ``reduce`` up to this number."""
    if not codestream.startswith(_SOC_SIZ):
        return 0
    (siz_length,) = struct.unpack(">H", codestream[4:6])
    start = 4 + siz_length  # markers follow SIZ in the main header; COD is among the first
    at = codestream.find(_COD, start, start + 4096)
    if at < 0 or len(codestream) < at + 10:
        return 0
    return int(codestream[at + 9])  # Lcod(2) Scod(1) SGcod: order(1) layers(2) MCT(1), then levels


def decode_reduced(codestream: bytes, reduce: int) -> tuple[np.ndarray, int, bool]:
    """Decode a single-component J2K codestream ``reduce`` resolution levels down.

    Returns:
        ``(samples, precision, signed)``: the samples as int32 ``(rows, cols)`` with
        ``rows = ceil(Ysiz / 2**reduce)`` (for an image origin at 0), the component's
        precision in bits and whether it is signed.

    Raises:
        OpenJpegError: no library, more than one component, or OpenJPEG failed.
    """
    lib = _load()
    data = ctypes.create_string_buffer(codestream, len(codestream))
    base, size = ctypes.addressof(data), len(codestream)
    position = 0

    @_Read
    def read(destination: int, wanted: int, _user: int) -> int:
        nonlocal position
        count = min(wanted, size - position)
        if count <= 0:
            return _READ_FAILED
        ctypes.memmove(destination, base + position, count)
        position += count
        return count

    @_Skip
    def skip(offset: int, _user: int) -> int:
        nonlocal position
        target = min(max(position + offset, 0), size)
        moved, position = target - position, target
        return moved

    @_Seek
    def seek(offset: int, _user: int) -> int:
        nonlocal position
        if not 0 <= offset <= size:
            return 0
        position = offset
        return 1

    parameters = ctypes.create_string_buffer(_PARAMETERS_BYTES)
    lib.opj_set_default_decoder_parameters(parameters)
    codec = lib.opj_create_decompress(_CODEC_J2K)
    stream = lib.opj_stream_create(1 << 20, 1)
    image = ctypes.POINTER(_Image)()
    try:
        lib.opj_stream_set_read_function(stream, read)
        lib.opj_stream_set_skip_function(stream, skip)
        lib.opj_stream_set_seek_function(stream, seek)
        lib.opj_stream_set_user_data_length(stream, size)
        steps = (
            ("set up the decoder", lambda: lib.opj_setup_decoder(codec, parameters)),
            ("read the header", lambda: lib.opj_read_header(stream, codec, ctypes.byref(image))),
            (f"reduce by {reduce} levels", lambda: lib.opj_set_decoded_resolution_factor(codec, reduce)),
            ("decode", lambda: lib.opj_decode(codec, stream, image)),
            ("finish decoding", lambda: lib.opj_end_decompress(codec, stream)),
        )
        for what, call in steps:
            if not call():
                raise OpenJpegError(f"OpenJPEG could not {what}")
        if image.contents.numcomps != 1:
            raise OpenJpegError(f"{image.contents.numcomps} components, expected 1")
        component = image.contents.comps[0]
        samples = np.ctypeslib.as_array(component.data, shape=(component.h, component.w)).copy()
        return samples, int(component.prec), bool(component.sgnd)
    finally:
        if image:
            lib.opj_image_destroy(image)
        lib.opj_stream_destroy(stream)
        lib.opj_destroy_codec(codec)
