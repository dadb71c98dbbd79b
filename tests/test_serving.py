"""jpegfreq.serving.Decoder and examples/serve.py.

Thread-safety: 8 threads sharing one Decoder (half through decode_batch, half
through decode) give bitwise the results of a serial run.  The file count is
JPEGFREQ_THREAD_TEST_FILES (default 1000 JPEGs of every factory kind, about
20 s of CPU for that test; measured 45 s wall on 2 shared, busy cores).
The server tests start examples/serve.py on a free loopback port with a tiny
random-weight resnet18_dct checkpoint made here.
"""
import http.client
import json
import os
import pickle
import threading
import time
import warnings

import numpy as np
import pytest
import torch

import jpegfreq
from jpegfreq import ChannelSet, JpegError
from jpegfreq.geometry import Geometry, sample_train
from jpegfreq.serving import BatchError, Decoder
from jpegfreq.stats import Stats

from jpeg_factory import CASES, damaged, make_jpeg
from serving_util import ServerProcess, _stats, make_checkpoint
from threads import run_in_threads

THREAD_TEST_FILES = int(os.environ.get("JPEGFREQ_THREAD_TEST_FILES", "1000"))

pytestmark = pytest.mark.filterwarnings("ignore::jpegfreq.SpatialFallbackWarning")


def mixed_jpegs(n):
    """n JPEGs cycling through every valid factory case, each with its own picture."""
    return [make_jpeg(CASES[i % len(CASES)], seed=i) for i in range(n)]


@pytest.fixture(scope="module")
def many():
    return mixed_jpegs(THREAD_TEST_FILES)


@pytest.fixture(scope="module")
def few():
    return mixed_jpegs(2 * len(CASES))


# ---------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["jpeg-coeffs", "spatial", "rgb"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_decode_is_the_cube(few, source, dtype):
    dec = Decoder("32S", size=224, source=source, dtype=dtype, threads=1)
    for data in few[:len(CASES)]:
        want = jpegfreq.cube(data, "32S", 224, source, dtype=dtype)
        got = dec.decode(data)
        assert isinstance(got, torch.Tensor)
        assert tuple(got.shape) == dec.shape == want.shape
        assert got.dtype == getattr(torch, dtype)
        assert np.array_equal(got.numpy(), want)


def test_shapes_of_sizes_and_geometry():
    assert Decoder().shape == (24, 56, 56)
    assert Decoder("64S", size=896).shape == (64, 112, 112)
    assert Decoder(source="rgb", size=224).shape == (3, 224, 224)
    g = Geometry(out_h=96, out_w=160, box=(0, 0, 128, 96))
    dec = Decoder("6S", geometry=g)
    assert dec.shape == (6, 12, 20)
    assert tuple(dec.decode(make_jpeg("baseline-420")).shape) == (6, 12, 20)
    # a sampled train geometry is reproduced exactly
    g = sample_train(128, 96, size=224, rng=3)
    data = make_jpeg("baseline-420")
    assert np.array_equal(Decoder(geometry=g.to_dict()).decode(data).numpy(),
                          jpegfreq.cube(data, "24S", geometry=g))


def test_decode_accepts_bytes_like_and_paths(tmp_path):
    data = make_jpeg("baseline-422")
    want = jpegfreq.cube(data)
    path = tmp_path / "a b's.jpg"
    path.write_bytes(data)
    dec = Decoder()
    for src in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8),
                str(path), path):
        assert np.array_equal(dec.decode(src).numpy(), want)


def test_bad_arguments():
    with pytest.raises(ValueError, match="source must be one of"):
        Decoder(source="pixels")
    with pytest.raises(ValueError, match="dtype must be float32 or float16"):
        Decoder(dtype="float64")
    with pytest.raises(ValueError, match="threads must be at least 1"):
        Decoder(threads=0)
    with pytest.raises(ValueError, match="unknown channel set preset"):
        Decoder("25Q")
    with pytest.raises(TypeError, match="geometry must be"):
        Decoder(geometry=(448, 448))
    with pytest.raises(TypeError, match="sequence of images"):
        Decoder().decode_batch(make_jpeg("baseline-420"))
    with pytest.raises(ValueError, match="errors must be"):
        Decoder().decode_batch([], errors="ignore")


