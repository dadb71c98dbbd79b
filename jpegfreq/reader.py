"""Reading JPEG headers and quantized DCT coefficients (the C reader's Python face).

Every function takes ``src``: a path (str or os.PathLike) or any bytes-like
object holding a whole JPEG file.  Failures raise :class:`JpegError` naming the
source and the reason; libjpeg's warnings (premature end of data, corrupt data)
are returned, or raised when ``strict=True``.  The C work runs without the GIL.

The decoded share: when a file ends inside its entropy-coded data, the decoder
fills the blocks it could not read with zeros.  Every read reports how much of
what it reads was really decoded (``Coefficients.decoded``, ``cube(...,
info={})["decoded"]``): the rows of the scan that ran out reached before the
end, in units of MCU rows, over the rows the call reads; a file with several
scans counts each scan that began as one share (the scans the file lost after
the cut are not known and not counted).  A read with nothing decoded raises
JpegError ("truncated before any image data ..."); a partial one adds the
warning "truncated: N% of the rows ... were decoded".
"""
import math
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from . import _jpegfreq
from .errors import JpegError

#: Default pixel limit, checked from the header before any coefficient memory is
#: allocated: Pillow's decompression-bomb error threshold (2 x 89,478,485 pixels).
#: At that size libjpeg holds 2 bytes per coefficient: 1.07 GB for 4:4:4 (0.54 GB
#: for 4:2:0) while a cube is computed; read_coefficients returns a copy, so it
#: peaks at twice that (docs in the README, "Reliability").
DEFAULT_MAX_PIXELS = 178_956_970
_max_pixels = DEFAULT_MAX_PIXELS

_KINDS = {
    _jpegfreq.ERR_JPEG: "jpeg",
    _jpegfreq.ERR_LIMIT: "limit",
    _jpegfreq.ERR_UNSUPPORTED: "unsupported",
    _jpegfreq.ERR_IO: "io",
    _jpegfreq.ERR_NEEDS_SPATIAL: "needs-spatial",
}


def set_max_pixels(limit: Optional[int]) -> None:
    """Set the process-wide pixel limit (None or 0 disables it).  Default 178,956,970."""
    global _max_pixels
    _max_pixels = int(limit or 0)


def get_max_pixels() -> int:
    """The process-wide pixel limit (0 = none)."""
    return _max_pixels


def source_name(src) -> str:
    """How errors name a source: the path, or ``<bytes: N>``."""
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    try:
        return f"<bytes: {memoryview(src).nbytes}>"
    except TypeError:
        return f"<{type(src).__name__}>"


def _arg(src):
    return os.fspath(src) if isinstance(src, os.PathLike) else src


def _limit(max_pixels):
    return _max_pixels if max_pixels is None else int(max_pixels or 0)


def translate(src, exc: "_jpegfreq.Error") -> JpegError:
    """Turn the C layer's (kind, message) error into a JpegError naming src."""
    return jpeg_error(source_name(src), *exc.args)


def jpeg_error(name: str, kind: int, msg: str) -> JpegError:
    """The JpegError of a C layer's (kind, message) about the source called name."""
    return JpegError(name, msg, _KINDS.get(kind, "jpeg"))


@dataclass(frozen=True)
class Component:
    """Header facts of one component.  ``width``/``height`` count its samples."""

    id: int
    h_samp: int
    v_samp: int
    width: int
    height: int
    width_in_blocks: int
    height_in_blocks: int
    quant_tbl_no: int


