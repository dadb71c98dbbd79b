"""jpegfreq.photometric: brightness, contrast, saturation, hue and grayscale on cubes.

The coefficient-domain ops are checked three ways: exactly (1e-5) against the same ops done
in pixel space on the block IDCT of the full-spectrum cube (no rounding anywhere); against
the spatial path with the same ops (pooled relative RMS, Y < 1%, chroma < 2%); and against
torchvision's adjust_* on the decoded image (same bounds, on files where clamping is rare).
"""
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

import jpegfreq
from jpegfreq import ChannelSet, eval_geometry, sample_train
from jpegfreq.geometry import block_dct, block_idct
from jpegfreq import _jpegfreq
from jpegfreq.photometric import (DC_GAIN, LEVEL, Photometric, adjust_planes, adjust_rgb,
                                  apply_to_cube, coefficient_request)
from jpeg_factory import make_jpeg
from reference import pooled_rel_rms  # noqa: E402

OPS = {
    "brightness": Photometric(brightness=1.25),
    "darker": Photometric(brightness=0.7),
    "contrast": Photometric(contrast=0.6),
    "contrast-up": Photometric(contrast=1.3),
    "saturation": Photometric(saturation=1.5),
    "desaturate": Photometric(saturation=0.4),
    "hue": Photometric(hue=0.08),
    "hue-wide": Photometric(hue=-0.35),      # |cos| < 0.5: the other rotation form
    "grayscale": Photometric(grayscale=True),
    "all": Photometric(brightness=0.85, contrast=1.2, saturation=0.7, hue=-0.05),
    "all-gray": Photometric(brightness=1.1, contrast=0.8, saturation=1.4, hue=0.1,
                            grayscale=True),
}


def _stats_arrays(cs, seed=0):
    rng = np.random.default_rng(seed)
    mean, std = rng.normal(0, 40, cs.count), rng.uniform(0.5, 80, cs.count)
    scale = (1.0 / std).astype(np.float32)
    return scale, (-mean * scale).astype(np.float32)


def _idct_planes(full):
    """Level-shifted pixel planes of a raw 192-channel cube (block IDCT, float)."""
    return [block_idct(np.moveaxis(full[64 * c:64 * (c + 1)], 0, -1)).astype(np.float32)
            for c in range(3)]


