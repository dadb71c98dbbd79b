"""jpegfreq.augment and Geometry.orientation: the exact policy ops and random erasing.

Orientation (the policy's quarter turns and transposes) is checked three ways: the jpeg-coeffs
cube equals the coefficient-domain rotation of the unrotated cube (block grid turned, each
block's coefficients transposed and sign-flipped), it agrees with the spatial path within the
photometric tests' bounds, and the rgb output is numpy's rot90 / transpose of the unrotated one.
Erasing is checked on its sampling rule and through the loader, row by row.
"""
import collections
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import jpegfreq
from jpegfreq import ChannelSet, Geometry, JpegLoader, Photometric, sample_train
from jpegfreq import augment
from jpegfreq.augment import Augment, Erase, combine, sample_erase, sample_policy
from jpegfreq.geometry import compose_orientations, orient_box, orientation_ops
from jpegfreq.photometric import adjust_planes
from jpegfreq.stats import Stats
from jpeg_factory import jpegtran, make_jpeg
from reference import pooled_rel_rms

BOUND = (0.01, 0.02, 0.02)      # as tests/test_photometric.py: Y < 1%, chroma < 2%
ORIENTING = [2, 3, 4, 5, 6, 7, 8]


def _numpy_orient(x, o):
    """Orientation o of a (C, H, W) array with numpy's own rot90 / transpose / flips."""
    return {1: lambda a: a,
            2: lambda a: a[:, :, ::-1],
            3: lambda a: np.rot90(a, 2, axes=(1, 2)),
            4: lambda a: a[:, ::-1, :],
            5: lambda a: a.transpose(0, 2, 1),
            6: lambda a: np.rot90(a, -1, axes=(1, 2)),
            7: lambda a: np.rot90(a, 2, axes=(1, 2)).transpose(0, 2, 1),
            8: lambda a: np.rot90(a, 1, axes=(1, 2))}[o](x)


def _orient_coefficients(cube, o):
    """Orientation o of a full-spectrum (192 or 64-per-component) cube in the coefficient
    domain: the block grid as numpy turns it; within a block a transpose swaps (u, v) and a
    mirror negates the odd frequencies along its axis."""
    t, fh, fv = orientation_ops(o)
    n = cube.shape[0] // 64
    x = cube.reshape(n, 8, 8, *cube.shape[1:])            # component, u, v, rows, columns
    sign = (-1.0) ** np.arange(8)
    if t:
        x = x.transpose(0, 2, 1, 4, 3)
    if fh:
        x = x[..., ::-1] * sign[None, None, :, None, None]
    if fv:
        x = x[..., ::-1, :] * sign[None, :, None, None, None]
    return x.reshape(n * 64, *x.shape[3:])


@pytest.fixture(scope="module")
def photos():
    return [make_jpeg("baseline-420", 240, 176, seed=1),
            make_jpeg("baseline-444", 200, 264, seed=2)]


# -- Geometry.orientation ---------------------------------------------------------------

@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("o", range(1, 9))
def test_oriented_cube_is_the_coefficient_rotation_of_the_plain_one(photos, o, flip):
    cs = ChannelSet.parse("192")
    g = Geometry(64, 64, (10.5, 7.0, 150.0, 120.0), flip=flip)
    plain = jpegfreq.cube(photos[0], cs, geometry=g)
    got = jpegfreq.cube(photos[0], cs, geometry=replace(g, orientation=o))
    ref = _orient_coefficients(plain, o)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    assert o == 1 or np.abs(got - plain).max() > 1.0


@pytest.mark.parametrize("o", ORIENTING)
def test_oriented_jpeg_coeffs_agree_with_spatial(photos, o):
    cs, rng = ChannelSet.parse("24S"), np.random.default_rng(5)
    pairs = []
    for data in photos:
        h = jpegfreq.read_header(data)
        for _ in range(2):
            g = replace(sample_train(h.width, h.height, 224, rng), orientation=o)
            pairs.append((jpegfreq.cube(data, cs, geometry=g),
                          jpegfreq.cube(data, cs, geometry=g, source="spatial")))
    rel = pooled_rel_rms(pairs, cs)
    assert np.all(rel < BOUND), f"orientation {o}: pooled relative RMS Y/Cb/Cr {rel}"


