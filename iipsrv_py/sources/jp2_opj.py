"""JPEG 2000 from any blob: OpenJPEG driven through ctypes, reading through a custom stream.

glymur opens files by name, which objects in a bucket do not have.  OpenJPEG itself reads
through an ``opj_stream_t`` whose read, skip and seek functions are the caller's
(``opj_stream_create`` + ``opj_stream_set_read_function`` / ``set_skip_function`` /
``set_seek_function`` / ``set_user_data_length``).  Here those functions read the blob
(``read_at``: the object's block cache for S3), so OpenJPEG fetches only what it reads: the
main header, and the tile-parts of the codestream tiles an area touches (it skips the others
after reading their SOT marker).  An untiled codestream is one tile, whose data OpenJPEG reads
whole for any area; its code-blocks outside the area are not decoded.

What glymur already does is reused: its loaded ``libopenjp2`` handle and structures
(``glymur.lib.openjp2``: decoder parameters, codec, header, decode area, decode) and its
parsers of the JP2 boxes and the codestream main header, given a file object.  Only the stream
functions, which glymur does not wrap, are declared here.

Each ``decode`` builds its own stream and codec (as glymur does per read), so threads decode
at once without sharing OpenJPEG state.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..errors import ServerError

JP2_SIGNATURE = b"\0\0\0\x0cjP  \r\n\x87\n"
J2K_MAGIC = b"\xff\x4f\xff\x51"
CODEC_J2K, CODEC_JP2 = 0, 2
# OpenJPEG reads through a buffer of this many bytes (its own default is 1 MiB, which would
# make the first read of every decode a 1 MiB read); larger reads go to the blob directly.
STREAM_BUFFER = 64 * 1024
_SIZE_T_ERROR = ctypes.c_size_t(-1).value  # (OPJ_SIZE_T)-1: end of stream, or failure

# opj_stream_read_fn, opj_stream_skip_fn, opj_stream_seek_fn (openjpeg.h)
READ_FN = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
SKIP_FN = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
SEEK_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int64, ctypes.c_void_p)

_declared = threading.Lock()
_library: Any = None


def _openjp2() -> Any:
    """glymur's openjp2 module with the stream functions declared on its library handle."""
    global _library
    if _library is None:
        with _declared:
            if _library is None:
                from glymur.lib import openjp2 as opj2

                lib = opj2.OPENJP2
                if lib is None:
                    raise OSError("libopenjp2 was not found")
                lib.opj_stream_create.argtypes = [ctypes.c_size_t, ctypes.c_int32]
                lib.opj_stream_create.restype = ctypes.c_void_p
                for function, argument in (
                    (lib.opj_stream_set_read_function, READ_FN),
                    (lib.opj_stream_set_skip_function, SKIP_FN),
                    (lib.opj_stream_set_seek_function, SEEK_FN),
                    (lib.opj_stream_set_user_data_length, ctypes.c_uint64),
                ):
                    function.argtypes = [ctypes.c_void_p, argument]
                    function.restype = None
                _library = opj2
    return _library


@dataclass
class Header:
    """What the JP2 boxes and the codestream main header say (glymur's parsed segments)."""

    codec_format: int
    segments: list[Any]  # glymur codestream segments: SIZ, COD, COC, ...
    boxes: list[Any]  # the colour specification boxes (glymur ColourSpecificationBox)


