"""jpegfreq.shards read by JpegLoader: shard order per epoch, the shuffle buffer, rank
splits in training, damaged archives (cut, garbage, bad labels), and no command left running
after Ctrl-C or an exception in the loop."""
import io
import os
import subprocess
import tarfile
import threading

import numpy as np
import pytest
import torch

import jpegfreq.shards
from jpegfreq.loader import JpegLoader
from jpegfreq.shards import ShardData, write_shards

from test_loader import CLASSES, SIZE, _all, _pairs, _tree

N = 15
SHARDS = 5          # 3 samples each


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _tree(tmp_path_factory.mktemp("shards-src") / "train")


@pytest.fixture(scope="module")
def prefix(folder, tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("shards") / "train")
    write_shards(folder, prefix, shard_size=3, progress=False)
    return prefix


def _pattern(prefix):
    return prefix + "-{000000..%06d}.tar" % (SHARDS - 1)


def _index_order(ld):
    return [int(i) for b in ld for i in b[2]]


def test_shard_order_changes_per_epoch_and_is_shared_by_ranks(prefix):
    data = ShardData(_pattern(prefix))
    orders = [data.shards(True, 0, e, 0, 1) for e in range(4)]
    assert all(sorted(o) == sorted(data.urls) for o in orders)
    assert len({tuple(o) for o in orders}) > 1               # a new order per epoch
    assert data.shards(True, 0, 1, 0, 1) == orders[1]         # and the same one again
    assert data.shards(False, 0, 1, 0, 1) == data.urls        # evaluation: as given
    for e in range(3):        # training ranks: the epoch's order dealt out, disjoint, whole
        parts = [data.shards(True, 0, e, r, 2) for r in (0, 1)]
        assert parts[0] + parts[1] != [] and not set(parts[0]) & set(parts[1])
        assert sorted(parts[0] + parts[1]) == sorted(data.urls)
        assert parts[0] == data.shards(True, 0, e, 0, 1)[0::2]


def test_shuffle_buffer(prefix):
    kw = dict(batch_size=1, size=SIZE, train=True, threads=1, drop_last=False,
              with_index=True)
    # a buffer of one sample: the stream itself, i.e. the epoch's shard order, in member order
    one = JpegLoader(_pattern(prefix), shuffle_buffer=1, **kw)
    one.set_epoch(2)
    want = [i for u in one.data.shards(True, 0, 2, 0, 1)
            for i in range(3 * int(u[-10:-4]), 3 * int(u[-10:-4]) + 3)]
    assert _index_order(one) == want
    big = JpegLoader(_pattern(prefix), shuffle_buffer=8, **kw)
    big.set_epoch(2)
    got = _index_order(big)
    assert sorted(got) == list(range(N)) and got != want      # mixed across shards
    assert _index_order(big) == got                           # reproducible
    big.set_epoch(3)
    assert _index_order(big) != got


def test_training_ranks_read_disjoint_shards(prefix):
    seen = []
    for rank in (0, 1):
        ld = JpegLoader(_pattern(prefix), 2, size=SIZE, train=True, threads=1, rank=rank,
                        world_size=2, drop_last=False, with_index=True)
        ld.set_epoch(1)
        got = _index_order(ld)
        assert len(got) == ld.data.count(True, rank, 2, 0, 1)
        seen.append(set(got))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(N))