def test_stats_mismatch_is_an_error_at_construction(tmp_path):
    st = _stats(ChannelSet.parse("24S"), 224)
    with pytest.raises(ValueError, match="224x224"):
        Decoder("24S", size=448, stats=st)
    with pytest.raises(ValueError, match="lack channels"):
        Decoder("64S", size=224, stats=st)
    # a path and a dict work like the object
    st.save(tmp_path / "stats.json")
    data = make_jpeg("baseline-420")
    want = jpegfreq.cube(data, "24S", 224, stats=st)
    for s in (st, st.to_dict(), str(tmp_path / "stats.json")):
        assert np.array_equal(Decoder("24S", 224, stats=s).decode(data).numpy(), want)


def test_strict_and_warnings():
    data = dict(damaged(make_jpeg("baseline-420")))["truncated-50pct"]
    dec = Decoder()
    warns = []
    dec.decode(data, warnings_out=warns)
    assert any("Premature end" in w for w in warns)
    with pytest.raises(JpegError, match="Premature end"):
        Decoder(strict=True).decode(data)
    batch_warns = []
    good = make_jpeg("baseline-420")
    dec.decode_batch([good, data, good], warnings_out=batch_warns)
    assert batch_warns and {i for i, _ in batch_warns} == {1}


def test_pin_memory_only_with_cuda():
    dec = Decoder(pin_memory=True)
    assert dec.requested_pin_memory
    assert dec.pin_memory == torch.cuda.is_available()
    out = dec.decode_batch([make_jpeg("baseline-420")])
    assert out.is_pinned() == torch.cuda.is_available()


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------

def test_decode_batch_report_gives_every_item_its_warnings():
    good = make_jpeg("baseline-420", seed=3)
    bad = dict(damaged(good))
    items = [good, bad["truncated-50pct"], b"", bad["missing-eoi"], good]
    dec = Decoder(threads=2)
    warns = []
    out, reports = dec.decode_batch(items, errors="report", warnings_out=warns)
    assert [r.index for r in reports] == list(range(len(items)))
    assert [r.ok for r in reports] == [True, True, False, True, True]
    assert reports[0].warnings == () and not reports[0].truncated
    assert any("Premature end" in w for w in reports[1].warnings) and reports[1].truncated
    assert reports[2].error is not None and "empty" in reports[2].error.reason
    assert not reports[2].truncated and torch.count_nonzero(out[2]) == 0
    # the reader's decoded share: all of an intact file, part of a cut one
    assert reports[0].share == 1.0 and reports[4].share == 1.0
    assert 0.0 < reports[1].share < 1.0
    assert any(w.startswith("truncated: ") for w in reports[1].warnings)
    # only the EOI marker missing: every row is there, warned about but not truncated
    assert reports[3].share == 1.0 and not reports[3].truncated
    assert any("Premature end" in w for w in reports[3].warnings)
    assert reports[2].share is None
    # the same warnings as warnings_out, and the same rows as decode()
    assert warns == [(r.index, w) for r in reports for w in r.warnings]
    for i in (0, 1, 3, 4):
        assert np.array_equal(out[i].numpy(), dec.decode(items[i]).numpy())
    # a known share decides truncation on its own
    from jpegfreq.serving import ItemReport
    assert ItemReport(0, warnings=("Premature end of JPEG file",), share=1.0).truncated is False
    assert ItemReport(0, share=0.4).truncated is True


def test_keep_rows_stays_in_the_same_memory():
    dec = Decoder("6S", size=64, threads=1)
    batch = dec.decode_batch([make_jpeg("baseline-420", seed=i) for i in range(5)])
    want = batch.clone()
    kept = dec.keep_rows(batch, [1, 3, 4])
    assert torch.equal(kept, want[[1, 3, 4]])
    # a view of the batch's own memory: a page-locked batch stays page-locked
    assert kept.untyped_storage().data_ptr() == batch.untyped_storage().data_ptr()
    assert kept.is_pinned() == batch.is_pinned()
    assert torch.equal(dec.keep_rows(want.clone(), [0, 1, 2, 3, 4]), want)
    assert len(dec.keep_rows(want.clone(), [])) == 0
    for rows in ([3, 1], [1, 1], [0, 5], [-1, 2]):
        with pytest.raises(ValueError, match="increasing indices"):
            dec.keep_rows(want.clone(), rows)


