"""examples/serve.py under load and abuse: a soak of mixed real and broken JPEGs from
8 clients checked against the offline answers with the server's memory watched,
stalled and dripping clients, the connection cap, SIGTERM with requests in flight,
the partial-image switch and the GPU-ready flags (run on the CPU here).

The soak here sends JPEGFREQ_SOAK_REQUESTS requests (default 1,500; about 40 s on
2 busy cores); bench/soak_serve.py runs the 10,000-request soak whose figures
docs/serving.md gives.
"""
import http.client
import importlib.util
import json
import os
import socket
import threading
import time
import warnings

import pytest
import torch

from jpeg_factory import damaged, make_jpeg
from serving_util import ROOT, ServerProcess, make_checkpoint, offline_probs, soak, \
    soak_bodies

SOAK_REQUESTS = int(os.environ.get("JPEGFREQ_SOAK_REQUESTS", "1500"))

pytestmark = pytest.mark.filterwarnings("ignore::jpegfreq.SpatialFallbackWarning")


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve-http")
    ckpt = make_checkpoint(d / "ckpt.pth", size=64, num_classes=10)
    return d, ckpt


def _start(ckpt_path, name, *extra):
    d, ckpt = ckpt_path
    srv = ServerProcess(d / "ckpt.pth", d / f"{name}.log", "--quiet", *extra)
    srv.ckpt = ckpt
    return srv


@pytest.fixture(scope="module")
def abuse_server(ckpt_path):
    """Short deadlines and a small cap; partial images accepted; the GPU flags on."""
    srv = _start(ckpt_path, "abuse", "--timeout", "1", "--max-connections", "3",
                 "--accept-partial", "--amp", "--channels-last", "--dtype", "float16")
    yield srv
    srv.stop()


def _read_answer(sock, limit=30.0):
    """Everything the server sends until it closes (or ``limit`` s pass)."""
    sock.settimeout(limit)
    chunks = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            b = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not b:
            return b"".join(chunks), True
        chunks.append(b)
    return b"".join(chunks), False


def _status_and_json(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


# ---------------------------------------------------------------------------
# The soak
# ---------------------------------------------------------------------------

def test_soak_mixed_real_and_broken_from_eight_clients(ckpt_path):
    d, ckpt = ckpt_path
    real, broken, dropped = soak_bodies(ckpt)
    kinds = {k for k, _ in broken}
    assert kinds == {"cut", "garbage", "empty"} and dropped < len(broken) // 4, (kinds, dropped)
    srv = _start(ckpt_path, "soak")
    try:
        res = soak(srv, ckpt, requests=SOAK_REQUESTS, clients=8)
        assert res["requests"] == SOAK_REQUESTS
        assert not res["failures"], res["failures"]
        assert all(s < 500 and s != 0 for s in res["statuses"]), res["statuses"]
        assert res["statuses"].get(200, 0) > SOAK_REQUESTS // 4
        assert res["statuses"].get(422, 0) > 0 and res["statuses"].get(400, 0) > 0
        growth_mb = (res["rss_end_kb"] - res["rss_quarter_kb"]) / 1024
        assert growth_mb < 20, f"server memory grew {growth_mb:.1f} MB"
        assert srv.proc.poll() is None
    finally:
        assert srv.terminate() == 0
    assert "Traceback" not in srv.log_text()


# ---------------------------------------------------------------------------
# Abuse
# ---------------------------------------------------------------------------

def test_a_stalled_client_is_answered_408_and_closed(abuse_server):
    sock = socket.create_connection(("127.0.0.1", abuse_server.port))
    try:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
                     b"\xff\xd8\xff")  # then nothing
        raw, closed = _read_answer(sock)
    finally:
        sock.close()
    assert closed, raw
    status, body = _status_and_json(raw)
    assert status == 408 and "within 1 s" in body["error"]
    # the server still answers others
    assert abuse_server.request("GET", "/health")[0] == 200


def test_a_dripping_client_cannot_hold_a_thread(abuse_server):
    """One header byte every 0.2 s: each read succeeds, the request deadline still ends it."""
    sock = socket.create_connection(("127.0.0.1", abuse_server.port))
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    closed = False
    t0 = time.monotonic()
    try:
        for b in request:
            try:
                sock.sendall(bytes([b]))
            except OSError:  # closed by the server
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - t0 > 30:
                break
        raw, closed2 = _read_answer(sock, limit=10)
    finally:
        sock.close()
    assert closed or closed2
    if raw:
        assert _status_and_json(raw)[0] == 408