@pytest.mark.parametrize("o", ORIENTING)
def test_oriented_rgb_is_numpys_rotation_of_the_plain_rgb(photos, o):
    for flip in (False, True):
        g = Geometry(64, 64, (20.0, 11.5, 180.0, 150.0), flip=flip)
        plain = jpegfreq.cube(photos[0], geometry=g, source="rgb")
        got = jpegfreq.cube(photos[0], geometry=replace(g, orientation=o), source="rgb")
        assert np.array_equal(got, _numpy_orient(plain, o))


def test_transposing_orientation_of_a_non_square_output():
    """out_h x out_w is the result's size; the crop before a transpose is out_w x out_h."""
    data = make_jpeg("baseline-444", 200, 160, seed=3)
    g = Geometry(out_h=48, out_w=64, box=(10.0, 5.0, 170.0, 125.0))
    turned = Geometry(out_h=64, out_w=48, box=g.box, orientation=6)
    assert turned.crop_size == (48, 64)
    for source in ("rgb", "jpeg-coeffs"):
        cs = "192" if source != "rgb" else None
        plain = jpegfreq.cube(data, cs, geometry=g, source=source)
        got = jpegfreq.cube(data, cs, geometry=turned, source=source)
        ref = _numpy_orient(plain, 6) if source == "rgb" else _orient_coefficients(plain, 6)
        assert got.shape == ref.shape == (ref.shape[0],) + ((64, 48) if source == "rgb" else (8, 6))
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    # the eval box of a transposed eval geometry is that of the unturned crop
    ev = Geometry(out_h=48, out_w=64, resize=56)
    assert replace(ev, out_h=64, out_w=48, orientation=5).box_for(200, 160) == ev.box_for(200, 160)


@pytest.mark.parametrize("n,o", [(3, 6), (6, 5), (7, 8), (8, 3), (2, 7)])
def test_orientation_composes_with_the_files_exif_orientation(n, o, rel_rms):
    """exif=True: the file's orientation first, then the output's: the same cube as the
    losslessly rotated file (jpegtran) without EXIF, then the output's orientation."""
    spec = {2: ("-flip", "horizontal"), 3: ("-rotate", "180"), 5: ("-transpose",),
            6: ("-rotate", "90"), 7: ("-transverse",), 8: ("-rotate", "270")}[n]
    data = make_jpeg(f"exif-orientation-{n}", 256, 192)
    rotated = jpegtran(make_jpeg("exif-orientation-1", 256, 192), *spec)
    g = Geometry(out_h=48, out_w=48, box=(9.0, 12.5, 150.0, 170.0), flip=True, exif=True,
                 orientation=o)
    got = jpegfreq.cube(data, "192", geometry=g)
    ref = jpegfreq.cube(rotated, "192", geometry=replace(g, exif=False))
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    # The pixel decodes of the rotated file round differently (the IDCT, rgb's chroma
    # upsampling): exactly, they are the file's own EXIF-oriented crop, then turned; against
    # the rotated file, within the decode's rounding.
    for source, turn in (("spatial", _orient_coefficients), ("rgb", _numpy_orient)):
        got = jpegfreq.cube(data, "192", geometry=g, source=source)
        plain = jpegfreq.cube(data, "192", geometry=replace(g, orientation=1), source=source)
        ref = turn(plain, o)
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max(), source
        ref = jpegfreq.cube(rotated, "192", geometry=replace(g, exif=False), source=source)
        assert rel_rms(got, ref) < 0.01, source


def test_orientation_helpers():
    plane = np.arange(12).reshape(3, 4)
    for a in range(1, 9):
        for b in range(1, 9):
            c = compose_orientations(a, b)
            want = _numpy_orient(_numpy_orient(plane[None], a), b)
            assert np.array_equal(_numpy_orient(plane[None], c), want)
    assert compose_orientations(6, 6) == 3 and compose_orientations(8, 6) == 1
    # a box follows its pixels: pixel (x, y) of a 4x3 image turned clockwise is (2 - y, x)
    assert orient_box((1, 0, 3, 2), 6, 4, 3) == (1.0, 1.0, 3.0, 3.0)
    assert orient_box((1, 0, 3, 2), 2, 4, 3) == (1.0, 0.0, 3.0, 2.0)
    assert orient_box((0, 0, 1, 2), 4, 4, 3) == (0.0, 1.0, 1.0, 3.0)


