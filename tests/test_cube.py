"""jpegfreq.cube (issue 3): compressed vs spatial equivalence, colour models, stats, dtypes, threads.

Equivalence is stated as docs/design.md states it: relative RMS pooled over a set of files,
per component (sum of squared differences over sum of squared reference values),
jpeg-coeffs against the spatial path (libjpeg's 8-bit decode, same geometry).
"""
import io
import subprocess
import sys
import threading
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torchvision.transforms.functional as TF
from PIL import Image

import jpegfreq
from jpegfreq import ChannelSet, Geometry, SpatialFallbackWarning, eval_geometry, sample_train
from jpegfreq.stats import Stats
from jpeg_factory import cjpeg, make_jpeg, photo
from reference import pooled_rel_rms
from threads import run_in_threads

# Photo-like files big enough that chroma carries energy: (width, height) per seed.
SIZES = [(400, 304), (336, 448), (496, 368), (448, 320)]
EQUIVALENCE_CASES = ["baseline-444", "baseline-422", "baseline-420", "sample-411", "sample-440",
                     "sample-all-2x1", "sample-2x2-1x2-2x1", "gray", "progressive-420",
                     "arithmetic-420", "restart-420"]
BOUND = (0.01, 0.02, 0.02)  # kept Y < 1%, kept chroma < 2% (pooled relative RMS)
PRESETS = ["6S", "24S", "32S", "48S", "64S", "192", "24T", "48T", "64T"]


def _files(case, n=4):
    return [make_jpeg(case, w, h, seed=s) for s, (w, h) in enumerate(SIZES[:n])]


# -- equivalence with the spatial path --------------------------------------------

@pytest.mark.parametrize("kind", ["eval", "train"])
@pytest.mark.parametrize("case", EQUIVALENCE_CASES)
def test_jpeg_coeffs_agrees_with_spatial(case, kind):
    cs = ChannelSet.parse("24S")
    rng = np.random.default_rng(3)
    pairs = []
    for data in _files(case):
        h = jpegfreq.read_header(data)
        geoms = [eval_geometry(448)] if kind == "eval" else [
            sample_train(h.width, h.height, 448, rng) for _ in range(3)]
        for g in geoms:
            a = jpegfreq.cube(data, cs, geometry=g)
            s = jpegfreq.cube(data, cs, geometry=g, source="spatial")
            assert a.shape == s.shape == (24, 56, 56)
            pairs.append((a, s))
    rel = pooled_rel_rms(pairs, cs)
    if case == "gray":
        assert rel[0] < BOUND[0]
        assert all(np.all(a[16:] == 0) and np.all(s[16:] == 0) for a, s in pairs)
    else:
        assert np.all(rel < BOUND), f"{case} {kind}: pooled relative RMS Y/Cb/Cr {rel}"


def test_equivalence_holds_for_the_full_spectrum_at_mobilenet_size():
    """192 channels at 896 (112 x 112): the high frequencies agree too, relative to their energy."""
    cs = ChannelSet.parse("192")
    pairs = [(jpegfreq.cube(d, cs, size=896), jpegfreq.cube(d, cs, size=896, source="spatial"))
             for d in _files("baseline-420", 2)]
    assert pairs[0][0].shape == (192, 112, 112)
    rel = pooled_rel_rms(pairs, cs)
    assert np.all(rel < BOUND), rel


# -- grayscale and the colour models that need pixels ---------------------------------

@pytest.mark.parametrize("source", ["jpeg-coeffs", "spatial"])
def test_grayscale_has_neutral_chroma(source):
    data = make_jpeg("gray", 320, 240)
    cs = ChannelSet.parse("24S")
    out = jpegfreq.cube(data, cs, source=source)
    assert np.all(out[16:] == 0.0)
    assert np.any(out[:16] != 0.0)
    rng = np.random.default_rng(0)
    mean, std = rng.normal(0, 50, 24), rng.uniform(1, 30, 24)
    stats = Stats(cs, mean, std, source="jpeg-coeffs", size=(448, 448))
    norm = jpegfreq.cube(data, cs, source=source, stats=stats)
    want = (-mean[16:] / std[16:]).astype(np.float32)
    assert np.allclose(norm[16:], want[:, None, None], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["cmyk", "ycck", "rgb-adobe"])