def _pixel_reference(planes, cs, p, scale=None, offset=None):
    """The ops in pixel space on the planes of _idct_planes, then the block DCT of the kept
    channels: no rounding, so the coefficient ops must match it exactly."""
    planes = adjust_planes(p, planes)
    out = np.empty((cs.count, planes[0].shape[0] // 8, planes[0].shape[1] // 8), np.float32)
    for i, (c, k) in enumerate(zip(cs.component_of, cs.k)):
        out[i] = block_dct(np.ascontiguousarray(planes[c]), [int(k) >> 3], [int(k) & 7])[0, 0]
    if scale is not None:
        out = out * scale[:, None, None] + offset[:, None, None]
    return out


# -- the coefficient ops are exact -------------------------------------------------

@pytest.fixture(scope="module")
def photo_420():
    return make_jpeg("baseline-420", 400, 304, seed=1)


@pytest.fixture(scope="module")
def train_planes(photo_420):
    """A train geometry of photo_420 and the pixel planes of its full-spectrum cube."""
    h = jpegfreq.read_header(photo_420)
    g = sample_train(h.width, h.height, 448, np.random.default_rng(5))
    return g, _idct_planes(jpegfreq.cube(photo_420, "192", geometry=g))


@pytest.mark.parametrize("normalised", [False, True])
@pytest.mark.parametrize("channels", ["24S", "Y:0,5;Cb:1;Cr:1,9", "Y:3,9;Cr:0", "64S"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_coefficient_ops_equal_pixel_ops(photo_420, train_planes, op, channels, normalised,
                                         rel_rms):
    p, cs = OPS[op], ChannelSet.parse(channels)
    g, planes = train_planes
    scale, offset = _stats_arrays(cs) if normalised else (None, None)
    ref = _pixel_reference(planes, cs, p, scale, offset)
    request, _ = coefficient_request(p, cs)
    got = apply_to_cube(p, jpegfreq.cube(photo_420, request, geometry=g), cs, scale, offset)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert rel_rms(got, ref) < 1e-5, f"{op} {channels}"
    untouched = _pixel_reference(planes, cs, None, scale, offset)
    assert rel_rms(untouched, ref) > 1e-3       # the op did change the cube


def test_brightness_is_a_scale_and_a_dc_offset():
    """b times every coefficient, plus 8 * 128 * (b - 1) on Y0 only (chroma is centred)."""
    cs = ChannelSet.parse("24S")
    raw = np.random.default_rng(0).normal(0, 50, (24, 4, 4)).astype(np.float32)
    got = apply_to_cube(Photometric(brightness=1.5), raw, cs)
    want = raw * 1.5
    want[0] += DC_GAIN * LEVEL * 0.5
    assert np.allclose(got, want, rtol=1e-6, atol=1e-3)


def test_contrast_blends_dc_with_its_mean():
    cs = ChannelSet.parse("24S")
    raw = np.random.default_rng(1).normal(0, 50, (24, 6, 5)).astype(np.float32)
    got = apply_to_cube(Photometric(contrast=0.25), raw, cs)
    m = raw[0].mean(dtype=np.float64)
    assert np.allclose(got[0], 0.25 * raw[0] + 0.75 * m, atol=1e-3)
    assert np.allclose(got[1:], 0.25 * raw[1:], atol=1e-4)
    assert abs(got[0].mean() - m) < 1e-3       # the mean grey is kept
    flat = apply_to_cube(Photometric(contrast=0.0), raw, cs)
    assert np.allclose(flat[0], m, atol=1e-3) and np.all(flat[1:] == 0)


def test_hue_rotates_each_chroma_pair():
    cs = ChannelSet.parse("24S")
    raw = np.random.default_rng(2).normal(0, 50, (24, 3, 3)).astype(np.float32)
    got = apply_to_cube(Photometric(hue=0.25), raw, cs)       # a quarter turn
    assert np.allclose(got[:16], raw[:16])
    assert np.allclose(got[16:20], -raw[20:24], atol=1e-4)    # Cb' = -Cr
    assert np.allclose(got[20:24], raw[16:20], atol=1e-4)     # Cr' = Cb
    energy = lambda x: float(np.sum(x[16:].astype(np.float64) ** 2))
    for h in (0.05, -0.3, 0.5):
        assert math.isclose(energy(apply_to_cube(Photometric(hue=h), raw, cs)), energy(raw),
                            rel_tol=1e-5)


def test_only_a_hue_rotation_widens_the_request():
    """The operator computes the caller's channels, plus each frequency's missing Cb or Cr
    partner when the hue rotates (and only then)."""
    cs, part = ChannelSet.parse("24S"), ChannelSet.parse("Y:0,1;Cb:0,1;Cr:1,8")
    for p in (None, Photometric(), Photometric(brightness=1.3, contrast=0.5, saturation=0.2),
              Photometric(hue=0.2), Photometric(grayscale=True, hue=0.2)):
        assert coefficient_request(p, cs) == (cs, None)
    assert coefficient_request(Photometric(saturation=0.3), part) == (part, None)
    assert coefficient_request(Photometric(hue=0.2, grayscale=True), part) == (part, None)
    request, keep = coefficient_request(Photometric(hue=0.2), part)
    assert request == ChannelSet.parse("Y:0,1;Cb:0,1,8;Cr:0,1,8")
    assert [request.indices[i] for i in keep] == list(part.indices)


def test_the_operator_refuses_bad_photometric_values(photo_420):
    """The C entry points check what they are handed (ValueError, TypeError), and a rotation
    of a set without each chroma partner is refused rather than computed wrongly."""
    cs = ChannelSet.parse("24S")
    raw = np.zeros((24, 2, 2), np.float32)
    args = (photo_420, cs.component_of, cs.k, 64, 64)
    for bad, what in (((-0.1, 1.0, 1.0, 0.0, 0.0), "brightness"),
                      ((1.0, 1.0, -2.0, 0.0, 0.0), "saturation"),
                      ((1.0, float("nan"), 1.0, 0.0, 0.0), "finite"),
                      ((1.0, 1.0, 1.0, 0.7, 0.0), "hue"),
                      ((1.0, 1.0, 1.0, 0.0, 0.5), "grayscale")):
        with pytest.raises(ValueError, match=what):
            _jpegfreq.cube(*args, resize=73, photometric=bad)
        with pytest.raises(ValueError, match=what):
            _jpegfreq.photometric(raw, cs.component_of, cs.k, bad)
    for bad in ([1.0, 1.0, 1.0, 0.0, 0.0], (1.0, 1.0, 1.0), (1.0, "x", 1.0, 0.0, 0.0)):
        with pytest.raises(TypeError):
            _jpegfreq.cube(*args, resize=73, photometric=bad)
    part = ChannelSet.parse("Y:0;Cb:0,1;Cr:1")
    with pytest.raises(ValueError, match="Cb and Cr"):
        _jpegfreq.cube(photo_420, part.component_of, part.k, 64, 64, resize=73,
                       photometric=(1.0, 1.0, 1.0, 0.1, 0.0))
    with pytest.raises(ValueError, match="Cb and Cr"):
        _jpegfreq.photometric(np.zeros((4, 2, 2), np.float32), part.component_of, part.k,
                              (1.0, 1.0, 1.0, 0.1, 0.0))
    # a repeated channel pairs with its own repeat: the same result for both copies
    rep = np.random.default_rng(4).normal(0, 50, (4, 3, 3)).astype(np.float32)
    rep[1], rep[3] = rep[0], rep[2]
    twice = rep.copy()
    _jpegfreq.photometric(twice, np.array([1, 1, 2, 2], np.int32), np.zeros(4, np.int32),
                          (1.0, 1.0, 1.0, 0.1, 0.0))
    assert np.array_equal(twice[0], twice[1]) and np.array_equal(twice[2], twice[3])
    assert not np.allclose(twice, rep)
    # a repeated Y0 under contrast: each copy blended with the mean, as the one channel is
    y0 = np.random.default_rng(5).normal(0, 50, (1, 3, 3)).astype(np.float32)
    one, two = y0.copy(), np.concatenate([y0, y0])
    _jpegfreq.photometric(one, np.zeros(1, np.int32), np.zeros(1, np.int32),
                          (1.0, 0.5, 1.0, 0.0, 0.0))
    _jpegfreq.photometric(two, np.zeros(2, np.int32), np.zeros(2, np.int32),
                          (1.0, 0.5, 1.0, 0.0, 0.0))
    assert np.array_equal(two[0], one[0]) and np.array_equal(two[1], one[0])
    comp = np.array([1] * 65 + [2] * 65, np.int32)          # 65 pairs: one more than 64
    k = np.array((list(range(64)) + [0]) * 2, np.int32)
    with pytest.raises(ValueError, match="more than 64 channels of component 1"):
        _jpegfreq.photometric(np.zeros((130, 1, 1), np.float32), comp, k,
                              (1.0, 1.0, 1.0, 0.1, 0.0))
    with pytest.raises(ValueError, match="float32"):
        _jpegfreq.photometric(np.zeros((23, 2, 2), np.float32), cs.component_of, cs.k,
                              (1.2, 1.0, 1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="float32"):
        _jpegfreq.photometric(np.zeros((24, 2, 2)), cs.component_of, cs.k,
                              (1.2, 1.0, 1.0, 0.0, 0.0))
    frozen = np.zeros((24, 2, 2), np.float32)
    frozen.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        _jpegfreq.photometric(frozen, cs.component_of, cs.k, (1.2, 1.0, 1.0, 0.0, 0.0))


# -- channel sets: hue partners, no Y0 ------------------------------------------

def test_hue_computes_missing_partners_and_drops_them(photo_420):
    part = ChannelSet.parse("Y:0,1;Cb:0,1;Cr:1,8")
    whole = ChannelSet.parse("Y:0,1;Cb:0,1,8;Cr:0,1,8")
    p = Photometric(saturation=1.2, hue=0.12)
    assert coefficient_request(p, part)[0] == whole
    got = apply_to_cube(p, jpegfreq.cube(photo_420, whole), part)
    ref = apply_to_cube(p, jpegfreq.cube(photo_420, whole), whole)
    pick = [whole.indices.index(g) for g in part.indices]
    assert got.shape == (part.count, 56, 56)
    assert np.allclose(got, ref[pick], rtol=1e-6, atol=1e-4)
    # without hue nothing extra is asked for
    assert coefficient_request(Photometric(saturation=1.2), part)[0] == part


def test_contrast_without_y0_needs_nothing_more(photo_420):
    no_dc, with_dc = ChannelSet.parse("Y:1,8,9;Cb:0;Cr:0"), ChannelSet.parse("6S")
    p = Photometric(brightness=1.1, contrast=0.5)
    assert coefficient_request(p, no_dc)[0] == no_dc
    got = apply_to_cube(p, jpegfreq.cube(photo_420, no_dc), no_dc)
    ref = apply_to_cube(p, jpegfreq.cube(photo_420, with_dc), with_dc)
    assert np.allclose(got, ref[1:], rtol=1e-6, atol=1e-4)


def test_grayscale_files_keep_neutral_chroma():
    data = make_jpeg("gray", 320, 240)
    cs = ChannelSet.parse("24S")
    raw = jpegfreq.cube(data, cs)
    assert np.all(raw[16:] == 0)
    scale, offset = _stats_arrays(cs)
    for p in OPS.values():
        got = apply_to_cube(p, raw, cs)
        assert np.all(got[16:] == 0), p
        norm = apply_to_cube(p, raw, cs, scale, offset)
        assert np.allclose(norm[16:], offset[16:, None, None], atol=1e-5), p
    # the operator's own path: chroma filled from the folded offsets, then the hue pass
    from jpegfreq.stats import Stats
    rng = np.random.default_rng(3)
    stats = Stats(cs, rng.normal(0, 40, 24), rng.uniform(0.5, 80, 24), size=(448, 448))
    scale, offset = stats.scale_offset(cs)
    for p in OPS.values():
        got = jpegfreq.cube(data, cs, stats=stats, photometric=p)
        assert np.allclose(got[16:], offset[16:, None, None], atol=1e-5), p


# -- pixel space and torchvision ------------------------------------------------

def _smooth_rgb(seed, h=48, w=40, lo=0.15, hi=0.85):
    """An RGB image in [lo, hi] with colour: nothing near the clamp of mild adjustments."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(lo, hi, (3, h // 8, w // 8)).astype(np.float32)
    return np.repeat(np.repeat(small, 8, 1), 8, 2)


@pytest.mark.parametrize("p", [Photometric(brightness=1.1), Photometric(brightness=0.6),
                               Photometric(contrast=0.7), Photometric(contrast=1.15),
                               Photometric(saturation=1.2), Photometric(saturation=0.3),
                               Photometric(grayscale=True),
                               Photometric(brightness=1.05, contrast=0.9, saturation=1.1)],
                         ids=str)
def test_rgb_ops_are_torchvisions_where_nothing_clamps(p):
    x = _smooth_rgb(0)
    got = adjust_rgb(p, x)
    assert 0 < got.min() and got.max() < 1          # nothing clamped on either side
    # torchvision's grey weights are 0.2989/0.587/0.114 (ours 0.299): a 1e-4 difference
    assert np.abs(got - _torchvision(x, p)).max() < 2e-4


def test_hue_turns_the_same_way_as_torchvision_but_keeps_luma():
    x = _smooth_rgb(1)
    ycc = jpegfreq.photometric.RGB_TO_YCBCR
    for h in (0.04, -0.04, 0.1):
        ours = adjust_rgb(Photometric(hue=h), x)
        same = TF.adjust_hue(torch.from_numpy(x), h).numpy()
        other = TF.adjust_hue(torch.from_numpy(x), -h).numpy()
        chroma = lambda im: np.einsum("ij,jhw->ihw", ycc[1:], im)
        assert (np.abs(chroma(ours) - chroma(same)).mean()
                < 0.5 * np.abs(chroma(ours) - chroma(other)).mean())
        luma = lambda im: np.einsum("j,jhw->hw", ycc[0], im)
        assert np.abs(luma(ours) - luma(x)).max() < 1e-5            # Y kept exactly
        assert np.abs(luma(same) - luma(x)).max() > 1e-3            # HSV hue moves Y


def test_adjust_planes_grayscale_input_has_one_plane():
    y = np.full((8, 8), 20.0, np.float32)
    (out,) = adjust_planes(Photometric(brightness=2.0, hue=0.3), [y])
    assert np.allclose(out, 2 * (20 + 128) - 128)


# -- the parameters and their sampling -------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"brightness": -0.1}, "brightness must be >= 0"),
    ({"contrast": float("nan")}, "contrast must be finite"),
    ({"saturation": float("inf")}, "saturation must be finite"),
    ({"hue": 0.6}, r"hue must be within \[-0.5, 0.5\]"),
])
def test_bad_parameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Photometric(**kwargs)


def test_parameter_types():
    with pytest.raises(TypeError, match="brightness must be a number"):
        Photometric(brightness="1.2")
    with pytest.raises(TypeError, match="grayscale must be a bool"):
        Photometric(grayscale=1)
    p = Photometric(np.float32(1.5), 1, 1, np.float64(0.1), np.bool_(True))
    assert type(p.brightness) is float and p.grayscale is True
    assert Photometric.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="unknown Photometric fields: gamma"):
        Photometric.from_dict({"gamma": 2.0})
    assert Photometric().identity and not Photometric(hue=0.01).identity


def test_sample_follows_colorjitter_ranges():
    rng = np.random.default_rng(0)
    ps = [Photometric.sample(rng, brightness=0.4, contrast=(0.5, 0.9), saturation=1.5,
                             hue=0.1, grayscale_p=0.2) for _ in range(2000)]
    b = np.array([p.brightness for p in ps])
    c = np.array([p.contrast for p in ps])
    s = np.array([p.saturation for p in ps])
    h = np.array([p.hue for p in ps])
    assert 0.6 <= b.min() < 0.62 and 1.38 < b.max() <= 1.4
    assert 0.5 <= c.min() < 0.52 and 0.88 < c.max() <= 0.9
    assert 0.0 <= s.min() < 0.03 and 2.45 < s.max() <= 2.5        # max(0, 1 - 1.5) = 0
    assert -0.1 <= h.min() < -0.09 and 0.09 < h.max() <= 0.1
    assert abs(np.mean([p.grayscale for p in ps]) - 0.2) < 0.05
    assert abs(b.mean() - 1.0) < 0.03


def test_sample_is_deterministic_and_draws_only_what_is_asked():
    a = Photometric.sample(np.random.default_rng(7), 0.4, 0.4, 0.4, 0.1, 0.5)
    assert a == Photometric.sample(np.random.default_rng(7), 0.4, 0.4, 0.4, 0.1, 0.5)
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    p = Photometric.sample(r1, brightness=0.3)
    r2.uniform()
    assert r1.random() == r2.random()                           # one draw, no more
    assert p.contrast == p.saturation == 1.0 and p.hue == 0.0 and not p.grayscale
    assert Photometric.sample(np.random.default_rng(0)).identity
    assert Photometric.sample(np.random.default_rng(0), brightness=0).identity
    assert Photometric.sample(np.random.default_rng(0), grayscale_p=1.0).grayscale


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"brightness": -0.2}, ValueError, "brightness jitter must be >= 0"),
    ({"contrast": (0.9, 0.5)}, ValueError, "lo must not exceed hi"),
    ({"saturation": (-0.1, 1.0)}, ValueError, "must not go below 0"),
    ({"hue": 0.7}, ValueError, r"within \[-0.5, 0.5\]"),
    ({"hue": (-0.6, 0.1)}, ValueError, r"within \[-0.5, 0.5\]"),
    ({"grayscale_p": 1.5}, ValueError, r"grayscale_p must be within \[0, 1\]"),
    ({"brightness": (1, 2, 3)}, TypeError, "a number or a"),
    ({"brightness": "0.4"}, TypeError, "must be a number"),
])
def test_bad_sampling_ranges_are_refused(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Photometric.sample(np.random.default_rng(0), **kwargs)


# -- through cube(): the three sources ---------------------------------------------

SIZES = [(400, 304), (336, 448), (496, 368)]
BOUND = (0.01, 0.02, 0.02)  # kept Y < 1%, kept chroma < 2% (pooled relative RMS)
COMPARED = ["brightness", "darker", "contrast", "contrast-up", "saturation", "desaturate",
            "hue", "hue-wide", "all"]


def _geometries(data, kind, rng):
    if kind == "eval":
        return [eval_geometry(448)]
    h = jpegfreq.read_header(data)
    return [sample_train(h.width, h.height, 448, rng) for _ in range(2)]


@pytest.fixture(scope="module")
def photos():
    return {case: [make_jpeg(case, w, h, seed=s) for s, (w, h) in enumerate(SIZES)]
            for case in ("baseline-420", "baseline-444")}


@pytest.mark.parametrize("kind", ["eval", "train"])
@pytest.mark.parametrize("op", COMPARED)
def test_jpeg_coeffs_agrees_with_spatial(photos, op, kind):
    cs, p, rng = ChannelSet.parse("24S"), OPS[op], np.random.default_rng(11)
    pairs = []
    for data in photos["baseline-420"] + photos["baseline-444"]:
        for g in _geometries(data, kind, rng):
            pairs.append((jpegfreq.cube(data, cs, geometry=g, photometric=p),
                          jpegfreq.cube(data, cs, geometry=g, source="spatial", photometric=p)))
    rel = pooled_rel_rms(pairs, cs)
    assert np.all(rel < BOUND), f"{op} {kind}: pooled relative RMS Y/Cb/Cr {rel}"
    plain = jpegfreq.cube(photos["baseline-420"][0], cs, geometry=g)
    assert np.abs(pairs[-1][0] - plain).max() > 1.0 or op == "none"


def test_grayscale_op_agrees_with_spatial(photos):
    cs, p = ChannelSet.parse("24S"), OPS["all-gray"]
    pairs = [(jpegfreq.cube(d, cs, photometric=p),
              jpegfreq.cube(d, cs, source="spatial", photometric=p))
             for d in photos["baseline-420"]]
    assert pooled_rel_rms(pairs, cs)[0] < BOUND[0]
    assert all(np.all(a[16:] == 0) and np.abs(s[16:]).max() < 1e-3 for a, s in pairs)


def _mid_range_jpeg(seed, w, h):
    """A photo squeezed into pixel values 30..220, so mild ops rarely clamp."""
    import io
    from PIL import Image
    from jpeg_factory import photo
    arr = np.asarray(photo(w, h, seed), np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.uint8(np.rint(30 + arr * (190 / 255)))).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def _decoded_rgb(data, g):
    """The decoded image at geometry g as float RGB in [0, 1]: the spatial path's YCbCr
    planes (block IDCT of its full-spectrum cube), converted without rounding."""
    full = jpegfreq.cube(data, "192", geometry=g, source="spatial")
    ycc = np.stack(_idct_planes(full)).astype(np.float64)
    ycc[0] += LEVEL
    inv = np.linalg.inv(jpegfreq.photometric.RGB_TO_YCBCR.astype(np.float64))
    return (np.einsum("ij,jhw->ihw", inv, ycc) / 255.0).astype(np.float32)


def _torchvision(rgb, p):
    t = torch.from_numpy(rgb)
    t = TF.adjust_brightness(t, p.brightness)
    t = TF.adjust_contrast(t, p.contrast)
    t = TF.adjust_saturation(t, p.saturation)
    if p.grayscale:
        t = TF.rgb_to_grayscale(t, 3)
    return t.numpy()


def _rgb_cube(rgb, cs):
    ycc = np.einsum("ij,jhw->ihw", jpegfreq.photometric.RGB_TO_YCBCR, rgb * 255.0)
    ycc[0] -= 128.0
    out = np.empty((cs.count, rgb.shape[1] // 8, rgb.shape[2] // 8), np.float32)
    for i, (c, k) in enumerate(zip(cs.component_of, cs.k)):
        out[i] = block_dct(np.ascontiguousarray(ycc[c], np.float32), [int(k) >> 3],
                           [int(k) & 7])[0, 0]
    return out


@pytest.mark.parametrize("kind", ["eval", "train"])
@pytest.mark.parametrize("p", [Photometric(brightness=1.12), Photometric(brightness=0.7),
                               Photometric(contrast=0.6), Photometric(contrast=1.3),
                               Photometric(saturation=1.5), Photometric(saturation=0.4),
                               Photometric(brightness=0.9, contrast=1.2, saturation=0.7),
                               Photometric(brightness=1.1, contrast=0.9, grayscale=True)],
                         ids=str)
def test_jpeg_coeffs_agrees_with_torchvision(p, kind):
    """torchvision's adjust_* on the decoded image (float RGB, see _decoded_rgb), then
    YCbCr and the block DCT; on these files the ops put under 0.2% of the RGB values
    outside [0, 1], where torchvision clamps."""
    cs, rng = ChannelSet.parse("24S"), np.random.default_rng(4)
    pairs, clamped, total = [], 0, 0
    for s, (w, h) in enumerate(SIZES):
        data = _mid_range_jpeg(s, w, h)
        for g in _geometries(data, kind, rng):
            rgb = _decoded_rgb(data, g)
            free = adjust_rgb(p, np.clip(rgb, 0, 1))
            clamped += int(np.sum((free < 0) | (free > 1)))
            total += free.size
            pairs.append((jpegfreq.cube(data, cs, geometry=g, photometric=p),
                          _rgb_cube(_torchvision(rgb, p), cs)))
    assert clamped / total < 0.002           # the files were made for it: clamping is rare
    rel = pooled_rel_rms(pairs, cs)
    if p.grayscale:
        assert rel[0] < BOUND[0]
        assert all(np.all(a[16:] == 0) and np.abs(r[16:]).max() < 0.5 for a, r in pairs)
    else:
        assert np.all(rel < BOUND), f"{p} {kind}: pooled relative RMS Y/Cb/Cr {rel}"


def test_cube_folds_what_apply_to_cube_does(photo_420):
    from jpegfreq.stats import Stats
    rng = np.random.default_rng(0)
    big = ChannelSet.parse("192")
    stats = Stats(big, rng.normal(0, 40, 192), rng.uniform(0.5, 80, 192), size=(448, 448))
    for channels in ("24S", "Y:0,5;Cb:1;Cr:1,9"):
        cs = ChannelSet.parse(channels)
        scale, offset = stats.scale_offset(cs)
        for p in OPS.values():
            request, _ = coefficient_request(p, cs)
            want = apply_to_cube(p, jpegfreq.cube(photo_420, request), cs, scale, offset)
            got = jpegfreq.cube(photo_420, cs, stats=stats, photometric=p)
            assert np.allclose(got, want, rtol=1e-5, atol=1e-4), (channels, p)
            rows = np.zeros((2, cs.count, 56, 56), np.float32)
            row = rows[1]
            assert jpegfreq.cube(photo_420, cs, stats=stats, photometric=p, out=row) is row
            assert np.array_equal(row, got) and np.all(rows[0] == 0)
            f16 = jpegfreq.cube(photo_420, cs, stats=stats, photometric=p, dtype="float16")
            assert np.array_equal(f16, got.astype(np.float16))


def test_identity_changes_nothing(photo_420):
    for source in ("jpeg-coeffs", "spatial", "rgb"):
        assert np.array_equal(jpegfreq.cube(photo_420, source=source),
                              jpegfreq.cube(photo_420, source=source, photometric=Photometric()))


def test_rgb_source_applies_the_ops_then_clamps(photo_420):
    p = Photometric(brightness=1.4, contrast=1.2, saturation=1.3, hue=0.1)
    plain = jpegfreq.cube(photo_420, source="rgb")
    got = jpegfreq.cube(photo_420, source="rgb", photometric=p)
    assert np.allclose(got, np.clip(adjust_rgb(p, plain), 0, 1), atol=1e-6)
    assert got.min() >= 0 and got.max() <= 1 and np.any(got == 1)


def test_spatial_fallback_files_get_the_ops(recwarn):
    data = make_jpeg("cmyk", 320, 240, seed=2)
    p = Photometric(brightness=0.9, saturation=1.2, hue=-0.1)
    got = jpegfreq.cube(data, "24S", size=224, photometric=p)
    assert np.array_equal(got, jpegfreq.cube(data, "24S", size=224, source="spatial",
                                             photometric=p))
    assert not np.array_equal(got, jpegfreq.cube(data, "24S", size=224, source="spatial"))


def test_photometric_argument_type(photo_420):
    for source in ("jpeg-coeffs", "spatial", "rgb"):
        with pytest.raises(TypeError, match="photometric must be a jpegfreq.Photometric"):
            jpegfreq.cube(photo_420, source=source, photometric={"brightness": 1.2})


def test_hue_on_a_set_without_chroma_is_nothing(photo_420):
    cs = ChannelSet.parse("Y:0-3")
    p = Photometric(brightness=1.2, hue=0.2)
    assert coefficient_request(p, cs) == (cs, None)
    assert np.array_equal(jpegfreq.cube(photo_420, cs, photometric=p),
                          jpegfreq.cube(photo_420, cs, photometric=Photometric(brightness=1.2)))
