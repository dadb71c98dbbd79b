"""The pixel limit and the memory a read costs.

The limit (default 178,956,970 pixels, Pillow's decompression-bomb threshold)
is checked from the header before any coefficient memory exists, per call
(max_pixels=) and process-wide (set_max_pixels); 0 disables it.  The memory
figures docs/reliability.md states are measured here on generated images in
a child process (peak RSS over the call, not timed).
"""
import os
import subprocess
import sys
import textwrap
import time

import pytest

import jpeg_factory as F
import jpegfreq
from jpegfreq import JpegError

W, H = F.DEFAULT_SIZE            # 128 x 96 = 12,288 pixels
PIXELS = W * H

CALLS = {
    "read_header": lambda s, **kw: jpegfreq.read_header(s, **kw),
    "read_coefficients": lambda s, **kw: jpegfreq.read_coefficients(s, **kw),
    "cube": lambda s, **kw: jpegfreq.cube(s, size=64, **kw),
    "cube_spatial": lambda s, **kw: jpegfreq.cube(s, size=64, source="spatial", **kw),
    "cube_rgb": lambda s, **kw: jpegfreq.cube(s, size=64, source="rgb", **kw),
}


def _frame(width, height, base="baseline-420"):
    """base's bytes with the SOF claiming width x height (the scan data stays small)."""
    data = F.make_jpeg(base)
    off = next(e for e in F.markers(data) if e[1] in F.SOF_MARKERS)[0]
    return data[:off + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[off + 9:]


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------
# Per call and global
# ---------------------------------------------------------------------------

def test_default_limit():
    assert jpegfreq.DEFAULT_MAX_PIXELS == 178_956_970
    assert jpegfreq.get_max_pixels() == jpegfreq.DEFAULT_MAX_PIXELS


@pytest.mark.parametrize("call", sorted(CALLS))
def test_per_call_limit(call):
    data = F.make_jpeg("baseline-420")
    fn = CALLS[call]
    with pytest.raises(JpegError) as info:
        fn(data, max_pixels=PIXELS - 1)
    e = info.value
    assert e.kind == "limit"
    assert f"{W}x{H} = {PIXELS} pixels" in e.reason and f"limit of {PIXELS - 1}" in e.reason
    assert str(e).startswith(f"<bytes: {len(data)}>: ")
    fn(data, max_pixels=PIXELS)          # exactly at the limit: allowed
    fn(data, max_pixels=0)               # 0: no limit


@pytest.mark.parametrize("call", sorted(CALLS))
def test_global_limit(call, pixel_limit):   # conftest's fixture restores the limit
    data = F.make_jpeg("gray")
    fn = CALLS[call]
    jpegfreq.set_max_pixels(1000)
    assert jpegfreq.get_max_pixels() == 1000
    with pytest.raises(JpegError, match=r"limit of 1000\b") as info:
        fn(data)
    assert info.value.kind == "limit"
    fn(data, max_pixels=0)               # a per-call value overrides the global one
    fn(data, max_pixels=PIXELS)
    jpegfreq.set_max_pixels(0)           # 0 (or None) disables it
    fn(data)
    jpegfreq.set_max_pixels(None)
    assert jpegfreq.get_max_pixels() == 0
    fn(data)


def test_limit_names_the_path(tmp_path):
    path = tmp_path / "small.jpg"
    path.write_bytes(F.make_jpeg("baseline-444"))
    with pytest.raises(JpegError) as info:
        jpegfreq.read_coefficients(str(path), max_pixels=100)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: image of {W}x{H}")


# ---------------------------------------------------------------------------
# Refused from the header, before allocation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("width,height", [(60000, 60000), (65500, 65500), (65535, 65535),
                                          (65535, 1)])
def test_bomb_header_refused_fast(width, height):
    """A tiny file claiming billions of pixels costs no memory and no time to refuse."""
    data = _frame(width, height)
    jpegfreq.read_coefficients(F.make_jpeg("baseline-420"))  # warm up
    before = _rss()
    t0 = time.perf_counter()
    for fn in (CALLS["read_header"], CALLS["read_coefficients"], CALLS["cube"],
               CALLS["cube_spatial"]):
        with pytest.raises(JpegError) as info:
            fn(data)
        e = info.value
        assert e.kind == "limit", e
        assert f"{width}x{height} = {width * height} pixels" in e.reason
    assert time.perf_counter() - t0 < 2.0          # generous: noisy machines; ~1 ms really
    assert _rss() - before < 8 << 20


