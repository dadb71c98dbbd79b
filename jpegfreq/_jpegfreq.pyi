"""Type stub of jpegfreq._jpegfreq, the CPython binding of the C core (csrc/).

``src`` is a path (str) or any C-contiguous bytes-like object holding a whole
JPEG file.  Every function releases the GIL around its libjpeg work (except the
header parse of bytes up to 1 MiB, a few microseconds: keeping the GIL there spares
the threads the wait to take it back).  Failures
raise :class:`Error` with args ``(kind, message)``, kind one of the ``ERR_*``
constants; jpegfreq.reader turns them into JpegError naming the source.
"""
import os
from typing import List, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
from numpy.typing import NDArray

Source = Union[str, bytes, bytearray, memoryview]

class Error(ValueError):
    """args = (kind, message): kind is ERR_JPEG, ERR_LIMIT, ERR_UNSUPPORTED, ERR_IO,
    ERR_NEEDS_SPATIAL (not a fault of the file: decode pixels instead) or another
    core category."""

class ComponentDict(TypedDict):
    id: int
    h_samp: int
    v_samp: int
    width: int
    height: int
    width_in_blocks: int
    height_in_blocks: int
    quant_tbl_no: int

class HeaderDict(TypedDict):
    width: int
    height: int
    num_components: int
    precision: int
    color_space: str          # "unknown", "GRAY", "YCbCr", "RGB", "CMYK", "YCCK"
    adobe: bool
    adobe_transform: int      # -1 without an Adobe marker
    jfif: bool
    progressive: bool
    arithmetic: bool
    restart_interval: int
    orientation: int          # EXIF 1..8, 1 when absent
    max_h_samp: int
    max_v_samp: int
    components: List[ComponentDict]
    spatial_reason: Optional[str]   # None: the compressed path takes the file

#: Where the entropy-coded data ran out (extent=True): (cut_scan, cut_row, total_rows,
#: read_lo, read_hi, scan_byte, data_len).  cut_scan: the scan (1, 2, ...) in which the
#: decoder first needed data past the end of the input, 0 when it did not; cut_row: the
#: MCU rows of that scan decoded before; total_rows: the image's MCU rows; read_lo,
#: read_hi: the MCU rows the call reads (cube: those of the cube; otherwise all);
#: scan_byte: where the first scan's data starts; data_len: the input's length.
#: jpegfreq.reader.decoded_share turns it into the decoded share.
Extent = Tuple[int, int, int, int, int, int, int]

libjpeg_version: str
libjpeg_turbo: int
jpeg_lib_version: int
arithmetic_decoding: int
ERR_JPEG: int
ERR_LIMIT: int
ERR_UNSUPPORTED: int
ERR_IO: int
ERR_NEEDS_SPATIAL: int

def read_header(src: Source, max_pixels: int = 0) -> HeaderDict: ...
def read_files(
    paths: Sequence[Union[str, bytes, "os.PathLike[str]"]], max_pixels: int = 0,
) -> List[Tuple[Optional[bytes], Optional[HeaderDict], Optional[Tuple[int, str]]]]:
    """Each path's (bytes, header, None); (bytes, None, (kind, message)) when its header
    could not be parsed; (None, None, (kind, message)) when it could not be read.  At most
    1024 paths; the reads and parses run without the GIL."""
def read_coefficients(
    src: Source, strict: bool = False, max_pixels: int = 0,
    freqs: Optional[List[int]] = None, extent: bool = False,
) -> Tuple[HeaderDict, List[Tuple[NDArray[np.generic], NDArray[np.uint16]]], List[str]]:
    """Per component (int16 (bh, bw, 64) quantized, or float32 (bh, bw, len(freqs))
    dequantized, with its uint16 (64,) quant table); libjpeg's warnings; with
    extent=True a fourth element, the Extent."""
def decode_planes(
    src: Source, strict: bool = False, max_pixels: int = 0, extent: bool = False,
) -> Tuple[HeaderDict, List[NDArray[np.uint8]], List[str]]:
    """Each component's padded uint8 samples at its own resolution (no upsampling); with
    extent=True a fourth element, the Extent."""
def entropy_decode(src: Source, /) -> None:
    """jpeg_read_coefficients only: the benchmark floor."""
def cube(
    src: Source,
    comp: NDArray[np.int32],
    k: NDArray[np.int32],
    out_h: int,
    out_w: int,
    scale: Optional[NDArray[np.float32]] = None,
    offset: Optional[NDArray[np.float32]] = None,
    box: Optional[Tuple[float, float, float, float]] = None,
    resize: int = 0,
    flip: bool = False,
    orientation: int = 0,
    max_pixels: int = 0,
    strict: bool = False,
    band_cutoff: bool = False,
    early_stop: bool = True,
    out: Optional[object] = None,
    extent: bool = False,
    photometric: Optional[Tuple[float, float, float, float, float]] = None,
) -> Tuple[object, List[str]]:
    """The float32 cube (C, out_h/8, out_w/8) and the warnings.  comp/k: int32 per
    channel (component 0..2, natural frequency 0..63); box (x0, y0, x1, y1) in displayed
    pixels, or resize for the eval geometry; orientation 0 = as stored, -1 = EXIF,
    1..8; out: a writable C-contiguous float32 buffer written in place and returned
    (else a new numpy array); extent=True: a third element, the Extent (read_lo..read_hi:
    the MCU rows the cube reads).  Raises ValueError on a bad request and Error with
    ERR_NEEDS_SPATIAL for files the compressed path cannot take.  photometric:
    (brightness, contrast, saturation, hue, grayscale 0/1) applied to the output image
    before scale/offset, folded into the operator (a hue rotation needs Cb and Cr of the
    same frequencies)."""
def photometric(
    cube: NDArray[np.float32],
    comp: NDArray[np.int32],
    k: NDArray[np.int32],
    photometric: Tuple[float, float, float, float, float],
    scale: Optional[NDArray[np.float32]] = None,
    offset: Optional[NDArray[np.float32]] = None,
) -> None:
    """cube's photometric ops, then x * scale + offset, in place on an unnormalised
    C-contiguous float32 cube of the channels comp/k: what cube() does with them while it
    writes, as a separate step.  Raises ValueError / TypeError on bad arguments."""
def axis_matrix(
    image_size: int, comp_size: int, factor: int, box0: float, box1: float,
    out_size: int, flip: bool = False,
) -> NDArray[np.float64]: ...
def resample_plane(
    plane: NDArray[np.float32], image_h: int, image_w: int, factor_v: int, factor_h: int,
    box: Tuple[float, float, float, float], out_h: int, out_w: int,
    flip_h: bool = False, flip_v: bool = False,
) -> NDArray[np.float32]: ...
def block_dct(plane: NDArray[np.float32], us: List[int], vs: List[int], /) -> NDArray[np.float32]:
    """float32 (len(us), len(vs), h/8, w/8): 8x8 block DCT of the kept rows/columns."""
def eval_box(w: int, h: int, resize: int, crop_h: int, crop_w: int, /) -> Tuple[float, float, float, float]: ...
