"""One prepared check of every CUDA path: training, evaluation, the loader into the device,
serving, detection and two processes, each printed as one line.

    python bench/gpu_check.py            # on a machine with a GPU (about 5 minutes on one)
    python bench/gpu_check.py --cpu      # the same checks on the CPU, tiny (the test suite's)

Checks, in order (each runs as its own process where the real tool is a script):
  train-coeffs   train.py, 50 steps, jpeg-coeffs 24S, --amp --channels-last
  train-rgb      train.py, 50 steps, rgb, --amp --channels-last
  evaluate       train.py --evaluate on train-coeffs' checkpoint ("top1 X top5 Y")
  loader         JpegLoader's images/s into the device (page-locked, non_blocking copies)
                 against the model's own training images/s on synthetic input already on the
                 device: says whether data loading or compute bounds a step
  serve          examples/serve.py on the device under a short loopback load, then SIGTERM
  detect         detect.py, 20 steps of Mask R-CNN-DCT with --amp
  ddp            torchrun, 2 processes (on one GPU: both share it, nccl), train.py 20 steps

The data are synthetic (jpegfreq.synthetic), written under --out.  Exit status 1 when a check
failed; the last line counts them.
"""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _run(cmd, timeout, env=None):
    """(returncode, combined output) of a command; a timeout is a failure, not a hang."""
    try:
        p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout, env=env)
        return p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, out + f"\n(timed out after {timeout} s)"


