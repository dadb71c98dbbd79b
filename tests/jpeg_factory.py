"""Deterministic test JPEGs: every coding mode, sampling and colour model the readers meet.

Tests make their own files here and never read data from outside the repository.  Pillow writes what
it can (baseline, progressive, 4:4:4 / 4:2:2 / 4:2:0, grayscale, CMYK, restart
intervals, EXIF); Debian's libjpeg-turbo-progs tools (``cjpeg``, ``jpegtran``,
``djpeg``) add arithmetic coding and the other samplings.  A few headers are
patched by hand (YCCK, 12-bit, lossless) because no installed encoder writes them.

    make_jpeg("sample-411")            bytes of a 4:1:1 JPEG of photo(128, 96)
    damaged(make_jpeg("baseline-420")) [(id, bytes), ...] broken variants
    markers(data)                      [(offset, 0xFFxx, length), ...]
    frame_header(data)                 SOF facts: precision, size, (id, h, v, tq) per component

Everything is a pure function of its arguments (same bytes on every run in one
environment); results are cached, so calling make_jpeg repeatedly is cheap.
"""
import functools
import io
import shutil
import subprocess
from collections import namedtuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "ALL_CASES",
    "CASES",
    "DAMAGE_OUTCOME",
    "READER_OUTCOME",
    "FrameHeader",
    "UNSUPPORTED_CASES",
    "cjpeg",
    "damaged",
    "djpeg",
    "frame_header",
    "jpegtran",
    "make_jpeg",
    "markers",
    "photo",
]

# Marker codes (full two-byte values, as markers() reports them).
SOI, EOI, SOS, DQT, DHT, DRI, COM = 0xFFD8, 0xFFD9, 0xFFDA, 0xFFDB, 0xFFC4, 0xFFDD, 0xFFFE
APP1, APP14 = 0xFFE1, 0xFFEE
#: Start-of-frame markers (all SOFn except DHT 0xC4, JPG 0xC8, DAC 0xCC).
SOF_MARKERS = frozenset(0xFFC0 + n for n in range(16)) - {0xFFC4, 0xFFC8, 0xFFCC}

DEFAULT_SIZE = (128, 96)  # a multiple of every MCU size used here (up to 32x16)
DEFAULT_QUALITY = 85
_FRACTAL_AMPLITUDE = 2.0

_TINY = {"tiny-1x1": (1, 1), "tiny-8x8": (8, 8), "tiny-17x9": (17, 9)}
_FIXED_QUALITY = {"quality-100": 100, "quality-10": 10}

# case -> (encoder, options); "pillow" options are Image.save keywords, "cjpeg" ones are switches.
_RECIPES = {
    "baseline-444": ("pillow", {"subsampling": "4:4:4"}),
    "baseline-422": ("pillow", {"subsampling": "4:2:2"}),
    "baseline-420": ("pillow", {"subsampling": "4:2:0"}),
    "progressive-420": ("pillow", {"subsampling": "4:2:0", "progressive": True}),
    "progressive-444": ("pillow", {"subsampling": "4:4:4", "progressive": True}),
    # restart_marker_blocks counts MCUs: 5 does not divide an MCU row, so intervals straddle rows.
    "restart-420": ("pillow", {"subsampling": "4:2:0", "restart_marker_blocks": 5}),
    "arithmetic-420": ("cjpeg", ("-arithmetic", "-sample", "2x2,1x1,1x1")),
    "arithmetic-progressive": ("cjpeg", ("-arithmetic", "-progressive", "-sample", "2x2,1x1,1x1")),
    "sample-411": ("cjpeg", ("-sample", "4x1,1x1,1x1")),
    "sample-440": ("cjpeg", ("-sample", "1x2,1x1,1x1")),
    "sample-all-2x1": ("cjpeg", ("-sample", "2x1,2x1,2x1")),
    # Cb is 1 wide x 2 high, Cr 2 wide x 1 high: each chroma plane is halved along a different axis.
    "sample-2x2-1x2-2x1": ("cjpeg", ("-sample", "2x2,1x2,2x1")),
    "gray": ("pillow-gray", {}),
    "gray-progressive": ("pillow-gray", {"progressive": True}),
    "cmyk": ("pillow-cmyk", {}),
    "ycck": ("ycck", {}),
    "rgb-adobe": ("cjpeg", ("-rgb",)),
    "odd-size": ("pillow", {"subsampling": "4:2:0"}),
    **{name: ("pillow", {"subsampling": "4:2:0"}) for name in _TINY},
    **{name: ("pillow", {"subsampling": "4:2:0"}) for name in _FIXED_QUALITY},
    **{f"exif-orientation-{n}": ("pillow", {"subsampling": "4:2:0", "orientation": n}) for n in range(1, 9)},
    # Not decodable by an 8-bit baseline decoder: headers patched from baseline-420.
    "12bit": ("patch-12bit", {}),
    "lossless": ("patch-lossless", {}),
}

