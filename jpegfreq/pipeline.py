"""The one-image call both paths share: JPEG in, model-ready cube out.

    bytes -> C reader -> coefficient-domain operator -> cube      (jpeg-coeffs)
    bytes -> decode -> same geometry in pixel space -> block DCT  (spatial)
    bytes -> decode RGB -> same geometry -> (3, size, size)       (rgb)

Which files the compressed path takes is the C reader's decision (Header.spatial_reason):
CMYK, YCCK and RGB-coded JPEGs cannot be mapped linearly to YCbCr coefficients, so they
take the spatial path, with a notice once per process.  Every call takes a path, a
bytes-like object or a jpegfreq.source.Source (a file read once, errors naming it).

Damaged files (every source): libjpeg's warnings go to ``warnings_out``; a file cut
inside its entropy-coded data adds "truncated: N% of the rows the cube reads were
decoded"; ``info`` (a dict) receives {"decoded": share 0..1, "warnings": [...]};
nothing decoded raises JpegError; strict=True raises on any warning
(jpegfreq.reader.decoded_share says how the share is counted).
"""
import functools
import os
import threading
import warnings
from typing import Optional

import numpy as np

from . import _jpegfreq
from .channels import ChannelSet
from .errors import JpegError
from .photometric import (RGB_TO_YCBCR, Photometric, adjust_planes, adjust_rgb,
                          coefficient_request, widen)
from .geometry import (Geometry, block_dct, compose_orientations, displayed_size,
                       eval_geometry, orient_box, orient_plane, resample_plane)
from .reader import _limit, account_share, source_name, stored_rows, translate
from .source import Source, read_source

SOURCES = ("jpeg-coeffs", "spatial", "rgb")


class SpatialFallbackWarning(UserWarning):
    """A file could not take the compressed path and was decoded to pixels instead."""


_notice_lock = threading.Lock()
_noticed = set()


def _notice(kind: str, msg: str):
    with _notice_lock:
        if kind in _noticed:
            return
        _noticed.add(kind)
    warnings.warn(msg, SpatialFallbackWarning, stacklevel=3)


@functools.lru_cache(maxsize=256)
def channel_set(channels) -> ChannelSet:
    """ChannelSet.parse with a cache (a preset name costs nothing after the first call)."""
    return ChannelSet.parse(channels)


_eval_geometry = functools.lru_cache(maxsize=32)(eval_geometry)


def _as_channels(channels) -> ChannelSet:
    if isinstance(channels, ChannelSet):
        return channels
    return channel_set(channels)


def _scale_offset(stats, cs: ChannelSet, source: str, geometry: Geometry):
    if stats is None:
        return None, None
    return stats.scale_offset(cs, source=source, geometry=geometry)


def _np_dtype(dtype) -> np.dtype:
    dt = np.dtype(np.float32 if dtype is None else dtype)
    if dt not in (np.float32, np.float16, np.int8):
        raise ValueError(f"dtype must be float32, float16 or int8, not {dtype}")
    return dt


def _finish(res: np.ndarray, dt: np.dtype, out: Optional[np.ndarray] = None) -> np.ndarray:
    """res (float32) as dtype dt, written into ``out`` when one is given; int8 is rounded
    (ties to even) and clipped to +-127, as the C operator's int8 output."""
    if res is out or (out is None and dt == res.dtype):
        return res
    if dt == np.int8:
        res = np.rint(np.clip(np.nan_to_num(res, nan=0.0), -127.0, 127.0))
    if out is not None:
        out[...] = res
        return out
    return res.astype(dt)