def test_geometry_orientation_field():
    g = Geometry(64, 64, (1.0, 2.0, 50.0, 60.0), flip=True, orientation=7)
    assert Geometry.from_dict(g.to_dict()) == g
    old = {k: v for k, v in g.to_dict().items() if k != "orientation"}
    assert Geometry.from_dict(old).orientation == 1          # records from before the field
    assert Geometry().orientation == 1 and sample_train(100, 80, 64, 0).orientation == 1
    assert g.scaled(2).orientation == 7
    for bad, exc in ((0, ValueError), (9, ValueError), (1.5, TypeError), (True, TypeError),
                     ("6", TypeError)):
        with pytest.raises(exc, match="orientation"):
            Geometry(orientation=bad)


# -- the policy ------------------------------------------------------------------------------

def test_policy_draws_every_op_with_torchvisions_magnitudes():
    rng = np.random.default_rng(0)
    draws = [sample_policy(rng, "ta_exact") for _ in range(3000)]
    counts = collections.Counter(a.op for a in draws)
    assert set(counts) == set(augment.TA_EXACT)
    assert all(120 < n < 500 for n in counts.values()), counts       # 250 expected each
    for op, (top, signed) in augment.TA_EXACT.items():
        mags = {a.magnitude for a in draws if a.op == op}
        if top is None:
            assert mags == {0.0}
            continue
        bins = {round(abs(m) / top * 30, 6) for m in mags}
        assert bins <= set(range(31)) and len(bins) > 20
        assert min(mags) < 0 < max(mags) and max(abs(m) for m in mags) <= top
    assert Augment("contrast", -0.99).photometric == Photometric(contrast=1.0 - 0.99)
    assert Augment("color", 0.5).photometric == Photometric(saturation=1.5)
    assert Augment("hue", -0.25).photometric == Photometric(hue=-0.25)
    assert Augment("rotate90").orientation == 8 and Augment("identity").orientation == 1


def test_policy_ops_change_what_they_should():
    g = Geometry(64, 64, (40.0, 30.0, 104.0, 94.0))
    p = Photometric(brightness=1.2)
    assert Augment("identity").apply(g, 200, 150, p) == (g, p)
    g2, p2 = Augment("rotate270").apply(g, 200, 150, p)
    assert g2 == replace(g, orientation=6) and p2 == p
    assert Augment("transpose").apply(replace(g, orientation=6), 200, 150)[0].orientation == \
        compose_orientations(6, 5)
    g3, p3 = Augment("brightness", 0.5).apply(g, 200, 150, p)
    assert g3 == g and p3 == Photometric(brightness=1.2 * 1.5)
    assert Augment("brightness", 0.5).apply(g, 200, 150)[1] == Photometric(brightness=1.5)


def test_translation_moves_the_content_by_whole_cells_exactly():
    """Content moving right by 8 output pixels is the plain cube shifted one cell right (a
    1:1 box on a 4:4:4 file: no resampling, so exact)."""
    data = make_jpeg("baseline-444", 200, 150, seed=4)
    g = Geometry(64, 64, (40.0, 32.0, 104.0, 96.0))
    plain = jpegfreq.cube(data, "192", geometry=g)
    right = Augment("translate_x", 8 / 64).apply(g, 200, 150)[0]
    assert right.box == (32.0, 32.0, 96.0, 96.0)
    got = jpegfreq.cube(data, "192", geometry=right)
    assert np.abs(got[:, :, 1:] - plain[:, :, :-1]).max() < 1e-3 * np.abs(plain).max()
    up = Augment("translate_y", -8 / 64).apply(g, 200, 150)[0]
    assert up.box == (40.0, 40.0, 104.0, 104.0)
    got = jpegfreq.cube(data, "192", geometry=up)
    assert np.abs(got[:, :-1] - plain[:, 1:]).max() < 1e-3 * np.abs(plain).max()
    # flipped: the content still moves right in the output, so the source box moves right
    fl = replace(g, flip=True)
    assert Augment("translate_x", 8 / 64).apply(fl, 200, 150)[0].box == (48.0, 32.0, 112.0, 96.0)


