"""What the serving tests share: a tiny train.py-style checkpoint and examples/serve.py
run as a subprocess on a free loopback port."""
import http.client
import json
import os
import signal
import subprocess
import sys
import threading

import torch

import jpegfreq
from jpegfreq import ChannelSet
from jpegfreq.checkpoint import save_checkpoint
from jpegfreq.geometry import eval_geometry
from jpegfreq.models import build_model
from jpegfreq.stats import StatsAccumulator

from jpeg_factory import make_jpeg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stats(cs, size, source="jpeg-coeffs"):
    """Real pooled statistics of a few generated files (what train.py would store)."""
    geometry = eval_geometry(size)
    acc = StatsAccumulator(cs.count)
    for i in range(6):
        acc.update(jpegfreq.cube(make_jpeg("baseline-420", seed=100 + i), cs, size, source))
    return acc.result(cs, source, (geometry.out_h, geometry.out_w), geometry.to_dict())


def make_checkpoint(path=None, channels="24S", size=224, source="jpeg-coeffs", num_classes=5,
                    arch="resnet18"):
    """A tiny train.py-style checkpoint (random weights) holding every documented key."""
    torch.manual_seed(0)
    rgb = source == "rgb"
    cs = None if rgb else ChannelSet.parse(channels)
    geometry = eval_geometry(size)
    if rgb:
        acc = StatsAccumulator(3)
        for i in range(4):
            acc.update(jpegfreq.cube(make_jpeg("baseline-444", seed=200 + i), size=size,
                                     source="rgb"))
        stats = acc.result(None, "rgb", (size, size), geometry.to_dict())
    else:
        stats = _stats(cs, size, source)
    net = build_model(arch, source, cs, num_classes)
    ckpt = {
        "task": "classify", "model": net.state_dict(), "optimizer": None, "scheduler": None,
        "epoch": 0,
        "args": {"arch": arch, "channels": channels, "size": size, "source": source},
        "arch": arch, "num_classes": num_classes,
        "classes": [f"class_{i}" for i in range(num_classes)],
        "source": source, "channels": None if rgb else cs.spec, "size": size,
        "geometry": geometry.to_dict(), "stats": stats.to_dict(), "gate": False,
        "best_acc1": 0.0,
    }
    if path is not None:
        save_checkpoint(path, ckpt)
    return ckpt