def _tail(text, n=3):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _last_log(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return json.loads([ln for ln in f if ln.strip()][-1])


class Checks:
    def __init__(self, args):
        self.args = args
        self.results = []
        self.cpu = args.cpu
        self.device = "cpu" if args.cpu else "cuda"
        self.out = os.path.abspath(args.out)
        self.data = os.path.join(self.out, "data")
        self.py = sys.executable
        self.timeout = args.timeout
        # bfloat16 autocast on a CPU without bfloat16 units is many times slower than float32:
        # the CPU version checks the flag's other paths and leaves AMP to the GPU
        self.amp = "--no-amp" if args.cpu else "--amp"

    def line(self, name, ok, detail, seconds):
        self.results.append(ok)
        print(f"gpu_check {name:13s} {'ok  ' if ok else 'FAIL'} {detail} [{seconds:.1f} s]",
              flush=True)

    def check(self, name, fn):
        t0 = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as e:   # a check that breaks is a failed check, and the others run
            ok, detail = False, f"{type(e).__name__}: {e}"
        self.line(name, ok, detail, time.perf_counter() - t0)

    # -- the checks --------------------------------------------------------

    def train_flags(self, source, out, steps):
        size = ("64" if source == "rgb" else "128") if self.cpu else \
            ("112" if source == "rgb" else "224")
        return [self.py, "train.py", "--data", self.data, "--output-dir", out, "--arch",
                "resnet18", "--source", source, "--size", size, "--epochs", "1",
                "--max-steps", str(steps), "--batch-size", str(self.args.batch_size),
                "--device", self.device, self.amp, "--channels-last", "--no-progress",
                "--seed", "0"]

    def train(self, source, name):
        out = os.path.join(self.out, name)
        steps = 3 if self.cpu else 50
        rc, text = _run(self.train_flags(source, out, steps), self.timeout)
        if rc != 0:
            return False, f"exit {rc}: {_tail(text)}"
        rec = _last_log(out)
        return (rec["steps"] > 0 and rec["train_loss"] == rec["train_loss"],
                f"{rec['steps']} steps, loss {rec['train_loss']:.3f}, "
                f"{rec['images_per_s']:.1f} img/s")

    def evaluate(self):
        ckpt = os.path.join(self.out, "train-coeffs", "checkpoint.pth")
        rc, text = _run([self.py, "train.py", "--data", self.data, "--evaluate", ckpt,
                         "--device", self.device, self.amp, "--no-progress"], self.timeout)
        last = text.strip().splitlines()[-1] if text.strip() else ""
        ok = rc == 0 and re.match(r"^top1 \d+\.\d+ top5 \d+\.\d+$", last) is not None
        return ok, last if ok else f"exit {rc}: {_tail(text)}"

    def loader(self):
        import torch
        import jpegfreq
        from jpegfreq.models import build_model
        dev = torch.device(self.device)
        size = 128 if self.cpu else 224
        batch = self.args.batch_size
        loader = jpegfreq.JpegLoader(os.path.join(self.data, "train"), batch, channels="24S",
                                     size=size, train=True, dtype="float16",
                                     pin_memory=dev.type == "cuda")
        rounds = 1 if self.cpu else 4
        n = 0
        t0 = time.perf_counter()
        for epoch in range(rounds):
            loader.set_epoch(epoch)
            for x, y in loader:
                x = x.to(dev, non_blocking=True)
                y = y.to(dev, non_blocking=True)
                n += len(y)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        load_rate = n / (time.perf_counter() - t0)

        model = build_model("resnet18", "jpeg-coeffs", loader.channels,
                            len(loader.classes)).to(dev).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn((batch,) + loader.shape, device=dev).to(memory_format=torch.channels_last)
        y = torch.randint(0, len(loader.classes), (batch,), device=dev)
        amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
        steps = 2 if self.cpu else 30

        def step():
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=not self.cpu):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()                               # warm-up (cudnn autotuning, allocator)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        model_rate = steps * batch / (time.perf_counter() - t0)
        bound = "data loading" if load_rate < model_rate else "compute"
        return n > 0, (f"loader {load_rate:.0f} img/s into {dev.type} (float16, "
                       f"{loader.threads} threads), model {model_rate:.1f} img/s on synthetic "
                       f"input: a step is bound by {bound}")

    def serve(self):
        ckpt = os.path.join(self.out, "train-coeffs", "checkpoint.pth")
        cmd = [self.py, "examples/serve.py", "--checkpoint", ckpt, "--port", "0", "--quiet",
               "--device", self.device, self.amp, "--channels-last"]
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
        try:
            port = None
            deadline = time.time() + 120
            first = []
            while time.time() < deadline:
                ln = p.stdout.readline()
                if not ln:
                    break
                first.append(ln)
                m = re.search(r"listening on http://[^:]+:(\d+)", ln)
                if m:
                    port = int(m.group(1))
                    break
            if port is None:
                return False, f"no port: {_tail(''.join(first))}"
            files = []
            for root, _, names in os.walk(os.path.join(self.data, "val")):
                files += [os.path.join(root, f) for f in sorted(names)]
            bodies = [open(f, "rb").read() for f in files]
            count = 40 if self.cpu else 400
            lat, codes = [], []
            lock = threading.Lock()

            def client(k):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                for i in range(k, count, 4):
                    t = time.perf_counter()
                    conn.request("POST", "/predict", body=bodies[i % len(bodies)])
                    r = conn.getresponse()
                    r.read()
                    with lock:
                        lat.append(time.perf_counter() - t)
                        codes.append(r.status)
                conn.close()

            threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            p.send_signal(signal.SIGTERM)
            rc = p.wait(timeout=60)
            lat.sort()
            ok = codes.count(200) == count and rc == 0
            return ok, (f"{codes.count(200)}/{count} answered 200 from 4 clients, p50 "
                        f"{1000 * lat[len(lat) // 2]:.1f} ms, p99 "
                        f"{1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.1f} ms; "
                        f"SIGTERM -> exit {rc}")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()

    def detect(self):
        from jpegfreq.synthetic import make_shapes_dataset
        root = os.path.join(self.out, "coco")
        n_train, batch = (4, 2) if self.cpu else (40, 2)
        if not os.path.exists(os.path.join(root, "train.json")):
            make_shapes_dataset(root, num_images=n_train, split="train", seed=0,
                                size=(128, 128))
            make_shapes_dataset(root, num_images=2 if self.cpu else 10, split="val", seed=1,
                                size=(128, 128))
        cmd = [self.py, "detect.py", "--data", os.path.join(root, "train"), "--ann",
               os.path.join(root, "train.json"), "--val-data", os.path.join(root, "val"),
               "--val-ann", os.path.join(root, "val.json"), "--epochs", "1",
               "--batch-size", str(batch), "--min-size", "128", "--max-size", "128",
               "--output-dir", os.path.join(self.out, "detect"), "--device", self.device,
               self.amp, "--no-progress", "--stats-images", "4", "--warmup-iters", "5",
               "--box-batch-size-per-image", "64", "--rpn-post-nms-top-n", "100"]
        rc, text = _run(cmd, self.timeout)
        ap = [ln for ln in text.splitlines() if "AP" in ln]
        return rc == 0, (f"{n_train // batch} steps; {ap[-1].strip() if ap else ''}" if rc == 0
                         else f"exit {rc}: {_tail(text)}")

    def ddp(self):
        out = os.path.join(self.out, "ddp")
        steps = 2 if self.cpu else 20
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [self.py, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(port)] + \
            self.train_flags("jpeg-coeffs", out, steps)[1:] + ["--debug-dump-weights"]
        rc, text = _run(cmd, self.timeout)
        if rc != 0:
            return False, f"exit {rc}: {_tail(text)}"
        shas = [open(os.path.join(out, f"rank{r}.sha")).read().strip() for r in (0, 1)]
        backend = "gloo" if self.cpu else "nccl"
        return shas[0] == shas[1], (f"2 processes ({backend}), {steps} steps, final weights "
                                    f"{'identical' if shas[0] == shas[1] else 'DIFFER'} on both")

    def run(self):
        import torch
        if not self.cpu and not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; run with --cpu for the CPU version",
                  file=sys.stderr)
            return 2
        what = "cpu" if self.cpu else torch.cuda.get_device_name(0)
        print(f"gpu_check: {what}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}",
              flush=True)
        from jpegfreq.synthetic import make_dataset
        if not os.path.isdir(os.path.join(self.data, "train")):
            per = (3, 2) if self.cpu else (48, 12)
            make_dataset(self.data, 4, per[0], per[1], seed=0, progress=False)
        only = set(self.args.only or [])
        for name, fn in [("train-coeffs", lambda: self.train("jpeg-coeffs", "train-coeffs")),
                         ("train-rgb", lambda: self.train("rgb", "train-rgb")),
                         ("evaluate", self.evaluate), ("loader", self.loader),
                         ("serve", self.serve), ("detect", self.detect), ("ddp", self.ddp)]:
            if not only or name in only:
                self.check(name, fn)
        passed = sum(self.results)
        print(f"gpu_check: {passed}/{len(self.results)} checks passed on {what}", flush=True)
        return 0 if passed == len(self.results) else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("--cpu", action="store_true",
                   help="run every check on the CPU at a tiny size (default: CUDA)")
    p.add_argument("--out", default="bench-out/gpu_check",
                   help="folder for the synthetic data and the runs (default: "
                        "bench-out/gpu_check)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per step (default: 64 on CUDA, 4 with --cpu)")
    p.add_argument("--timeout", type=int, default=300,
                   help="seconds each check may take (default: 300)")
    p.add_argument("--only", nargs="*", metavar="CHECK",
                   help="run only these checks (default: all)")
    args = p.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 4 if args.cpu else 64
    return Checks(args).run()


if __name__ == "__main__":
    sys.exit(main())
