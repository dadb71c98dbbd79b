"""jpegfreq.loader.JpegLoader and jpegfreq.shards: batches, determinism, ranks, bad images,
threads left behind, and the tar shard round trip."""
import io
import json
import os
import sys
import tarfile
import threading

import numpy as np
import pytest
import torch

import jpegfreq
from jpegfreq import loader as loader_mod
from jpegfreq.loader import JpegLoader
from jpegfreq.shards import expand_braces, main as shards_main, write_shards
from jpegfreq.stats import Stats

sys.path.insert(0, os.path.dirname(__file__))
from jpeg_factory import damaged, make_jpeg  # noqa: E402

SIZE = 64                       # 8x8 cubes: fast
CASES = ("baseline-420", "baseline-444", "progressive-420", "baseline-422", "gray")
CLASSES = ("ant", "bee", "cat")


def _tree(root, per_class=5, bad=()):
    """ROOT/CLASS/NNN.jpg from jpeg_factory (sizes and codings vary); ``bad``: (class,
    name, bytes) files added as they are."""
    for c, cls in enumerate(CLASSES):
        os.makedirs(root / cls, exist_ok=True)
        for i in range(per_class):
            w, h = 96 + 24 * ((i + c) % 4), 80 + 16 * ((2 * i + c) % 5)
            data = make_jpeg(CASES[(i + c) % len(CASES)], w, h, seed=10 * c + i)
            (root / cls / f"{i:03d}.jpg").write_bytes(data)
    for cls, name, data in bad:
        (root / cls / name).write_bytes(data)
    return str(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _tree(tmp_path_factory.mktemp("loader") / "train")


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    good = make_jpeg("baseline-420", 128, 96)
    header_only = dict(damaged(good))["truncated-in-header"]
    return _tree(tmp_path_factory.mktemp("bad") / "train", per_class=3,
                 bad=[("ant", "000a-garbage.jpg", os.urandom(3000)),
                      ("bee", "001a-header-only.jpg", header_only)])


def _all(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _cat(batches):
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def _expected(ld, folder_samples, order, epoch):
    """jpegfreq.cube of each sample with the geometry of the per-(seed, epoch, index) rule."""
    xs = []
    for i in order:
        path = folder_samples[i][0]
        src = jpegfreq.source.read_source(path)
        g = jpegfreq.sample_train(src.width, src.height, SIZE,
                                  np.random.default_rng([ld.seed, epoch, int(i)])) \
            if ld.train else jpegfreq.eval_geometry(SIZE)
        xs.append(jpegfreq.cube(src, "24S", SIZE, geometry=g, stats=ld.stats,
                                dtype="float32" if ld.dtype == "int8" else ld.dtype))
    return np.stack(xs)


# ---------------------------------------------------------------------------
# folders
# ---------------------------------------------------------------------------

def test_batches_shapes_len_classes(folder):
    ld = JpegLoader(folder, batch_size=4, size=SIZE, train=False, threads=2)
    assert ld.classes == list(CLASSES)
    assert len(ld) == 4                       # 15 images, eval keeps the short last batch
    batches = _all(ld)
    assert [len(x) for x, _ in batches] == [4, 4, 4, 3]
    x, y = batches[0]
    assert x.shape == (4, 24, SIZE // 8, SIZE // 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    _, y = _cat(batches)
    assert y.tolist() == [c for c in range(3) for _ in range(5)]    # file order
    tr = JpegLoader(folder, batch_size=4, size=SIZE, train=True, threads=2)
    assert len(tr) == 3 and len(_all(tr)) == 3        # train drops the short last batch
    assert ld.skipped == []


@pytest.mark.parametrize("train", [True, False])
def test_same_batches_for_1_2_4_threads_and_equal_to_cube(folder, train):
    runs = []
    for threads in (1, 2, 4):
        ld = JpegLoader(folder, batch_size=4, size=SIZE, train=train, seed=7, threads=threads)
        ld.set_epoch(3)
        runs.append(_all(ld))
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        for (xa, ya), (xb, yb) in zip(runs[0], other):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x, y = _cat(runs[0])
    samples = ld.data.samples
    n = len(samples)
    order = np.random.default_rng([7, 3, 2 ** 64 - 1]).permutation(n)[:len(y)] if train \
        else np.arange(n)
    assert y.tolist() == [samples[i][1] for i in order]
    np.testing.assert_array_equal(x.numpy(), _expected(ld, samples, order, 3))


def test_epochs_differ_when_training_eval_is_deterministic(folder):
    tr = JpegLoader(folder, batch_size=5, size=SIZE, train=True, threads=2)
    a = _cat(_all(tr))
    again = _cat(_all(tr))
    tr.set_epoch(1)
    b = _cat(_all(tr))
    assert torch.equal(a[0], again[0]) and torch.equal(a[1], again[1])
    assert not torch.equal(a[1], b[1])                 # another order
    assert sorted(a[1].tolist()) == sorted(b[1].tolist())
    ev = JpegLoader(folder, batch_size=5, size=SIZE, train=False, threads=2)
    e0 = _cat(_all(ev))
    ev.set_epoch(1)
    e1 = _cat(_all(ev))
    assert torch.equal(e0[0], e1[0]) and torch.equal(e0[1], e1[1])


def test_eval_every_image_once_across_two_ranks(folder):
    ref = JpegLoader(folder, batch_size=4, size=SIZE, train=False, threads=2)
    xr, yr = _cat(_all(ref))
    parts = []
    for rank in (0, 1):
        ld = JpegLoader(folder, batch_size=4, size=SIZE, train=False, threads=2, rank=rank,
                        world_size=2)
        parts.append(_cat(_all(ld)))
        assert len(ld) == -(-len(parts[-1][1]) // 4)
    assert len(parts[0][1]) + len(parts[1][1]) == len(yr) == 15
    got = sorted((int(y), x.numpy().tobytes()) for xs, ys in parts for x, y in zip(xs, ys))
    want = sorted((int(y), x.numpy().tobytes()) for x, y in zip(xr, yr))
    assert got == want


def test_train_ranks_get_disjoint_equal_shares(folder, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        ld = JpegLoader(folder, batch_size=1, size=SIZE, train=True, threads=1)
        assert (ld.rank, ld.world_size) == (rank, 2)
        xs, _ = _cat(_all(ld))
        seen.append({x.numpy().tobytes() for x in xs})
        assert len(xs) == 7 == len(ld)                    # 15 // 2 each
    assert not seen[0] & seen[1]


def test_bad_images_skipped_and_named(bad_folder):
    ld = JpegLoader(bad_folder, batch_size=4, size=SIZE, train=False, threads=2)
    x, y = _cat(_all(ld))
    assert len(y) == 9                                    # 11 files, 2 unreadable
    names = sorted(os.path.basename(p) for p, _ in ld.skipped)
    assert names == ["000a-garbage.jpg", "001a-header-only.jpg"]
    assert all(reason for _, reason in ld.skipped)
    assert y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # the compacted rows are the good files' cubes, in order
    good = [(p, c) for p, c in ld.data.samples if "a-" not in os.path.basename(p)]
    want = np.stack([jpegfreq.cube(p, "24S", SIZE) for p, _ in good])
    np.testing.assert_array_equal(x.numpy(), want)
    tr = JpegLoader(bad_folder, batch_size=4, size=SIZE, train=True, threads=2)
    _all(tr)
    assert len(tr.skipped) <= 2             # 2 batches of 4 of the 11 files are drawn
    assert {os.path.basename(p) for p, _ in tr.skipped} <= {"000a-garbage.jpg",
                                                           "001a-header-only.jpg"}


def test_break_and_exceptions_leave_no_thread(folder, monkeypatch):
    start = threading.active_count()
    ld = JpegLoader(folder, batch_size=2, size=SIZE, train=True, threads=3)
    for i, _ in enumerate(ld):
        assert threading.active_count() == start + 3
        if i == 1:
            break
    assert threading.active_count() == start

    def loop():
        for _ in ld:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        loop()
    assert threading.active_count() == start

    real = loader_mod.cube

    def broken(src, *a, **kw):
        if src.name.endswith("002.jpg"):
            raise RuntimeError("worker bug")
        return real(src, *a, **kw)
    monkeypatch.setattr(loader_mod, "cube", broken)
    with pytest.raises(RuntimeError, match="worker bug"):
        for _ in ld:
            pass
    assert threading.active_count() == start
    monkeypatch.setattr(loader_mod, "cube", real)
    with JpegLoader(folder, batch_size=2, size=SIZE, threads=2) as ld2:
        it = iter(ld2)
        next(it)
        assert threading.active_count() == start + 2
    assert threading.active_count() == start
    assert len(_all(ld)) == len(ld)                      # still usable after all that


def test_buffers_reused_and_copy(folder):
    ld = JpegLoader(folder, batch_size=4, size=SIZE, train=False, threads=2, prefetch=1,
                    pin_memory=False)
    ptrs = {x.data_ptr() for x, _ in ld}
    assert len(ptrs) == 2                                  # prefetch + 1 buffers
    kept = list(JpegLoader(folder, batch_size=4, size=SIZE, train=False, threads=2,
                           prefetch=1, copy=True))
    ref = _all(ld)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(kept, ref))


def test_float16_and_stats(folder):
    st = Stats(jpegfreq.ChannelSet.parse("24S"), np.linspace(-5, 5, 24), np.linspace(1, 30, 24),
               "jpeg-coeffs", (SIZE, SIZE), 10)
    ld = JpegLoader(folder, batch_size=8, size=SIZE, train=False, threads=2, dtype="float16",
                    stats=st)
    x, _ = _cat(_all(ld))
    assert x.dtype == torch.float16
    want = np.stack([jpegfreq.cube(p, "24S", SIZE, stats=st, dtype="float16")
                     for p, _ in ld.data.samples])
    np.testing.assert_array_equal(x.numpy(), want)
    ld32 = JpegLoader(folder, batch_size=8, size=SIZE, train=False, threads=2,
                      stats=st.to_dict())
    x32, _ = _cat(_all(ld32))
    np.testing.assert_array_equal(
        x32.numpy(), np.stack([jpegfreq.cube(p, "24S", SIZE, stats=st)
                               for p, _ in ld.data.samples]))
    with pytest.raises(ValueError, match="statistics"):
        JpegLoader(folder, batch_size=8, size=2 * SIZE, stats=st)


def test_with_index_eval_two_ranks_with_skipped_images(bad_folder):
    samples = JpegLoader(bad_folder, 4, size=SIZE, threads=1).data.samples
    bad = {i for i, (p, _) in enumerate(samples) if "a-" in os.path.basename(p)}
    assert len(bad) == 2
    seen = []
    for rank in (0, 1):
        ld = JpegLoader(bad_folder, batch_size=3, size=SIZE, train=False, threads=2, rank=rank,
                        world_size=2, with_index=True)
        for x, y, idx in ld:
            assert idx.dtype == torch.int64 and len(idx) == len(y) == len(x)
            for xi, yi, i in zip(x, y, idx.tolist()):
                assert int(yi) == samples[i][1]          # the row's own label and cube
                np.testing.assert_array_equal(xi.numpy(),
                                              jpegfreq.cube(samples[i][0], "24S", SIZE))
            seen += idx.tolist()
        assert len(ld.skipped) == sum(i % 2 == rank for i in bad)
    # every readable image exactly once over the two ranks, the unreadable ones never
    assert sorted(seen) == sorted(set(range(len(samples))) - bad)


def test_with_index_train_is_the_epoch_order(folder):
    ld = JpegLoader(folder, batch_size=4, size=SIZE, train=True, seed=3, threads=2,
                    with_index=True)
    ld.set_epoch(2)
    batches = [tuple(t.clone() for t in b) for b in ld]
    assert all(len(b) == 3 for b in batches)
    idx = torch.cat([b[2] for b in batches]).tolist()
    n = len(ld.data.samples)
    assert idx == np.random.default_rng([3, 2, 2 ** 64 - 1]).permutation(n)[:len(idx)].tolist()
    np.testing.assert_array_equal(torch.cat([b[0] for b in batches]).numpy(),
                                  _expected(ld, ld.data.samples, idx, 2))


def _stats(size=SIZE):
    return Stats(jpegfreq.ChannelSet.parse("24S"), np.linspace(-5, 5, 24),
                 np.linspace(1, 30, 24), "jpeg-coeffs", (size, size), 10)


def test_int8_needs_stats_and_quantises_the_normalised_cube(folder):
    with pytest.raises(ValueError, match="stats"):
        JpegLoader(folder, 4, size=SIZE, dtype="int8")
    st = _stats()
    ld = JpegLoader(folder, batch_size=8, size=SIZE, train=True, threads=2, dtype="int8",
                    stats=st, with_index=True)
    step = ld.int8_scale
    assert step.dtype == torch.float32 and step.shape == (24,)
    assert torch.allclose(step, torch.full((24,), loader_mod.INT8_CLIP / 127))
    batches = [tuple(t.clone() for t in b) for b in ld]
    x = torch.cat([b[0] for b in batches])
    idx = torch.cat([b[2] for b in batches]).tolist()
    assert x.dtype == torch.int8 and x.shape[1:] == (24, SIZE // 8, SIZE // 8)
    ref = torch.from_numpy(_expected(ld, ld.data.samples, idx, 0))   # float32, normalised
    q = ref / step[:, None, None]
    assert float(q.abs().max()) > 10                   # the test data does use the range
    want = q.round().clamp(-127, 127)
    # the step is folded into the operator's normalisation: within one float rounding of
    # a .5 boundary the two may round apart, never by more than one step
    diff = (x.float() - want).abs()
    assert float(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-3
    inside = q.abs() < 127
    err = (x.float() * step[:, None, None] - ref)[inside].abs()
    assert float(err.max()) <= float(step[0]) * 0.5001 + 1e-6
    # beyond the clip: +-127
    assert torch.equal(x[q > 128], torch.full_like(x[q > 128], 127))
    assert torch.equal(x[q < -128], torch.full_like(x[q < -128], -127))


def test_rgb_source_shape(folder):
    ld = JpegLoader(folder, batch_size=4, size=32, train=True, threads=2, source="rgb")
    x, y = next(iter(ld))
    assert x.shape == (4, 3, 32, 32) and float(x.max()) <= 1.0


def test_arguments_checked(folder, tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        JpegLoader(folder, 4, dtype="int16")
    with pytest.raises(ValueError, match="dtype"):
        JpegLoader(folder, 4, dtype="uint8", stats=_stats(448))
    with pytest.raises(ValueError, match="rank"):
        JpegLoader(folder, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        JpegLoader(folder, 0)
    with pytest.raises(FileNotFoundError):
        JpegLoader(str(tmp_path / "nothing-{0..1}.tar"), 4)


# ---------------------------------------------------------------------------
# shards
# ---------------------------------------------------------------------------

def test_expand_braces():
    assert expand_braces("t-{000..002}.tar") == ["t-000.tar", "t-001.tar", "t-002.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(ValueError):
        expand_braces("t-{3..1}.tar")


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("shards") / "train")
    assert shards_main([folder, prefix, "--shard-size", "4", "--no-progress"]) == 0
    return prefix


def test_shard_layout(shards, folder):
    paths = sorted(p for p in os.listdir(os.path.dirname(shards)) if p.endswith(".tar"))
    assert paths == [f"train-{i:06d}.tar" for i in range(4)]
    with tarfile.open(f"{shards}-000000.tar") as tf:
        assert tf.getnames() == ["00000000.jpg", "00000000.cls", "00000001.jpg", "00000001.cls",
                                 "00000002.jpg", "00000002.cls", "00000003.jpg", "00000003.cls"]
        with open(os.path.join(folder, "ant", "000.jpg"), "rb") as f:
            assert tf.extractfile("00000000.jpg").read() == f.read()
    meta = json.load(open(f"{shards}-classes.json"))
    assert meta["classes"] == list(CLASSES)
    assert sum(meta["shards"].values()) == 15


def _pairs(batches):
    return sorted((int(y), x.numpy().tobytes()) for xs, ys in batches for x, y in zip(xs, ys))


@pytest.mark.parametrize("train", [False, True])
def test_shards_round_trip(folder, shards, train):
    kw = dict(batch_size=4, size=SIZE, train=train, threads=2, drop_last=False)
    ref = JpegLoader(folder, **kw)
    sh = JpegLoader(shards + "-{000000..000003}.tar", shuffle_buffer=5, **kw)
    assert sh.classes == list(CLASSES) and len(sh) == len(ref) == 4
    # same (label, cube) set: the key is the folder index, so even train crops agree
    assert _pairs(_all(sh)) == _pairs(_all(ref))
    assert sh.skipped == []
    if train:
        a = _all(sh)
        sh.set_epoch(1)
        b = _all(sh)
        assert [y.tolist() for _, y in a] != [y.tolist() for _, y in b]


def test_shards_eval_ranks_and_pipe(folder, shards):
    ref = _pairs(_all(JpegLoader(folder, 4, size=SIZE, train=False, threads=2)))
    paths = [f"{shards}-{i:06d}.tar" for i in range(4)]
    parts = []
    for rank in (0, 1):
        ld = JpegLoader(paths, 4, size=SIZE, train=False, threads=2, rank=rank, world_size=2)
        got = _all(ld)
        assert len(ld) == len(got)
        parts += got
    assert _pairs(parts) == ref
    pipes = [f"pipe:cat {p}" for p in paths]
    ld = JpegLoader(pipes, 4, size=SIZE, train=False, threads=2, classes=list(CLASSES))
    assert _pairs(_all(ld)) == ref and ld.skipped == []
    with pytest.raises(TypeError, match="unknown"):
        len(ld)
    ld = JpegLoader(["pipe:cat /nonexistent/shard.tar"], 4, size=SIZE, train=False)
    assert _all(ld) == [] and "status" in ld.skipped[0][1]


def test_corrupt_member_and_truncated_shard(folder, tmp_path, monkeypatch):
    import jpegfreq.shards
    monkeypatch.setattr(jpegfreq.shards, "MAX_MEMBER_BYTES", 100_000)
    prefix = str(tmp_path / "s")
    write_shards(folder, prefix, shard_size=8, progress=False)
    # one image member garbage, one label missing, one label out of range, one image too big
    src, dst = f"{prefix}-000000.tar", f"{prefix}-bad.tar"
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            if m.name == "00000002.jpg":
                data = b"\x00garbage" * 100
            if m.name == "00000005.cls":
                continue
            if m.name == "00000006.cls":
                data = b"99"
            if m.name == "00000007.jpg":
                data = bytes(200_000)
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
    ld = JpegLoader([dst], 4, size=SIZE, train=False, threads=2, classes=list(CLASSES))
    x, y = _cat(_all(ld))
    assert len(y) == 4
    assert sorted(n for n, _ in ld.skipped) == [f"{dst}:00000002", f"{dst}:00000005",
                                                f"{dst}:00000006", f"{dst}:00000007.jpg"]
    reasons = dict(ld.skipped)
    assert "classes" in reasons[f"{dst}:00000006"]
    assert "exceeds the limit" in reasons[f"{dst}:00000007.jpg"]
    # a shard cut in the middle: what came before is kept, the break is recorded
    cut = f"{prefix}-cut.tar"
    with open(f"{prefix}-000001.tar", "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[:len(data) // 2 + 100])
    ld = JpegLoader([cut], 4, size=SIZE, train=False, threads=2, classes=list(CLASSES))
    got = _all(ld)
    assert 0 < sum(len(y) for _, y in got) < 7
    assert [n for n, _ in ld.skipped] == [cut]
    assert "unreadable tar stream" in ld.skipped[0][1]


def test_breaking_out_of_pipe_shards_ends_the_command(folder, shards):
    start = threading.active_count()
    paths = [f"pipe:cat {shards}-{i:06d}.tar" for i in range(4)]
    ld = JpegLoader(paths, 2, size=SIZE, train=True, threads=2, classes=list(CLASSES),
                    shuffle_buffer=3)
    for i, (x, y) in enumerate(ld):
        if i == 1:
            break
    assert threading.active_count() == start
    assert ld.skipped == []                 # stopping early is not a failed command
    got = _all(ld)                          # and the next pass reads everything again
    assert sum(len(y) for _, y in got) == 14


def test_pin_memory_needs_cuda(folder):
    ld = JpegLoader(folder, 4, size=SIZE, pin_memory=True, threads=1)
    assert ld.pin_memory == torch.cuda.is_available()
    x, _ = next(iter(ld))
    assert x.is_pinned() == torch.cuda.is_available()


def test_color_jitter_is_drawn_per_sample_and_same_for_any_thread_count(tmp_path):
    """Colour ops come from each sample's generator after its crop: the batches do not
    depend on the threads, differ from the plain ones, and evaluation ignores them."""
    import numpy as np
    from jpegfreq.synthetic import make_dataset
    import jpegfreq
    make_dataset(str(tmp_path), 4, 2, 1, seed=0, min_size=80, max_size=160)
    folder = str(tmp_path / "train")

    def batches(threads, **kw):
        ld = jpegfreq.JpegLoader(folder, 4, channels="24S", size=64, threads=threads, **kw)
        ld.set_epoch(1)
        return [x.clone() for x, _ in ld]

    jit = dict(color_jitter=(0.4, 0.4, 0.4, 0.1), grayscale_p=0.5)
    one, two = batches(1, **jit), batches(2, **jit)
    plain = batches(2)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(one, two))
    assert not all(np.allclose(a.numpy(), b.numpy()) for a, b in zip(one, plain))
    ld = jpegfreq.JpegLoader(folder, 4, channels="24S", size=64, train=True, **jit)
    g, p = ld.plan(3, 100, 80)
    rng = ld.rng(3)
    assert g == jpegfreq.sample_train(100, 80, 64, rng)
    assert p == jpegfreq.Photometric.sample(rng, 0.4, 0.4, 0.4, 0.1, grayscale_p=0.5)
    ev = jpegfreq.JpegLoader(folder, 4, channels="24S", size=64, train=False, **jit)
    assert ev.plan(3, 100, 80) == (ev.eval_geometry, None)


def test_color_jitter_is_checked_up_front(tmp_path):
    import pytest
    from jpegfreq.synthetic import make_dataset
    import jpegfreq
    make_dataset(str(tmp_path), 4, 1, 1, seed=0, min_size=80, max_size=160)
    with pytest.raises(ValueError, match="ColorJitter"):
        jpegfreq.JpegLoader(str(tmp_path / "train"), 2, color_jitter=(0.4, 0.4))
    with pytest.raises(ValueError, match="grayscale_p"):
        jpegfreq.JpegLoader(str(tmp_path / "train"), 2, grayscale_p=1.5)


@pytest.fixture(scope="module")
def cut_folder(tmp_path_factory):
    """Two truncated files among good ones: cut at 25% and 90% of their entropy-coded data."""
    good = make_jpeg("baseline-420", 128, 96)
    cuts = dict(damaged(good))
    return _tree(tmp_path_factory.mktemp("cut") / "train", per_class=2,
                 bad=[("ant", "000a-cut25.jpg", cuts["truncated-25pct"]),
                      ("bee", "001a-cut90.jpg", cuts["truncated-90pct"])])


def test_partly_decoded_images_are_kept_and_listed_as_damaged(cut_folder):
    ld = JpegLoader(cut_folder, batch_size=4, size=SIZE, train=False, threads=2)
    x, y = _cat(_all(ld))
    assert len(y) == 8 and not ld.skipped
    got = {os.path.basename(p): share for p, share in ld.damaged}
    assert set(got) == {"000a-cut25.jpg", "001a-cut90.jpg"}
    for name, share in got.items():   # the share the reader reports for the same file
        info = {}
        jpegfreq.cube(os.path.join(cut_folder, "ant" if "25" in name else "bee", name),
                      "24S", SIZE, info=info)
        assert share == pytest.approx(info["decoded"]) and 0 < share < 1
    assert got["000a-cut25.jpg"] < got["001a-cut90.jpg"]


def test_min_decoded_skips_the_ones_below_it_naming_the_share(cut_folder):
    ld = JpegLoader(cut_folder, batch_size=4, size=SIZE, train=False, threads=2,
                    min_decoded=0.6)
    _, y = _cat(_all(ld))
    assert len(y) == 7
    assert [os.path.basename(p) for p, _ in ld.skipped] == ["000a-cut25.jpg"]
    assert "% of the rows the cube reads were decoded" in ld.skipped[0][1]
    assert [os.path.basename(p) for p, _ in ld.damaged] == ["001a-cut90.jpg"]
    with pytest.raises(ValueError, match="min_decoded"):
        JpegLoader(cut_folder, batch_size=4, min_decoded=1.5)


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_first_pass_under_inference_mode_then_a_normal_one(folder, dtype):
    """Buffers made inside torch.inference_mode() must still take the workers' writes later."""
    kw = {"stats": _stats()} if dtype == "int8" else {}
    ld = JpegLoader(folder, batch_size=4, size=SIZE, train=False, threads=2, dtype=dtype, **kw)
    with torch.inference_mode():
        first = [x.clone() for x, _ in ld]
    second = [x.clone() for x, _ in ld]
    assert len(first) == len(second) > 0
    assert all(torch.equal(a, b) for a, b in zip(first, second))