def test_translation_stops_at_the_image_edge():
    g = Geometry(64, 64, (5.0, 0.0, 105.0, 100.0))
    m = augment.TA_EXACT["translate_x"][0]
    assert Augment("translate_x", m).apply(g, 200, 150)[0].box == (0.0, 0.0, 100.0, 100.0)
    assert Augment("translate_y", m).apply(g, 200, 150)[0].box == g.box       # at the top
    assert Augment("translate_y", -m).apply(g, 200, 150)[0].box == \
        (5.0, 100 * m, 105.0, 100 + 100 * m)
    whole = Geometry(64, 64, (0.0, 0.0, 200.0, 150.0))
    assert Augment("translate_x", -m).apply(whole, 200, 150)[0].box == whole.box


def test_combined_colour_ops_equal_the_two_in_turn():
    rng = np.random.default_rng(2)
    planes = [rng.normal(0, 40, (16, 24)) for _ in range(3)]
    first = Photometric(brightness=0.8, contrast=1.3, saturation=0.6, hue=0.4)
    then = Photometric(brightness=1.4, contrast=0.5, saturation=1.7, hue=0.3)
    both = combine(first, then)
    assert both.hue == pytest.approx(-0.3)
    two = adjust_planes(then, adjust_planes(first, planes))
    one = adjust_planes(both, planes)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, atol=1e-3)
    assert combine(None, then) is then and combine(first, None) is first
    assert combine(Photometric(grayscale=True), then).grayscale


# -- random erasing --------------------------------------------------------------------------

def test_erasing_follows_random_erasings_rule():
    rng = np.random.default_rng(1)
    n, grid = 2000, (56, 56)
    erases = [sample_erase(rng, *grid, p=1.0) for _ in range(n)]
    got = [e for e in erases if e is not None]
    assert len(got) > 0.95 * n
    area = grid[0] * grid[1]
    shares, ratios = [], []
    for e in got:
        assert 0 <= e.top and e.top + e.height <= grid[0]
        assert 0 <= e.left and e.left + e.width <= grid[1]
        assert 0 < e.height < grid[0] and 0 < e.width < grid[1]
        # the rounded sides come from an area share in [0.02, 0.33] and a ratio in [0.3, 3.3]
        assert (e.height - 0.5) * (e.width - 0.5) <= 0.33 * area
        assert (e.height + 0.5) * (e.width + 0.5) >= 0.02 * area
        assert (e.height - 0.5) / (e.width + 0.5) <= 3.3
        assert (e.height + 0.5) / (e.width - 0.5) >= 0.3
        shares.append(e.area / area)
        ratios.append(e.height / e.width)
    assert min(shares) < 0.04 and max(shares) > 0.25
    assert min(ratios) < 0.5 and max(ratios) > 2.0
    assert {e.top for e in got} >= set(range(0, 20))


def test_erasing_probability_and_no_draw_at_zero():
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    assert all(sample_erase(rng, 56, 56, 0.0) is None for _ in range(10))
    assert rng.bit_generator.state == state                 # p = 0 draws nothing
    hits = sum(sample_erase(rng, 56, 56, 0.3) is not None for _ in range(2000))
    assert 500 < hits < 700
    assert sample_erase(rng, 1, 1, 1.0) is None             # nothing fits: not erased


def test_erase_apply_zeroes_every_channel_of_its_cells():
    x = np.ones((5, 8, 10), np.float16)
    Erase(2, 3, 4, 5).apply(x)
    assert (x[:, 2:6, 3:8] == 0).all() and x.sum() == 5 * (80 - 20)
    t = torch.ones(3, 8, 8, dtype=torch.int8)
    Erase(0, 0, 8, 1).apply(t)
    assert int(t.sum()) == 3 * 56


# -- through the loader --------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    for c in ("ant", "bee"):
        (root / c).mkdir()
        for i in range(5):
            w, h = 96 + 16 * i, 128 - 8 * i
            (root / c / f"{i}.jpg").write_bytes(make_jpeg("baseline-420", w, h, seed=10 * i))
    return str(root)


def _batches(folder, threads=2, train=True, **kw):
    ld = JpegLoader(folder, 5, size=64, train=train, threads=threads, seed=4, with_index=True,
                    **kw)
    ld.set_epoch(2)
    return ld, [tuple(t.clone() for t in b) for b in ld]


def _sizes(ld):
    """(width, height) of each sample of a folder loader, by sample index."""
    return [(h.width, h.height) for h in (jpegfreq.read_header(p) for p, _ in ld.data.samples)]