def test_an_idle_connection_is_closed(abuse_server):
    sock = socket.create_connection(("127.0.0.1", abuse_server.port))
    try:
        raw, closed = _read_answer(sock, limit=20)
    finally:
        sock.close()
    assert closed and raw == b""  # nothing had started: closed without an answer


def test_connections_beyond_the_cap_get_503(abuse_server):
    time.sleep(1.5)  # connections of earlier tests are gone
    idle = [socket.create_connection(("127.0.0.1", abuse_server.port)) for _ in range(3)]
    try:
        time.sleep(0.1)
        status, body = abuse_server.request("POST", "/predict", make_jpeg("baseline-420"))
        assert status == 503 and body["kind"] == "busy" and "3 connections" in body["error"]
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    status, body = abuse_server.request("POST", "/predict", make_jpeg("baseline-420"))
    assert status == 200, body


def test_sigterm_finishes_the_requests_in_flight(ckpt_path):
    srv = _start(ckpt_path, "sigterm", "--max-wait-ms", "2000", "--max-batch", "64")
    answers = []
    lock = threading.Lock()

    def post(i):
        a = srv.request("POST", "/predict", make_jpeg("baseline-420", seed=i))
        with lock:
            answers.append(a)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(5)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.8)  # all five are waiting in the batcher (it gathers for 2 s)
        assert not answers
        rc = srv.terminate()
    finally:
        for t in threads:
            t.join(60)
    assert rc == 0, srv.log_text()
    assert len(answers) == 5 and all(s == 200 for s, _ in answers), answers
    with pytest.raises(OSError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()


# ---------------------------------------------------------------------------
# Partial images and the GPU flags
# ---------------------------------------------------------------------------

def test_accept_partial_classifies_with_the_warnings(abuse_server):
    data = dict(damaged(make_jpeg("baseline-420")))["truncated-50pct"]
    status, body = abuse_server.request("POST", "/predict", data)
    assert status == 200, body
    assert any("Premature end" in w for w in body["warnings"]) and len(body["top"]) == 3


def test_health_reports_the_flags(abuse_server):
    status, body = abuse_server.request("GET", "/health")
    assert status == 200
    assert body["device"] == "cpu" and body["amp"] is True and body["channels_last"] is True
    assert body["dtype"] == "float16" and body["accept_partial"] is True


def _serve_module():
    spec = importlib.util.spec_from_file_location("serve_example",
                                                  os.path.join(ROOT, "examples", "serve.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("flags", [dict(dtype="float16"),
                                   dict(dtype="float16", channels_last=True),
                                   dict(amp=True), dict(amp=True, channels_last=True)],
                         ids=["fp16-input", "fp16-input-channels-last", "amp-bf16",
                              "amp-bf16-channels-last"])
def test_classifier_flags_keep_the_top1_on_the_cpu(ckpt_path, flags):
    """The serve.py Classifier with each flag gives the float32 model's top-1 (where it
    is clear) on the CPU: a float16 batch is cast to the model's float32 on the device."""
    serve = _serve_module()
    _, ckpt = ckpt_path
    real, _, _ = soak_bodies(ckpt, n_broken=0)
    ref = offline_probs(ckpt, real)
    clf = serve.Classifier(ckpt, topk=3, max_batch=len(real), threads=1, device="cpu",
                           **flags)
    try:
        assert clf.model.training is False
        if flags.get("channels_last"):
            w = clf.model.layer1[0].conv1.weight
            assert w.is_contiguous(memory_format=torch.channels_last)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x, reports = clf.decoder.decode_batch(real, errors="report",
                                                  out=clf._buffer[:len(real)])
        assert all(r.ok for r in reports)
        got = clf.predict(x)
    finally:
        clf.decoder.close()
    assert got.dtype == torch.float32 and got.shape == ref.shape
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.02
    assert clear.sum() >= len(real) // 4, "too few clear answers to compare"
    assert torch.equal(got.argmax(1)[clear], ref.argmax(1)[clear])
    assert (got - ref).abs().max() < 0.05