def test_non_ycbcr_jpegs_take_the_spatial_path_once_noticed(case, fresh_fallback_notice):
    data = make_jpeg(case, 320, 240, seed=2)
    with pytest.warns(SpatialFallbackWarning, match="spatial path") as rec:
        out = jpegfreq.cube(data, "24S", size=224)
    assert len(rec) == 1 and str(rec[0].message).startswith(f"<bytes: {len(data)}>:")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # shown once per process: the second call is silent
        again = jpegfreq.cube(data, "24S", size=224)
    assert out.shape == (24, 28, 28) and out.dtype == np.float32 and np.all(np.isfinite(out))
    assert np.array_equal(out, again)
    assert np.array_equal(out, jpegfreq.cube(data, "24S", size=224, source="spatial"))


def test_fallback_colours_are_sensible():
    """RGB-coded JPEG ~ the same photo coded as YCbCr; CMYK ~ YCCK of the same CMYK photo."""
    cs = ChannelSet.parse("24S")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpatialFallbackWarning)
        cube = {c: jpegfreq.cube(make_jpeg(c, 320, 240, seed=2), cs, size=224)
                for c in ("rgb-adobe", "baseline-444", "cmyk", "ycck")}
    assert np.all(pooled_rel_rms([(cube["rgb-adobe"], cube["baseline-444"])], cs) < 0.05)
    assert np.all(pooled_rel_rms([(cube["cmyk"], cube["ycck"])], cs) < 0.05)