def test_a_pickled_or_forked_decoder_never_pins():
    dec = Decoder(pin_memory=True)
    dec._pin = True  # stand in for a CUDA machine: this process would pin
    assert dec.pin_memory
    copy = pickle.loads(pickle.dumps(dec))
    assert copy.requested_pin_memory and not copy.pin_memory
    assert not copy.new_batch(1).is_pinned()
    dec._pin_pid = os.getpid() + 1  # as seen from a forked child
    assert not dec.pin_memory


class _FakeEvent:
    """torch.cuda.Event's record/synchronize, noting when they ran."""
    log = []

    def __init__(self):
        self.synced = False

    def record(self):
        _FakeEvent.log.append(("record", self))

    def synchronize(self):
        self.synced = True
        _FakeEvent.log.append(("synchronize", self))


def test_reused_buffer_waits_for_the_copy_out_of_it(monkeypatch):
    dec = Decoder("6S", size=64, threads=2)
    dec._copies.new_event = _FakeEvent
    _FakeEvent.log = []
    items = [make_jpeg("baseline-420", seed=i) for i in range(3)]
    buf = dec.new_batch(4)
    buf.fill_(7)
    seen = []
    real_decode = dec.decode_numpy

    def decode_numpy(data, warnings_out=None, out=None, info=None):
        seen.append([e.synced for k, e in _FakeEvent.log if k == "record"])
        return real_decode(data, warnings_out, out=out, info=info)

    monkeypatch.setattr(dec, "decode_numpy", decode_numpy)
    dec.record_copy(buf[:2])      # a copy out of the first rows is queued
    other = dec.new_batch(3)
    dec.decode_batch(items, out=other)   # another buffer: nothing to wait for
    assert [k for k, _ in _FakeEvent.log] == ["record"] and len(dec._copies) == 1
    dec.decode_batch(items, out=buf[:3])  # the same memory: waits first
    assert [k for k, _ in _FakeEvent.log] == ["record", "synchronize"]
    assert seen[-3:] == [[True]] * 3      # every write came after the wait
    assert len(dec._copies) == 0
    assert torch.equal(buf[:3], dec.decode_batch(items))
    dec.decode_batch(items, out=buf[:3])  # nothing pending any more
    assert [k for k, _ in _FakeEvent.log] == ["record", "synchronize"]


def test_to_device_casts_and_formats_without_recording_on_the_cpu():
    dec = Decoder("24S", size=64, dtype="float16", threads=1)
    x16 = dec.decode_batch([make_jpeg("baseline-420"), make_jpeg("gray")])
    x = dec.to_device(x16, "cpu", dtype=torch.float32, channels_last=True)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, x16.float())
    assert len(dec._copies) == 0  # no CUDA copy, no event
    assert dec.to_device(x16, "cpu") is x16


def test_float16_batch_into_a_float32_model(tmp_path):
    ckpt = make_checkpoint(size=64, num_classes=10)
    model = jpegfreq.models.load_model(ckpt)
    assert next(model.parameters()).dtype == torch.float32
    items = [make_jpeg(CASES[i % len(CASES)], seed=i) for i in range(12)]
    d32 = Decoder.from_checkpoint(ckpt, threads=1)
    d16 = Decoder.from_checkpoint(ckpt, threads=1, dtype="float16")
    x32, x16 = d32.decode_batch(items), d16.decode_batch(items)
    with torch.inference_mode():
        with pytest.raises(RuntimeError):  # the problem: Half input, Float weights
            model(x16)
        ref = model(x32)
        got = model(d16.to_device(x16, "cpu", dtype=torch.float32))
    assert torch.allclose(got, ref, rtol=0, atol=0.05 * ref.abs().max().item())
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.05 * ref.abs().max()
    assert clear.sum() >= len(items) // 2
    assert torch.equal(got.argmax(1)[clear], ref.argmax(1)[clear])