@dataclass(frozen=True)
class Header:
    """Header facts of a JPEG (nothing entropy-decoded)."""

    width: int
    height: int
    num_components: int
    precision: int
    color_space: str          # "GRAY", "YCbCr", "RGB", "CMYK", "YCCK" (libjpeg's reading)
    adobe: bool
    adobe_transform: int      # -1 when there is no Adobe marker
    jfif: bool
    progressive: bool
    arithmetic: bool
    restart_interval: int     # MCUs between restart markers, 0 = none
    orientation: int          # EXIF orientation 1..8 (1 when absent)
    max_h_samp: int
    max_v_samp: int
    components: Tuple[Component, ...]
    #: None when the compressed (coefficient-domain) path can take the file; else
    #: why it needs the spatial path (decode, resize, DCT), e.g. "CMYK JPEG: colour
    #: cannot be mapped linearly to YCbCr".  The C core's one routing decision.
    spatial_reason: Optional[str] = None

    @property
    def subsampling(self) -> str:
        """"4:4:4", "4:2:0", ... for 3-component files; "gray" or "HxV,..." otherwise."""
        if self.num_components == 1:
            return "gray"
        f = tuple((c.h_samp, c.v_samp) for c in self.components)
        names = {((1, 1),) * 3: "4:4:4", ((2, 1), (1, 1), (1, 1)): "4:2:2",
                 ((2, 2), (1, 1), (1, 1)): "4:2:0", ((4, 1), (1, 1), (1, 1)): "4:1:1",
                 ((1, 2), (1, 1), (1, 1)): "4:4:0"}
        return names.get(f, ",".join(f"{h}x{v}" for h, v in f))

    @property
    def coding(self) -> str:
        return ("progressive" if self.progressive else "sequential") + (
            ", arithmetic" if self.arithmetic else ", Huffman")

    @classmethod
    def _from_dict(cls, d):
        d = dict(d)
        d["components"] = tuple(Component(**c) for c in d["components"])
        return cls(**d)


@dataclass
class Coefficients:
    """What :func:`read_coefficients` returns.

    ``coefficients[c]``: int16 (height_in_blocks, width_in_blocks, 64) quantized,
    natural row-major frequency order k = 8u + v; or float32 (bh, bw, len(freqs))
    dequantized when ``freqs`` was given.  ``quant[c]``: uint16 (64,) natural order.
    """

    header: Header
    coefficients: List[np.ndarray]
    quant: List[np.ndarray]
    warnings: List[str] = field(default_factory=list)
    freqs: Optional[Tuple[int, ...]] = None
    #: share (0..1] of the image's MCU rows that were really decoded (below 1 when the
    #: file ends inside its entropy-coded data; see the module docstring)
    decoded: float = 1.0

    @property
    def sampling(self):
        return [(c.h_samp, c.v_samp) for c in self.header.components]

    def dequantized(self, c: int) -> np.ndarray:
        """float32 (bh, bw, 64) dequantized coefficients of component c (of an int16 read)."""
        if self.freqs is not None:
            raise ValueError("already dequantized: read without freqs to get all 64")
        return self.coefficients[c].astype(np.float32) * self.quant[c].astype(np.float32)


def read_header(src, max_pixels: Optional[int] = None) -> Header:
    """Header facts of a JPEG without decoding any entropy-coded data.

    src: path or bytes-like.  max_pixels: pixel limit (None: the global one,
    0: none).  Cost: tens of microseconds (markers up to the first scan).
    Raises JpegError on a damaged header, a 12-bit or lossless file, or an image
    over the pixel limit.
    """
    try:
        return Header._from_dict(_jpegfreq.read_header(_arg(src), _limit(max_pixels)))
    except _jpegfreq.Error as e:
        raise translate(src, e) from None


def read_coefficients(src, strict: bool = False, max_pixels: Optional[int] = None,
                      freqs=None) -> Coefficients:
    """Quantized DCT coefficients of every component, straight from the entropy decoder.

    src: path or bytes-like.  strict (default False): raise JpegError on any
    libjpeg warning (e.g. premature end of data) instead of returning it in
    ``.warnings``.  max_pixels: pixel limit (None: global default, 0: none).
    freqs (default None): a sequence of natural frequency indices 0..63; when
    given, each component comes back dequantized as float32 (bh, bw, len(freqs))
    holding only those frequencies (the others are never written).
    Cost: libjpeg-turbo's entropy decode plus one copy (~1.6 ms for a 500x375 4:2:0 file).
    CMYK/YCCK files give four components (see ``header.color_space``).
    """
    try:
        hdr, comps, warns, ext = _jpegfreq.read_coefficients(
            _arg(src), bool(strict), _limit(max_pixels), None if freqs is None else list(freqs),
            extent=True)
    except _jpegfreq.Error as e:
        raise translate(src, e) from None
    share = account_share(source_name(src), ext, warns)
    return Coefficients(Header._from_dict(hdr), [c for c, _ in comps], [q for _, q in comps],
                        warns, None if freqs is None else tuple(int(f) for f in freqs), share)