def _check_out(out, shape, dt: np.dtype):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, not {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dt:
        raise ValueError(f"out must be {dt} {tuple(shape)}, got {out.dtype} {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out must be writable")


def cube(src, channels="24S", size: Optional[int] = None, source: str = "jpeg-coeffs",
         geometry: Optional[Geometry] = None, stats=None, dtype="float32",
         strict: bool = False, max_pixels: Optional[int] = None,
         band_cutoff: bool = False, warnings_out: Optional[list] = None,
         out: Optional[np.ndarray] = None, info: Optional[dict] = None,
         photometric: Optional[Photometric] = None) -> np.ndarray:
    """One image to the network's input.

    src: path, bytes-like JPEG or jpegfreq.source.Source (``spatial``/``rgb`` also take any
        image Pillow reads).
    channels: a ChannelSet or its spec ("24S", "64T", "Y:0-3;Cb:0;Cr:0", ...); default 24S.
    size: crop side in pixels (default 448 -> 56x56 cube, 896 -> 112x112; rgb: default 224,
        i.e. resize 256, crop 224); ignored when ``geometry`` is given.
    source: "jpeg-coeffs" (default; compressed domain, no IDCT), "spatial" (decode,
        resize, block DCT: the paper's flow) or "rgb" (3, size, size) pixels in [0, 1].
    geometry: None = eval geometry for ``size``; else a Geometry (e.g. sample_train's).
        Its ``orientation`` (a quarter turn, transpose, ... of the output) costs nothing
        extra on jpeg-coeffs: it is folded with the EXIF orientation and the flip into the
        operator's own orientation and box; spatial and rgb orient the resized planes.
    stats: None = unnormalized coefficients; else a jpegfreq.stats.Stats folded in as
        (x - mean) / std by the operator (Stats.check: channel set, source, geometry).
    dtype: "float32" (default), "float16" (24S float16 is exactly RGB 224's uint8 bytes)
        or "int8" (rounded to the nearest integer, ties to even, and clipped to +-127: a
        quantised cube, for ``stats`` whose std has the step folded in, as JpegLoader's
        int8).  jpeg-coeffs converts in C as it finishes, in the same GIL-free call.
    strict: raise JpegError on any libjpeg warning (default: return the data, the
        warnings to ``warnings_out`` / ``info``).
    max_pixels: pixel limit (None = jpegfreq.reader global, 0 = none).
    band_cutoff: progressive files: stop decoding once the scans holding the kept
        frequency band (0..max(u, v) per component) are complete (approximate).
    out: optional numpy array of the result's shape and dtype to write into (e.g. a row
        of a batch); it is returned.  jpeg-coeffs into a C-contiguous ``out`` is written
        in place by the C operator (no copy).
    warnings_out: a list extended with this call's warnings (libjpeg's texts, and
        "truncated: N% of the rows the cube reads were decoded" for a file cut inside
        the rows it reads).
    info: a dict, set to {"decoded": float 0..1, "warnings": [...]}: the share of the
        MCU rows the cube reads that were really decoded (1.0 for an intact file) and
        this call's warnings.  A file with none of them decoded raises JpegError
        ("truncated before any image data ...") on every path.
    photometric: a jpegfreq.Photometric (brightness, contrast, saturation, hue,
        grayscale) applied to the output image before ``stats``: on jpeg-coeffs done by
        the C operator as it writes (contrast with Y0 and hue add a small pass there);
        spatial: the same ops on the resampled pixel planes; rgb: the same ops in RGB,
        then one clamp to [0, 1].  See docs/augment.md.
    Returns float32/float16/int8 numpy (C, out_h/8, out_w/8); rgb: (3, out_h, out_w).
    Cost (ImageNet median, one core): about 1.1x libjpeg-turbo's entropy decode of the
    whole file for jpeg-coeffs 24S eval; each scan is decoded only down to the last row
    the crop uses, so damage below it is neither read nor reported.  See the
    README's benchmark table.  Thread-safe.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    if geometry is None:
        geometry = _eval_geometry(int(size) if size is not None else
                                  224 if source == "rgb" else 448)
    dt = _np_dtype(dtype)
    photometric = _as_photometric(photometric)
    report = dict(strict=strict, warnings_out=warnings_out, info=info)
    if source == "rgb":
        if out is not None:
            _check_out(out, (3, geometry.out_h, geometry.out_w), dt)
        return _finish(rgb_image(src, geometry, stats, max_pixels, photometric=photometric,
                                 **report), dt, out)
    cs = _as_channels(channels)
    if out is not None:
        _check_out(out, (cs.count, geometry.out_h // 8, geometry.out_w // 8), dt)
    if source == "spatial":
        return _finish(spatial_cube(src, cs, geometry, stats, max_pixels,
                                    photometric=photometric, **report), dt, out)
    scale, offset = _scale_offset(stats, cs, source, geometry)
    req, keep = coefficient_request(photometric, cs)   # keep: hue partners added to cs
    if keep is not None:
        scale, offset = widen(scale, keep, req.count, 1.0), widen(offset, keep, req.count, 0.0)
    photo = photometric.values if photometric is not None else None
    box, flip, orientation = geometry.box, geometry.flip, -1 if geometry.exif else 0
    if geometry.orientation != 1:
        src = src if isinstance(src, Source) else read_source(src, max_pixels)
        box, orientation = _oriented_request(src, geometry)
        flip = False
    if isinstance(src, Source):
        name, arg = src.name, src.data
    else:
        name, arg = source_name(src), os.fspath(src) if isinstance(src, os.PathLike) else src
    direct = None     # the array the C call writes in dt itself: the caller's, or a new one
    if req is cs and out is not None:
        direct = out if out.flags.c_contiguous else None
    elif req is cs and dt != np.float32:
        direct = np.empty((cs.count, geometry.out_h // 8, geometry.out_w // 8), dt)
    try:
        res, warns, extent = _jpegfreq.cube(
            arg, req.component_of, req.k, geometry.out_h, geometry.out_w, scale, offset,
            box, geometry.resize, flip, orientation, _limit(max_pixels), bool(strict),
            bool(band_cutoff), out=direct, extent=True, photometric=photo)
    except _jpegfreq.Error as e:
        if e.args[0] != _jpegfreq.ERR_NEEDS_SPATIAL:
            raise translate(name, e) from None
        _notice(e.args[1], f"{name}: {e.args[1]}; such files take the spatial "
                           "path (decode, resize, DCT). Shown once per process.")
        return _finish(spatial_cube(src, cs, geometry, stats, max_pixels,
                                    photometric=photometric, **report), dt, out)
    _report(name, warns, extent, None, **report)
    return _finish(res if keep is None else res[keep], dt, out)


#: EXIF orientation value of a horizontal mirror
_MIRROR = 2


def _oriented_request(s: Source, geometry: Geometry):
    """(box, orientation) for the C operator of a geometry with an output orientation.

    The output is A(F(crop(E(stored)))) with E the file's orientation (when exif), F the
    flip and A geometry.orientation.  Flips and transposes of an image commute with a crop
    and resize once the box is moved with the image, so this is crop'(G(E(stored))) with
    G = A after F: the operator gets the orientation "E, then G" and the box mapped by G,
    and no separate flip."""
    file_o = s.orientation if geometry.exif else 1
    w, h = displayed_size(s.width, s.height, file_o)
    g = compose_orientations(_MIRROR if geometry.flip else 1, geometry.orientation)
    box = orient_box(geometry.box_for(w, h), g, w, h)
    return box, compose_orientations(file_o, g)


def _orient_output(planes, orientation: int):
    """The resized planes (a list, or a (C, H, W) array) with the output orientation applied."""
    if orientation == 1:
        return planes
    oriented = [orient_plane(p, orientation) for p in planes]
    return np.stack(oriented) if isinstance(planes, np.ndarray) else oriented


def _as_photometric(p) -> Optional[Photometric]:
    """A ``photometric=`` argument: None or a Photometric (None when it changes nothing)."""
    if p is None:
        return None
    if not isinstance(p, Photometric):
        raise TypeError(f"photometric must be a jpegfreq.Photometric or None, "
                        f"not {type(p).__name__}")
    return None if p.identity else p


def _report(name, warns, extent, rows, strict=False, warnings_out=None, info=None):
    """A read's damage, the same for every path: the decoded share (nothing decoded
    raises; a partial read adds its warning), strict mode, then warnings_out and info.
    extent: the C reader's (None: nothing known, e.g. a Pillow decode); rows: the MCU
    rows (lo, hi) read, or None for the extent's own."""
    share = 1.0
    if extent is not None:
        lo, hi = rows if rows is not None else (None, None)
        share = account_share(name, extent, warns, lo, hi, " the cube reads")
    if strict and warns:
        raise JpegError(name, f"strict mode: {warns[0]}")
    if warnings_out is not None:
        warnings_out.extend(warns)
    if info is not None:
        info["decoded"] = share
        info["warnings"] = list(warns)
    return share