def test_decode_batch_matches_decode(few):
    dec = Decoder(threads=2)
    out = dec.decode_batch(few)
    assert tuple(out.shape) == (len(few), 24, 56, 56) and out.dtype == torch.float32
    for i, data in enumerate(few):
        assert np.array_equal(out[i].numpy(), jpegfreq.cube(data)), i
    assert tuple(dec.decode_batch([]).shape) == (0, 24, 56, 56)
    dec.close()


def test_decode_batch_into_out(few):
    dec = Decoder(dtype="float16", threads=2)
    buf = dec.new_batch(len(few))
    buf.fill_(7)
    assert dec.decode_batch(few, out=buf) is buf
    assert torch.equal(buf, dec.decode_batch(few))
    with pytest.raises(ValueError, match=r"out must be float16 \(3, 24, 56, 56\)"):
        dec.decode_batch(few[:3], out=buf)
    with pytest.raises(ValueError, match="out must be float16"):
        dec.decode_batch(few, out=torch.empty(buf.shape))
    with pytest.raises(TypeError, match="torch.Tensor"):
        dec.decode_batch(few, out=np.empty(buf.shape, np.float16))


def _broken_batch():
    good = [make_jpeg("baseline-420", seed=i) for i in range(6)]
    bad = dict(damaged(good[0]))
    items = list(good)
    items[1] = bad["truncated-in-header"]
    items[4] = bad["png"]
    items.append(b"")
    return items, {1: "Bogus Huffman table", 4: "PNG", 6: "empty input"}


def test_decode_batch_raises_naming_the_item():
    items, bad = _broken_batch()
    dec = Decoder(threads=2)
    with pytest.raises(BatchError, match=r"batch item 1: Bogus Huffman table.*2 more failed "
                                         r"items: 4, 6") as info:
        dec.decode_batch(items)
    e = info.value
    assert isinstance(e, JpegError) and isinstance(e.__cause__, JpegError)
    assert e.index == 1 and e.source == "<bytes: 194>" and e.kind == "jpeg"
    assert [i for i, _ in e.failures] == sorted(bad)
    for i, err in e.failures:
        assert bad[i] in err.reason
    assert str(e).startswith("<bytes: 194>: batch item 1: ")
    again = pickle.loads(pickle.dumps(e))  # crosses process boundaries intact
    assert (type(again), again.index, str(again)) == (BatchError, 1, str(e))


def test_decode_batch_errors_return(tmp_path):
    items, bad = _broken_batch()
    items[2] = str(tmp_path / "missing.jpg")  # paths work too; a missing one is an io error
    bad[2] = "missing.jpg"
    dec = Decoder(threads=2)
    out, failures = dec.decode_batch(items, errors="return")
    assert [i for i, _ in failures] == sorted(bad)
    for i, err in failures:
        assert isinstance(err, JpegError)
        assert bad[i] in (err.reason if i != 2 else err.source)
        assert torch.count_nonzero(out[i]) == 0  # failed rows are zero, never stale
    assert failures[1][1].kind == "io"
    for i, data in enumerate(items):
        if i not in bad:
            assert np.array_equal(out[i].numpy(), jpegfreq.cube(data))


def test_decode_batch_serial_and_one_thread_agree(few):
    a = Decoder(threads=1).decode_batch(few)
    b = Decoder(threads=2).decode_batch(few)
    assert torch.equal(a, b)


def test_non_jpeg_errors_propagate_with_the_index():
    dec = Decoder(threads=2)
    with pytest.raises(TypeError) as info:
        dec.decode_batch([make_jpeg("baseline-420"), 12345])
    assert any("batch item 1" in n for n in getattr(info.value, "__notes__", []))


def _serial_reference(dec, files):
    return torch.stack([dec.decode(d) for d in files])


