"""Serving: JPEG bytes in, model-ready torch tensors out, one image or a batch.

    dec = Decoder.from_checkpoint("ckpt.pth")      # the checkpoint's eval pre-processing
    x = dec.decode(jpeg_bytes)                     # (C, H/8, W/8) torch tensor
    xb = dec.decode_batch([b1, b2, b3])            # (3, C, H/8, W/8), decoded in threads
    xb, failed = dec.decode_batch(items, errors="return")   # failed: [(index, JpegError)]
    xb, reports = dec.decode_batch(items, errors="report")  # one ItemReport per item
    xb = dec.keep_rows(xb, [r.index for r in reports if r.ok])  # still page-locked
    x = dec.to_device(xb, "cuda", dtype=torch.float32)      # async copy, guarded buffer
    model = jpegfreq.models.load_model("ckpt.pth")  # the network lives with the models

A Decoder holds a fixed pre-processing (channel set, geometry, source, stats,
dtype) and a thread pool created on first use.  The C reader and operator
release the GIL, so the pool's threads decode in parallel.  One Decoder may be
used from any number of threads at once; ``close()`` (or ``with``) stops the
pool, and a later batch simply starts a new one.

Page-locked memory (``pin_memory=True``, CUDA only) is allocated only in the
process that built the Decoder: a copy unpickled elsewhere (DataLoader
workers) or inherited through fork never pins, so no child process touches
CUDA that its parent initialised.  A page-locked ``out=`` buffer reused between
batches is not written again while a ``to_device`` copy out of it may still be
running: decode_batch waits for the CUDA event recorded after that copy.
"""
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .channels import ChannelSet
from .checkpoint import load_checkpoint, preprocessing
from .errors import JpegError
from .geometry import Geometry, eval_geometry
from .pipeline import SOURCES, cube
from .reader import source_name
from .stats import Stats

__all__ = ["Decoder", "BatchError", "ItemReport"]

_DTYPES = ("float32", "float16")


class BatchError(JpegError):
    """One or more items of a batch could not be decoded.

    Names the first failing item: ``index``, plus ``source``/``reason``/``kind``
    of its JpegError (also in ``__cause__``).  ``failures`` lists every failed
    item of the batch as ``[(index, JpegError)]``, in index order.
    """

    def __init__(self, index, error, failures=None):
        self.index = int(index)
        self.error = error
        self.failures = list(failures) if failures is not None else [(self.index, error)]
        more = len(self.failures) - 1
        reason = f"batch item {self.index}: {error.reason}"
        if more > 0:
            reason += f" (and {more} more failed item{'s' if more > 1 else ''}: " + ", ".join(
                str(i) for i, _ in self.failures[1:9]) + (", ..." if more > 8 else "") + ")"
        super().__init__(error.source, reason, error.kind)

    def __reduce__(self):
        return (type(self), (self.index, self.error, self.failures))


# libjpeg's JWRN_JPEG_EOF: the data ended before the EOI marker (a truncated file)
_EOF_WARNING = "Premature end of JPEG file"


@dataclass(frozen=True)
class ItemReport:
    """What happened to one item of ``decode_batch(..., errors="report")``.

    index: the item's position in the batch.
    error: the JpegError that refused it, or None when its row holds the image.
    warnings: libjpeg's warnings for the item, in the order it gave them (empty for
        a clean file and for a refused one).
    share: the share of the image data the item needs that was really decoded, in
        [0, 1]: the reader's ``info["decoded"]`` (see jpegfreq.cube and
        jpegfreq.reader.decoded_share: the MCU rows the crop reads, each scan that
        began counted).  1.0 for an intact file; None when not reported (then
        ``truncated`` falls back on the warnings).
    """

    index: int
    error: Optional[JpegError] = None
    warnings: Tuple[str, ...] = ()
    share: Optional[float] = None

    @property
    def ok(self) -> bool:
        """The row holds the decoded image (perhaps a partial one: see truncated)."""
        return self.error is None

    @property
    def truncated(self) -> bool:
        """The file was decoded but the image data it needs ended early: share < 1
        when the share is known (a file that lacks only its EOI marker has share 1),
        else libjpeg warned that the data ended before the EOI marker."""
        if self.error is not None:
            return False
        if self.share is not None:
            return self.share < 1.0
        return any(w.startswith(_EOF_WARNING) for w in self.warnings)


