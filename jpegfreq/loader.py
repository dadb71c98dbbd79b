"""Training and evaluation batches at the decoder's speed: threads decode into reused buffers.

    loader = JpegLoader("data/train", batch_size=64, channels="24S", size=448, train=True)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader:            # x (N, C, size/8, size/8), y int64 (N,)
            ...
        print(loader.skipped)          # [(name, reason), ...] of this epoch's unreadable images

    JpegLoader(..., with_index=True)    # batches (x, y, idx): idx int64, each row's sample index
    JpegLoader(..., dtype="int8", stats="stats.json")  # x int8; x * loader.int8_scale[:, None,
                                        # None] is the normalised cube (the models do it)

``data`` is an ImageFolder split folder (CLASS/IMAGE) or tar shards in the WebDataset layout
(a list of paths, a brace pattern "train-{000000..000039}.tar", or "pipe:COMMAND" sources;
see jpegfreq.shards).

How it works: a pool of ``threads`` threads takes a few samples at a time (a task), reads
their files and headers in one call (jpegfreq.source.read_sources), plans each one's
geometry and decodes it with jpegfreq.cube straight into its row of a preallocated batch
buffer; the C reader and operator release the GIL, so the threads run in parallel, and no
other step per sample releases it (each release is a wait to take it back while the other
thread runs Python).  There are ``prefetch + 1`` buffers (one more when they
are page-locked), reused round-robin: at most ``prefetch`` batches are being decoded while the
training loop holds the one it was given.  No per-sample tensors, no worker processes.

Buffer rule (copy=False, the default): a yielded batch is a view of a reused buffer and stays
valid until the loop asks for the next batch; keep it longer with ``copy=True`` (or
``x.clone()``).  With page-locked buffers a ``x.to("cuda", non_blocking=True)`` issued before
the next batch is asked for is safe: the loader records a CUDA event when the buffer is handed
back and waits for it before decoding into that buffer again.

Reproducibility: sample ``index`` of epoch ``e`` gets its crop and flip, then its colour
jitter, its policy op (auto_augment) and its erased rectangle (random_erase), in that order,
from np.random.default_rng([seed, e, index]) (jpegfreq.datasets.sample_rng), and every sample
has a fixed row in a fixed batch, so batches are the same for any thread count.  Training
order is a permutation drawn from (seed, epoch); evaluation order is the file order.

Ranks (rank/world_size, default from torchrun's RANK/WORLD_SIZE): training gives each rank a
disjoint share of the epoch's permutation, all shares of one size (the permutation is cut to a
multiple of world_size, so at most world_size - 1 images sit out an epoch, different ones each
epoch); evaluation is exact, as jpegfreq.runtime.ShardSampler: every image exactly once over
all ranks.

Bad images: an image that cannot be read (jpegfreq.JpegError: damaged, truncated, not an
image, over the pixel limit) is skipped, never replaced: its batch is compacted and comes out
shorter.  ``skipped`` lists (name, reason) of the last epoch's.  A truncated file that was
partly decoded (jpegfreq.cube's info["decoded"] < 1) is kept and listed in ``damaged`` as
(name, decoded share), unless its share is below ``min_decoded``: then it is skipped like an
unreadable one, the reason stating the share.  Any other exception in a
worker (a bug, MemoryError) stops the epoch and is raised in the loop.

Threads: the pool lives for one pass over the data.  Leaving the loop early (break, an
exception, KeyboardInterrupt), exhausting it, ``close()`` or ``with JpegLoader(...)`` stops
and joins every worker thread.
"""
import collections
import dataclasses
import os
import queue
import threading
from typing import List, Optional, Tuple

import numpy as np

from . import augment
from .errors import JpegError
from .datasets import epoch_rng, list_samples, sample_rng
from .geometry import eval_geometry, sample_train
from .photometric import Photometric
from .pipeline import SOURCES, channel_set, cube
from .source import read_sources

__all__ = ["JpegLoader"]