def test_width_limit_is_libjpegs():
    """Sides over 65500 are refused by libjpeg itself, whatever max_pixels says."""
    with pytest.raises(JpegError, match=r"maximum dimension of 65500") as info:
        jpegfreq.read_header(_frame(65501, 1), max_pixels=0)
    assert info.value.kind == "limit"


def test_disabled_limit_reads_a_big_header():
    """max_pixels=0: the header of a 60000x60000 frame is reported (nothing allocated)."""
    h = jpegfreq.read_header(_frame(60000, 60000), max_pixels=0)
    assert (h.width, h.height) == (60000, 60000)


def test_limit_checked_before_coefficients_exist():
    """At limit + 1 pixel: refused by the header check, not by an allocation failure."""
    data = _frame(8000, 6000)            # 48 MP header over 3 kB of data
    with pytest.raises(JpegError, match=r"8000x6000 = 48000000 pixels exceeds the pixel limit "
                                        r"of 47999999") as info:
        jpegfreq.read_coefficients(data, max_pixels=48_000_000 - 1)
    assert info.value.kind == "limit"


# ---------------------------------------------------------------------------
# Component count
# ---------------------------------------------------------------------------

def _two_components():
    """baseline-444 with its Cr component removed from SOF and SOS (header otherwise valid)."""
    data = bytearray(F.make_jpeg("baseline-444"))
    entries = F.markers(data)
    sos = next(e for e in entries if e[1] == F.SOS)
    s = sos[0] + 4
    assert data[s] == 3
    data[s] = 2
    del data[s + 5:s + 7]                # third (Cs, TdTa)
    data[sos[0] + 2:sos[0] + 4] = (sos[2] - 2).to_bytes(2, "big")
    sof = next(e for e in entries if e[1] in F.SOF_MARKERS)
    p = sof[0] + 4
    assert data[p + 5] == 3
    data[p + 5] = 2
    del data[p + 12:p + 15]              # third (C, HV, Tq)
    data[sof[0] + 2:sof[0] + 4] = (sof[2] - 3).to_bytes(2, "big")
    return bytes(data)


def _five_components():
    """gray with a 5-component frame (one non-interleaved scan of the first)."""
    data = F.make_jpeg("gray")
    sof = next(e for e in F.markers(data) if e[1] in F.SOF_MARKERS)
    p = sof[0] + 4
    comps = b"".join(bytes([i, 0x11, 0]) for i in range(1, 6))
    seg = (bytes([0xFF, data[sof[0] + 1]]) + (8 + 15).to_bytes(2, "big") + data[p:p + 5]
           + b"\x05" + comps)
    return data[:sof[0]] + seg + data[sof[0] + 2 + sof[2]:]


@pytest.mark.parametrize("make,n", [(_two_components, 2), (_five_components, 5)])
def test_component_count_validated(make, n):
    data = make()
    for fn in (CALLS["read_header"], CALLS["read_coefficients"], CALLS["cube"]):
        with pytest.raises(JpegError, match=rf"unsupported number of components: {n} "
                                            r"\(1, 3 or 4 expected\)") as info:
            fn(data)
        assert info.value.kind == "unsupported"


# ---------------------------------------------------------------------------
# Memory: measured peak RSS against the figures in docs/reliability.md
# ---------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import os, sys, json
    import jpegfreq
    def field(name):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
    path, call = sys.argv[1], sys.argv[2]
    jpegfreq.cube(sys.argv[3], size=64)              # warm-up: first-call allocations
    jpegfreq.cube(sys.argv[3], size=64, source="spatial")
    try:
        with open("/proc/self/clear_refs", "w") as f:  # reset the peak (Linux >= 4.0)
            f.write("5")
    except OSError:
        pass                                         # then the peak so far is below the read's
    before = field("VmRSS:")
    if call == "read_coefficients":
        r = jpegfreq.read_coefficients(path, max_pixels=0)
    elif call == "cube":
        r = jpegfreq.cube(path, max_pixels=0)
    else:
        r = jpegfreq.cube(path, source="spatial", max_pixels=0)
    print(json.dumps({"peak": field("VmHWM:") - before}))