def test_fallback_notice_is_shown_once_per_process():
    code = ("import warnings, sys; sys.path.insert(0, 'tests'); import jpegfreq; "
            "from jpeg_factory import make_jpeg; warnings.simplefilter('always'); "
            "d = make_jpeg('cmyk'); e = make_jpeg('ycck')\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    [jpegfreq.cube(x, size=64) for x in (d, d, d, e, e)]\n"
            "print(sorted(str(x.message).split('>: ')[1].split(' ')[0] for x in w "
            "if x.category is jpegfreq.SpatialFallbackWarning))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=_project_root())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['CMYK', 'YCCK']"  # once per kind, not once per file


def _project_root():
    import os
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_png_input():
    buf = io.BytesIO()
    photo(200, 150).save(buf, "PNG")
    png = buf.getvalue()
    out = jpegfreq.cube(png, "24S", size=64, source="spatial")
    assert out.shape == (24, 8, 8) and np.all(np.isfinite(out))
    rgb = jpegfreq.cube(png, source="rgb", size=64)
    assert rgb.shape == (3, 64, 64)
    with pytest.raises(jpegfreq.JpegError, match="not a JPEG file: this is PNG data") as info:
        jpegfreq.cube(png, "24S", size=64)
    assert info.value.source == f"<bytes: {len(png)}>"
    with pytest.raises(jpegfreq.JpegError, match="cannot decode"):
        jpegfreq.cube(b"\x89PNG\r\n\x1a\n garbage", source="spatial", size=64)


# -- dtype, stats, shapes -----------------------------------------------------------

@pytest.mark.parametrize("source", ["jpeg-coeffs", "spatial", "rgb"])
def test_float16_is_float32_rounded(source):
    data = make_jpeg("baseline-420", 320, 240)
    size = 224 if source == "rgb" else 448
    f32 = jpegfreq.cube(data, "24S", size=size, source=source)
    f16 = jpegfreq.cube(data, "24S", size=size, source=source, dtype="float16")
    assert f16.dtype == np.float16 and f16.shape == f32.shape
    assert np.array_equal(f16, f32.astype(np.float16))
    assert f16.nbytes == f32.nbytes // 2
    i8 = jpegfreq.cube(data, "24S", size=size, source=source, dtype="int8")
    assert i8.dtype == np.int8 and np.array_equal(i8, np.rint(np.clip(f32, -127, 127)))
    out = np.empty_like(f16)
    assert jpegfreq.cube(data, "24S", size=size, source=source, dtype="float16",
                         out=out) is out and np.array_equal(out, f16)
    with pytest.raises(ValueError, match="float32, float16 or int8"):
        jpegfreq.cube(data, "24S", size=size, source=source, dtype="float64")


def test_the_operators_float16_and_int8_are_numpys_casts():
    """The C conversions at the end of cube() (float16: ties to even, overflow to
    infinity, subnormals, NaN; int8: clipped to +-127, ties to even, NaN 0), on values
    set through the operator's offsets (scale 0): every finite half, the midpoints
    between neighbours (ties) and their float32 neighbours, random values, the edges."""
    from jpegfreq import _jpegfreq
    data = make_jpeg("baseline-420", 64, 64)
    n = 187       # not a multiple of 8 or 16: the vector loops' scalar tails run too
    comp = np.array([i % 3 for i in range(n)], np.int32)
    k = np.array([i // 3 for i in range(n)], np.int32)
    h = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)
    mids = (h[:-1] + h[1:]) / 2
    up, down = np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, -np.float32(np.inf))
    edges = [65504, 65519.99, 65520, 1e9, np.inf, -np.inf, np.nan, 1e-8, 2 ** -25, 127.5,
             126.5, -127.5, 0.5, 1.5, -0.5, -2.5]
    vals = np.concatenate([h, -h, mids, -mids, up, down,
                           np.random.default_rng(0).normal(0, 50, 20000), edges])
    vals = np.resize(vals.astype(np.float32), -(-len(vals) // n) * n).reshape(-1, n)
    zero = np.zeros(n, np.float32)
    for v in vals:
        f32 = np.empty((n, 1, 1), np.float32)
        f16, i8 = np.empty((n, 1, 1), np.float16), np.empty((n, 1, 1), np.int8)
        for out in (f32, f16, i8):
            _jpegfreq.cube(data, comp, k, 8, 8, zero, v, resize=8, out=out)
        f32 = f32.ravel()     # v itself, but for the sign of a zero (0 * x + v)
        assert np.array_equal(np.abs(f32), np.abs(v), equal_nan=True)
        with np.errstate(invalid="ignore", over="ignore"):
            want = f32.astype(np.float16)
        got = f16.ravel()
        same = (got.view(np.uint16) == want.view(np.uint16)) | (np.isnan(got) & np.isnan(want))
        assert same.all(), f32[~same][:4]
        assert np.array_equal(i8.ravel(), np.rint(np.clip(np.nan_to_num(f32), -127, 127)))
    with pytest.raises(ValueError, match="float32, float16 or int8"):
        _jpegfreq.cube(data, comp, k, 8, 8, zero, zero, resize=8,
                       out=np.empty((n, 1, 1), np.int16))


def _stats_192(size=(448, 448), seed=0):
    rng = np.random.default_rng(seed)
    return Stats(ChannelSet.parse("192"), rng.normal(0, 40, 192), rng.uniform(0.5, 80, 192),
                 source="jpeg-coeffs", size=size)


@pytest.mark.parametrize("source", ["jpeg-coeffs", "spatial"])
@pytest.mark.parametrize("channels", ["24S", "6S", "Y:0,5,63;Cr:3"])
def test_stats_are_folded_in(channels, source, rel_rms):
    data = make_jpeg("baseline-422", 320, 240)
    stats = _stats_192()
    cs = ChannelSet.parse(channels)
    raw = jpegfreq.cube(data, cs, source=source)
    idx = np.asarray(cs.indices)
    want = (raw - stats.mean[idx, None, None]) / stats.std[idx, None, None]
    got = jpegfreq.cube(data, cs, source=source, stats=stats)
    assert got.dtype == np.float32
    assert rel_rms(got, want) < 1e-5
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_rgb_stats_are_folded_in():
    data = make_jpeg("baseline-420", 320, 240)
    stats = Stats(None, np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]),
                  source="rgb", size=(224, 224))
    raw = jpegfreq.cube(data, source="rgb", size=224)
    got = jpegfreq.cube(data, source="rgb", size=224, stats=stats)
    want = (raw - stats.mean[:, None, None]) / stats.std[:, None, None]
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_stats_mismatches_are_errors():
    data = make_jpeg("baseline-420")
    with pytest.raises(ValueError, match="224x224 inputs, not 448x448"):
        jpegfreq.cube(data, "24S", stats=_stats_192(size=(224, 224)))
    with pytest.raises(ValueError, match="224x224 inputs, not 448x448"):
        jpegfreq.cube(data, "24S", source="spatial", stats=_stats_192(size=(224, 224)))
    six = Stats(ChannelSet.parse("6S"), np.zeros(6), np.ones(6), size=(448, 448))
    with pytest.raises(ValueError, match="lack channels Y2, Y3"):
        jpegfreq.cube(data, "24S", stats=six)
    rgb = Stats(None, np.zeros(3), np.ones(3), source="rgb", size=(448, 448))
    with pytest.raises(ValueError, match="cannot normalize"):
        jpegfreq.cube(data, "24S", stats=rgb)
    with pytest.raises(ValueError, match="cannot normalize"):
        jpegfreq.cube(data, source="rgb", size=448, stats=_stats_192())


@pytest.mark.parametrize("source", ["jpeg-coeffs", "spatial"])
@pytest.mark.parametrize("preset", PRESETS)
def test_presets_give_contiguous_float32_cubes(preset, source):
    data = make_jpeg("baseline-420", 320, 240)
    cs = ChannelSet.parse(preset)
    out = jpegfreq.cube(data, preset, source=source)
    assert out.shape == (cs.count, 56, 56)
    assert out.dtype == np.float32 and out.flags.c_contiguous and np.all(np.isfinite(out))
    assert np.array_equal(jpegfreq.cube(data, cs, source=source), out)  # spec or ChannelSet alike


def test_output_shapes_for_sizes_and_non_square_geometry():
    data = make_jpeg("baseline-420", 320, 240)
    assert jpegfreq.cube(data, "6S", size=896).shape == (6, 112, 112)
    assert jpegfreq.cube(data, "6S", size=224).shape == (6, 28, 28)
    g = Geometry(out_h=64, out_w=96, box=(0, 0, 320, 240))
    for source in ("jpeg-coeffs", "spatial"):
        out = jpegfreq.cube(data, "24S", geometry=g, source=source)
        assert out.shape == (24, 8, 12) and out.flags.c_contiguous
    assert jpegfreq.cube(data, source="rgb", geometry=g).shape == (3, 64, 96)
    with pytest.raises(ValueError, match="source must be one of"):
        jpegfreq.cube(data, source="pixels")


def test_sources_agree_for_path_bytes_and_memoryview(tmp_path):
    data = make_jpeg("progressive-420", 320, 240)
    path = tmp_path / "a \"quoted\" name's.jpg"
    path.write_bytes(data)
    for source in ("jpeg-coeffs", "spatial", "rgb"):
        ref = jpegfreq.cube(data, size=224, source=source)
        for src in (path, str(path), bytearray(data), memoryview(data)):
            assert np.array_equal(jpegfreq.cube(src, size=224, source=source), ref)


# -- early stop: every scan is entropy-decoded down to the rows the cube reads --------

def _early_stop_cube(data, cs, g, orientation=0, early_stop=True):
    from jpegfreq import _jpegfreq
    return _jpegfreq.cube(data, cs.component_of, cs.k, g.out_h, g.out_w, None, None, g.box,
                          g.resize, g.flip, orientation, 0, False, False, early_stop=early_stop)


def _non_interleaved_jpeg(width, height, seed=0):
    """A sequential file with one scan per component (cjpeg -scans)."""
    import tempfile
    buf = io.BytesIO()
    photo(width, height, seed=seed).save(buf, "PPM")
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("0;\n1;\n2;\n")
        f.flush()
        return cjpeg(buf.getvalue(), "-sample", "2x2,1x1,1x1", "-scans", f.name)


EARLY_STOP_CASES = EQUIVALENCE_CASES + ["odd-size", "progressive-444", "gray-progressive",
                                        "arithmetic-progressive", "non-interleaved"]


@pytest.mark.parametrize("case", EARLY_STOP_CASES)
def test_early_stop_gives_the_cube_of_the_whole_file(case):
    """Rows below the last one with a non-zero weight are never needed: stopping every scan
    there is exact, for eval, train boxes, flips and every orientation (which changes the
    stored rows read)."""
    cs = ChannelSet.parse("24S")
    rng = np.random.default_rng(5)
    files = ([_non_interleaved_jpeg(w, h, s) for s, (w, h) in enumerate(SIZES[:2])]
             if case == "non-interleaved" else _files(case, 2))
    for data in files:
        h = jpegfreq.read_header(data)
        geoms = [eval_geometry(448), eval_geometry(224), Geometry(448, 448, (0, 0, 40, 30))]
        geoms += [sample_train(h.width, h.height, 448, rng) for _ in range(4)]
        for g in geoms:
            for o in (1, 3, 6, 8):
                part, _ = _early_stop_cube(data, cs, g, o)
                whole, _ = _early_stop_cube(data, cs, g, o, early_stop=False)
                assert np.array_equal(part, whole), (case, g, o)


def test_early_stop_ignores_damage_below_the_crop():
    """A portrait 4:2:0 file cut in its last rows: the eval cube never reads them, so it is the
    intact file's cube and has no warning; read_coefficients (every row) does warn."""
    data = make_jpeg("baseline-420", 320, 480)
    cut = data[:int(len(data) * 0.95)]
    assert any("Premature end" in w for w in jpegfreq.read_coefficients(cut).warnings)
    warns = []
    got = jpegfreq.cube(cut, "24S", size=224, strict=True, warnings_out=warns)
    assert warns == [] and np.array_equal(got, jpegfreq.cube(data, "24S", size=224))
    # without the early stop the same call sees the damage
    _, warns = _early_stop_cube(cut, ChannelSet.parse("24S"), eval_geometry(224), early_stop=False)
    assert any("Premature end" in w for w in warns)
    # a crop that reaches the bottom reads (and reports) the damaged rows
    warns = []
    jpegfreq.cube(cut, "24S", geometry=Geometry(224, 224, (0, 240, 320, 480)), warnings_out=warns)
    assert any("Premature end" in w for w in warns)


@pytest.mark.parametrize("case", ["progressive-420", "progressive-444"])
def test_early_stop_skips_the_bottom_of_every_progressive_scan(case):
    """Garbage over the end of one scan's data at a time: the early-stopped cube always equals
    the whole-file read of the same bytes (the rows it reads are the same), and where the
    garbage lies below the crop only the whole-file read reports it."""
    from jpeg_factory import markers
    cs, g = ChannelSet.parse("24S"), eval_geometry(224)
    data = make_jpeg(case, 320, 480)
    ms = markers(data)
    ends = {o: next(o2 for o2, _, _ in ms if o2 > o) for o, m, _ in ms if m == 0xFFDA}
    quiet = 0
    for k, (o, m, length) in enumerate(x for x in ms if x[1] == 0xFFDA):
        start, end = o + 2 + length, ends[o]
        n = max(4, (end - start) // 20)
        bad = bytearray(data)
        bad[end - n:end] = np.random.default_rng(k).integers(0, 0xFE, n, dtype=np.uint8).tobytes()
        part, w_part = _early_stop_cube(bytes(bad), cs, g)
        whole, w_whole = _early_stop_cube(bytes(bad), cs, g, early_stop=False)
        assert np.array_equal(part, whole), k
        assert len(w_part) <= len(w_whole), k
        quiet += bool(w_whole) and not w_part
    assert quiet >= 3  # the skipped ends of several scans held the damage


def test_early_stop_reports_a_truncated_progressive_file():
    """Cut in the middle, later scans are missing for the rows the cube reads: warned."""
    data = make_jpeg("progressive-420", 320, 480)
    warns = []
    jpegfreq.cube(data[:len(data) // 2], "24S", size=224, warnings_out=warns)
    assert any("Premature end" in w for w in warns)


# -- band cutoff on progressive files -------------------------------------------------

SPECTRAL_SCANS = """0,1,2: 0-0, 0, 0;
0: 1-24, 0, 0;
1: 1-63, 0, 0;
2: 1-63, 0, 0;
0: 25-63, 0, 0;
"""


def _spectral_selection_jpeg(tmp_path, seed, size):
    """A progressive 4:2:0 file whose last scan holds only luma zigzag 25..63 (beyond 24S's 4x4)."""
    scans = tmp_path / "scans.txt"
    scans.write_text(SPECTRAL_SCANS)
    buf = io.BytesIO()
    photo(*size, seed=seed).save(buf, "PPM")
    return cjpeg(buf.getvalue(), "-quality", 85, "-sample", "2x2,1x1,1x1", "-scans", str(scans))


@pytest.mark.parametrize("case", ["baseline-420", "arithmetic-420", "restart-420", "progressive-420",
                                  "progressive-444", "gray-progressive", "arithmetic-progressive"])
def test_band_cutoff_is_exact_when_no_scan_can_be_skipped(case):
    """Sequential files are read whole; Pillow's/cjpeg's default progressive script ends with a
    luma refinement scan over 1..63, so no scan can be cut for any channel set."""
    data = make_jpeg(case, 320, 240)
    for cs in ("24S", "6S", "192"):
        assert np.array_equal(jpegfreq.cube(data, cs, band_cutoff=True), jpegfreq.cube(data, cs))


def test_band_cutoff_error_on_a_spectral_selection_file(tmp_path):
    """The cut skips luma 25..63, which the resize mixes into the kept band: measure that error."""
    cs = ChannelSet.parse("24S")
    pairs = []
    for seed, size in enumerate(SIZES):
        data = _spectral_selection_jpeg(tmp_path, seed, size)
        assert jpegfreq.read_header(data).progressive
        g = eval_geometry(448)
        full = jpegfreq.cube(data, cs, geometry=g)
        warns = []
        cut = jpegfreq.cube(data, cs, geometry=g, band_cutoff=True, strict=True, warnings_out=warns)
        assert warns == []  # the early stop is deliberate, not a premature end
        pairs.append((cut, full))
        # Everything is needed for 192 channels: nothing is cut.
        assert np.array_equal(jpegfreq.cube(data, "192", geometry=g, band_cutoff=True),
                              jpegfreq.cube(data, "192", geometry=g))
    rel = pooled_rel_rms(pairs, cs)
    # Measured: Y about 6.4% pooled (2.5-9% per file); chroma scans are all read, so 0.
    assert 0.005 < rel[0] < 0.15, rel
    assert rel[1] == 0 and rel[2] == 0


# -- the RGB baseline input ------------------------------------------------------------

RGB_CASES = [("baseline-420", (400, 304)), ("baseline-444", (333, 500)), ("gray", (448, 320)),
             ("progressive-420", (500, 375))]  # odd margin: half-to-even crop (regression)


@pytest.mark.parametrize("case, size", RGB_CASES,
                         ids=lambda v: f"{v[0]}x{v[1]}" if isinstance(v, tuple) else v)
def test_rgb_matches_pillow_resize_and_center_crop(case, size):
    data = make_jpeg(case, *size, seed=1)
    out = jpegfreq.cube(data, source="rgb", size=224)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32 and out.flags.c_contiguous
    assert out.min() >= 0.0 and out.max() <= 1.0
    im = Image.open(io.BytesIO(data)).convert("RGB")
    ref = np.asarray(TF.center_crop(TF.resize(im, 256), 224), np.float32).transpose(2, 0, 1) / 255
    diff = np.abs(out - ref) * 255
    assert diff.mean() < 1.0 and diff.max() < 3.0, (diff.mean(), diff.max())


def test_rgb_flip_mirrors_the_output():
    data = make_jpeg("baseline-420", 400, 304)
    g = sample_train(400, 304, 224, rng=4)
    a = jpegfreq.cube(data, source="rgb", geometry=replace(g, flip=False))
    b = jpegfreq.cube(data, source="rgb", geometry=replace(g, flip=True))
    assert np.array_equal(a[:, :, ::-1], b)


# -- threads ----------------------------------------------------------------------

def test_threads_give_the_serial_cubes():
    blobs = [make_jpeg(c, 320, 240, seed=1)
             for c in ("baseline-420", "progressive-444", "sample-411", "gray")]
    jobs = [(b, src, g) for b in blobs for src in ("jpeg-coeffs", "spatial")
            for g in (eval_geometry(448), sample_train(320, 240, 448, rng=1))]
    serial = [jpegfreq.cube(b, "24S", source=src, geometry=g) for b, src, g in jobs]
    results = {}
    barrier = threading.Barrier(4)

    def work(t):
        barrier.wait()
        k = t * len(jobs) // 4  # each thread starts at a different file
        results[t] = [jpegfreq.cube(b, "24S", source=src, geometry=g)
                      for b, src, g in jobs[k:] + jobs[:k]]

    run_in_threads(work, 4)
    for t in range(4):
        k = t * len(jobs) // 4
        want = serial[k:] + serial[:k]
        assert len(results[t]) == len(want)
        assert all(np.array_equal(a, b) for a, b in zip(results[t], want))


# -- out=: writing into a caller's array (a row of a batch) -----------------------

@pytest.mark.parametrize("source,dtype", [("jpeg-coeffs", "float32"), ("jpeg-coeffs", "float16"),
                                          ("spatial", "float32"), ("rgb", "float32")])
def test_out_receives_the_cube(source, dtype):
    data = make_jpeg("baseline-420", 320, 240)
    size = 224 if source == "rgb" else 448
    want = jpegfreq.cube(data, "24S", size, source=source, dtype=dtype)
    out = np.full(want.shape, np.nan, want.dtype)
    got = jpegfreq.cube(data, "24S", size, source=source, dtype=dtype, out=out)
    assert got is out and np.array_equal(out, want)


def test_out_rows_of_a_batch_and_strided_views():
    data = [make_jpeg("baseline-444", 320, 240), make_jpeg("progressive-420", 240, 320)]
    batch = np.full((2, 24, 56, 56), np.nan, np.float32)
    for i, d in enumerate(data):
        jpegfreq.cube(d, out=batch[i])
        assert np.array_equal(batch[i], jpegfreq.cube(d))
    # a non-contiguous view is filled through a copy
    wide = np.zeros((24, 56, 112), np.float32)
    view = wide[:, :, ::2]
    jpegfreq.cube(data[0], out=view)
    assert np.array_equal(view, batch[0]) and np.all(wide[:, :, 1::2] == 0)


@pytest.mark.parametrize("case", ["cmyk", "ycck", "rgb-adobe"])
def test_the_c_entry_point_reports_the_header_route(case, fresh_fallback_notice):
    """The C cube refuses the file as ERR_NEEDS_SPATIAL with read_header's own reason,
    and jpegfreq.cube then takes the spatial path."""
    from jpegfreq import _jpegfreq
    data = make_jpeg(case, 160, 128)
    reason = jpegfreq.read_header(data).spatial_reason
    assert reason
    cs = ChannelSet.parse("24S")
    with pytest.raises(_jpegfreq.Error) as info:
        _jpegfreq.cube(data, cs.component_of, cs.k, 64, 64, resize=73)
    assert info.value.args == (_jpegfreq.ERR_NEEDS_SPATIAL, reason)
    with pytest.warns(SpatialFallbackWarning, match=reason):
        got = jpegfreq.cube(data, cs, size=64)
    assert np.array_equal(got, jpegfreq.cube(data, cs, size=64, source="spatial"))


def test_the_c_entry_point_checks_the_request():
    """Request values are checked in C (jf_cube_check) and raise ValueError."""
    from jpegfreq import _jpegfreq
    data = make_jpeg("baseline-420")
    comp, k = np.zeros(65, np.int32), np.arange(65, dtype=np.int32) % 64
    with pytest.raises(ValueError, match="more than 64 channels of component 0"):
        _jpegfreq.cube(data, comp, k, 64, 64, resize=73)
    one = np.zeros(1, np.int32)
    for kw, match in [({"orientation": 9}, "orientation must be"),
                      ({"box": (5.0, 0.0, 5.0, 10.0)}, "box must be finite"),
                      ({"box": (0.0, 0.0, float("nan"), 10.0)}, "box must be finite"),
                      ({"resize": 0}, "give a box or a resize")]:
        kw.setdefault("resize", 73)
        with pytest.raises(ValueError, match=match):
            _jpegfreq.cube(data, one, one, 64, 64, **kw)
    with pytest.raises(ValueError, match="multiples of 8"):
        _jpegfreq.cube(data, one, one, 60, 64, resize=73)
    with pytest.raises(ValueError, match="1 to 192 channels"):
        _jpegfreq.cube(data, np.zeros(0, np.int32), np.zeros(0, np.int32), 64, 64, resize=73)
    with pytest.raises(ValueError, match="channel 0: component 3"):
        _jpegfreq.cube(data, one + 3, one, 64, 64, resize=73)


def test_out_for_a_file_that_takes_the_spatial_path(fresh_fallback_notice):
    data = make_jpeg("cmyk", 160, 128)
    out = np.zeros((24, 56, 56), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpatialFallbackWarning)
        want = jpegfreq.cube(data)
        assert jpegfreq.cube(data, out=out) is out
    assert np.array_equal(out, want)


def test_out_is_checked():
    data = make_jpeg("baseline-420")
    with pytest.raises(ValueError, match=r"out must be float32 \(24, 56, 56\)"):
        jpegfreq.cube(data, out=np.zeros((24, 56, 55), np.float32))
    with pytest.raises(ValueError, match="out must be float32"):
        jpegfreq.cube(data, out=np.zeros((24, 56, 56), np.float64))
    ro = np.zeros((24, 56, 56), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        jpegfreq.cube(data, out=ro)
    with pytest.raises(TypeError):
        jpegfreq.cube(data, out=[0.0])
    from jpegfreq import _jpegfreq
    cs = ChannelSet.parse("24S")
    with pytest.raises(ValueError, match="float32, float16 or int8 buffer of 24 x 56 x 56"):
        _jpegfreq.cube(data, cs.component_of, cs.k, 448, 448, resize=512,
                       out=bytearray(24 * 56 * 56 * 4 - 4))


def test_rgb_defaults_to_the_224_baseline():
    """source="rgb" without a size is the RGB baseline's eval input: resize 256, crop 224."""
    from jpegfreq.serving import Decoder
    data = make_jpeg("baseline-420", 320, 240)
    got = jpegfreq.cube(data, source="rgb")
    assert got.shape == (3, 224, 224)
    assert np.array_equal(got, jpegfreq.cube(data, source="rgb", size=224))
    assert jpegfreq.cube(data).shape == (24, 56, 56)
    assert Decoder(source="rgb").shape == (3, 224, 224) and Decoder().shape == (24, 56, 56)
