"""Classify JPEGs over HTTP with a jpegfreq checkpoint (standard library server only).

    python examples/serve.py --checkpoint CKPT --port 8000 [--host 127.0.0.1] [--topk 5]

    curl --data-binary @cat.jpg http://127.0.0.1:8000/predict
    {"top": [{"class": 281, "name": "tabby", "prob": 0.71}, ...], "ms": 9.4, "batch": 1}
    curl http://127.0.0.1:8000/health

POST /predict takes the raw JPEG bytes as the request body.  Anything that is not
a readable image gets HTTP 400 with {"error": reason, "kind": ...} naming the
problem.  A truncated JPEG (its image data ends early) gets HTTP 422 with
"kind": "truncated", the decoded "share" and libjpeg's "warnings"; with
--accept-partial it is classified instead, its warnings listed.  Other damage
libjpeg reads through is classified with its warnings (--strict rejects it).

Requests are served by a thread each; one batching thread gathers whatever
requests are waiting (up to --max-batch), decodes them in parallel with
jpegfreq's Decoder (the C decoder releases the GIL) and runs the model once per
batch.  The pre-processing is the checkpoint's own eval pre-processing
(Decoder.from_checkpoint), so the server sees exactly what evaluation saw.

Under load and abuse: a connection gets --timeout seconds to deliver each
request (headers and body; an idle keep-alive connection counts too), then it
is answered 408 if it had started one and closed; at most --max-connections
connections are served at once, and the next ones are answered 503 and closed;
SIGTERM (or Ctrl-C) stops accepting, lets the requests in flight finish (up to
--drain-timeout seconds) and exits with status 0.
"""
import argparse
import json
import os
import queue
import signal
import socket
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
OVERFLOW_MAX = 64  # connections beyond --max-connections that get a 503; past them: closed


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


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast(device: torch.device, amp: bool):
    """Mixed precision when asked (as train.py): float16 on CUDA, bfloat16 on CPU."""
    return torch.autocast(device.type, enabled=bool(amp),
                          dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


class Classifier:
    """The model, its Decoder and the batching thread."""

    def __init__(self, ckpt: dict, topk=5, max_batch=16, max_wait_ms=0.0, threads=None,
                 strict=False, max_pixels=None, device=None, amp=None, channels_last=False,
                 dtype="float32", accept_partial=False):
        self.device = torch.device(device or default_device())
        self.amp = (self.device.type == "cuda") if amp is None else bool(amp)
        self.channels_last = bool(channels_last)
        self.accept_partial = bool(accept_partial)
        self.model = load_model(ckpt, device=self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # the model's own element type: a float16 batch is cast to it on the device
        self.input_dtype = next(self.model.parameters()).dtype
        self.decoder = Decoder.from_checkpoint(ckpt, threads=threads, strict=strict,
                                               max_pixels=max_pixels, dtype=dtype,
                                               pin_memory=self.device.type == "cuda")
        self.classes = ckpt.get("classes")
        self.num_classes = int(ckpt["num_classes"])
        self.topk = max(1, min(int(topk), self.num_classes))
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        # one batch buffer, reused (page-locked on CUDA; decode_batch waits for the
        # copy out of it to finish before writing the next batch)
        self._buffer = self.decoder.new_batch(self.max_batch)
        self.info = {"arch": ckpt.get("arch"), "num_classes": self.num_classes,
                     "source": self.decoder.source,
                     "channels": None if self.decoder.channels is None
                     else self.decoder.channels.name,
                     "input_shape": list(self.decoder.shape),
                     "normalized": self.decoder.stats is not None,
                     "device": str(self.device), "amp": self.amp,
                     "channels_last": self.channels_last, "dtype": self.decoder.dtype,
                     "accept_partial": self.accept_partial}
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

    def refusal(self, report):
        """(status, payload) refusing an item of the batch, or None to classify it."""
        if report.error is not None:
            return 400, {"error": report.error.reason, "kind": report.error.kind}
        if report.truncated and not self.accept_partial:
            share = report.share
            told = (f"{share:.1%} of the image data was decoded" if share is not None
                    else "the image data ends before the end of the file")
            return 422, {"error": f"truncated JPEG: {told}; send the whole file "
                                  "(the server classifies partial images only with "
                                  "--accept-partial)",
                         "kind": "truncated", "share": share,
                         "warnings": list(report.warnings)}
        return None

    def predict(self, x):
        """Class probabilities (N, classes) on the CPU for a decoded batch ``x``."""
        x = self.decoder.to_device(x, self.device, dtype=self.input_dtype,
                                   channels_last=self.channels_last)
        with torch.inference_mode(), autocast(self.device, self.amp):
            out = self.model(x)
            if isinstance(out, tuple):  # a gated model returns (logits, gates)
                out = out[0]
            return torch.softmax(out.float(), dim=1).cpu()

    def _run(self, batch):
        x, reports = self.decoder.decode_batch([r.data for r in batch], errors="report",
                                               out=self._buffer[:len(batch)])
        good = []
        for req, rep in zip(batch, reports):
            refused = self.refusal(rep)
            if refused is None:
                good.append(rep.index)
            else:
                req.finish(*refused)
        if not good:
            return
        # the kept rows moved to the front of the (page-locked) buffer, no copy elsewhere
        probs = self.predict(self.decoder.keep_rows(x, good))
        top_p, top_i = probs.topk(self.topk, dim=1)
        for row, i in enumerate(good):
            top = []
            for p, c in zip(top_p[row].tolist(), top_i[row].tolist()):
                name = self.classes[c] if self.classes and c < len(self.classes) else None
                top.append({"class": c, "name": name, "prob": round(p, 6)})
            payload = {"top": top, "batch": len(batch)}
            if reports[i].warnings:
                payload["warnings"] = list(reports[i].warnings)
            batch[i].finish(200, payload)


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on connections, a deadline per request and a
    graceful stop.

    Every connection has a thread.  Each request must arrive whole (request line,
    headers, body) within ``request_timeout`` seconds of the connection being ready
    for it (accepted, or its previous answer sent): a reaper thread shuts the reading
    side of a connection that takes longer, so a stalled or dripping client frees
    its thread.  Beyond ``max_connections`` open connections, up to OVERFLOW_MAX
    more are answered 503 and closed; past those, new connections are closed at once.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handler, max_connections=64, request_timeout=10.0):
        self.max_connections = max(1, int(max_connections))
        self.request_timeout = float(request_timeout)
        self.draining = False
        self._lock = threading.Lock()
        self._no_work = threading.Condition(self._lock)
        self._reading = {}      # socket -> monotonic time it began to wait for a request
        self._served = set()    # sockets counted against max_connections
        self._overflow = set()  # sockets being answered 503
        self._timed_out = set()
        self._in_flight = 0
        super().__init__(address, handler)
        self._reaper = threading.Thread(target=self._reap, name="reaper", daemon=True)
        self._reaper.start()

    # -- connections ----------------------------------------------------------

    def process_request(self, request, client_address):
        with self._lock:
            over = len(self._served) >= self.max_connections
            if over and len(self._overflow) >= OVERFLOW_MAX:
                refuse = True
            else:
                refuse = False
                (self._overflow if over else self._served).add(request)
                self._reading[request] = time.monotonic()
        if refuse:
            self.shutdown_request(request)
            return
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address))
        t.daemon = True
        t.start()

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._served.discard(request)
                self._overflow.discard(request)
                self._reading.pop(request, None)
                self._timed_out.discard(request)

    def overflowing(self, sock) -> bool:
        with self._lock:
            return sock in self._overflow

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client went away or its socket was shut: no noise
            return
        print(f"error serving {client_address[0]}:{client_address[1]}: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    # -- request deadlines ----------------------------------------------------

    def waiting(self, sock):
        """The connection waits for (the rest of) a request: its deadline runs."""
        with self._lock:
            self._reading[sock] = time.monotonic()

    def received(self, sock):
        """The request is read whole: no deadline while it is answered."""
        with self._lock:
            self._reading.pop(sock, None)

    def timed_out(self, sock) -> bool:
        with self._lock:
            return sock in self._timed_out

    def _reap(self):
        step = max(0.05, min(1.0, self.request_timeout / 4))
        while True:
            time.sleep(step)
            now = time.monotonic()
            with self._lock:
                late = [s for s, t in self._reading.items() if now - t > self.request_timeout]
                for s in late:
                    del self._reading[s]
                    self._timed_out.add(s)
            for s in late:
                try:  # the blocked read returns end-of-file; the answer can still go out
                    s.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    # -- requests in flight and the graceful stop -----------------------------

    def begin(self):
        with self._lock:
            self._in_flight += 1

    def end(self):
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._no_work.notify_all()

    def drain(self, timeout) -> int:
        """Wait until no request is in flight (at most ``timeout`` s); the number left."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._in_flight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._no_work.wait(left)
            return self._in_flight


class Handler(BaseHTTPRequestHandler):
    server_version = "jpegfreq-serve/0.2"
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    # a request line cut short (e.g. by the deadline) is answered with a status line
    # and headers too, not as HTTP/0.9 (a bare body)
    default_request_version = "HTTP/1.1"
    classifier: Classifier = None
    quiet = False
    timeout = None  # the socket timeout of each read and write (set from --timeout)

    def _send(self, status, payload, extra_headers=()):
        body = json.dumps(payload).encode()
        if self.server.draining:
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra_headers:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, bad headers, unknown method) in
        JSON, and 408 when the request did not arrive in time."""
        self.close_connection = True
        if self.server.timed_out(self.request):
            code, message = 408, self._late()
        elif message is None:
            message = self.responses.get(code, ("error",))[0]
        self.log_error("code %d, message %s", code, message)
        try:
            self._send(code, {"error": message})
        except OSError:
            pass

    def _late(self):
        return (f"request not received within {self.server.request_timeout:g} s: "
                "send the headers and the body without pausing")

    def handle_one_request(self):
        self.server.waiting(self.request)
        self._counted = False
        try:
            super().handle_one_request()
        finally:
            if self._counted:
                self._counted = False
                self.server.end()

    def parse_request(self):
        ok = super().parse_request()
        if ok:  # a request has begun: a graceful stop waits for its answer
            self.server.begin()
            self._counted = True
        return ok

    def _arrived(self) -> bool:
        """The request is read (no deadline from here); False when it came too late
        (answered 408, connection closed)."""
        self.server.received(self.request)
        if self.server.timed_out(self.request):
            self.close_connection = True
            self._send(408, {"error": self._late(), "kind": "timeout"})
            return False
        return True

    def do_GET(self):
        if not self._arrived():
            return
        if self.server.overflowing(self.request):
            return self._busy()
        if self.path.split("?", 1)[0] == "/health":
            self._send(200, {"status": "ok", **self.classifier.info})
        else:
            self._send(404, {"error": f"no such path {self.path!r}: use POST /predict "
                                      "or GET /health"})

    def _busy(self):
        self.close_connection = True
        self._send(503, {"error": f"server busy: {self.server.max_connections} connections "
                                  "are being served; retry later", "kind": "busy"},
                   [("Retry-After", "1")])

    def do_POST(self):
        t0 = time.perf_counter()
        if self.server.timed_out(self.request):
            self._arrived()
            return
        if self.path.split("?", 1)[0] != "/predict":
            self.close_connection = True
            self.server.received(self.request)
            self._send(404, {"error": f"no such path {self.path!r}: POST the JPEG to /predict"})
            return
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            self.server.received(self.request)
            self._send(411, {"error": "missing Content-Length: POST the raw JPEG bytes "
                                      "as the request body"})
            return
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self.server.received(self.request)
            self._send(400, {"error": f"bad Content-Length {length!r}"})
            return
        if n > MAX_BODY:
            self.close_connection = True  # the body is not read: drop the connection
            self.server.received(self.request)
            self._send(413, {"error": f"body of {n} bytes exceeds the {MAX_BODY}-byte limit"})
            return
        data = self.rfile.read(n)
        if not self._arrived():
            return
        if len(data) != n:
            self.close_connection = True
            self._send(400, {"error": f"body ended after {len(data)} of {n} bytes"})
            return
        if self.server.overflowing(self.request):
            return self._busy()
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
    p.add_argument("--device", default=None,
                   help="torch device of the model (default: cuda if available, else cpu)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision: autocast float16 on CUDA, bfloat16 on CPU "
                        "(default: on with CUDA, off on CPU)")
    p.add_argument("--channels-last", action="store_true",
                   help="model and input in channels_last memory format (default: off)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="cube element type from decoder to device; the model's own type "
                        "is restored on the device (default: float32)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="refuse images with more pixels, read from the header before any "
                        "decoding (default: 40,000,000; 0 = no limit)")
    p.add_argument("--strict", action="store_true",
                   help="reject every JPEG libjpeg warns about (default: only truncated "
                        "ones, unless --accept-partial)")
    p.add_argument("--accept-partial", action="store_true",
                   help="classify truncated JPEGs from the part that is there, listing "
                        "libjpeg's warnings (default: answer 422 with the decoded share)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds a connection has to deliver each request, headers and "
                        "body, idle keep-alive included; then 408 and closed (default: 10)")
    p.add_argument("--max-connections", type=int, default=64,
                   help="connections served at once; more are answered 503 (default: 64)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds to let the requests in flight finish "
                        "(default: 30)")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.timeout <= 0:
        raise SystemExit("serve.py: error: --timeout must be positive")
    ckpt = load_checkpoint(args.checkpoint)
    clf = Classifier(ckpt, topk=args.topk, max_batch=args.max_batch,
                     max_wait_ms=args.max_wait_ms, threads=args.threads, strict=args.strict,
                     max_pixels=args.max_pixels, device=args.device, amp=args.amp,
                     channels_last=args.channels_last, dtype=args.dtype,
                     accept_partial=args.accept_partial)
    Handler.classifier = clf
    Handler.quiet = args.quiet
    # each read and write also times out (slightly after the request deadline, which
    # answers 408 first)
    Handler.timeout = args.timeout + 1.0
    server = Server((args.host, args.port), Handler, max_connections=args.max_connections,
                    request_timeout=args.timeout)
    host, port = server.server_address[:2]

    def stop(signum, frame):
        # serve_forever runs in this (the main) thread: shutdown() must come from another
        server.draining = True
        threading.Thread(target=server.shutdown, name="stop", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on http://{host}:{port}  ({clf.info['arch']}, {clf.info['source']} "
          f"{clf.info['channels'] or ''}, input {tuple(clf.info['input_shape'])}, "
          f"{clf.info['device']}{', amp' if clf.amp else ''})", flush=True)
    try:
        server.serve_forever()
    finally:
        server.draining = True
        server.server_close()  # no new connections
        left = server.drain(args.drain_timeout)
        clf.decoder.close()
        if left:
            print(f"stopped with {left} request(s) unanswered after {args.drain_timeout:g} s",
                  file=sys.stderr, flush=True)
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