""")


def _big_jpeg(path, width, height, mode, subsampling=None):
    from PIL import Image
    im = Image.blend(Image.linear_gradient("L").resize((width, height)),
                     Image.effect_noise((width, height), 12), 0.3)
    opts = {}
    if mode == "RGB":
        im = Image.merge("RGB", (im, im.transpose(Image.FLIP_LEFT_RIGHT),
                                 im.transpose(Image.FLIP_TOP_BOTTOM)))
        opts["subsampling"] = subsampling
    im.save(path, quality=80, **opts)


def expected_bytes(call, width, height, samples_per_pixel, file_size):
    """The docs' figures: coefficients are 2 bytes per sample per component.

    cube (jpeg-coeffs): libjpeg's coefficient arrays, 2 B per sample, plus the
    file bytes (a path is read whole) and a few MB of operator scratch.
    read_coefficients: twice that (libjpeg's arrays and the int16 copy live
    together).  spatial: 1 B (8-bit planes) + 4 B (float32 planes) per sample,
    then 4 B per luma pixel for the level-shifted plane being resampled.
    """
    samples = width * height * samples_per_pixel
    if call == "cube":
        return 2 * samples + file_size
    if call == "read_coefficients":
        return 4 * samples + file_size
    return max(5 * samples, 4 * samples + 4 * width * height) + file_size


@pytest.mark.parametrize("kind,width,height,spp,call", [
    ("gray", 8000, 6000, 1.0, "read_coefficients"),
    ("gray", 8000, 6000, 1.0, "cube"),
    ("gray", 8000, 6000, 1.0, "spatial"),
    ("4:2:0", 6000, 4000, 1.5, "read_coefficients"),
    ("4:2:0", 6000, 4000, 1.5, "cube"),
    ("4:2:0", 6000, 4000, 1.5, "spatial"),
    ("4:4:4", 4000, 3000, 3.0, "read_coefficients"),
    ("4:4:4", 4000, 3000, 3.0, "cube"),
    ("4:4:4", 4000, 3000, 3.0, "spatial"),
])
def test_peak_memory_matches_docs(kind, width, height, spp, call, tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "bigjpeg"
    folder.mkdir(exist_ok=True)
    path = folder / f"{kind.replace(':', '')}-{width}x{height}.jpg"
    if not path.exists():
        _big_jpeg(path, width, height, "L" if kind == "gray" else "RGB",
                  None if kind == "gray" else kind)
    small = folder / "small.jpg"
    small.write_bytes(F.make_jpeg("baseline-420"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(jpegfreq.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), call, str(small)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    peak = int(proc.stdout.strip().splitlines()[-1].split(":")[1].strip(" }"))
    want = expected_bytes(call, width, height, spp, path.stat().st_size)
    # the figures hold to within 10% + 16 MB (allocator, MCU padding, scratch)
    assert abs(peak - want) < 0.10 * want + (16 << 20), (
        f"{kind} {width}x{height} {call}: peak {peak / 1e6:.0f} MB, docs say {want / 1e6:.0f} MB")


# ---------------------------------------------------------------------------
# Scan count: the CPU bound of a progressive file
# ---------------------------------------------------------------------------

def _many_scans(copies):
    """progressive-420 with its first (DC) scan repeated `copies` more times."""
    data = F.make_jpeg("progressive-420")
    entries = F.markers(data)
    i = next(k for k, e in enumerate(entries) if e[1] == F.SOS)
    start, end = entries[i][0], entries[i + 1][0]
    return data[:end] + data[start:end] * copies + data[end:]


def test_scan_count_limit():
    """A progressive file may have at most 1000 scans (each can make libjpeg walk
    every block again): more is refused with kind "limit", fast."""
    ok = jpegfreq.read_coefficients(_many_scans(990))
    assert any("Inconsistent progression" in w for w in ok.warnings)
    bomb = _many_scans(1001)
    t0 = time.perf_counter()
    for fn in (CALLS["read_coefficients"], CALLS["cube"], CALLS["cube_spatial"]):
        with pytest.raises(JpegError, match="more than 1000 scans") as info:
            fn(bomb)
        assert info.value.kind == "limit"
    assert time.perf_counter() - t0 < 5.0
