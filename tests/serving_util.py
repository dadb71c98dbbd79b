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


