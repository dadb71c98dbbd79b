"""One image source read once: its bytes, its JPEG header, or what Pillow says it is.

    src = read_source("photo.jpg")          # or bytes / bytearray / memoryview / a Source
    src.header                              # jpegfreq.reader.Header, None for a non-JPEG
    src.width, src.height, src.orientation  # stored size and EXIF orientation, either way
    jpegfreq.cube(src, "24S", source="spatial")   # the pipeline takes a Source as it is

Every path that needs more than the C reader's own view of a file starts here: the
spatial and rgb decodes, the data sets (a training crop is sampled from the stored size),
detection (the file must match its annotation) and inspect.  The rule is the same for all:

- a path that cannot be read, a damaged JPEG (it starts with the SOI marker), a JPEG over
  the pixel limit or one the reader does not support (12-bit, lossless) raises JpegError
  naming the source: such files are never handed to Pillow instead;
- anything else that is not a JPEG is probed with Pillow (its header only): size, format,
  mode and EXIF orientation; it too is held to the pixel limit; when Pillow cannot
  identify it either, JpegError names the source and the JPEG reader's reason.
"""
import io
import os
import warnings
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Union

from . import _jpegfreq
from .errors import JpegError
from .reader import Header, _limit, jpeg_error, read_header, source_name

__all__ = ["FileRange", "Source", "read_source", "read_sources"]


@dataclass(frozen=True, eq=False)
class Source:
    """A source's bytes and header facts (see read_source).

    name: how errors name it (the path, or ``<bytes: N>``).  data: the whole file.
    header: the JPEG header, or None when the file is not a JPEG.  width, height: the
    stored size.  orientation: EXIF orientation 1..8.  format: "JPEG" or Pillow's format
    name.  mode: Pillow's mode for a non-JPEG (None for a JPEG).
    """

    name: str
    data: bytes
    header: Optional[Header]
    width: int
    height: int
    orientation: int = 1
    format: str = "JPEG"
    mode: Optional[str] = None

    @property
    def size(self):
        """(width, height) as stored."""
        return self.width, self.height

    @property
    def spatial_reason(self) -> Optional[str]:
        """None when the compressed path takes this file, else why it cannot (the C
        reader's decision for a JPEG; "not a JPEG (FORMAT)" for any other image)."""
        if self.header is None:
            return f"not a JPEG ({self.format})"
        return self.header.spatial_reason

    def __repr__(self):
        kind = "JPEG" if self.header is not None else f"{self.format} {self.mode}"
        return f"Source({self.name!r}, {kind} {self.width}x{self.height}, {len(self.data)} bytes)"


def _bytes(src, name: str) -> bytes:
    if isinstance(src, (str, os.PathLike)):
        try:
            with open(src, "rb") as f:
                return f.read()
        except OSError as e:
            raise JpegError(name, f"cannot read: {e.strerror}", "io") from None
    if isinstance(src, bytes):
        return src
    try:
        return bytes(memoryview(src))
    except TypeError:
        raise TypeError(f"an image source is a path or a bytes-like object, not "
                        f"{type(src).__name__}") from None


def _pillow_probe(data: bytes, name: str, jpeg_error: JpegError, max_pixels) -> Source:
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # Pillow's bomb warning: the limit below decides
            with Image.open(io.BytesIO(data)) as im:
                (w, h), fmt, mode = im.size, im.format or "unknown", im.mode
                try:
                    orientation = int(im.getexif().get(274, 1) or 1)
                except Exception:      # an unreadable EXIF block: no orientation
                    orientation = 1
    except Exception:
        raise JpegError(name, f"cannot decode: {jpeg_error.reason} (and not an image Pillow "
                              "reads)", jpeg_error.kind) from None
    if not 1 <= orientation <= 8:
        orientation = 1
    limit = _limit(max_pixels)
    if limit and w * h > limit:
        raise JpegError(name, f"{fmt} image of {w}x{h} = {w * h} pixels exceeds the pixel limit "
                              f"of {limit} (a possible decompression bomb; raise max_pixels to "
                              "allow it)", "limit")
    return Source(name, data, None, int(w), int(h), orientation, fmt, mode)


def read_source(src, max_pixels: Optional[int] = None) -> Source:
    """The bytes and header of src: a path, a bytes-like object, or a Source (returned as is).

    max_pixels: pixel limit (None: the process-wide one, 0: none).  Raises JpegError naming
    the source for unreadable paths, damaged or unsupported JPEGs, images over the limit and
    data that is neither a JPEG nor an image Pillow reads (see the module docstring).
    Cost: one file read plus the header parse (tens of microseconds for a JPEG).
    """
    if isinstance(src, Source):
        return src
    name = source_name(src)
    data = _bytes(src, name)
    try:
        hdr, err = read_header(data, max_pixels=max_pixels), None
    except JpegError as e:
        hdr, err = None, e
    return _source(name, data, hdr, err, max_pixels)


#: paths per read_files call (its limit)
_PER_CALL = 1024


class FileRange(NamedTuple):
    """Bytes ``offset`` .. ``offset + size`` of the file at ``path``, called ``name`` (a tar
    shard's member: jpegfreq.shards hands these to the loader, whose threads read them)."""

    path: str
    offset: int
    size: int
    name: str


def read_sources(srcs, max_pixels: Optional[int] = None) -> List[Union[Source, JpegError]]:
    """read_source of each of srcs, with a JpegError in the list in place of one that raises.

    srcs: paths, FileRanges or bytes-like objects.  The paths and ranges are opened, read
    and their headers parsed by one C call that releases the GIL twice in all, where
    read_source releases it several times per file: the loader's worker threads read
    their samples this way (each release is a point where a thread waits for another's
    Python to give the GIL back).  Bytes are parsed as read_source parses them."""
    srcs = list(srcs)
    out: List[Union[Source, JpegError, None]] = [None] * len(srcs)
    at = [i for i, s in enumerate(srcs) if isinstance(s, (str, os.PathLike, FileRange))]
    items = [(srcs[i].path, srcs[i].offset, srcs[i].size) if isinstance(srcs[i], FileRange)
             else os.fspath(srcs[i]) for i in at]
    read = [r for k in range(0, len(items), _PER_CALL)
            for r in _jpegfreq.read_files(items[k:k + _PER_CALL], _limit(max_pixels))]
    for i, (data, hdr, err) in zip(at, read):
        name = srcs[i].name if isinstance(srcs[i], FileRange) else source_name(srcs[i])
        e = None if err is None else jpeg_error(name, *err)
        try:
            out[i] = e if data is None else _source(
                name, data, None if hdr is None else Header._from_dict(hdr), e, max_pixels)
        except JpegError as bad:
            out[i] = bad
    for i, src in enumerate(srcs):
        if out[i] is None:
            try:
                out[i] = read_source(src, max_pixels)
            except JpegError as bad:
                out[i] = bad
    return out


def _source(name: str, data: bytes, hdr: Optional[Header], err: Optional[JpegError],
            max_pixels) -> Source:
    """The Source of data read from name, given its JPEG header or the reader's error: a
    damaged JPEG (it starts with the SOI marker), one over the limit or unsupported raises;
    anything else is probed with Pillow."""
    if hdr is None:
        if data[:2] == b"\xff\xd8" or err.kind in ("limit", "unsupported"):
            raise JpegError(name, err.reason, err.kind) from None
        return _pillow_probe(data, name, err, max_pixels)
    return Source(name, data, hdr, hdr.width, hdr.height, hdr.orientation)