class _CopyGuard:
    """CUDA events of host-to-device copies still reading page-locked buffers, per
    buffer storage: ``record`` after a non-blocking copy, ``wait`` before writing the
    buffer again.  ``new_event`` makes the event (torch.cuda.Event; tests substitute it)."""

    def __init__(self, new_event=None):
        self.new_event = new_event
        self._lock = threading.Lock()
        self._pending = {}

    @staticmethod
    def _key(t):
        return t.untyped_storage().data_ptr()

    def record(self, t):
        if self.new_event is None:
            import torch
            event = torch.cuda.Event()
        else:
            event = self.new_event()
        event.record()  # on the current stream, after the copy just queued there
        with self._lock:
            self._pending.setdefault(self._key(t), []).append(event)

    def wait(self, t):
        with self._lock:
            events = self._pending.pop(self._key(t), ())
        for event in events:
            event.synchronize()

    def __len__(self):
        with self._lock:
            return sum(len(v) for v in self._pending.values())


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Decoder:
    """Bytes -> tensors with one fixed pre-processing.

    channels: ChannelSet or spec (default "24S"); ignored for source "rgb".
    size: crop side in pixels (default 448 -> 56x56 cube; rgb: 224); used only
        when ``geometry`` is None, otherwise the geometry's out_h x out_w decide.
    source: "jpeg-coeffs" (default), "spatial" or "rgb" (see jpegfreq.cube).
    stats: None (unnormalized), a jpegfreq.stats.Stats, its to_dict() or a
        stats.json path; checked against channels/source/geometry here, once.
    geometry: None = eval geometry for ``size``; a Geometry or Geometry dict.
    dtype: "float32" (default) or "float16" output.
    threads: threads decoding one batch, the calling thread included (default:
        the CPUs this process may run on); 1 decodes in the calling thread only.
    pin_memory: allocate decode_batch outputs in page-locked memory for fast,
        asynchronous host-to-GPU copies.  Pinning needs CUDA: without it the
        flag is ignored (``self.pin_memory`` then reads False).  Only the process
        that built the Decoder pins: in an unpickled copy or a forked child
        ``self.pin_memory`` reads False and batches are ordinary memory.
    strict: raise on libjpeg warnings (premature end, corrupt data) instead
        of returning the partial image (default False).
    max_pixels: pixel limit (None = jpegfreq's global limit, 0 = none).
    """

    def __init__(self, channels="24S", size: Optional[int] = None, source: str = "jpeg-coeffs",
                 stats=None, geometry=None, dtype="float32", threads: Optional[int] = None,
                 pin_memory: bool = False, strict: bool = False,
                 max_pixels: Optional[int] = None):
        import torch
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        if isinstance(geometry, dict):
            geometry = Geometry.from_dict(geometry)
        elif geometry is None:
            geometry = eval_geometry(int(size) if size is not None else
                                     224 if source == "rgb" else 448)
        elif not isinstance(geometry, Geometry):
            raise TypeError(f"geometry must be a Geometry, its dict or None, "
                            f"not {type(geometry).__name__}")
        stats = Stats.coerce(stats)
        dtype = np.dtype(dtype).name if not isinstance(dtype, torch.dtype) else \
            str(dtype).replace("torch.", "")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be float32 or float16, not {dtype}")
        if threads is None:
            threads = _default_threads()
        if int(threads) < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")

        self.source = source
        self.channels = None if source == "rgb" else (
            channels if isinstance(channels, ChannelSet) else ChannelSet.parse(channels))
        self.geometry = geometry
        self.size = geometry.out_h if geometry.out_h == geometry.out_w else geometry.size
        self.stats = stats
        if stats is not None:  # a mismatch is an error now, not at the first request
            stats.scale_offset(self.channels, source=source, geometry=geometry)
        self.dtype = dtype
        self.torch_dtype = getattr(torch, dtype)
        self.threads = int(threads)
        self.requested_pin_memory = bool(pin_memory)
        self._pin = bool(pin_memory) and torch.cuda.is_available()
        self._pin_pid = os.getpid()  # pinning is this process's only (see pin_memory)
        self.strict = bool(strict)
        self.max_pixels = max_pixels
        if source == "rgb":
            self.shape = (3, geometry.out_h, geometry.out_w)
        else:
            self.shape = (self.channels.count, geometry.out_h // 8, geometry.out_w // 8)
        self.classes = None  # from_checkpoint fills in the checkpoint's class names
        self._lock = threading.Lock()
        self._executor = None
        self._copies = _CopyGuard()

    @property
    def pin_memory(self) -> bool:
        """Batches are page-locked: asked for, CUDA present, and this is the process
        that built the Decoder (never in a pickled copy or a forked child)."""
        return self._pin and os.getpid() == self._pin_pid

    # -- construction -------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, ckpt_or_path, **kw) -> "Decoder":
        """The exact eval pre-processing of a train.py checkpoint (path or loaded dict).

        Channels, size, source, geometry and stats come from the checkpoint
        (jpegfreq.checkpoint.preprocessing); ``kw`` may set only dtype, threads,
        pin_memory, strict and max_pixels.  ``.classes`` gets the class names.
        """
        fixed = {"channels", "size", "source", "stats", "geometry"} & set(kw)
        if fixed:
            raise TypeError(f"from_checkpoint takes {', '.join(sorted(fixed))} from the "
                            "checkpoint; build a Decoder(...) directly to change them")
        ckpt = ckpt_or_path if isinstance(ckpt_or_path, dict) else load_checkpoint(ckpt_or_path)
        if ckpt.get("task", "classify") != "classify":
            name = ckpt_or_path if not isinstance(ckpt_or_path, dict) else "checkpoint"
            raise ValueError(f"{name}: a {ckpt.get('task')!r} checkpoint; a Decoder serves "
                             "classifiers (detection pre-processing: jpegfreq.detection)")
        pre = preprocessing(ckpt)
        dec = cls(channels=pre["channels"] if pre["channels"] is not None else "24S",
                  size=pre["size"], source=pre["source"], stats=pre["stats"],
                  geometry=pre["geometry"], **kw)
        dec.classes = ckpt.get("classes")
        return dec

    # -- one image ----------------------------------------------------------

    def decode_numpy(self, data, warnings_out: Optional[list] = None,
                     out: Optional[np.ndarray] = None, info: Optional[dict] = None) -> np.ndarray:
        """decode() as a numpy array (no torch tensor wrapping); ``out``: an array of
        ``self.shape`` and this dtype to write into; ``info``: a dict receiving
        {"decoded": share, "warnings": [...]} (see jpegfreq.cube)."""
        return cube(data, self.channels if self.channels is not None else "24S",
                    self.geometry.out_h,
                    self.source, self.geometry, self.stats, self.dtype, self.strict,
                    self.max_pixels, warnings_out=warnings_out, out=out, info=info)

    def decode(self, data, warnings_out: Optional[list] = None):
        """One image -> torch tensor ``self.shape`` = (C, H/8, W/8) (rgb: (3, H, W)).

        data: JPEG bytes (any bytes-like) or a path.  warnings_out: a list that
        receives libjpeg's warnings for a damaged file (jpeg-coeffs path).
        Raises JpegError naming the problem.  Cost: one jpegfreq.cube call.
        """
        import torch
        return torch.from_numpy(self.decode_numpy(data, warnings_out))

    # -- batches ------------------------------------------------------------

    def new_batch(self, n: int):
        """An uninitialised (n, *self.shape) output tensor (pinned when enabled)."""
        import torch
        return torch.empty((int(n),) + self.shape, dtype=self.torch_dtype,
                           pin_memory=self.pin_memory)

    def decode_batch(self, items, errors: str = "raise", out=None,
                     warnings_out: Optional[list] = None):
        """Many images -> one (N, *self.shape) tensor, decoded by the thread pool.

        items: a sequence of JPEG bytes (or paths).
        errors: "raise" (default): if any item fails, raise BatchError naming
            the first failed index and its source and reason (``.failures``
            lists them all; every item is still attempted).  "return": return
            ``(tensor, failures)`` where failures is ``[(index, JpegError)]``
            in index order and the failed rows of the tensor are zero.
            "report": return ``(tensor, reports)``, one ItemReport per item in
            index order (its error or None, its warnings, its decoded share);
            failed rows are zero.
        out: optional preallocated tensor (N, *self.shape) of this dtype,
            contiguous, on the CPU (e.g. reused between calls, or new_batch()).
            When a to_device copy out of it may still be running, it is waited for.
        warnings_out: a list receiving ``(index, warning)`` for libjpeg warnings.
        Results are written straight into the output tensor, which is pinned
        when pin_memory is on and CUDA is available.  Cost: N cube calls spread
        over ``threads`` threads (bench/bench_threads.py measures the scaling).
        """
        if errors not in ("raise", "return", "report"):
            raise ValueError(f"errors must be 'raise', 'return' or 'report', not {errors!r}")
        if isinstance(items, (bytes, bytearray, memoryview, str, os.PathLike)):
            raise TypeError("decode_batch takes a sequence of images; use decode() for one")
        items = list(items)
        n = len(items)
        if out is None:
            out = self.new_batch(n)
        else:
            self._check_out(out, n)
            self._copies.wait(out)  # a copy to the device may still read it
        target = out.numpy()  # shares memory with the tensor
        reports: List[Optional[ItemReport]] = [None] * n

        def work(counter):
            # Workers pull the next index from a shared counter until none is
            # left (next() on itertools.count is atomic under the GIL).
            while True:
                i = next(counter)
                if i >= n:
                    return
                info = {}
                try:
                    # straight into the batch (jpeg-coeffs float32: the C operator writes it)
                    self.decode_numpy(items[i], out=target[i], info=info)
                except JpegError as e:
                    target[i] = 0
                    reports[i] = ItemReport(i, e)
                except Exception as e:
                    if hasattr(e, "add_note"):  # Python 3.11+
                        e.add_note(f"while decoding batch item {i} ({source_name(items[i])})")
                    raise
                else:
                    reports[i] = ItemReport(i, None, tuple(info.get("warnings", ())),
                                            info.get("decoded"))

        workers = min(self.threads, n)
        counter = itertools.count()
        futures = []
        if workers > 1:
            with self._lock:  # so that close() cannot shut the pool between these submits
                pool = self._pool()
                futures = [pool.submit(work, counter) for _ in range(workers - 1)]
        try:
            work(counter)  # the calling thread is one of the workers
        finally:
            for f in futures:  # no worker may still write into `out` once we return
                f.exception()
        for f in futures:
            f.result()
        if warnings_out is not None:
            warnings_out.extend((r.index, msg) for r in reports for msg in r.warnings
                                if r.error is None)
        if errors == "report":
            return out, reports
        failures = [(r.index, r.error) for r in reports if r.error is not None]
        if errors == "return":
            return out, failures
        if failures:
            i, e = failures[0]
            raise BatchError(i, e, failures) from e
        return out

    def keep_rows(self, batch, rows):
        """The rows ``rows`` (increasing indices) of ``batch``, moved to its first rows:
        returns ``batch[:len(rows)]``, a view of the same memory, so a page-locked batch
        stays page-locked (``batch[rows]`` would copy into ordinary memory).  The rows
        after them are left as they were; ``batch`` itself is changed."""
        rows = [int(r) for r in rows]
        increasing = all(a < b for a, b in zip(rows, rows[1:]))
        if not increasing or (rows and (rows[0] < 0 or rows[-1] >= len(batch))):
            raise ValueError(f"rows must be increasing indices into the batch of {len(batch)}, "
                             f"not {rows}")
        for j, i in enumerate(rows):
            if i != j:  # i > j: row i has not been overwritten yet
                batch[j].copy_(batch[i])
        return batch[:len(rows)]

    def to_device(self, batch, device, dtype=None, channels_last: bool = False):
        """``batch`` on ``device`` for a model: a non-blocking copy (asynchronous from a
        page-locked batch), then the cast to ``dtype`` (e.g. the model's float32 from a
        float16 batch: half the bytes cross the bus) and, with ``channels_last``, that
        memory format.  After a copy from page-locked memory to CUDA a CUDA event is
        recorded on the current stream: a later decode_batch(out=batch) waits for it
        before writing into the buffer again.  On the CPU no copy is made."""
        import torch
        x = batch.to(device, non_blocking=True)
        if x.device.type == "cuda" and batch.device.type == "cpu" and batch.is_pinned():
            self._copies.record(batch)
        if dtype is not None and x.dtype != dtype:
            x = x.to(dtype)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def record_copy(self, batch) -> None:
        """Record that a non-blocking copy out of the page-locked ``batch`` was just
        queued on the current CUDA stream (for copies made without to_device): the
        next decode_batch(out=batch) waits for it."""
        self._copies.record(batch)

    def _check_out(self, out, n):
        import torch
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out must be a torch.Tensor, not {type(out).__name__}")
        want = (n,) + self.shape
        if tuple(out.shape) != want or out.dtype != self.torch_dtype:
            raise ValueError(f"out must be {self.dtype} {want}, got {out.dtype} "
                             f"{tuple(out.shape)}")
        if out.device.type != "cpu" or not out.is_contiguous():
            raise ValueError("out must be a contiguous CPU tensor")

    # -- the pool -----------------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        # caller holds self._lock; the calling thread is a worker too, hence threads - 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max(1, self.threads - 1),
                                                thread_name_prefix="jpegfreq-decode")
        return self._executor

    def close(self) -> None:
        """Stop the worker threads (waits for running batches).  Idempotent; the
        Decoder stays usable: the next decode_batch starts a new pool."""
        with self._lock:
            pool, self._executor = self._executor, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        pool = getattr(self, "_executor", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def __getstate__(self):  # picklable (e.g. into DataLoader workers): no pool, no lock
        state = self.__dict__.copy()
        state["_executor"] = None
        del state["_lock"]
        del state["torch_dtype"]
        del state["_copies"]
        return state

    def __setstate__(self, state):
        import torch
        self.__dict__.update(state)
        self.torch_dtype = getattr(torch, self.dtype)
        self._lock = threading.Lock()
        self._copies = _CopyGuard()
        self._pin = False  # a copy never pins: its process may not own CUDA (fork)

    def __repr__(self):
        what = "rgb" if self.channels is None else self.channels.name
        return (f"Decoder({what}, source={self.source!r}, shape={self.shape}, "
                f"dtype={self.dtype}, stats={'yes' if self.stats is not None else 'no'}, "
                f"threads={self.threads}, pin_memory={self.pin_memory})")