def read_header(stream: BinaryIO, size: int) -> Header:
    """Parse the boxes (for JP2) and the codestream main header through a file object."""
    from glymur import jp2box
    from glymur.codestream import Codestream

    stream.seek(0)
    head = stream.read(12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # glymur warns about (harmless) odd boxes
        if head[:4] == J2K_MAGIC:
            stream.seek(0)
            return Header(CODEC_J2K, list(Codestream(stream, size, header_only=True).segment), [])
        if head != JP2_SIGNATURE:
            raise ValueError("not a JPEG 2000 file")
        boxes: list[Any] = []
        for box_id, _start, payload, end in _boxes(stream, 0, size):
            if box_id == b"jp2h":
                for child_id, child_start, child_payload, child_end in _boxes(stream, payload, end):
                    if child_id == b"colr":
                        stream.seek(child_payload)
                        boxes.append(jp2box.ColourSpecificationBox.parse(stream, child_start, child_end - child_start))
            elif box_id == b"jp2c":
                stream.seek(payload)
                segments = list(Codestream(stream, end - payload, header_only=True).segment)
                return Header(CODEC_JP2, segments, boxes)
    raise ValueError("no codestream box")


def _boxes(stream: BinaryIO, start: int, end: int) -> list[tuple[bytes, int, int, int]]:
    """``(box type, box start, payload start, box end)`` of the boxes in ``[start, end)``."""
    found = []
    position = start
    while position + 8 <= end:
        stream.seek(position)
        length, box_id = struct.unpack(">I4s", stream.read(8))
        payload = position + 8
        if length == 1:
            (length,) = struct.unpack(">Q", stream.read(8))
            payload += 8
        elif length == 0:  # to the end of the enclosing box (or file)
            length = end - position
        if length < payload - position:
            raise ValueError(f"bad box length {length} at {position}")
        found.append((box_id, position, payload, min(position + length, end)))
        position += length
    return found


class StreamReader:
    """The read, skip and seek functions of one OpenJPEG stream over ``read_at``."""

    def __init__(self, read_at: Callable[[int, int], bytes], size: int) -> None:
        self.read_at = read_at
        self.size = size
        self.position = 0
        self.error: BaseException | None = None  # what made a read fail: raised after OpenJPEG returns
        # The ctypes callbacks, kept alive as long as the stream may call them.
        self.read_fn = READ_FN(self._read)
        self.skip_fn = SKIP_FN(self._skip)
        self.seek_fn = SEEK_FN(self._seek)

    def _read(self, buffer: int, count: int, _user: int) -> int:
        try:
            data = self.read_at(self.position, min(count, max(0, self.size - self.position)))
        except BaseException as exc:  # noqa: BLE001 - never into C: remembered, raised after decoding
            self.error = exc
            return _SIZE_T_ERROR
        if not data:
            return _SIZE_T_ERROR
        ctypes.memmove(buffer, data, len(data))
        self.position += len(data)
        return len(data)

    def _skip(self, count: int, _user: int) -> int:
        self.position += count
        return count

    def _seek(self, position: int, _user: int) -> int:
        if not 0 <= position <= self.size:
            return 0
        self.position = position
        return 1


def decode(
    read_at: Callable[[int, int], bytes],
    size: int,
    codec_format: int,
    rlevel: int,
    area: tuple[int, int, int, int],
    layers: int,
) -> np.ndarray | list[np.ndarray]:
    """Decode ``area`` (x0, y0, x1, y1 on the reference grid) at resolution reduction
    ``rlevel`` with the first ``layers`` quality layers (0: all), reading through ``read_at``.
    An array H x W x C (H x W for one component), or a list of planes when the components
    come out in different sizes.  A read error is raised as it was raised by ``read_at``."""
    import glymur

    opj2 = _openjp2()
    lib = opj2.OPENJP2
    reader = StreamReader(read_at, size)
    stream = lib.opj_stream_create(STREAM_BUFFER, 1)
    if not stream:
        raise MemoryError("opj_stream_create failed")
    codec = image = None
    try:
        lib.opj_stream_set_read_function(stream, reader.read_fn)
        lib.opj_stream_set_skip_function(stream, reader.skip_fn)
        lib.opj_stream_set_seek_function(stream, reader.seek_fn)
        lib.opj_stream_set_user_data_length(stream, size)
        codec = opj2.create_decompress(codec_format)
        opj2.set_error_handler(codec, opj2._ERROR_CALLBACK)
        opj2.set_warning_handler(codec, opj2._WARNING_CALLBACK)
        opj2.set_info_handler(codec, None)
        parameters = opj2.set_default_decoder_parameters()
        parameters.decod_format = codec_format
        parameters.cp_layer = layers
        parameters.cp_reduce = rlevel
        opj2.setup_decoder(codec, parameters)
        opj2.codec_set_threads(codec, glymur.get_option("lib.num_threads"))
        try:
            image = opj2.read_header(stream, codec)
            opj2.set_decode_area(codec, image, *area)
            opj2.decode(codec, stream, image)
            opj2.end_decompress(codec, stream)
        except Exception as exc:
            if isinstance(reader.error, ServerError):
                raise reader.error from exc
            raise
        return _planes(image)
    finally:
        if image is not None:
            opj2.image_destroy(image)
        if codec is not None:
            opj2.destroy_codec(codec)
        opj2.stream_destroy(stream)


def _planes(image: Any) -> np.ndarray | list[np.ndarray]:
    """The decoded components as numpy arrays (copies: OpenJPEG frees its buffers)."""
    planes = []
    for k in range(image.contents.numcomps):
        component = image.contents.comps[k]
        height, width = int(component.h), int(component.w)
        if height == 0 or width == 0:
            raise ValueError(f"component {k} decoded to {width} x {height}")
        if component.prec > 16:
            raise ValueError(f"component {k} has {component.prec} bits")
        dtype = np.dtype(("i" if component.sgnd else "u") + ("1" if component.prec <= 8 else "2"))
        values = np.ctypeslib.as_array(component.data, shape=(height * width,))
        planes.append(values.astype(dtype).reshape(height, width))
    if any(p.shape != planes[0].shape or p.dtype != planes[0].dtype for p in planes):
        return planes
    return planes[0] if len(planes) == 1 else np.dstack(planes)