def _hammer(dec, files, n_threads=8, chunk=64):
    """n_threads threads, all on one Decoder: half decode in batches, half one by one."""
    results = [None] * n_threads
    errors = []
    barrier = threading.Barrier(n_threads)

    def run(t):
        try:
            barrier.wait()
            if t % 2 == 0:
                parts = [dec.decode_batch(files[i:i + chunk]) for i in range(0, len(files), chunk)]
                results[t] = torch.cat(parts)
            else:
                results[t] = torch.stack([dec.decode(d) for d in files])
        except BaseException as e:  # reported below, with the thread number
            errors.append((t, e))

    run_in_threads(run, n_threads)
    assert not errors, errors
    return results


def test_threads_bitwise_equal_to_serial(many):
    dec = Decoder("24S", threads=4)
    reference = _serial_reference(dec, many)
    results = _hammer(dec, many)
    for t, r in enumerate(results):
        assert torch.equal(r, reference), f"thread {t} differs from the serial run"
    dec.close()


@pytest.mark.parametrize("source", ["spatial", "rgb"])
def test_threads_bitwise_equal_to_serial_other_sources(many, source):
    files = many[:3 * len(CASES)]
    dec = Decoder("24S", size=224, source=source, threads=3)
    reference = _serial_reference(dec, files)
    for t, r in enumerate(_hammer(dec, files, chunk=16)):
        assert torch.equal(r, reference), f"thread {t} differs from the serial run"


def test_close_is_safe_while_other_threads_decode(few):
    few = few[:8]
    dec = Decoder(threads=2)
    reference = dec.decode_batch(few)
    stop = threading.Event()
    errors = []

    def user():
        try:
            while not stop.is_set():
                assert torch.equal(dec.decode_batch(few), reference)
        except BaseException as e:
            errors.append(e)

    users = [threading.Thread(target=user) for _ in range(3)]
    for u in users:
        u.start()
    for _ in range(20):
        dec.close()
        time.sleep(0.005)
    stop.set()
    for u in users:
        u.join()
    assert not errors, errors
    with dec as same:
        assert torch.equal(same.decode_batch(few), reference)
    assert dec._executor is None  # the context manager closed the pool


def test_decoder_pickles_without_its_pool(few):
    dec = Decoder("48S", size=224, threads=2)
    dec.decode_batch(few[:4])
    clone = pickle.loads(pickle.dumps(dec))
    assert clone._executor is None
    assert torch.equal(clone.decode_batch(few[:4]), dec.decode_batch(few[:4]))


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("source,channels", [("jpeg-coeffs", "24S"), ("spatial", "32S"),
                                             ("rgb", None)])
def test_from_checkpoint_reproduces_the_eval_preprocessing(tmp_path, few, source, channels):
    path = tmp_path / "ckpt.pth"
    ckpt = make_checkpoint(path, channels=channels or "24S", source=source, size=224)
    geometry = Geometry.from_dict(ckpt["geometry"])
    stats = Stats.from_dict(ckpt["stats"])
    for src in (str(path), ckpt):
        dec = Decoder.from_checkpoint(src, threads=2)
        assert dec.classes == ckpt["classes"]
        assert dec.source == source
        assert dec.geometry == geometry
        batch = dec.decode_batch(few[:12])
        for i, data in enumerate(few[:12]):
            want = jpegfreq.cube(data, channels or "24S", 224, source, geometry, stats)
            assert np.array_equal(dec.decode(data).numpy(), want)
            assert np.array_equal(batch[i].numpy(), want)


def test_from_checkpoint_keeps_the_preprocessing_fixed(tmp_path):
    ckpt = make_checkpoint(None)
    with pytest.raises(TypeError, match="takes channels, size from the checkpoint"):
        Decoder.from_checkpoint(ckpt, channels="64S", size=448)
    dec = Decoder.from_checkpoint(ckpt, dtype="float16", threads=1, strict=True)
    assert dec.dtype == "float16" and dec.strict and dec.threads == 1


def test_from_checkpoint_refuses_a_detector_checkpoint():
    ckpt = dict(make_checkpoint(None), task="detect", arch="fasterrcnn_resnet50_dct_fpn")
    with pytest.raises(ValueError, match="'detect' checkpoint; a Decoder serves classifiers"):
        Decoder.from_checkpoint(ckpt)