_DTYPES = ("float32", "float16", "int8")
#: int8 clip in standard deviations of the normalised values: the step is INT8_CLIP / 127.
#: DCT coefficients are heavy-tailed, so a narrow clip costs more than a coarse step:
#: python bench/bench_int8.py on 100 ImageNet files (stats from 100 others), 24S 448 train
#: cubes: K 8 clips 0.083% of values, RMS error 0.099 std; K 12 0.014%, 0.053; K 16
#: 0.0028%, 0.042 (the least); K 20 0.0007%, 0.045
INT8_CLIP = 16.0
#: samples per worker task: their files are read by one call (jpegfreq.source.read_sources)
_TASK = 4


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


class _FolderData:
    """An ImageFolder split as (index, path, label) items (jpegfreq.datasets.list_samples)."""

    def __init__(self, folder, classes=None):
        self.folder = folder
        self.samples, self.classes = list_samples(folder, classes)

    def __len__(self):
        return len(self.samples)

    def count(self, train, rank, world, seed=0, epoch=0):
        n = len(self.samples)
        return n // world if train else len(range(rank, n, world))

    def items(self, train, seed, epoch, rank, world):
        n = len(self.samples)
        if train:
            order = epoch_rng(seed, epoch).permutation(n)[:n // world * world][rank::world]
        else:
            from .runtime import ShardSampler
            order = ShardSampler(n, rank, world)
        for i in order:
            path, label = self.samples[int(i)]
            yield int(i), path, path, label

    def close(self):
        pass


def _jitter(color_jitter, grayscale_p):
    """(brightness, contrast, saturation, hue) ranges or None, and the grayscale
    probability, checked now (one draw) rather than in every worker."""
    if color_jitter is not None:
        if isinstance(color_jitter, (int, float)):
            color_jitter = (color_jitter,) * 3 + (0.0,)
        color_jitter = tuple(color_jitter)
        if len(color_jitter) != 4:
            raise ValueError("color_jitter is (brightness, contrast, saturation, hue), as "
                             f"torchvision's ColorJitter takes them, not {color_jitter!r}")
    grayscale_p = float(grayscale_p)
    Photometric.sample(np.random.default_rng(0), *(color_jitter or (None,) * 4),
                       grayscale_p=grayscale_p)
    return color_jitter, grayscale_p


class _Normalisation:
    """A Stats' (scale, offset) for one channel set and output size, worked out once: what
    jpegfreq.cube asks a stats= argument for (scale_offset), without selecting the channels
    and checking the size again for every sample."""

    __slots__ = ("scale", "offset")

    def __init__(self, scale, offset):
        self.scale, self.offset = scale, offset

    def scale_offset(self, *args, **kwargs):
        return self.scale, self.offset


class _Batch:
    """One batch being decoded into buffer ``slot``: rows count down to done."""

    __slots__ = ("slot", "n", "names", "remaining", "lock", "done", "failed", "damaged",
                 "fatal")

    def __init__(self, slot, n, names):
        self.slot = slot
        self.n = n
        self.names = names
        self.remaining = n
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.failed: List[Tuple[int, str, str]] = []   # (row, name, reason)
        self.damaged: List[Tuple[int, str, float]] = []  # (row, name, decoded share), kept
        self.fatal: Optional[BaseException] = None
        if n == 0:
            self.done.set()


class JpegLoader:
    """Batches of cubes (or rgb crops) and labels, decoded by a thread pool into reused buffers.

    data: an ImageFolder split folder (CLASS/IMAGE), or tar shards: a list of paths, a brace
        pattern ("train-{000000..000039}.tar") or "pipe:COMMAND" sources (jpegfreq.shards).
    batch_size: samples per batch (the last one, and batches with skipped images, may be
        shorter unless drop_last drops a short last batch).
    channels: channel set spec or ChannelSet (default "24S"; ignored for source "rgb").
    size: crop side in pixels (default 448 -> 56x56 cubes).
    train: RandomResizedCrop + flip per sample and a per-epoch order (True), or the eval
        geometry in file order (False).
    seed: base of the per-sample and per-epoch generators.
    threads: decoding threads (default: the CPUs this process may run on).
    dtype: "float32" (default), "float16" or "int8" (needs stats: see int8 below).
    stats: None (unnormalized), a jpegfreq.Stats, its dict or a stats.json path.
    source: "jpeg-coeffs" (default), "spatial" or "rgb" (see jpegfreq.cube).
    drop_last: drop a short last batch (default: True when training, False otherwise).
    pin_memory: page-locked buffers (default: when CUDA is available; needs CUDA).
    prefetch: batches decoded ahead at most (default 2).
    rank, world_size: this process's share (default: RANK / WORLD_SIZE, else 0 of 1).
    copy: yield batches that are the caller's to keep (a copy) instead of views of the
        reused buffers, valid until the next batch is asked for (default False).
    classes: the class names (default: the folder's class folders, or the shards' class
        list, PREFIX-classes.json beside them; a list or the path of such a file).
    shuffle_buffer: samples held to shuffle shards when training (default 1000; batches
        start once 100 are held, and the buffer grows to its size while they go out).
    with_index: yield (x, y, idx) instead of (x, y); idx is an int64 (N,) tensor of each
        row's sample index (a folder: the position in ``loader.data.samples``; shards: the
        index the shard writer gave the sample, jpegfreq.shards.sample_index of its key),
        after skipped rows are compacted, so it lines up with x and y row for row.
    color_jitter: training only: (brightness, contrast, saturation, hue) ranges as
        torchvision's ColorJitter takes them (a number b means (b, b, b, 0)), applied in
        the coefficient domain (jpegfreq.Photometric, docs/augment.md); drawn after the
        crop and flip from the sample's generator (default None: no colour ops).
    grayscale_p: training only: probability of grayscale per sample (default 0).
    auto_augment: training only: None (default) or "ta_exact", a TrivialAugment-style
        policy of one exact op per image (colour, quarter turns and transposes, crop
        shifts; jpegfreq.augment, docs/augment.md), drawn after the colour jitter; a colour
        op combines with the jitter's (jpegfreq.augment.combine).
    random_erase: training only: probability per sample of erasing one rectangle of the
        output with torchvision RandomErasing's rule (scale (0.02, 0.33), ratio (0.3, 3.3),
        value 0: the channel mean when stats normalise), on whole cube cells (every channel
        of them; pixels for rgb), drawn last; written into the batch row after the decode
        (default 0: never).
    min_decoded: skip truncated images of which less than this share of the rows the cube
        reads was decoded (default 0: keep every partly decoded one; they are listed in
        ``damaged``).

    int8 (dtype="int8"): the normalised values (x - mean) / std are quantised to int8 with
    a per-channel step, ``loader.int8_scale``, a float32 (C,) tensor fixed for the loader
    (INT8_CLIP / 127 for every channel: values beyond INT8_CLIP standard deviations are
    clipped to +-127).  The batch is still (x, y) (or (x, y, idx)), x int8 (N, C, H, W);
    x.float() * int8_scale[:, None, None] gives back the normalised cube.  The networks do
    that at their input when built with the step:
    jpegfreq.models.build_model(arch, source, channels, num_classes,
    int8_scale=loader.int8_scale); the step is a buffer of the model's state_dict
    ("int8_scale"), so load_model rebuilds it, and float input keeps working unchanged.
    A 24S 448 sample is then 24 * 56 * 56 = 75,264 bytes (uint8 RGB 224: 150,528).
    """

    def __init__(self, data, batch_size: int, channels="24S", size: int = 448,
                 train: bool = True, seed: int = 0, threads: Optional[int] = None,
                 dtype="float32", stats=None, source: str = "jpeg-coeffs",
                 drop_last: Optional[bool] = None, pin_memory: Optional[bool] = None,
                 prefetch: int = 2, rank: Optional[int] = None,
                 world_size: Optional[int] = None, copy: bool = False, classes=None,
                 shuffle_buffer: int = 1000, with_index: bool = False, color_jitter=None,
                 grayscale_p: float = 0.0, min_decoded: float = 0.0,
                 random_erase: float = 0.0, auto_augment: Optional[str] = None):
        import torch
        from .serving import _default_threads
        from .stats import Stats
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        dtype = str(dtype).replace("torch.", "") if isinstance(dtype, torch.dtype) \
            else np.dtype(dtype).name
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be float32, float16 or int8, not {dtype}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if int(prefetch) < 1:
            raise ValueError(f"prefetch must be at least 1, not {prefetch}")
        threads = _default_threads() if threads is None else int(threads)
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        rank = _env_int("RANK", 0) if rank is None else int(rank)
        world_size = _env_int("WORLD_SIZE", 1) if world_size is None else int(world_size)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        stats = Stats.coerce(stats)
        if dtype == "int8" and stats is None:
            raise ValueError("dtype int8 quantises normalised values: give stats (a "
                             "jpegfreq.Stats, its dict or a stats.json path)")

        self.size = int(size)
        self.source = source
        self.channels = None if source == "rgb" else (
            channel_set(channels) if isinstance(channels, str) else channels)
        self.eval_geometry = eval_geometry(self.size)
        if stats is not None:   # a mismatch is an error now, not in every worker
            stats.scale_offset(self.channels, source=source, geometry=self.eval_geometry)
        self.stats = stats
        self.with_index = bool(with_index)
        self.color_jitter, self.grayscale_p = _jitter(color_jitter, grayscale_p)
        self.random_erase = augment.check_erase_p(random_erase)
        self.auto_augment = augment.check_policy(auto_augment)
        self.min_decoded = float(min_decoded)
        if not 0.0 <= self.min_decoded <= 1.0:
            raise ValueError(f"min_decoded is a share of the image, 0..1, not {min_decoded}")
        self.damaged: List[Tuple[str, float]] = []
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.threads = threads
        self.dtype = dtype
        self.torch_dtype = getattr(torch, dtype)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        want_pin = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.pin_memory = want_pin and torch.cuda.is_available()
        self.prefetch = int(prefetch)
        self.rank, self.world_size = rank, world_size
        self.copy = bool(copy)
        self.epoch = 0
        self.skipped: List[Tuple[str, str]] = []
        if source == "rgb":
            self.shape = (3, self.size, self.size)
        else:
            self.shape = (self.channels.count, self.size // 8, self.size // 8)
        self._grid = self.shape[1:]        # what random erasing places its rectangle on
        self.int8_scale = None
        self._decode_stats = stats      # what the cube is normalised with
        if dtype == "int8":
            step = INT8_CLIP / 127.0
            self.int8_scale = torch.full((self.shape[0],), step, dtype=torch.float32)
            # fold 1/step into the normalisation the operator applies: the cube comes out
            # in steps, and only rounding and the clip are left to do per row
            self._decode_stats = dataclasses.replace(
                stats, std=np.where(stats.std > 1e-6, stats.std, 1.0) * step)
        if self._decode_stats is not None:
            # checked once here for this output size; every sample then reuses the arrays
            self._decode_stats = _Normalisation(*self._decode_stats.scale_offset(
                self.channels, source=source, geometry=self.eval_geometry))

        if isinstance(data, (str, os.PathLike)) and os.path.isdir(data):
            self.data = _FolderData(os.fspath(data), classes)
        else:
            from .shards import ShardData
            self.data = ShardData(data, classes=classes, shuffle_buffer=shuffle_buffer)
        self.classes = self.data.classes

        self._lock = threading.Lock()
        self._workers: List[threading.Thread] = []
        self._queue = None
        self._stop = None
        self._buffers = None     # [(x tensor, y tensor)], allocated on first iteration
        self._events = None      # per buffer: a CUDA event to wait for before reuse

    # -- sizes ---------------------------------------------------------------

    def __len__(self):
        """Batches per epoch on this rank (before skipped images shorten any)."""
        n = self.data.count(self.train, self.rank, self.world_size, self.seed, self.epoch)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int):
        """Select the epoch: its order (training) and every sample's crop and flip."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in the current epoch (jpegfreq.datasets.sample_rng)."""
        return sample_rng(self.seed, self.epoch, index)

    def geometry(self, index: int, width: int, height: int):
        """The Geometry of sample ``index`` this epoch for an image of width x height."""
        return self.plan(index, width, height)[0]

    def plan(self, index: int, width: int, height: int):
        """(Geometry, Photometric or None) of sample ``index`` this epoch: training draws the
        crop and flip, then the colour ops, then the policy's op (auto_augment, folded into
        both), from the sample's one generator."""
        return self.draw(index, width, height)[:2]

    def erasing(self, index: int, width: int, height: int) -> Optional[augment.Erase]:
        """The rectangle random_erase zeroes in sample ``index`` this epoch, or None; drawn
        after everything plan() draws."""
        return self.draw(index, width, height)[2]

    def draw(self, index: int, width: int, height: int):
        """(Geometry, Photometric or None, Erase or None) of sample ``index`` this epoch: the
        one per-sample draw every decode uses (plan() and erasing() are its parts).  A
        subclass that wants other per-sample ops overrides this."""
        if not self.train:
            return self.eval_geometry, None, None
        rng = self.rng(index)
        g = sample_train(width, height, self.size, rng)
        p = None
        if self.color_jitter is not None or self.grayscale_p:
            p = Photometric.sample(rng, *(self.color_jitter or (None,) * 4),
                                   grayscale_p=self.grayscale_p)
        if self.auto_augment is not None:
            g, p = augment.sample_policy(rng, self.auto_augment).apply(g, width, height, p)
        erase = None
        if self.random_erase:
            erase = augment.sample_erase(rng, *self._grid, self.random_erase)
        return g, p, erase

    # -- decoding ------------------------------------------------------------

    def _decode(self, index, s, row):
        """One sample (a Source) into ``row`` (numpy view of its batch row), in the batch's
        dtype: the C operator converts float16 and int8 as it finishes (int8: the cube is
        already in steps, see __init__, and is rounded and clipped to +-127).
        random_erase: the rectangle is zeroed in the row afterwards (a slice assignment)."""
        g, p, erase = self.draw(index, s.width, s.height)
        cs = self.channels if self.channels is not None else "24S"
        info = {}
        cube(s, cs, self.size, self.source, g, self._decode_stats, self.dtype, out=row,
             photometric=p, info=info)
        if erase is not None:
            erase.apply(row)
        return info["decoded"]

    def _work(self, q, stop):
        while True:
            task = q.get()
            if task is None:
                return
            batch, rows, indices, srcs = task
            sources = ()
            if not stop.is_set() and batch.fatal is None:
                try:
                    sources = read_sources(srcs)
                except BaseException as e:  # not an image's fault: the epoch stops
                    batch.fatal = e
                    stop.set()
            for row, index, s in zip(rows, indices, sources):
                if stop.is_set() or batch.fatal is not None:
                    break
                try:
                    if isinstance(s, JpegError):
                        raise s
                    share = self._decode(index, s, self._arrays[batch.slot][row])
                    if share < 1.0:
                        with batch.lock:
                            if share < self.min_decoded:
                                batch.failed.append((row, batch.names[row], (
                                    f"truncated: only {100 * share:.0f}% of the rows the cube "
                                    f"reads were decoded (min_decoded {self.min_decoded:g})")))
                            else:
                                batch.damaged.append((row, batch.names[row], share))
                except JpegError as e:
                    with batch.lock:
                        batch.failed.append((row, batch.names[row], str(e.reason)))
                except BaseException as e:  # not the image's fault: the epoch stops
                    batch.fatal = e
                    stop.set()
            with batch.lock:
                batch.remaining -= len(rows)
                last = batch.remaining == 0
            if last:
                batch.done.set()

    def _start(self):
        with self._lock:
            if self._workers:
                raise RuntimeError("this JpegLoader is already being iterated; one pass at a time")
            if self._buffers is None:
                self._allocate()
            self._queue, self._stop = queue.SimpleQueue(), threading.Event()
            self._workers = [threading.Thread(target=self._work, args=(self._queue, self._stop),
                                              name=f"jpegfreq-loader-{i}", daemon=True)
                             for i in range(self.threads)]
            for t in self._workers:
                t.start()

    def _allocate(self):
        import torch
        count = self.prefetch + (2 if self.pin_memory else 1)
        # normal tensors even when the first pass starts under torch.inference_mode():
        # inference tensors could not be written by the workers' copies afterwards
        with torch.inference_mode(False):
            self._buffers = [(torch.empty((self.batch_size,) + self.shape,
                                          dtype=self.torch_dtype, pin_memory=self.pin_memory),
                              torch.empty(self.batch_size, dtype=torch.int64,
                                          pin_memory=self.pin_memory),
                              torch.empty(self.batch_size, dtype=torch.int64,
                                          pin_memory=self.pin_memory))
                             for _ in range(count)]
        self._arrays = [x.numpy() for x, _, _ in self._buffers]
        self._events = [None] * count

    def close(self):
        """Stop and join the worker threads (idempotent; the loader stays usable)."""
        with self._lock:
            workers, self._workers = self._workers, []
            q, stop = self._queue, self._stop
        if not workers:
            return
        stop.set()
        for _ in workers:
            q.put(None)
        for t in workers:
            t.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        self.data.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- iteration -----------------------------------------------------------

    def __iter__(self):
        self._start()
        try:
            yield from self._batches()
        finally:
            self.close()

    def _batches(self):
        items = self.data.items(self.train, self.seed, self.epoch, self.rank, self.world_size)
        try:
            yield from self._assemble(items)
        finally:
            items.close()       # a shard stream's file or command goes now, not at collection

    def _assemble(self, items):
        import torch
        skipped: List[Tuple[str, str]] = []
        self.skipped = skipped
        damaged: List[Tuple[str, float]] = []
        self.damaged = damaged
        free = collections.deque(range(len(self._buffers)))
        pending = collections.deque()
        held = None          # the slot the loop holds
        exhausted = False
        data_skipped = getattr(self.data, "skipped", None)   # the shard reader's findings
        if data_skipped:
            data_skipped.clear()     # left over from a pass the loop broke out of

        def submit():
            nonlocal exhausted
            slot = free.popleft()
            ev = self._events[slot]
            if ev is not None:          # an async copy out of this buffer may be running
                ev.synchronize()
                self._events[slot] = None
            labels = self._buffers[slot][1].numpy()
            indices = self._buffers[slot][2].numpy()
            chunk = []
            for item in items:
                chunk.append(item)
                if len(chunk) == self.batch_size:
                    break
            if len(chunk) < self.batch_size:
                exhausted = True
                if not chunk or self.drop_last:
                    free.appendleft(slot)
                    return
            batch = _Batch(slot, len(chunk), [name for _, _, name, _ in chunk])
            for row, (index, _, _, label) in enumerate(chunk):
                labels[row] = label
                indices[row] = index
            # tasks of a few samples each: a worker reads a task's files in one call
            step = min(_TASK, -(-len(chunk) // self.threads))
            for r in range(0, len(chunk), step):
                part = chunk[r:r + step]
                self._queue.put((batch, range(r, r + len(part)), [i for i, _, _, _ in part],
                                 [src for _, src, _, _ in part]))
            pending.append(batch)

        while True:
            if held is not None:        # the loop asked for the next batch: its buffer is free
                if self.pin_memory:
                    ev = torch.cuda.Event()
                    ev.record()
                    self._events[held] = ev
                free.append(held)
                held = None
            while not exhausted and len(pending) < self.prefetch and free:
                submit()
            if data_skipped:
                skipped.extend(data_skipped)
                data_skipped.clear()
            if not pending:
                return
            batch = pending.popleft()
            while not batch.done.wait(0.1):   # a timeout keeps Ctrl-C responsive
                pass
            if batch.fatal is not None:
                raise batch.fatal
            while not exhausted and len(pending) < self.prefetch and free:
                submit()
            x, y, idx = self._buffers[batch.slot]
            n = batch.n
            damaged.extend((name, share) for _, name, share in sorted(batch.damaged))
            if batch.failed:
                bad = sorted(batch.failed)
                skipped.extend((name, reason) for _, name, reason in bad)
                keep = np.setdiff1d(np.arange(n), [r for r, _, _ in bad])
                for dst, src in enumerate(keep):   # compact in place, rows move up only
                    if dst != src:
                        x[dst] = x[int(src)]
                        y[dst] = y[int(src)]
                        idx[dst] = idx[int(src)]
                n = len(keep)
            held = batch.slot
            if n == 0:
                continue
            out = (x[:n], y[:n], idx[:n]) if self.with_index else (x[:n], y[:n])
            if self.copy:
                out = tuple(t.clone() for t in out)
            yield out

    def __repr__(self):
        what = "rgb" if self.channels is None else self.channels.name
        return (f"JpegLoader({len(self.data)} images, {len(self.classes or ())} classes, {what}, "
                f"size={self.size}, train={self.train}, batch_size={self.batch_size}, "
                f"threads={self.threads}, dtype={self.dtype}, rank {self.rank} of "
                f"{self.world_size})")