@pytest.mark.parametrize("source,dtype", [("jpeg-coeffs", "float32"), ("jpeg-coeffs", "float16"),
                                          ("jpeg-coeffs", "int8"), ("rgb", "float32")])
def test_loader_erases_exactly_the_drawn_rectangle(folder, source, dtype):
    kw = dict(source=source, dtype=dtype)
    if dtype == "int8":
        cs = ChannelSet.parse("24S")
        kw["stats"] = Stats(cs, np.zeros(24), np.full(24, 30.0), "jpeg-coeffs", (64, 64), 1)
    ld, erased = _batches(folder, random_erase=0.7, **kw)
    _, plain = _batches(folder, **kw)
    sizes = _sizes(ld)
    counted = 0
    for (x, _, idx), (xp, _, idxp) in zip(erased, plain):
        assert torch.equal(idx, idxp)
        for row, i in enumerate(idx.tolist()):
            e = ld.erasing(i, *sizes[i])
            a, b = x[row].numpy(), xp[row].numpy().copy()
            if e is None:
                assert np.array_equal(a, b)
                continue
            counted += 1
            assert not (b[:, e.top:e.top + e.height, e.left:e.left + e.width] == 0).all()
            assert np.array_equal(a, e.apply(b))        # that rectangle, every channel, no more
    assert 0 < counted < len(sizes)
    # P = 0 never erases and draws nothing
    ld0 = JpegLoader(folder, 5, size=64, random_erase=0.0)
    assert all(ld0.erasing(i, *sizes[i]) is None for i in range(len(sizes)))


def test_loader_plan_draws_in_order_and_batches_do_not_depend_on_threads(folder):
    kw = dict(color_jitter=(0.3, 0.3, 0.3, 0.05), auto_augment="ta_exact", random_erase=0.5)
    ld, one = _batches(folder, threads=1, **kw)
    _, two = _batches(folder, threads=2, **kw)
    _, plain = _batches(folder, threads=2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(one, two))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(one, plain))
    rng = ld.rng(3)
    g = sample_train(100, 80, 64, rng)
    p = Photometric.sample(rng, 0.3, 0.3, 0.3, 0.05)
    g, p = sample_policy(rng, "ta_exact").apply(g, 100, 80, p)
    assert ld.plan(3, 100, 80) == (g, p)
    assert ld.erasing(3, 100, 80) == sample_erase(rng, 8, 8, 0.5)
    # evaluation ignores them
    _, ev = _batches(folder, train=False, **kw)
    _, ev_plain = _batches(folder, train=False)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(ev, ev_plain))


def test_policy_off_keeps_the_default_draws(folder):
    ld = JpegLoader(folder, 5, size=64, seed=4, auto_augment=None, random_erase=0)
    rng = ld.rng(2)
    assert ld.plan(2, 120, 90) == (sample_train(120, 90, 64, rng), None)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"random_erase": -0.1}, ValueError, "random_erase"),
    ({"random_erase": 1.5}, ValueError, "random_erase"),
    ({"random_erase": math.nan}, ValueError, "random_erase"),
    ({"random_erase": "0.5"}, TypeError, "random_erase"),
    ({"random_erase": True}, TypeError, "random_erase"),
    ({"auto_augment": "trivialaugment"}, ValueError, "auto_augment"),
    ({"auto_augment": 1}, ValueError, "auto_augment"),
])
def test_bad_loader_arguments_are_refused_up_front(folder, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        JpegLoader(folder, 2, train=False, **kwargs)


def test_bad_augment_values_are_refused():
    with pytest.raises(ValueError, match="op must be one of"):
        Augment("shear_x", 0.1)
    with pytest.raises(ValueError, match="brightness magnitude"):
        Augment("brightness", 1.5)
    with pytest.raises(ValueError, match="rotate90 magnitude"):
        Augment("rotate90", 0.2)
    with pytest.raises(ValueError, match="auto_augment"):
        sample_policy(np.random.default_rng(0), "rand")
    with pytest.raises(ValueError, match="scale"):
        sample_erase(np.random.default_rng(0), 8, 8, 0.5, scale=(0.4, 0.1))
    with pytest.raises(TypeError, match="ratio"):
        sample_erase(np.random.default_rng(0), 8, 8, 0.5, ratio=0.3)
