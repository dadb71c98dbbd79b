"""No leaks on any path, and the same answers from many threads at once.

A leak in the C layer (a decoder not destroyed after a longjmp, a buffer
view not released, a numpy array not freed on an error path) shows as RSS
that keeps growing over thousands of reads; a thread-safety fault shows as
results that differ from the serial ones.
"""
import gc
import os
import random
import threading
import time

import numpy as np
import pytest

import jpeg_factory as F
from threads import run_in_threads
import jpegfreq
from jpegfreq import JpegError

ROUNDS = 100_000         # mixed calls after warm-up: about 4 s here
# RSS growth allowed over ROUNDS: about 0.2 MB is seen, so this catches a leak
# of 100 bytes or more per call (a decoder struct, a numpy array, a buffer view)
GROWTH_BOUND = 10 << 20


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _inputs():
    """[(id, bytes)]: small valid files of several kinds and damaged ones."""
    out = []
    for case in ("baseline-420", "progressive-420", "arithmetic-420", "restart-420", "gray",
                 "baseline-444", "sample-411", "exif-orientation-6", "tiny-17x9"):
        size = (None, None) if case.startswith("tiny") else (64, 48)
        out.append((case, F.make_jpeg(case, *size)))
    base = F.make_jpeg("progressive-420", 64, 48)
    for name, value in F.damaged(base):
        if name in ("truncated-50pct", "bitflip-entropy-10", "huge-dimensions", "segment-length-2",
                    "bogus-dht-counts", "png", "empty", "sos-unknown-component", "missing-eoi"):
            out.append((f"damaged-{name}", value))
    out.append(("12bit", F.make_jpeg("12bit", 64, 48)))
    out.append(("lossless", F.make_jpeg("lossless", 64, 48)))
    return out


_GEOM = jpegfreq.Geometry(out_h=64, out_w=64, resize=73)
_TRAIN = jpegfreq.Geometry(out_h=32, out_w=48, box=(3.5, 2.0, 50.0, 41.0), flip=True, exif=True)

# (name, fn): every call kind the loop mixes
CALLS = [
    ("read_header", lambda s: jpegfreq.read_header(s)),
    ("read_coefficients", lambda s: jpegfreq.read_coefficients(s)),
    ("read_coefficients_strict", lambda s: jpegfreq.read_coefficients(s, strict=True)),
    ("read_coefficients_freqs", lambda s: jpegfreq.read_coefficients(s, freqs=[0, 1, 8, 9])),
    ("cube_24S", lambda s: jpegfreq.cube(s, "24S", geometry=_GEOM)),
    ("cube_train_f16", lambda s: jpegfreq.cube(s, "64T", geometry=_TRAIN, dtype="float16")),
    ("cube_train_i8", lambda s: jpegfreq.cube(s, "24S", geometry=_TRAIN, dtype="int8")),
    ("cube_limit", lambda s: jpegfreq.cube(s, "6S", geometry=_GEOM, max_pixels=100)),
    ("cube_out", lambda s: jpegfreq.cube(s, "24S", geometry=_GEOM,
                                         out=np.empty((24, 8, 8), np.float32)).copy()),
]


def _call(fn, src):
    """A comparable outcome: arrays (or header) on success, the message on JpegError."""
    try:
        r = fn(src)
    except JpegError as e:
        return ("error", e.kind, str(e))
    if isinstance(r, np.ndarray):
        return ("array", r)
    if isinstance(r, jpegfreq.Coefficients):
        return ("coefs", r.coefficients, r.quant, tuple(r.warnings))
    return ("header", r)


def _same(a, b):
    if a[0] != b[0]:
        return False
    if a[0] == "array":
        return a[1].dtype == b[1].dtype and np.array_equal(a[1], b[1])
    if a[0] == "coefs":
        return (all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))
                and all(np.array_equal(x, y) for x, y in zip(a[2], b[2])) and a[3] == b[3])
    return a == b


def _run(inputs, n, seed, tmp_file=None):
    rng = random.Random(seed)
    for i in range(n):
        _, data = inputs[rng.randrange(len(inputs))]
        _, fn = CALLS[rng.randrange(len(CALLS))]
        src = tmp_file if (tmp_file and i % 50 == 0) else data
        _call(fn, src)
        if i % 997 == 0:           # a missing file: the io error path
            _call(CALLS[1][1], "/nonexistent/jpegfreq-leak-test.jpg")


def test_no_leak_over_100000_reads(tmp_path):
    """Guards against leaks on success, warning, error and limit paths (bytes and paths)."""
    inputs = _inputs()
    path = tmp_path / "file.jpg"
    path.write_bytes(inputs[0][1])
    t0 = time.perf_counter()
    _run(inputs, 2_000, seed=1, tmp_file=str(path))          # warm-up: caches, arenas
    gc.collect()
    before = _rss()
    _run(inputs, ROUNDS, seed=2, tmp_file=str(path))
    gc.collect()
    growth = _rss() - before
    elapsed = time.perf_counter() - t0
    assert growth < GROWTH_BOUND, f"RSS grew by {growth / 1e6:.1f} MB over {ROUNDS} reads"
    assert elapsed < 120, f"{elapsed:.0f} s: the leak loop is meant to stay under a minute"