def test_load_model_lives_with_the_models_and_runs(tmp_path):
    from jpegfreq import models, serving
    assert not hasattr(serving, "load_model") and not hasattr(jpegfreq, "load_model")
    path = tmp_path / "ckpt.pth"
    make_checkpoint(path)
    model = models.load_model(str(path))
    assert not model.training
    dec = Decoder.from_checkpoint(str(path))
    with torch.inference_mode():
        logits = model(dec.decode_batch([make_jpeg("baseline-420"), make_jpeg("gray")]))
    assert tuple(logits.shape) == (2, 5) and torch.isfinite(logits).all()


# ---------------------------------------------------------------------------
# examples/serve.py
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    ckpt = make_checkpoint(d / "ckpt.pth")
    srv = ServerProcess(d / "ckpt.pth", d / "server.log")
    srv.ckpt = ckpt
    yield srv
    srv.stop()


def test_server_health(server):
    status, body = server.request("GET", "/health")
    assert status == 200
    assert body["status"] == "ok" and body["num_classes"] == 5
    assert body["source"] == "jpeg-coeffs" and body["channels"] == "24S"
    assert body["input_shape"] == [24, 28, 28]
    assert server.request("GET", "/nowhere")[0] == 404


@pytest.mark.parametrize("case", ["baseline-420", "progressive-444", "gray", "cmyk",
                                  "exif-orientation-6", "tiny-1x1"])
def test_server_classifies_jpegs(server, case):
    data = make_jpeg(case, seed=5)
    status, body = server.request("POST", "/predict", data)
    assert status == 200, body
    top = body["top"]
    assert len(top) == 3 and body["ms"] > 0
    probs = [t["prob"] for t in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
    assert all(t["name"] == f"class_{t['class']}" for t in top)
    # the same answer as the model run in this process on the checkpoint's pre-processing
    model = jpegfreq.models.load_model(server.ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = Decoder.from_checkpoint(server.ckpt).decode(data)[None]
    with torch.inference_mode():
        p = torch.softmax(model(x), 1)[0]
    for t in top:
        assert abs(p[t["class"]].item() - t["prob"]) < 1e-4


def _broken():
    base = make_jpeg("baseline-420")
    bad = dict(damaged(base))
    return [("truncated-header", bad["truncated-in-header"], "Huffman"),
            ("png", bad["png"], "PNG"),
            ("random-bytes", bad["random-bytes"], "not a JPEG"),
            ("empty", b"", "empty"),
            ("tables-only", base[:100], "no image"),
            ("huge", bad["huge-dimensions"], "65500")]


@pytest.mark.parametrize("name,data,reason", _broken(), ids=[b[0] for b in _broken()])
def test_server_rejects_broken_input(server, name, data, reason):
    status, body = server.request("POST", "/predict", data)
    assert status == 400, body
    assert reason in body["error"] and "top" not in body


def test_server_refuses_a_truncated_jpeg_naming_the_share(server):
    data = dict(damaged(make_jpeg("baseline-420")))["truncated-50pct"]
    status, body = server.request("POST", "/predict", data)
    assert status == 422, body
    assert body["kind"] == "truncated" and "truncated JPEG" in body["error"]
    assert "share" in body and "--accept-partial" in body["error"]
    assert any("Premature end" in w for w in body["warnings"]) and "top" not in body


def test_server_concurrent_mixed_requests(server):
    good = [make_jpeg(CASES[i % len(CASES)], seed=i) for i in range(12)]
    bad = [b"", b"GIF89a...."]
    bodies = good + bad
    answers = [None] * len(bodies)

    def post(i):
        answers[i] = server.request("POST", "/predict", bodies[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a[0] for a in answers] == [200] * len(good) + [400] * len(bad)
    single = [server.request("POST", "/predict", g)[1]["top"] for g in good[:3]]
    for a, s in zip(answers, single):  # batched or alone, the same classes
        assert [t["class"] for t in a[1]["top"]] == [t["class"] for t in s]


def test_server_wrong_paths_and_missing_length(server):
    assert server.request("POST", "/classify", b"x")[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("POST", "/predict")
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 411 and "Content-Length" in json.loads(resp.read())["error"]
    finally:
        conn.close()