def _rewrite(src, dst, change):
    """Copy shard src to dst with change(name, data) -> data (None drops the member)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as tout:
        for m in tin.getmembers():
            data = change(m.name, tin.extractfile(m).read())
            if data is not None:
                m.size = len(data)
                tout.addfile(m, io.BytesIO(data))


def _load(path, **kw):
    ld = JpegLoader([path], 4, size=SIZE, train=False, threads=2, classes=list(CLASSES),
                    with_index=True, **kw)
    return _index_order(ld), ld.skipped


def test_labels_that_are_not_integers_and_members_that_are_not_images(prefix, tmp_path):
    dst = str(tmp_path / "labels.tar")
    bad = {"00000000.cls": b"cat", "00000001.cls": b"-1", "00000002.jpg": b"not a jpeg"}
    _rewrite(f"{prefix}-000000.tar", dst, lambda n, d: bad.get(n, d))
    got, skipped = _load(dst)
    assert got == []
    reasons = dict(skipped)
    assert set(reasons) == {f"{dst}:00000000", f"{dst}:00000001", f"{dst}:00000002.jpg"} \
        or set(reasons) == {f"{dst}:00000000", f"{dst}:00000001", f"{dst}:00000002"}
    assert "integer" in reasons[f"{dst}:00000000"] and "integer" in reasons[f"{dst}:00000001"]
    name = next(n for n in reasons if n.startswith(f"{dst}:00000002"))
    assert reasons[name]                                  # the decoder's reason


@pytest.mark.parametrize("how", ["at-a-header", "inside-a-header", "inside-data",
                                 "garbage-header", "empty"])
def test_damaged_archives_keep_what_came_before_and_name_the_shard(prefix, tmp_path, how):
    with open(f"{prefix}-000001.tar", "rb") as f:
        data = f.read()
    with tarfile.open(f"{prefix}-000001.tar") as tf:
        members = tf.getmembers()
    second = members[2].offset         # the header of sample 4's image
    cut = {"at-a-header": data[:second], "inside-a-header": data[:second + 100],
           "inside-data": data[:members[2].offset_data + 500],
           "garbage-header": data[:second] + os.urandom(512) + data[second + 512:],
           "empty": b""}[how]
    path = str(tmp_path / f"{how}.tar")
    with open(path, "wb") as f:
        f.write(cut)
    got, skipped = _load(path)
    assert got == ([] if how == "empty" else [3])         # sample 3 came before the damage
    assert [n for n, _ in skipped] == [path]
    assert "unreadable tar stream" in skipped[0][1]
    # the same bytes through a pipe: read as a stream, the same samples, the shard named
    got, skipped = _load(f"pipe:cat {path}")
    assert got == ([] if how == "empty" else [3])
    if how in ("inside-data", "empty"):
        assert [n for n, _ in skipped] == [f"pipe:cat {path}"]


class _Procs:
    """Every subprocess.Popen the shard reader starts."""

    def __init__(self, monkeypatch):
        self.procs = []
        real = subprocess.Popen
        procs = self.procs

        def popen(*a, **kw):
            p = real(*a, **kw)
            procs.append(p)
            return p
        monkeypatch.setattr(jpegfreq.shards.subprocess, "Popen", popen)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_ctrl_c_or_an_exception_in_the_loop_leaves_no_thread_and_no_command(
        folder, tmp_path, monkeypatch, exc):
    procs = _Procs(monkeypatch).procs
    start = {t.name for t in threading.enumerate()}
    one = str(tmp_path / "one")
    write_shards(folder, one, shard_size=N, progress=False)    # one shard of 15 samples
    # a command that would run on for a minute after its shard: the loop stops in the
    # middle of it, so it must be ended, not waited for
    ld = JpegLoader([f"pipe:cat {one}-000000.tar; sleep 60"], 1, size=SIZE, train=True,
                    threads=2, classes=list(CLASSES), shuffle_buffer=1, prefetch=1)

    def loop():
        for i, (x, y) in enumerate(ld):
            assert any(t.name.startswith("jpegfreq-loader-") for t in threading.enumerate())
            if i == 1:
                raise exc("stop")
    with pytest.raises(exc):
        loop()
    assert not [t.name for t in threading.enumerate()
                if t.name.startswith("jpegfreq-loader-") or t.name not in start]
    assert procs and all(p.poll() is not None for p in procs)   # ended, none left running
    assert ld.skipped == []


def test_loader_reads_shards_as_the_folder(folder, prefix):
    kw = dict(batch_size=4, size=SIZE, train=False, threads=2)
    assert _pairs(_all(JpegLoader(_pattern(prefix), **kw))) == \
        _pairs(_all(JpegLoader(folder, **kw)))
    ld = JpegLoader(_pattern(prefix), with_index=True, **kw)
    x, y, idx = next(iter(ld))
    assert idx.tolist() == [0, 1, 2, 3] and x.dtype == torch.float32
    assert np.array_equal(y.numpy(), [0, 0, 0, 0])


def test_compressed_shards_are_read_as_streams(folder, prefix, tmp_path):
    import gzip
    path = str(tmp_path / "train-000000.tar.gz")
    with open(f"{prefix}-000000.tar", "rb") as f, gzip.open(path, "wb") as g:
        g.write(f.read())
    got, skipped = _load(path)
    assert got == [0, 1, 2] and skipped == []


def test_shuffle_buffer_starts_early_and_stays_bounded():
    """Training's shuffle: the first sample goes out once `start` are held, the buffer
    then grows to its size and never holds more; every item comes out once."""
    import numpy as np
    from jpegfreq.shards import shuffled
    arrived = []

    def stream():
        for i in range(1000):
            arrived.append(i)
            yield i

    out, held = [], []
    for x in shuffled(stream(), np.random.default_rng(0), 50, start=10):
        out.append(x)
        held.append(len(arrived) - len(out) + 1)     # in the buffer as x went out
        assert x in arrived
    assert sorted(out) == list(range(1000)) and out != list(range(1000))
    assert held[0] == 10 and out[0] < 10             # out after 10 arrivals, one of them
    assert max(held) == 50 and held.count(50) > 900  # grew to the size, then stayed
    again = list(shuffled(range(1000), np.random.default_rng(0), 50, start=10))
    assert again == out                              # reproducible from the generator
    assert list(shuffled(range(5), np.random.default_rng(0), 1)) == list(range(5))
