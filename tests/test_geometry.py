"""Geometry and the coefficient-domain operator (issue 3): weights, exactness, flips, crops, EXIF.

The operator is tested exactly (docs/design.md: 1e-5 relative) against a float reference
built here in numpy: float IDCT of the dequantized coefficients, float chroma
upsampling and resize through the dense per-axis matrices, float block DCT.
The matrices themselves are checked against PIL's and torchvision's bilinear
resize and against libjpeg's fancy-upsampling triangle.
"""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps

import jpegfreq
from jpegfreq import ChannelSet, Geometry, eval_geometry, sample_train
from jpegfreq.geometry import (axis_matrix, block_dct, block_idct, dct_matrix, default_resize,
                               displayed_size, orient_plane, resample_plane)
from jpeg_factory import jpegtran, make_jpeg
from reference import float_reference

EXACT = 1e-5  # docs/design.md: the operator against a float reference, relative


# -- the 1-D filters -------------------------------------------------------------

def _plane(h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (h, w)).astype(np.float32)


RESIZES = {  # id: (box or None for the whole image, out_h, out_w) on a 97 x 131 plane
    "down-3x": (None, 32, 44),
    "down-anisotropic": (None, 40, 100),
    "up-2.3x": (None, 224, 304),
    "identity": (None, 97, 131),
    "crop-down": ((10, 5, 100, 90), 48, 64),
    "crop-up": ((3, 4, 50, 40), 120, 160),
    "fractional-box": ((10.5, 5.25, 100.7, 90.1), 32, 32),
    "thin-box": ((60, 0, 64, 97), 16, 8),
}