class ServerProcess:
    def __init__(self, ckpt_path, log_path, *extra):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "examples", "serve.py"), "--checkpoint",
             str(ckpt_path), "--host", "127.0.0.1", "--port", "0", "--topk", "3",
             "--threads", "2", "--torch-threads", "1", *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self._first_line(timeout=120)
        assert line.startswith("listening on http://127.0.0.1:"), line
        self.port = int(line.split(":")[2].split()[0])

    def _first_line(self, timeout):
        box = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()))
        reader.daemon = True
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            self.stop()
            raise AssertionError("server did not start: " + open(self.log.name).read()[-2000:])
        return box[0]

    def request(self, method, path, body=None, headers=None, timeout=60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def vm_rss_kb(self) -> int:
        """The server's resident memory now (/proc/PID/status VmRSS), in kB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def log_text(self) -> str:
        """What the server wrote on stderr so far."""
        if not self.log.closed:
            self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def terminate(self, timeout=60):
        """SIGTERM; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.stop()

    def stop(self):
        if self.proc.poll() is not None:
            self.proc.stdout.close()
            self.log.close()
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.log.close()




# ---------------------------------------------------------------------------
# The soak: many clients, real and broken JPEGs, checked against the offline answer
# ---------------------------------------------------------------------------

def soak_bodies(ckpt, n_real=32, n_broken=600, seed=0, real=None):
    """(real JPEGs, broken bodies [(kind, bytes)], candidates dropped).

    ``real`` defaults to ``n_real`` generated JPEGs of every factory kind.  Broken
    candidates: a real one cut at a random point in its first 80%, random bytes (half
    of them after a JPEG start), or nothing.  Only those the checkpoint's Decoder
    refuses or reports truncated in this process are kept (a cut between two scans of
    a progressive file, or below the rows the crop reads, decodes whole and is
    dropped): each kept one must be answered 4xx."""
    import numpy as np
    from jpeg_factory import CASES
    if real is None:
        real = [make_jpeg(CASES[i % len(CASES)], seed=seed + i) for i in range(n_real)]
    rng = np.random.default_rng([seed, 12345])
    out, dropped = [], 0
    while len(out) < n_broken:
        kind = ("cut", "garbage", "empty")[int(rng.integers(0, 3))]
        if kind == "empty":
            body = b""
        elif kind == "garbage":
            body = rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
            if rng.random() < 0.5:  # past the first check: a JPEG start, then noise
                body = b"\xff\xd8\xff" + body
        else:
            data = real[int(rng.integers(0, len(real)))]
            body = data[:int(rng.integers(1, int(0.8 * len(data))))]
        if refused_offline(ckpt, body):
            out.append((kind, body))
        else:
            dropped += 1
    return real, out, dropped


def offline_probs(ckpt, bodies):
    """Class probabilities of each body by the Decoder and the model in this process."""
    import warnings
    from jpegfreq.models import load_model
    from jpegfreq.serving import Decoder
    model = load_model(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = Decoder.from_checkpoint(ckpt, threads=1).decode_batch(bodies)
    with torch.inference_mode():
        return torch.softmax(model(x), 1)


_refusers = {}


def refused_offline(ckpt, body) -> bool:
    """The checkpoint's Decoder refuses the body or reports it truncated (what the
    server answers 4xx by default)."""
    import warnings
    from jpegfreq.serving import Decoder
    held, dec = _refusers.get(id(ckpt), (None, None))
    if held is not ckpt:
        dec = Decoder.from_checkpoint(ckpt, threads=1)
        _refusers[id(ckpt)] = (ckpt, dec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, (report,) = dec.decode_batch([body], errors="report")
    return not report.ok or report.truncated


def soak(server, ckpt, requests=10_000, clients=8, broken_share=0.5, seed=0, log=print,
         real=None):
    """``clients`` threads send ``requests`` POSTs over keep-alive connections, half
    (``broken_share``) broken bodies made on the fly.  Checks every answer: a real JPEG
    200 with the offline top-1 (ties within 1e-4 of probability allowed), a broken
    one 4xx with a JSON "error", never 5xx.  Returns a dict of figures: latency
    percentiles (ms), server VmRSS (kB) after the first quarter and at the end,
    statuses, wall time, failures (the first 20 wrong answers)."""
    import numpy as np
    import time
    real, broken, dropped = soak_bodies(ckpt, seed=seed, real=real)
    probs = offline_probs(ckpt, real)
    best = probs.max(1).values
    lock = threading.Lock()
    done = [0]
    rss = {}
    lat = []
    statuses = {}
    failures = []
    quarter = requests // 4

    def client(c):
        rng = np.random.default_rng([seed, c])
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        mine = requests // clients + (1 if c < requests % clients else 0)
        my_lat = []
        try:
            for _ in range(mine):
                if rng.random() < broken_share:
                    kind, body = broken[int(rng.integers(0, len(broken)))]
                    i = None
                else:
                    i = int(rng.integers(0, len(real)))
                    kind, body = "real", real[i]
                t0 = time.perf_counter()
                try:
                    conn.request("POST", "/predict", body=body)
                    resp = conn.getresponse()
                    raw = resp.read()
                    status = resp.status
                    if resp.will_close:
                        conn.close()
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    status, raw = 0, repr(e).encode()
                my_lat.append(time.perf_counter() - t0)
                wrong = None
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload, wrong = None, "not JSON"
                if wrong is None:
                    if kind == "real":
                        if status != 200:
                            wrong = "real JPEG not answered 200"
                        elif probs[i, payload["top"][0]["class"]] < best[i] - 1e-4:
                            wrong = "top-1 differs from the offline top-1"
                    elif not (400 <= status < 500 and isinstance(payload.get("error"), str)
                              and payload["error"]):
                        wrong = "broken body not answered 4xx with a reason"
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    done[0] += 1
                    if done[0] == quarter:
                        rss["quarter"] = server.vm_rss_kb()
                    if wrong and len(failures) < 20:
                        failures.append((kind, status, wrong, raw[:200], body[:16]))
        finally:
            conn.close()
            with lock:
                lat.extend(my_lat)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    rss["end"] = server.vm_rss_kb()
    ms = np.array(lat) * 1000.0
    res = {"requests": len(lat), "clients": clients, "wall_s": wall,
           "per_s": len(lat) / wall, "p50_ms": float(np.percentile(ms, 50)),
           "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
           "rss_quarter_kb": rss.get("quarter"), "rss_end_kb": rss["end"],
           "statuses": dict(sorted(statuses.items())), "failures": failures,
           "broken_bodies": len(broken), "dropped": dropped,
           "kinds": {k: sum(1 for kk, _ in broken if kk == k) for k in ("cut", "garbage", "empty")}}
    log(f"soak bodies: {len(real)} real JPEGs; {len(broken)} broken ones {res['kinds']} "
        f"({dropped} cut candidates dropped: they decode whole)")
    log(f"soak: {res['requests']} requests from {clients} clients in {wall:.1f} s "
        f"({res['per_s']:.0f}/s); latency p50 {res['p50_ms']:.2f} ms, p99 "
        f"{res['p99_ms']:.2f} ms, max {res['max_ms']:.1f} ms; server VmRSS "
        f"{rss.get('quarter', 0) / 1024:.1f} MB after the first quarter, "
        f"{rss['end'] / 1024:.1f} MB at the end; statuses {res['statuses']}")
    return res