def test_batched_file_reads_do_not_leak(tmp_path):
    """read_sources (the loader's reads): files, byte ranges, missing paths, a folder,
    damaged and non-JPEG files, bytes among them, over and over."""
    from jpegfreq.source import FileRange, read_sources
    items = []
    for i, (name, data) in enumerate(_inputs()):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(b"pad" + data)
        items += [FileRange(str(path), 3, len(data), name), FileRange(str(path), 3,
                  len(data) + 9, name)]
        path = tmp_path / f"{i}-whole.jpg"
        path.write_bytes(data)
        items += [str(path), data]
    items += [str(tmp_path / "missing.jpg"), str(tmp_path)]
    rng = random.Random(0)

    def rounds(n):
        for _ in range(n):
            read_sources(rng.sample(items, 8))
    rounds(300)
    gc.collect()
    before = _rss()
    rounds(3000)
    gc.collect()
    assert _rss() - before < 8 << 20


def test_spatial_path_does_not_leak():
    inputs = [(i, d) for i, d in _inputs() if not i.startswith("damaged-huge")]
    fn = lambda s: jpegfreq.cube(s, "24S", geometry=_GEOM, source="spatial")  # noqa: E731
    for _, d in inputs * 10:
        _call(fn, d)
    gc.collect()
    before = _rss()
    for _ in range(15):
        for _, d in inputs:
            _call(fn, d)
    gc.collect()
    assert _rss() - before < 8 << 20


@pytest.mark.parametrize("threads", [4, 8])
def test_threads_agree_with_serial(threads):
    """Guards: shared state in the C layer (band cache, scratch buffers, error
    managers) is per call or locked: threads hammering mixed valid and damaged
    inputs get exactly the serial results."""
    inputs = _inputs()
    work = [(i, c) for i in range(len(inputs)) for c in range(len(CALLS))]
    serial = {(i, c): _call(CALLS[c][1], inputs[i][1]) for i, c in work}
    rounds = 6
    barrier = threading.Barrier(threads)
    mismatches, crashes = [], []

    def hammer(k):
        rng = random.Random(k)
        mine = work * rounds
        rng.shuffle(mine)
        barrier.wait()
        try:
            for i, c in mine:
                got = _call(CALLS[c][1], inputs[i][1])
                if not _same(got, serial[(i, c)]):
                    mismatches.append((inputs[i][0], CALLS[c][0]))
        except BaseException as e:  # noqa: BLE001 - reported below
            crashes.append(repr(e))

    run_in_threads(hammer, threads)
    assert not crashes, crashes[:5]
    assert not mismatches, sorted(set(mismatches))[:20]



def test_band_cache_churn_across_threads():
    """Guards the operator cache's eviction: 240 distinct train geometries (more than
    its 96 slots) from 6 threads at once evict bands other threads still hold;
    every cube must still equal its serial value."""
    data = [F.make_jpeg(c, 96, 72) for c in ("baseline-420", "gray", "sample-411")]
    rng = np.random.default_rng(7)
    geoms = []
    for _ in range(240):
        x0, y0 = rng.uniform(-4, 40, 2)
        geoms.append(jpegfreq.Geometry(out_h=24, out_w=32, box=(x0, y0, x0 + rng.uniform(20, 60),
                                                                y0 + rng.uniform(16, 50)),
                                       flip=bool(rng.integers(2))))
    work = [(i, g) for i in range(len(data)) for g in range(len(geoms))]
    serial = {w: jpegfreq.cube(data[w[0]], "24S", geometry=geoms[w[1]]) for w in work}
    bad, errors = [], []

    def hammer(k):
        mine = list(work)
        random.Random(k).shuffle(mine)
        try:
            for w in mine:
                if not np.array_equal(jpegfreq.cube(data[w[0]], "24S", geometry=geoms[w[1]]),
                                      serial[w]):
                    bad.append(w)
        except BaseException as e:  # noqa: BLE001
            errors.append(repr(e))

    run_in_threads(hammer, 6)
    assert not errors, errors[:3]
    assert not bad, bad[:10]


def test_cube_request_failures_release_their_buffers():
    """Every way the C cube refuses (a bad request once the channel buffers are held, the
    spatial route, a wrong out buffer, a damaged file) gives back each buffer it took."""
    from jpegfreq import _jpegfreq
    import sys
    cmyk, good = F.make_jpeg("cmyk", 64, 48), F.make_jpeg("baseline-420", 64, 48)
    bad = dict(F.damaged(F.make_jpeg("baseline-420", 64, 48)))["truncated-50pct"]
    cs = jpegfreq.ChannelSet.parse("24S")
    comp, k = np.array(cs.component_of, np.int32), np.array(cs.k, np.int32)
    scale, offset = np.ones(24, np.float32), np.zeros(24, np.float32)
    out = np.empty((24, 8, 8), np.float32)
    held = [comp, k, scale, offset, out]
    refs = [sys.getrefcount(a) for a in held]
    calls = [
        (lambda: _jpegfreq.cube(good, comp, k, 64, 64, scale, offset, resize=73, orientation=9),
         ValueError),
        (lambda: _jpegfreq.cube(cmyk, comp, k, 64, 64, scale, offset, resize=73, out=out),
         _jpegfreq.Error),
        (lambda: _jpegfreq.cube(good, comp, k, 64, 56, scale, offset, resize=73, out=out),
         ValueError),
        (lambda: _jpegfreq.cube(bad, comp, k, 64, 64, scale, offset, resize=73, out=out,
                                strict=True), _jpegfreq.Error),
    ]
    for _ in range(200):
        for fn, exc in calls:
            with pytest.raises(exc):
                fn()
    assert [sys.getrefcount(a) for a in held] == refs
    gc.collect()
    before = _rss()
    for _ in range(5000):
        for fn, exc in calls:
            try:
                fn()
            except exc:
                pass
    gc.collect()
    assert _rss() - before < 8 << 20