# ---------------------------------------------------------------------------
# Spatial path
# ---------------------------------------------------------------------------

_tj = None
_tj_lock = threading.Lock()


def _turbojpeg():
    """PyTurboJPEG over libturbojpeg when present, else False (Pillow is used)."""
    global _tj
    with _tj_lock:
        if _tj is None:
            try:
                from turbojpeg import TurboJPEG
                _tj = TurboJPEG()
            except Exception:  # library missing: fall back to Pillow
                _tj = False
    return _tj


# JFIF full-range BT.601


def decode_planes(src, max_pixels=None, exif=False, damage: Optional[dict] = None):
    """Decode an image to YCbCr sample planes for the spatial path.

    Returns (planes, factors, (width, height)): planes are float32 component planes
    at their own resolution (for a file the compressed path takes: libjpeg-turbo's islow
    IDCT, 8-bit rounded, chroma not upsampled: the shared geometry upsamples it), factors
    their (v, h) upsampling ratios, and the displayed image size.  Grayscale gives one
    plane.  Files the C reader sends to the spatial path (CMYK, YCCK, RGB-coded: see
    Header.spatial_reason) and non-JPEG images go through Pillow's RGB decode and a float
    JFIF conversion.
    damage: a dict receiving "source" (the Source), "warnings" (libjpeg's) and "extent"
    (where the data ran out, for jpegfreq.reader.account_share; None for a Pillow decode).
    """
    s = read_source(src, max_pixels)
    hdr = s.header
    if damage is not None:
        damage.update(source=s, warnings=[], extent=None)
    if s.spatial_reason is None:
        try:
            _, raw, warns, extent = _jpegfreq.decode_planes(s.data, False, _limit(max_pixels),
                                                            extent=True)
        except _jpegfreq.Error as e:
            raise translate(s.name, e) from None
        if damage is not None:
            damage.update(warnings=warns, extent=extent)
        planes = [np.ascontiguousarray(p[:c.height, :c.width], np.float32)
                  for p, c in zip(raw, hdr.components)]
        factors = [(hdr.max_v_samp // c.v_samp, hdr.max_h_samp // c.h_samp)
                   for c in hdr.components]
        if any(hdr.max_v_samp % c.v_samp or hdr.max_h_samp % c.h_samp for c in hdr.components):
            planes, factors = _pillow_planes(s, ycbcr=True)
    else:
        planes, factors = _pillow_planes(s, ycbcr=False)
    orientation = s.orientation if exif else 1
    if orientation != 1:
        planes = [orient_plane(p, orientation) for p in planes]
        if orientation >= 5:
            factors = [(fh, fv) for fv, fh in factors]
    return planes, factors, displayed_size(s.width, s.height, orientation)


def _pillow_planes(s: Source, ycbcr: bool):
    import io
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(s.data))
            if ycbcr and im.format == "JPEG" and im.mode in ("RGB", "L"):
                if im.mode == "RGB":
                    im.draft("YCbCr", im.size)
                im.load()
                arr = np.asarray(im, np.float32)
                if arr.ndim == 2:
                    return [arr], [(1, 1)]
                return [np.ascontiguousarray(arr[..., i]) for i in range(3)], [(1, 1)] * 3
            im = im.convert("RGB")
            rgb = np.asarray(im, np.float32)
    except Exception as e:
        raise JpegError(s.name, f"cannot decode: {e}") from None
    ycc = rgb @ RGB_TO_YCBCR.T
    ycc[..., 1:] += 128.0
    return [np.ascontiguousarray(ycc[..., i]) for i in range(3)], [(1, 1)] * 3