@pytest.mark.parametrize("name", list(RESIZES))
def test_resize_weights_equal_pil_bilinear(name):
    x = _plane(97, 131)
    box, oh, ow = RESIZES[name]
    box = box or (0, 0, 131, 97)
    ref = np.asarray(Image.fromarray(x, "F").resize((ow, oh), Image.BILINEAR, box=box), np.float64)
    got = resample_plane(x, 97, 131, 1, 1, box, oh, ow)
    assert got.shape == (oh, ow) and got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    # The dense matrices (the reference the operator tests use) hold the same weights.
    m_h = axis_matrix(97, 97, 1, box[1], box[3], oh)
    m_w = axis_matrix(131, 131, 1, box[0], box[2], ow)
    assert np.allclose(m_h.sum(1), 1) and np.allclose(m_w.sum(1), 1)
    assert np.abs(m_h @ x @ m_w.T - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("oh, ow", [(32, 44), (48, 48), (90, 64)], ids=["3x", "2x-2.7x", "1.08x-2x"])
def test_downscale_equals_torchvision_antialiased(oh, ow):
    x = _plane(97, 131, seed=1)
    ref = TF.resize(torch.from_numpy(x)[None], [oh, ow], interpolation=TF.InterpolationMode.BILINEAR,
                    antialias=True)[0].numpy()
    got = resample_plane(x, 97, 131, 1, 1, (0, 0, 131, 97), oh, ow)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def _fancy(comp, factor, image):
    """libjpeg's fancy upsampling generalised: output j samples input (j + 0.5)/f - 0.5, clamped."""
    m = np.zeros((image, comp))
    for j in range(image):
        pos = min(max((j + 0.5) / factor - 0.5, 0.0), comp - 1.0)
        i0 = int(math.floor(pos))
        t = pos - i0
        m[j, i0] += 1 - t
        if t > 0:
            m[j, i0 + 1] += t
    return m


def test_fancy_upsampling_factor_2_is_three_quarters_one_quarter():
    m = axis_matrix(16, 8, 2, 0, 16, 16)
    for i in range(8):
        # output 2i leans on its left neighbour, 2i+1 on its right one; edges clamp to the sample.
        left, right = np.zeros(8), np.zeros(8)
        left[i] += 0.75
        left[max(i - 1, 0)] += 0.25
        right[i] += 0.75
        right[min(i + 1, 7)] += 0.25
        assert np.allclose(m[2 * i], left) and np.allclose(m[2 * i + 1], right)
    assert m[0, 0] == 1.0 and m[15, 7] == 1.0


@pytest.mark.parametrize("image, comp, factor", [(16, 8, 2), (9, 5, 2), (12, 3, 4), (17, 5, 4), (7, 7, 1)],
                         ids=["2x-even", "2x-odd-width", "4x", "4x-odd-width", "1x"])
def test_fancy_upsampling_weights(image, comp, factor):
    assert np.allclose(axis_matrix(image, comp, factor, 0, image, image), _fancy(comp, factor, image))


def test_flip_reverses_the_output_axis():
    for args in ((8, 8, 1, 0, 8, 8), (50, 25, 2, 3.5, 41, 24)):
        assert np.array_equal(axis_matrix(*args, flip=True), axis_matrix(*args)[::-1])


def test_resample_plane_combines_upsampling_and_resize():
    x = _plane(13, 9, seed=2)
    box = (2.5, 1, 17, 25)
    got = resample_plane(x, 26, 18, 2, 2, box, 24, 16, True)
    m_h = axis_matrix(26, 13, 2, box[1], box[3], 24)
    m_w = axis_matrix(18, 9, 2, box[0], box[2], 16, flip=True)
    assert np.abs(got - m_h @ x @ m_w.T).max() < 1e-3


# -- DCT conventions -----------------------------------------------------------------

def test_dct_matrix_is_jpegs_orthonormal_dct():
    c = dct_matrix()
    assert np.allclose(c @ c.T, np.eye(8))
    u, x = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    alpha = np.where(u == 0, np.sqrt(1 / 8), np.sqrt(2 / 8))
    assert np.allclose(c, alpha * np.cos((2 * x + 1) * u * np.pi / 16))


def test_block_dct_and_idct_are_inverse_and_follow_the_dc_convention():
    x = _plane(16, 24, seed=3) - 128
    coefs = block_dct(x, range(8), range(8))                 # (8, 8, 2, 3)
    nat = coefs.transpose(2, 3, 0, 1).reshape(2, 3, 64)      # k = 8u + v
    assert np.allclose(block_idct(nat), x, atol=1e-3)
    flat = np.full((8, 8), 200.0) - 128                       # DC = 8 * mean - 1024 on (x - 128)
    assert np.isclose(block_dct(flat, [0], [0])[0, 0, 0, 0], 8 * 200 - 1024, atol=1e-3)


# -- the operator against a float reference ------------------------------------------

OPERATOR_CASES = ["baseline-444", "baseline-422", "baseline-420", "sample-411", "sample-440",
                  "sample-all-2x1", "sample-2x2-1x2-2x1", "gray", "progressive-420", "odd-size"]
CHANNEL_SETS = ["24S", "64T", "192", "6S", "Y:0-3,8-11,63;Cb:0,1,9,54;Cr:0,7,56"]


def _geometries(width, height):
    rng = np.random.default_rng(7)
    train = [sample_train(width, height, 112, rng) for _ in range(3)]
    train[0] = replace(train[0], flip=True)
    train[1] = replace(train[1], flip=False)
    return {
        "eval-448": eval_geometry(448),
        "eval-112": eval_geometry(112),
        "train-flip": train[0],
        "train": train[1],
        "train-seeded": train[2],
        "64x96-box": Geometry(out_h=64, out_w=96, box=(10.5, 3.25, 110.0, 90.5)),
        "box-past-the-edges": Geometry(out_h=48, out_w=40, box=(-12.0, -7.5, width + 5.0, height + 9.0),
                                       flip=True),
    }


GEOMETRY_IDS = list(_geometries(160, 120))


@pytest.mark.parametrize("gname", GEOMETRY_IDS)
@pytest.mark.parametrize("case", OPERATOR_CASES)
def test_operator_is_exact_againstfloat_reference(case, gname):
    data = make_jpeg(case, *((None, None) if case == "odd-size" else (160, 120)))
    h = jpegfreq.read_header(data)
    g = _geometries(h.width, h.height)[gname]
    full = float_reference(data, g, ChannelSet.parse("192"))
    for spec in CHANNEL_SETS:
        cs = ChannelSet.parse(spec)
        got = jpegfreq.cube(data, cs, geometry=g)
        assert got.shape == (cs.count, g.out_h // 8, g.out_w // 8)
        ref = full[np.asarray(cs.indices)]
        # Relative RMS over the cube (float32 accumulation); max error relative to the peak too.
        err = np.sqrt(np.sum((got - ref) ** 2) / np.sum(ref ** 2))
        assert err < EXACT, f"{case} {gname} {spec}: relative RMS {err:.2e}"
        assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("case", ["baseline-444", "baseline-420", "gray"])
def test_flip_alone_is_exact(case, rel_rms):
    """Identity resize: flipping = reversing block columns and negating odd horizontal frequencies."""
    data = make_jpeg(case, 128, 96)
    g = Geometry(out_h=96, out_w=128, box=(0, 0, 128, 96))
    cs = ChannelSet.parse("192")
    plain = jpegfreq.cube(data, cs, geometry=g)
    flipped = jpegfreq.cube(data, cs, geometry=replace(g, flip=True))
    sign = np.where(np.asarray(cs.k) & 1, -1.0, 1.0)[:, None, None]
    assert rel_rms(flipped, plain[:, :, ::-1] * sign) < EXACT


@pytest.mark.parametrize("a, b, m, n", [(0, 0, 16, 12), (3, 2, 5, 7), (15, 11, 1, 1), (1, 4, 8, 8)],
                         ids=["whole", "inner", "last-block", "square"])
def test_block_aligned_crop_alone_is_exact(a, b, m, n, rel_rms):
    """box = whole blocks at scale 1 on a 4:4:4 file: the cube is the dequantized blocks."""
    data = make_jpeg("baseline-444", 128, 96)
    coefs = jpegfreq.read_coefficients(data)
    g = Geometry(out_h=8 * n, out_w=8 * m, box=(8 * a, 8 * b, 8 * (a + m), 8 * (b + n)))
    got = jpegfreq.cube(data, "192", geometry=g)
    ref = np.concatenate([coefs.dequantized(c)[b:b + n, a:a + m].transpose(2, 0, 1) for c in range(3)])
    assert got.shape == ref.shape
    assert rel_rms(got, ref) < EXACT
    # On a 4:2:0 file luma is still the stored blocks.
    data = make_jpeg("baseline-420", 128, 96)
    y = jpegfreq.read_coefficients(data).dequantized(0)[b:b + n, a:a + m].transpose(2, 0, 1)
    assert rel_rms(jpegfreq.cube(data, "Y:0-63;Cb:0;Cr:0", geometry=g)[:64], y) < EXACT


# -- EXIF orientation ------------------------------------------------------------------

JPEGTRAN = {2: ("-flip", "horizontal"), 3: ("-rotate", "180"), 4: ("-flip", "vertical"),
            5: ("-transpose",), 6: ("-rotate", "90"), 7: ("-transverse",), 8: ("-rotate", "270")}


def _exif_geometries(width, height):
    w, h = displayed_size(width, height, 6)  # any transposing orientation: a box valid both ways
    return {"eval": eval_geometry(112, exif=True),
            "box": Geometry(out_h=48, out_w=64, box=(5.0, 7.5, 150.0, 140.0), exif=True),
            "box-flip": Geometry(out_h=64, out_w=40, box=(20.0, 3.0, 170.0, 180.0), flip=True, exif=True),
            "train": sample_train(min(w, width), min(h, height), 96, rng=3, exif=True)}


@pytest.mark.parametrize("gname", ["eval", "box", "box-flip", "train"])
@pytest.mark.parametrize("n", range(1, 9))
def test_exif_orientation_equals_jpegtran_rotation(n, gname, rel_rms):
    """jpegtran's lossless rotation of an MCU-aligned file is the orientation, done on the blocks."""
    data = make_jpeg(f"exif-orientation-{n}", 256, 192)
    rotated = jpegtran(make_jpeg("exif-orientation-1", 256, 192), *JPEGTRAN[n]) if n > 1 else data
    assert jpegfreq.read_header(rotated).orientation == 1
    g = _exif_geometries(256, 192)[gname]
    got = jpegfreq.cube(data, "192", geometry=g)
    ref = jpegfreq.cube(rotated, "192", geometry=replace(g, exif=False))
    assert rel_rms(got, ref) < 1e-4


def test_exif_off_ignores_the_orientation():
    plain = jpegfreq.cube(make_jpeg("exif-orientation-1"), "24S", size=64)
    for n in (3, 6, 8):
        assert np.array_equal(jpegfreq.cube(make_jpeg(f"exif-orientation-{n}"), "24S", size=64), plain)


def test_exif_orientation_agrees_with_the_spatial_path(rel_rms):
    """Pooled over the 8 orientations and 4 geometries, per component (docs/design.md's equivalence rule)."""
    cs = ChannelSet.parse("24S")
    comp = np.asarray(cs.component_of)
    num, den = np.zeros(3), np.zeros(3)
    for n in range(1, 9):
        data = make_jpeg(f"exif-orientation-{n}", 256, 192, seed=n)
        for g in _exif_geometries(256, 192).values():
            a = jpegfreq.cube(data, cs, geometry=g)
            s = jpegfreq.cube(data, cs, geometry=g, source="spatial")
            assert a.shape == s.shape
            for c in range(3):
                num[c] += np.sum((a[comp == c] - s[comp == c]).astype(np.float64) ** 2)
                den[c] += np.sum(s[comp == c].astype(np.float64) ** 2)
    rel = np.sqrt(num / den)
    assert rel[0] < 0.01 and rel[1] < 0.02 and rel[2] < 0.02, f"Y/Cb/Cr relative RMS {rel}"


def test_orientation_helpers():
    x = np.arange(12).reshape(3, 4)
    expect = {1: x, 2: x[:, ::-1], 3: x[::-1, ::-1], 4: x[::-1], 5: x.T, 6: x.T[:, ::-1],
              7: x.T[::-1, ::-1], 8: x.T[::-1]}
    for n, want in expect.items():
        # PIL's exif_transpose is the reference for what each orientation displays.
        im = Image.fromarray(x.astype(np.uint8), "L")
        exif = im.getexif()
        exif[0x0112] = n
        im.info["exif"] = exif.tobytes()
        shown = np.asarray(ImageOps.exif_transpose(im))
        assert np.array_equal(shown, want), n
        assert np.array_equal(orient_plane(x, n), want), n
        assert displayed_size(4, 3, n) == (want.shape[1], want.shape[0])


# -- eval and train geometry ----------------------------------------------------------

def _torchvision_eval_box(width, height, resize, crop):
    """torchvision Resize(resize) + CenterCrop(crop), as a box in source pixels."""
    if width <= height:
        rw, rh = resize, int(resize * height / width)
    else:
        rw, rh = int(resize * width / height), resize
    top, left = int(round((rh - crop) / 2.0)), int(round((rw - crop) / 2.0))
    sx, sy = width / rw, height / rh
    return (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)


@pytest.mark.parametrize("w, h, size", [
    (500, 375, 448), (375, 500, 448), (400, 304, 896), (333, 500, 224), (1000, 100, 448),
    # regression: an odd margin rounds half to even, as torchvision's CenterCrop
    pytest.param(320, 240, 224, id="320-240-224-odd-margin"),
])
def test_eval_box_is_torchvisions_resize_and_center_crop(w, h, size):
    g = eval_geometry(size)
    assert g.resize == {448: 512, 896: 1024, 224: 256}[size] == default_resize(size)
    assert np.allclose(g.box_for(w, h), _torchvision_eval_box(w, h, g.resize, size))


def test_train_sampler_statistics():
    w, h = 500, 375
    rng = np.random.default_rng(11)
    geoms = [sample_train(w, h, 448, rng) for _ in range(2000)]
    areas, aspects, flips = [], [], []
    for g in geoms:
        x0, y0, x1, y1 = g.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert all(float(v).is_integer() for v in g.box)
        assert (g.out_h, g.out_w, g.resize, g.exif) == (448, 448, 512, False)
        areas.append((x1 - x0) * (y1 - y0) / (w * h))
        aspects.append((x1 - x0) / (y1 - y0))
        flips.append(g.flip)
    areas, aspects = np.array(areas), np.array(aspects)
    # Boxes are rounded to whole pixels: allow that much beyond the sampled ranges.
    assert areas.min() >= 0.08 * 0.97 and areas.max() <= 1.0
    assert aspects.min() >= 0.75 * 0.97 and aspects.max() <= 4 / 3 * 1.03
    assert abs(np.mean(flips) - 0.5) < 0.05
    # Scale is uniform on [0.08, 1] when the box fits: the median area is near 0.54 (less the misses).
    assert 0.35 < np.median(areas) < 0.6
    assert len({g.box for g in geoms}) > 1900


def test_train_sampler_is_deterministic_under_a_seed():
    a = [sample_train(640, 480, rng=np.random.default_rng(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    assert sample_train(640, 480, rng=5) == a[0]
    seq1 = [sample_train(640, 480, rng=r) for r in [np.random.default_rng(9)] * 20]
    seq2 = [sample_train(640, 480, rng=r) for r in [np.random.default_rng(9)] * 20]
    assert seq1 == seq2
    assert len({g.box for g in seq1}) > 15
    assert sample_train(640, 480, rng=6) != a[0]


def test_train_sampler_falls_back_to_a_clamped_central_crop():
    """A 1000 x 50 strip rarely fits a sampled box: the fallback clamps the aspect to 4/3."""
    fallbacks = 0
    for seed in range(200):
        g = sample_train(1000, 50, rng=seed, flip_p=0.0)
        assert not g.flip
        x0, y0, x1, y1 = g.box
        if (y1 - y0) == 50 and abs((x1 - x0) - round(50 * 4 / 3)) <= 1:
            fallbacks += 1
            assert abs((x0 + x1) / 2 - 500) <= 1
    assert fallbacks > 0


def test_geometry_validation():
    with pytest.raises(ValueError, match="multiples of 8"):
        Geometry(out_h=100, out_w=96)
    with pytest.raises(ValueError, match="multiples of 8"):
        Geometry(out_h=0, out_w=96)
    with pytest.raises(ValueError, match="multiples of 8"):
        eval_geometry(100)
    with pytest.raises(ValueError, match="empty"):
        Geometry(box=(10, 10, 10, 20))
    with pytest.raises(ValueError, match="empty"):
        Geometry(box=(10, 30, 20, 20))
    with pytest.raises(ValueError, match="resize"):
        Geometry(resize=0)


def test_geometry_round_trips_and_scales():
    g = Geometry(out_h=64, out_w=96, box=(1.5, 2, 30, 40), resize=77, flip=True, exif=True)
    assert Geometry.from_dict(g.to_dict()) == g
    assert Geometry.from_dict(eval_geometry(896).to_dict()) == eval_geometry(896)
    s = g.scaled(2)
    assert (s.out_h, s.out_w, s.resize, s.box, s.flip) == (128, 192, 154, g.box, True)
    with pytest.raises(Exception):
        g.out_h = 8  # frozen


_BAND_ORDER_CHILD = r"""
import sys
import numpy as np
import jpegfreq
data = open(sys.argv[1], "rb").read()
if sys.argv[2] == "chroma-first":  # chroma bands built on their own, then found in the cache
    jpegfreq.cube(data, "Cb:0,1,8,9;Cr:0,1,8,9")
# luma first within the call: the chroma bands are taken from luma's (same axes on 4:4:4)
np.save(sys.argv[3], jpegfreq.cube(data, "24S"))
"""


@pytest.mark.parametrize("case", ["baseline-444", "progressive-444"])
def test_bands_taken_from_a_wider_band_equal_built_ones(case, tmp_path):
    """On a 4:4:4 file the chroma axes equal luma's: the chroma bands (u, v in 0..1) are then
    copied out of luma's (0..3) instead of built.  Fresh processes (empty caches) in both
    orders give the same cube bit for bit."""
    import os
    import subprocess
    import sys
    from jpeg_factory import make_jpeg
    path = tmp_path / "in.jpg"
    path.write_bytes(make_jpeg(case, 320, 240))
    root = os.path.dirname(os.path.dirname(os.path.abspath(jpegfreq.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    outs = []
    for order in ("luma-first", "chroma-first"):
        out = tmp_path / f"{order}.npy"
        proc = subprocess.run([sys.executable, "-c", _BAND_ORDER_CHILD, str(path), order, str(out)],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr[-1500:]
        outs.append(np.load(out))
    assert np.array_equal(outs[0], outs[1])
    assert np.any(outs[0][16:] != 0)  # chroma carries something
