"""Normalization statistics: pooled (not per-batch) moments, saved with their geometry."""
import json
import subprocess
import sys

import numpy as np
import pytest

import jpegfreq
from jpegfreq.geometry import eval_geometry
from jpegfreq.stats import Stats, StatsAccumulator, compute_stats, list_images
from tests.jpeg_factory import make_jpeg

CASES = ["baseline-420", "baseline-444", "gray", "progressive-420", "sample-411"]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("stats images")
    for i, case in enumerate(CASES):
        (d / f"img {i} '{case}'.jpg").write_bytes(make_jpeg(case, seed=i))
    (d / "notes.txt").write_text("not an image")
    return d


def test_pooled_moments_equal_the_moments_of_all_positions(image_dir):
    files = list_images(image_dir)
    assert len(files) == len(CASES)
    st = compute_stats(files, "24S", size=64, progress=False)
    cubes = np.stack([jpegfreq.cube(f, "24S", size=64) for f in files]).astype(np.float64)
    flat = cubes.transpose(1, 0, 2, 3).reshape(24, -1)
    np.testing.assert_allclose(st.mean, flat.mean(1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(st.std, flat.std(1), rtol=1e-6, atol=1e-9)
    assert st.count == flat.shape[1]


def test_pooled_is_not_the_mean_of_batch_stds():
    acc = StatsAccumulator(1)
    acc.update(np.zeros((1, 2, 2)))
    acc.update(np.full((1, 2, 2), 2.0))
    st = acc.result(jpegfreq.ChannelSet.parse("Y:0"), "jpeg-coeffs", (16, 16))
    assert st.std[0] == pytest.approx(1.0)      # the per-batch stds are both 0


def test_folded_normalization_matches_numpy(image_dir):
    files = list_images(image_dir)
    st = compute_stats(files, "192", size=64, progress=False)
    geo = eval_geometry(64)
    for f in files[:2]:
        raw = jpegfreq.cube(f, "24S", size=64)
        norm = jpegfreq.cube(f, "24S", size=64, stats=st)
        mean, std = st.select(jpegfreq.ChannelSet.parse("24S"))
        std = np.where(std > 1e-6, std, 1.0)
        expect = (raw - mean[:, None, None]) / std[:, None, None]
        np.testing.assert_allclose(norm, expect, rtol=1e-4, atol=1e-4)
        sp = jpegfreq.cube(f, "24S", size=64, source="spatial", geometry=geo, stats=st)
        assert sp.shape == norm.shape


def test_mismatched_geometry_or_channels_is_an_error(image_dir):
    files = list_images(image_dir)
    st = compute_stats(files, "24S", size=64, progress=False)
    with pytest.raises(ValueError, match="64x64"):
        jpegfreq.cube(files[0], "24S", size=448, stats=st)
    with pytest.raises(ValueError, match="lack channels"):
        jpegfreq.cube(files[0], "64S", size=64, stats=st)
    with pytest.raises(ValueError, match="source"):
        jpegfreq.cube(files[0], size=64, source="rgb", stats=st)


def test_save_load_round_trip(tmp_path, image_dir):
    st = compute_stats(list_images(image_dir), "6S", size=64, progress=False)
    p = tmp_path / "stats.json"
    st.save(p)
    back = Stats.load(p)
    assert back.channels == st.channels and back.size == (64, 64)
    np.testing.assert_array_equal(back.mean, st.mean)
    bad = json.loads(p.read_text())
    bad["mean"] = bad["mean"][:3]
    p.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="'mean' holds 3 values for 6 channels"):
        Stats.load(p)


def test_cli_writes_stats_with_geometry(tmp_path, image_dir):
    out = tmp_path / "s.json"
    r = subprocess.run([sys.executable, "-m", "jpegfreq.stats", str(image_dir), "--channels", "24S",
                        "--size", "64", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert len(d["mean"]) == 24 and d["size"] == [64, 64] and d["geometry"]["out_h"] == 64
    assert "stats" in r.stderr           # the progress bar


def test_one_check_for_classification_and_detection_statistics():
    """Stats.check is the only statistics check: cube(stats=) and CocoJpeg both go through it."""
    from jpegfreq import ChannelSet, Geometry, sample_train
    from jpegfreq.detection import detection_geometry
    from jpegfreq.stats import detection_stats_geometry
    cs = ChannelSet.parse("24S")
    rng = np.random.default_rng(0)
    mean, std = rng.normal(0, 50, 24), rng.uniform(1, 40, 24)
    det = Stats(cs, mean, std, "jpeg-coeffs", (0, 0), 10, detection_stats_geometry(96, 160))
    cls = Stats(cs, mean, std, "jpeg-coeffs", (448, 448), 10, eval_geometry(448).to_dict())
    g = detection_geometry(333, 250, 96, 160, flip=True).cube_geometry()

    scale, offset = det.scale_offset(cs, "spatial", g)
    np.testing.assert_allclose(scale, 1 / std, rtol=1e-6)
    np.testing.assert_allclose(offset, -mean / std, rtol=1e-5)
    det.check(cs, "jpeg-coeffs", detection_stats_geometry(96, 160))
    with pytest.raises(ValueError, match="detection cubes at min_size=96, max_size=160"):
        det.check(cs, geometry=eval_geometry(448))
    with pytest.raises(ValueError, match="not a"):          # another resize rule
        det.check(cs, geometry=detection_geometry(333, 250, 120, 160).cube_geometry())
    with pytest.raises(ValueError, match="not a"):          # a crop, not the whole image
        det.check(cs, geometry=Geometry(g.out_h, g.out_w, (8.0, 0.0, 333.0, 250.0)))
    with pytest.raises(ValueError, match="min_size=800"):
        det.check(cs, geometry=detection_stats_geometry(800, 1333))

    cls.check(cs, geometry=eval_geometry(448))
    cls.check(cs, geometry=sample_train(500, 375, 448, rng=1))
    with pytest.raises(ValueError, match="448x448 inputs, not 600x800"):
        cls.check(cs, geometry=Geometry(600, 800, (0.0, 0.0, 400.0, 300.0)))
    with pytest.raises(ValueError, match="not detection cubes"):
        cls.check(cs, geometry=detection_stats_geometry(96, 160))
    with pytest.raises(ValueError, match="lack channels"):
        cls.check(ChannelSet.parse("64S"))
    with pytest.raises(ValueError, match="cannot normalize 'rgb'"):
        cls.check(None, "rgb")

    # the operator folds in exactly what the check approved
    data = make_jpeg("baseline-420", 333, 250)
    raw = jpegfreq.cube(data, cs, geometry=g)
    normed = jpegfreq.cube(data, cs, geometry=g, stats=det)
    np.testing.assert_allclose(normed, (raw - mean[:, None, None]) / std[:, None, None],
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="detection cubes"):
        jpegfreq.cube(data, cs, size=448, stats=det)