def spatial_cube(src, channels, geometry: Optional[Geometry] = None, stats=None,
                 max_pixels=None, strict: bool = False, warnings_out: Optional[list] = None,
                 info: Optional[dict] = None,
                 photometric: Optional[Photometric] = None) -> np.ndarray:
    """The paper's flow: decode, crop/resize/flip, YCbCr, 8x8 block DCT, select, normalize.

    Same arguments and result as cube(..., source="spatial"); the decoded share counts
    the MCU rows of the crop box.  photometric: applied to the resampled YCbCr pixel
    planes (jpegfreq.photometric.adjust_planes), the reference of the coefficient ops.
    """
    cs = _as_channels(channels)
    photometric = _as_photometric(photometric)
    geometry = geometry or eval_geometry(448)
    damage = {}
    planes, factors, (w, h) = decode_planes(src, max_pixels, geometry.exif, damage)
    box = geometry.box_for(w, h)
    _report_box(damage, box, geometry.exif, strict, warnings_out, info)
    oh, ow = geometry.out_h, geometry.out_w
    ch, cw = geometry.crop_size          # before the output orientation
    out = np.empty((cs.count, oh // 8, ow // 8), np.float32)
    comp_of, ks = np.asarray(cs.component_of), np.asarray(cs.k)

    def resampled(c):
        pix = resample_plane(planes[c] - 128.0, h, w, *factors[c], box, ch, cw, geometry.flip)
        return _orient_output([pix], geometry.orientation)[0]

    pixels = {}
    if photometric is not None:    # the ops mix components: resample every plane first
        pixels = dict(enumerate(adjust_planes(photometric,
                                              [resampled(c) for c in range(len(planes))])))
    for c in range(3):
        idx = np.nonzero(comp_of == c)[0]
        if len(idx) == 0:
            continue
        if c >= len(planes):
            out[idx] = 0.0          # grayscale: neutral chroma
            continue
        pix = pixels.get(c)
        if pix is None:
            pix = resampled(c)
        us = sorted({int(k) >> 3 for k in ks[idx]})
        vs = sorted({int(k) & 7 for k in ks[idx]})
        coefs = block_dct(pix, us, vs)
        for i in idx:
            out[i] = coefs[us.index(int(ks[i]) >> 3), vs.index(int(ks[i]) & 7)]
    scale, offset = _scale_offset(stats, cs, "spatial", geometry)
    if scale is not None:
        out *= scale[:, None, None]
        out += offset[:, None, None]
    return out


def _report_box(damage, box, exif, strict, warnings_out, info):
    """_report for a pixel decode of damage's source whose crop is box (displayed pixels)."""
    s, extent = damage["source"], damage["extent"]
    rows = None
    if extent is not None and s.header is not None:
        rows = stored_rows(box, s.orientation if exif else 1, s.width, s.height,
                           s.header.max_v_samp * 8)
    _report(s.name, list(damage["warnings"]), extent, rows, strict, warnings_out, info)


def _jpeg_damage(s: Source, max_pixels, damage: dict):
    """damage (as decode_planes fills it) from the C reader's entropy decode of s."""
    try:
        _, _, warns, extent = _jpegfreq.read_coefficients(s.data, False, _limit(max_pixels), [0],
                                                          extent=True)
    except _jpegfreq.Error as e:
        raise translate(s.name, e) from None
    damage.update(warnings=warns, extent=extent)


def rgb_image(src, geometry: Optional[Geometry] = None, stats=None, max_pixels=None,
              strict: bool = False, warnings_out: Optional[list] = None,
              info: Optional[dict] = None,
              photometric: Optional[Photometric] = None) -> np.ndarray:
    """RGB input: (3, out_h, out_w) float32 in [0, 1] (or normalized by stats).

    The one RGB decode + resize of the project (classification baseline and detection).
    geometry: a Geometry (eval geometry for 224: resize 256, centre crop 224; train:
    sample_train(..., 224)), or any object with its out_h, out_w, flip, exif and
    box_for(width, height): a jpegfreq.detection.DetectionGeometry is the whole image
    resized to its out_w x out_h (multiples of 4, which a Geometry, being a cube's, refuses).
    strict, warnings_out, info: as for cube().  The RGB decode (libjpeg-turbo) does not
    say where data ran out: a JPEG that does not end with its EOI marker (a cut file),
    or any JPEG with strict=True, is also entropy-decoded by the C reader (about the
    cost of the decode again, damaged files only) for its warnings and decoded share.
    photometric: the cube paths' ops done in RGB (jpegfreq.photometric.adjust_rgb) after
    the resize, then one clamp to [0, 1].
    """
    import io
    from PIL import Image
    geometry = geometry or eval_geometry(224)
    s = read_source(src, max_pixels)
    damage = dict(source=s, warnings=[], extent=None)
    if s.header is not None and (strict or not s.data.rstrip(b"\0").endswith(b"\xff\xd9")):
        _jpeg_damage(s, max_pixels, damage)
    rgb = None
    tj = _turbojpeg() if s.spatial_reason is None else None
    if tj:
        try:
            from turbojpeg import TJPF_RGB
            rgb = tj.decode(s.data, pixel_format=TJPF_RGB)
        except Exception:
            rgb = None
    if rgb is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rgb = np.asarray(Image.open(io.BytesIO(s.data)).convert("RGB"))
        except Exception as e:
            raise JpegError(s.name, f"cannot decode: {e}") from None
    if geometry.exif:
        rgb = np.stack([orient_plane(rgb[..., i], s.orientation) for i in range(3)], -1)
    h, w = rgb.shape[:2]
    box = geometry.box_for(w, h)
    _report_box(damage, box, geometry.exif, strict, warnings_out, info)
    orientation = getattr(geometry, "orientation", 1)
    ch, cw = getattr(geometry, "crop_size", (geometry.out_h, geometry.out_w))
    out = np.empty((3, ch, cw), np.float32)
    for i in range(3):
        out[i] = resample_plane(np.ascontiguousarray(rgb[..., i], np.float32), h, w, 1, 1, box,
                                ch, cw, geometry.flip)
    out = _orient_output(out, orientation)
    out *= 1.0 / 255.0
    photometric = _as_photometric(photometric)
    if photometric is not None:
        out = adjust_rgb(photometric, out)
    np.clip(out, 0.0, 1.0, out=out)  # float32 rounding of 255 * (1/255) can give 1.0000001
    if stats is not None:
        scale, offset = stats.scale_offset(None, source="rgb", geometry=geometry)
        out *= scale[:, None, None]
        out += offset[:, None, None]
    return out