# ---------------------------------------------------------------------------
# The decoded share (where the entropy-coded data ran out)
# ---------------------------------------------------------------------------

def decoded_share(extent, lo: Optional[int] = None, hi: Optional[int] = None) -> float:
    """Share (0..1) of the MCU rows lo..hi-1 that were really decoded.

    extent: the C reader's (cut_scan, cut_row, total_rows, read_lo, read_hi, scan_byte,
    data_len); lo, hi default to its read_lo, read_hi.  Each scan that began counts as
    one share: the earlier ones are whole, the one that ran out counts the rows it
    reached in lo..hi.  1.0 when the data did not run out inside a scan, or no rows
    are read.
    """
    cut_scan, cut_row = extent[0], extent[1]
    lo = extent[3] if lo is None else lo
    hi = extent[4] if hi is None else hi
    if cut_scan <= 0 or hi <= lo:
        return 1.0
    frac = min(max(cut_row - lo, 0), hi - lo) / (hi - lo)
    return ((cut_scan - 1) + frac) / cut_scan


def account_share(name: str, extent, warns: list, lo: Optional[int] = None,
                  hi: Optional[int] = None, what: str = "") -> float:
    """The decoded share of a read (decoded_share), with its consequence.

    Nothing decoded: raises JpegError naming the source and where the data ends.
    Partly decoded: appends "truncated: N% of the rows{what} were decoded" to warns.
    what: " the cube reads" for a cube, "" for the whole image.  Returns the share.
    """
    share = decoded_share(extent, lo, hi)
    if share >= 1.0:
        return 1.0
    cut_scan, cut_row, total, rlo, rhi, scan_byte, data_len = extent
    lo = rlo if lo is None else lo
    hi = rhi if hi is None else hi
    if share <= 0.0:
        if cut_row <= 0:
            where = (f"at byte {data_len} of {data_len}, the first scan's data starts at byte "
                     f"{scan_byte}")
        else:
            where = (f"the data ends in MCU row {cut_row + 1} of {total}, the rows read are "
                     f"{lo + 1} to {hi}; a file of {data_len} bytes")
        raise JpegError(name, f"truncated before any image data{what} ({where})")
    pct = math.floor(share * 100)
    warns.append(f"truncated: {pct if pct >= 1 else 'under 1'}% of the rows{what} were decoded"
                 + (f" (scan {cut_scan} ran out; the earlier ones are whole)"
                    if cut_scan > 1 else ""))
    return share


def stored_rows(box, orientation: int, width: int, height: int, mcu_rows: int) -> Tuple[int, int]:
    """MCU rows [lo, hi) of the stored image holding the rows of box (x0, y0, x1, y1, in
    displayed pixels after EXIF orientation 1..8) of a stored width x height image with
    MCU rows of mcu_rows pixels: what a pixel-domain crop of that box reads."""
    from .geometry import orientation_ops
    x0, y0, x1, y1 = box
    transpose, flip_h, flip_v = orientation_ops(orientation)
    if transpose:                     # displayed columns are stored rows
        a, b = (height - x1, height - x0) if flip_h else (x0, x1)
    else:
        a, b = (height - y1, height - y0) if flip_v else (y0, y1)
    total = -(-height // mcu_rows)
    lo = min(max(int(math.floor(max(a, 0) / mcu_rows)), 0), total)
    hi = min(max(int(math.ceil(min(b, height) / mcu_rows)), lo), total)
    return lo, hi