#: Headers no 8-bit DCT decoder accepts: a 12-bit frame and a lossless (SOF3) frame.
UNSUPPORTED_CASES = ["12bit", "lossless"]
#: Every case that is a valid, decodable JPEG file (YCCK included: it decodes to CMYK).
CASES = [name for name in _RECIPES if name not in UNSUPPORTED_CASES]
ALL_CASES = CASES + UNSUPPORTED_CASES

_DEFAULT_SIZES = {"odd-size": (333, 217), **_TINY}


# ---------------------------------------------------------------------------
# A synthetic photograph
# ---------------------------------------------------------------------------

def photo(width, height, seed=0, mode="RGB"):
    """A natural-looking synthetic PIL image of ``width`` x ``height``.

    Smooth colour gradients and a slow undulation carry most of the energy;
    soft-edged shapes, a striped and a grainy texture patch, and mild noise
    give every 8x8 block some high-frequency content.  ``mode``: "RGB"
    (default), "L", or "CMYK" (with a real K plane from partial under-colour
    removal, not Pillow's K = 0 conversion).  Same arguments, same pixels.
    """
    if width < 1 or height < 1:
        raise ValueError(f"photo size must be positive, got {width}x{height}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    fx = xx / max(width - 1, 1)
    fy = yy / max(height - 1, 1)

    # Background: a bilinear blend of four corner colours plus a slow wave.
    c = rng.uniform(40, 215, size=(4, 3))
    img = (((1 - fx) * (1 - fy))[..., None] * c[0] + (fx * (1 - fy))[..., None] * c[1]
           + ((1 - fx) * fy)[..., None] * c[2] + (fx * fy)[..., None] * c[3])
    angle, phase = rng.uniform(0, np.pi, 2)
    wave = np.sin(2 * np.pi * 1.5 * (fx * np.cos(angle) + fy * np.sin(angle)) + phase)
    img += 14 * wave[..., None] * rng.uniform(0.5, 1.0, 3)

    # Shapes with softened edges.
    base = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(base)
    n_shapes = 3 + int(rng.integers(0, 4))
    for _ in range(n_shapes):
        x0, x1 = sorted(rng.uniform(-0.1, 1.1, 2) * width)
        y0, y1 = sorted(rng.uniform(-0.1, 1.1, 2) * height)
        fill = tuple(int(v) for v in rng.integers(20, 236, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse([x0, y0, x1 + 1, y1 + 1], fill=fill)
        elif kind == 1:
            draw.rectangle([x0, y0, x1 + 1, y1 + 1], fill=fill)
        else:
            pts = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(3)]
            draw.polygon(pts, fill=fill)
    base = base.filter(ImageFilter.GaussianBlur(0.8))
    img = np.asarray(base, dtype=np.float64).copy()

    # Texture: fine stripes in one box, blurred grain ("foliage") in another.
    for kind in ("stripes", "grain"):
        bx0, by0 = int(rng.integers(0, max(width // 2, 1))), int(rng.integers(0, max(height // 2, 1)))
        bx1 = min(width, bx0 + max(1, int(width * rng.uniform(0.25, 0.5))))
        by1 = min(height, by0 + max(1, int(height * rng.uniform(0.25, 0.5))))
        sub_y, sub_x = yy[by0:by1, bx0:bx1], xx[by0:by1, bx0:bx1]
        if kind == "stripes":
            theta = rng.uniform(0, np.pi)
            period = rng.uniform(2.5, 6.0)
            pattern = 18 * np.sin(2 * np.pi * (sub_x * np.cos(theta) + sub_y * np.sin(theta)) / period)
        else:
            grain = rng.normal(0, 1, sub_x.shape)
            grain_img = Image.fromarray(np.clip(grain * 40 + 128, 0, 255).astype(np.uint8), "L")
            pattern = (np.asarray(grain_img.filter(ImageFilter.GaussianBlur(0.7)), np.float64) - 128) * 0.8
        img[by0:by1, bx0:bx1] += pattern[..., None]

    # Multi-scale (roughly 1/f) luminance texture over everything, as in real scenes.
    img += _fractal(width, height, rng)[..., None] * rng.uniform(0.6, 1.4, 3)
    img += rng.normal(0, 2.0, img.shape)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if mode == "RGB":
        return Image.fromarray(rgb, "RGB")
    if mode == "L":
        return Image.fromarray(rgb, "RGB").convert("L")
    if mode == "CMYK":
        cmy = 255 - rgb.astype(np.int32)
        k = (cmy.min(axis=2) * 7) // 10  # partial under-colour removal
        cmyk = np.concatenate([cmy - k[..., None], k[..., None]], axis=2)
        return Image.fromarray(cmyk.astype(np.uint8), "CMYK")
    raise ValueError(f"photo mode must be 'RGB', 'L' or 'CMYK', not {mode!r}")


def _fractal(width, height, rng, amplitude=_FRACTAL_AMPLITUDE):
    """Sum of smoothly upsampled random grids at scales 2..32 px, amplitude rising with scale."""
    total = np.zeros((height, width))
    for scale in (2, 4, 8, 16, 32):
        grid = rng.normal(0, 1, (height // scale + 2, width // scale + 2)).astype(np.float32)
        layer = Image.fromarray(grid, "F").resize((width, height), Image.BICUBIC,
                                                  box=(0.5, 0.5, width / scale + 0.5, height / scale + 0.5))
        total += np.asarray(layer, np.float64) * amplitude * scale ** 0.5
    return total


# ---------------------------------------------------------------------------
# The libjpeg-turbo command-line tools
# ---------------------------------------------------------------------------

def _tool(name):
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found on PATH: install Debian's libjpeg-turbo-progs "
                           f"(apt-get install libjpeg-turbo-progs), which the JPEG test factory needs")
    return path


def _run(name, args, stdin):
    proc = subprocess.run([_tool(name), *args], input=stdin, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"{name} {' '.join(args)} failed (exit {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def cjpeg(ppm_bytes, *args):
    """JPEG bytes from cjpeg reading a PPM/PGM from stdin, with switches ``args`` (e.g. "-arithmetic")."""
    return _run("cjpeg", [str(a) for a in args], bytes(ppm_bytes))


def jpegtran(jpeg_bytes, *args):
    """Output of jpegtran on ``jpeg_bytes`` (e.g. "-flip", "horizontal"): lossless transforms."""
    return _run("jpegtran", [str(a) for a in args], bytes(jpeg_bytes))


def djpeg(jpeg_bytes, *args):
    """Output of djpeg on ``jpeg_bytes`` (PPM/PGM by default): libjpeg-turbo's own decode."""
    return _run("djpeg", [str(a) for a in args], bytes(jpeg_bytes))


def _ppm(image):
    buf = io.BytesIO()
    image.save(buf, "PPM")
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Valid cases
# ---------------------------------------------------------------------------

def make_jpeg(case, width=None, height=None, quality=None, seed=0):
    """Bytes of the JPEG test file ``case`` (one of ALL_CASES) showing photo(width, height, seed).

    width, height: default 128 x 96; "odd-size" defaults to 333 x 217 and the
    "tiny-WxH" cases are fixed at their size.  quality: default 85; the
    "quality-N" cases are fixed at N.  Cached: repeated calls cost nothing.
    """
    if case not in _RECIPES:
        raise ValueError(f"unknown JPEG test case {case!r}; cases: {', '.join(ALL_CASES)}")
    dw, dh = _DEFAULT_SIZES.get(case, DEFAULT_SIZE)
    if case in _TINY and (width not in (None, dw) or height not in (None, dh)):
        raise ValueError(f"case {case!r} is fixed at {dw}x{dh}")
    q = _FIXED_QUALITY.get(case, DEFAULT_QUALITY)
    if case in _FIXED_QUALITY and quality not in (None, q):
        raise ValueError(f"case {case!r} is fixed at quality {q}")
    if quality is not None:
        q = quality
    width = dw if width is None else int(width)
    height = dh if height is None else int(height)
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    return _make(case, width, height, int(q), int(seed))


@functools.lru_cache(maxsize=256)
def _make(case, width, height, quality, seed):
    kind, opts = _RECIPES[case]
    if kind == "pillow":
        opts = dict(opts)
        orientation = opts.pop("orientation", None)
        if orientation is not None:
            exif = Image.Exif()
            exif[0x0112] = orientation
            opts["exif"] = exif
        return _pillow_save(photo(width, height, seed), quality, **opts)
    if kind == "pillow-gray":
        return _pillow_save(photo(width, height, seed, "L"), quality, **opts)
    if kind == "pillow-cmyk":
        return _pillow_save(photo(width, height, seed, "CMYK"), quality)
    if kind == "cjpeg":
        return cjpeg(_ppm(photo(width, height, seed)), "-quality", quality, *opts)
    if kind == "ycck":
        return _ycck(photo(width, height, seed, "CMYK"), quality)
    if kind == "patch-12bit":
        # 12-bit samples need an extended-sequential frame (SOF1); the scan data
        # stays 8-bit, so only the header is plausible: enough to be refused.
        data = bytearray(_make("baseline-420", width, height, quality, seed))
        off = _first(data, SOF_MARKERS)[0]
        data[off + 1] = 0xC1
        data[off + 4] = 12
        return bytes(data)
    if kind == "patch-lossless":
        data = bytearray(_make("baseline-420", width, height, quality, seed))
        off = _first(data, SOF_MARKERS)[0]
        data[off + 1] = 0xC3
        return bytes(data)
    raise AssertionError(kind)


def _pillow_save(image, quality, **opts):
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, **opts)
    return buf.getvalue()


def _ycck(cmyk_image, quality):
    """A genuine YCCK file whose decode is ``cmyk_image``.

    libjpeg decodes YCCK by turning the YCbCr triple into RGB and emitting
    C, M, Y = 255 - R, G, B with K passed through; Pillow then inverts all four
    (Adobe CMYK is stored inverted).  So the stored planes must be YCbCr of
    (c, m, y) and 255 - k.  Pillow writes CMYK planes inverted and untouched
    otherwise, so we hand it 255 - stored and mark the Adobe segment YCCK.
    """
    cmyk = np.asarray(cmyk_image, dtype=np.float64)
    c, m, y, k = (cmyk[..., i] for i in range(4))
    # JFIF full-range BT.601, as libjpeg's inverse expects.
    luma = 0.299 * c + 0.587 * m + 0.114 * y
    cb = 128 - 0.168735892 * c - 0.331264108 * m + 0.5 * y
    cr = 128 + 0.5 * c - 0.418687589 * m - 0.081312411 * y
    stored = np.stack([luma, cb, cr, 255 - k], axis=2)
    handed = np.clip(np.rint(255 - stored), 0, 255).astype(np.uint8)
    data = bytearray(_pillow_save(Image.fromarray(handed, "CMYK"), quality))
    for off, marker, length in markers(data):
        if marker == APP14 and data[off + 4:off + 9] == b"Adobe" and length >= 14:
            data[off + 4 + 11] = 2  # transform flag: 0 = none (CMYK), 1 = YCbCr, 2 = YCCK
            return bytes(data)
    raise RuntimeError("Pillow wrote a CMYK JPEG without an Adobe APP14 segment")


# ---------------------------------------------------------------------------
# Reading structure
# ---------------------------------------------------------------------------

def markers(data):
    """Walk a JPEG: [(offset, marker, length)] from SOI to EOI.

    marker is the two-byte code (0xFFD8 ...); length is the segment's length
    field (which counts itself) or 0 for stand-alone markers (SOI, EOI, RSTn).
    Entropy-coded data after each SOS is skipped (stuffed 0xFF00 bytes), its
    RSTn markers are listed.  Raises ValueError on a malformed or truncated file.
    """
    data = bytes(data)
    n = len(data)
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG: no SOI marker at offset 0")
    out = [(0, SOI, 0)]
    pos = 2
    while True:
        if pos >= n:
            raise ValueError(f"truncated: no EOI marker (file ends at {n})")
        if data[pos] != 0xFF:
            raise ValueError(f"expected a marker at offset {pos}, found byte 0x{data[pos]:02X}")
        while pos + 1 < n and data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos + 1 >= n:
            raise ValueError(f"truncated inside a marker at offset {pos}")
        code = 0xFF00 | data[pos + 1]
        if code == EOI:
            out.append((pos, code, 0))
            return out
        if 0xFFD0 <= code <= 0xFFD7 or code == 0xFF01:
            out.append((pos, code, 0))
            pos += 2
            continue
        if code == SOI or code == 0xFF00:
            raise ValueError(f"unexpected marker 0x{code:04X} at offset {pos}")
        if pos + 4 > n:
            raise ValueError(f"truncated segment header at offset {pos}")
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2:
            raise ValueError(f"segment 0x{code:04X} at offset {pos} has bad length {length}")
        if pos + 2 + length > n:
            raise ValueError(f"segment 0x{code:04X} at offset {pos} runs past the end of the file")
        out.append((pos, code, length))
        pos += 2 + length
        if code == SOS:
            pos = _skip_entropy(data, pos, out)


def _skip_entropy(data, pos, out):
    """Skip entropy-coded bytes from ``pos``; list RSTn into ``out``; return the next marker's offset."""
    n = len(data)
    while True:
        j = data.find(b"\xff", pos)
        if j < 0 or j + 1 >= n:
            raise ValueError("truncated: entropy-coded data runs to the end of the file")
        nxt = data[j + 1]
        if nxt == 0x00:  # stuffed data byte
            pos = j + 2
        elif nxt == 0xFF:  # fill byte; look again from the next one
            pos = j + 1
        elif 0xD0 <= nxt <= 0xD7:
            out.append((j, 0xFF00 | nxt, 0))
            pos = j + 2
        else:
            return j


def _first(data, codes):
    """(offset, marker, length) of the first segment whose marker is in ``codes``."""
    codes = {codes} if isinstance(codes, int) else codes
    for entry in markers(data):
        if entry[1] in codes:
            return entry
    raise ValueError(f"no segment {' / '.join(f'0x{c:04X}' for c in sorted(codes))} in the file")


FrameHeader = namedtuple("FrameHeader", "marker precision height width components")
FrameHeader.__doc__ = "SOF facts; components is a tuple of (id, h, v, quant_table)."


def frame_header(data):
    """Parse the first SOF segment (any SOFn) into a FrameHeader."""
    off, marker, length = _first(data, SOF_MARKERS)
    p = off + 4
    precision = data[p]
    height = int.from_bytes(data[p + 1:p + 3], "big")
    width = int.from_bytes(data[p + 3:p + 5], "big")
    ncomp = data[p + 5]
    comps = tuple((data[p + 6 + 3 * i], data[p + 7 + 3 * i] >> 4, data[p + 7 + 3 * i] & 15,
                   data[p + 8 + 3 * i]) for i in range(ncomp))
    return FrameHeader(marker, precision, height, width, comps)


def _scan_ranges(data, entries):
    """[(start, end)] byte ranges of entropy-coded data, one per scan."""
    ranges = []
    for i, (off, marker, length) in enumerate(entries):
        if marker == SOS:
            end = next(o for o, m, _ in entries[i + 1:] if not 0xFFD0 <= m <= 0xFFD7)
            ranges.append((off + 2 + length, end))
    return ranges


# ---------------------------------------------------------------------------
# Damaged inputs
# ---------------------------------------------------------------------------

#: What libjpeg makes of each damaged() id: "fail" = no image can be had (the
#: header is unusable); "warn" = an image is produced, with at most warnings
#: (premature end of data, corrupt entropy data); "any" = depends on the seed.
DAMAGE_OUTCOME = {
    "empty": "fail",
    "png": "fail",
    "random-bytes": "fail",
    "no-soi": "fail",
    "truncated-after-soi": "fail",
    "truncated-in-header": "fail",
    "truncated-after-sos": "warn",
    "truncated-25pct": "warn",
    "truncated-50pct": "warn",
    "truncated-90pct": "warn",
    "missing-eoi": "warn",
    "bitflip-entropy-1": "warn",
    "bitflip-entropy-10": "warn",
    "bitflip-entropy-100": "warn",
    "bitflip-header-1": "any",
    "bitflip-header-10": "any",
    "huge-dimensions": "fail",
    "zero-width": "fail",
    "missing-sof": "fail",
    "segment-length-0": "fail",
    "segment-length-2": "fail",
    "com-length-2": "warn",
    "bogus-dht-index": "fail",
    "bogus-dht-counts": "fail",
    "bogus-dqt-index": "fail",
    "sos-unknown-component": "fail",
}

#: What jpegfreq's reader does with each variant where it differs from libjpeg (above): a file
#: whose entropy-coded data is missing altogether is an error, not a grey image with warnings.
READER_OUTCOME = dict(DAMAGE_OUTCOME, **{"truncated-after-sos": "fail"})


def damaged(data, seed=0):
    """Broken variants of the valid JPEG ``data``: [(id, bytes)], ids as in DAMAGE_OUTCOME.

    Truncations (after SOI, mid-header, after SOS, 25/50/90% of the entropy
    data, missing EOI), seeded bit flips in entropy data (never creating or
    destroying a 0xFF byte, so no marker appears) and in header segments, non
    JPEG inputs (empty, PNG, random), and crafted header faults: 65535x65535
    frame, zero width, no SOF, a DQT of length 0 and one of length 2 (its
    table then reads as stray bytes), an empty COM (legal), Huffman table
    index 7, Huffman counts over 256, quantization table index 7, and an SOS
    naming a component the frame lacks.  Variants needing a DHT are left out
    for arithmetic-coded input.  Same (data, seed), same list.
    """
    data = bytes(data)
    entries = markers(data)
    rng = np.random.default_rng(seed)
    out = []

    def add(name, value):
        out.append((name, bytes(value)))

    # Not JPEG at all.
    add("empty", b"")
    png = io.BytesIO()
    photo(32, 24, seed).save(png, "PNG")
    add("png", png.getvalue())
    add("random-bytes", rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    add("no-soi", data[2:])

    # Truncations.
    sof = _first(data, SOF_MARKERS)
    dht = next((e for e in entries if e[1] == DHT), None)
    cut_segment = dht or sof
    sos = _first(data, SOS)
    eoi_off = entries[-1][0]
    start = sos[0] + 2 + sos[2]
    add("truncated-after-soi", data[:2])
    add("truncated-in-header", data[:cut_segment[0] + 2 + cut_segment[2] // 2])
    add("truncated-after-sos", data[:start])
    # Cut points counted over entropy-coded bytes only, so a cut never lands in
    # the table or scan headers between the scans of a progressive file.
    scans = _scan_ranges(data, entries)
    entropy = np.concatenate([np.arange(a, b) for a, b in scans])
    for pct in (25, 50, 90):
        add(f"truncated-{pct}pct", data[:int(entropy[len(entropy) * pct // 100])])
    add("missing-eoi", data[:eoi_off])

    # Bit flips that keep the marker structure: no 0xFF is made or unmade.
    flippable = np.array([i for i in entropy if data[i] != 0xFF and data[i - 1] != 0xFF], dtype=np.int64)
    for count in (1, 10, 100):
        add(f"bitflip-entropy-{count}", _flip(data, flippable, count, rng))
    header_bytes = np.array([i for off, m, length in entries
                             if m in (DQT, DHT, DRI, SOS) or m in SOF_MARKERS
                             for i in range(off + 2, off + 2 + length)], dtype=np.int64)
    for count in (1, 10):
        add(f"bitflip-header-{count}", _flip(data, header_bytes, count, rng, keep_ff=False))

    # Frame faults.
    p = sof[0] + 5  # height, then width
    add("huge-dimensions", _patch(data, p, b"\xff\xff\xff\xff"))
    add("zero-width", _patch(data, p + 2, b"\x00\x00"))
    add("missing-sof", data[:sof[0]] + data[sof[0] + 2 + sof[2]:])

    # Segment lengths.
    # A DQT claiming length 0 is malformed; claiming 2 it is empty, its table
    # bytes become stray data and quantization table 0 is never defined.
    dqt = _first(data, DQT)
    add("segment-length-0", _patch(data, dqt[0] + 2, b"\x00\x00"))
    add("segment-length-2", _patch(data, dqt[0] + 2, b"\x00\x02"))
    add("com-length-2", data[:2] + b"\xff\xfe\x00\x02" + data[2:])

    # Bogus tables.
    if dht is not None:
        add("bogus-dht-index", _patch(data, dht[0] + 4, bytes([(data[dht[0] + 4] & 0xF0) | 7])))
        add("bogus-dht-counts", _patch(data, dht[0] + 5, b"\xff" * 16))
    add("bogus-dqt-index", _patch(data, dqt[0] + 4, bytes([(data[dqt[0] + 4] & 0xF0) | 7])))
    frame_ids = {c[0] for c in frame_header(data).components}
    stranger = next(i for i in range(9, 256) if i not in frame_ids)
    add("sos-unknown-component", _patch(data, sos[0] + 5, bytes([stranger])))
    return out


def _patch(data, offset, new):
    return data[:offset] + new + data[offset + len(new):]


def _flip(data, positions, count, rng, keep_ff=True):
    buf = bytearray(data)
    chosen = rng.choice(positions, size=min(count, len(positions)), replace=False)
    for i in sorted(int(i) for i in chosen):
        for bit in rng.permutation(8):
            value = buf[i] ^ (1 << int(bit))
            if not keep_ff or value != 0xFF:
                buf[i] = value
                break
    return bytes(buf)
