"""Classify JPEGs over HTTP with a jpegfreq checkpoint (standard library server only).

    python examples/serve.py --checkpoint CKPT --port 8000 [--host 127.0.0.1] [--topk 5]

    curl --data-binary @cat.jpg http://127.0.0.1:8000/predict
    {"top": [{"class": 281, "name": "tabby", "prob": 0.71}, ...], "ms": 9.4, "batch": 1}
    curl http://127.0.0.1:8000/health

POST /predict takes the raw JPEG bytes as the request body.  Anything that is not
a readable image gets HTTP 400 with {"error": reason, "kind": ...} naming the
problem; a damaged but decodable JPEG is classified and its libjpeg warnings are
listed under "warnings" (--strict rejects it instead).

Requests are served by a thread each; one batching thread gathers whatever
requests are waiting (up to --max-batch), decodes them in parallel with
jpegfreq's Decoder (the C decoder releases the GIL) and runs the model once per
batch.  The pre-processing is the checkpoint's own eval pre-processing
(Decoder.from_checkpoint), so the server sees exactly what evaluation saw.
"""
import argparse
import json
import os
import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import jpegfreq  # noqa: F401
except ImportError:  # run from a source checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from jpegfreq.checkpoint import load_checkpoint
from jpegfreq.models import load_model
from jpegfreq.serving import Decoder

MAX_BODY = 32 << 20


class _Request:
    """One image waiting for the batching thread."""

    __slots__ = ("data", "done", "status", "payload")

    def __init__(self, data):
        self.data = data
        self.done = threading.Event()
        self.status = 500
        self.payload = {"error": "not processed"}

    def finish(self, status, payload):
        self.status, self.payload = status, payload
        self.done.set()


class Classifier:
    """The model, its Decoder and the batching thread."""

    def __init__(self, ckpt: dict, topk=5, max_batch=16, max_wait_ms=0.0, threads=None,
                 strict=False, max_pixels=None):
        self.model = load_model(ckpt)
        self.decoder = Decoder.from_checkpoint(ckpt, threads=threads, strict=strict,
                                               max_pixels=max_pixels)
        self.classes = ckpt.get("classes")
        self.num_classes = int(ckpt["num_classes"])
        self.topk = max(1, min(int(topk), self.num_classes))
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.info = {"arch": ckpt.get("arch"), "num_classes": self.num_classes,
                     "source": self.decoder.source,
                     "channels": None if self.decoder.channels is None
                     else self.decoder.channels.name,
                     "input_shape": list(self.decoder.shape),
                     "normalized": self.decoder.stats is not None}
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    def classify(self, data: bytes) -> _Request:
        """Queue one image and wait for its answer (status, payload)."""
        req = _Request(data)
        self._queue.put(req)
        req.done.wait()
        return req

    # -- the batching thread -------------------------------------------------

    def _loop(self):
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:  # whatever arrived while the last batch ran; wait only if asked to
                    left = deadline - time.monotonic()
                    batch.append(self._queue.get(timeout=left) if left > 0
                                 else self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._run(batch)
            except Exception as e:  # a bug or an out-of-memory: answer, keep serving
                for req in batch:
                    if not req.done.is_set():
                        req.finish(500, {"error": f"internal error: {type(e).__name__}: {e}"})

    def _run(self, batch):
        warns = []
        x, failures = self.decoder.decode_batch([r.data for r in batch], errors="return",
                                                warnings_out=warns)
        failed = dict(failures)
        for i, err in failed.items():
            batch[i].finish(400, {"error": err.reason, "kind": err.kind})
        good = [i for i in range(len(batch)) if i not in failed]
        if not good:
            return
        if len(good) < len(batch):
            x = x[good]
        with torch.inference_mode():
            out = self.model(x)
            if isinstance(out, tuple):  # a gated model returns (logits, gates)
                out = out[0]
            probs = torch.softmax(out.float(), dim=1)
            top_p, top_i = probs.topk(self.topk, dim=1)
        per_item = {}
        for i, msg in warns:
            per_item.setdefault(i, []).append(msg)
        for row, i in enumerate(good):
            top = []
            for p, c in zip(top_p[row].tolist(), top_i[row].tolist()):
                name = self.classes[c] if self.classes and c < len(self.classes) else None
                top.append({"class": c, "name": name, "prob": round(p, 6)})
            payload = {"top": top, "batch": len(batch)}
            if i in per_item:
                payload["warnings"] = per_item[i]
            batch[i].finish(200, payload)


class Handler(BaseHTTPRequestHandler):
    server_version = "jpegfreq-serve/0.1"
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    classifier: Classifier = None
    quiet = False

    def _send(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.split("?", 1)[0] == "/health":
            self._send(200, {"status": "ok", **self.classifier.info})
        else:
            self._send(404, {"error": f"no such path {self.path!r}: use POST /predict "
                                      "or GET /health"})

    def do_POST(self):
        if self.path.split("?", 1)[0] != "/predict":
            self.close_connection = True
            self._send(404, {"error": f"no such path {self.path!r}: POST the JPEG to /predict"})
            return
        t0 = time.perf_counter()
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            self._send(411, {"error": "missing Content-Length: POST the raw JPEG bytes "
                                      "as the request body"})
            return
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._send(400, {"error": f"bad Content-Length {length!r}"})
            return
        if n > MAX_BODY:
            self.close_connection = True  # the body is not read: drop the connection
            self._send(413, {"error": f"body of {n} bytes exceeds the {MAX_BODY}-byte limit"})
            return
        data = self.rfile.read(n)
        if len(data) != n:
            self.close_connection = True
            self._send(400, {"error": f"body ended after {len(data)} of {n} bytes"})
            return
        if not data:
            self._send(400, {"error": "empty body: POST the raw JPEG bytes", "kind": "jpeg"})
            return
        req = self.classifier.classify(data)
        payload = dict(req.payload)
        payload["ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
        self._send(req.status, payload)

    def log_message(self, fmt, *args):
        if not self.quiet:
            super().log_message(fmt, *args)


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="train.py checkpoint (.pth)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000,
                   help="port (default: 8000; 0 picks a free one, printed at start)")
    p.add_argument("--topk", type=int, default=5, help="classes per answer (default: 5)")
    p.add_argument("--max-batch", type=int, default=16,
                   help="most requests decoded and run together (default: 16)")
    p.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="how long a batch waits for more requests (default: 0, no added latency)")
    p.add_argument("--threads", type=int, default=None,
                   help="decoder threads (default: the CPUs available)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="refuse images with more pixels, read from the header before any "
                        "decoding (default: 40,000,000; 0 = no limit)")
    p.add_argument("--strict", action="store_true",
                   help="reject damaged JPEGs libjpeg can only partly decode (default: "
                        "classify them and list the warnings)")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    ckpt = load_checkpoint(args.checkpoint)
    clf = Classifier(ckpt, topk=args.topk, max_batch=args.max_batch,
                     max_wait_ms=args.max_wait_ms, threads=args.threads, strict=args.strict,
                     max_pixels=args.max_pixels)
    Handler.classifier = clf
    Handler.quiet = args.quiet
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}  ({clf.info['arch']}, {clf.info['source']} "
          f"{clf.info['channels'] or ''}, input {tuple(clf.info['input_shape'])})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        clf.decoder.close()


if __name__ == "__main__":
    main()
