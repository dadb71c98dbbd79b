"""What train.py and detect.py share around their loops: processes, files, statistics, presets.

    ctx = Context(device=None)          # torchrun's RANK / WORLD_SIZE / LOCAL_RANK, or one process
    ctx.rank, ctx.world, ctx.local_rank, ctx.device, ctx.backend, ctx.distributed, ctx.main
    ctx.log(...)                        # prints on rank 0 only (flushed)
    ctx.barrier(); ctx.all_sum([..]); ctx.all_min(x); ctx.all_max(x); ctx.all_reduce_(t)
    ctx.broadcast_(t, src); ctx.broadcast_object(obj, src)
    ctx.sync_buffers(module, src)       # rank src's BatchNorm statistics on every rank
    ctx.sync_optimizer(optimizer, src)  # rank src's optimizer state (after uneven inputs)
    ctx.gather(obj)                     # [obj of rank 0, obj of rank 1, ...] on every rank
    ShardSampler(n, rank, world)        # evaluation: every index exactly once over all ranks
    progress(iterable, ctx, enabled)    # tqdm on stderr, rank 0 only
    write_json(path, data); write_text(path, text)    # atomic: temporary file, then rename
    plain(obj)                          # checkpoint contents as tensors and plain data only
    resolve_stats(ctx, given=, cache=, key=, ...)     # --stats, a cached stats.json, or computed
    check_stats(stats, path, channels, source, geometry)
    apply_preset(args, "train-demo", "train")         # flag defaults from jpegfreq.presets

Only the scripts import this module; it needs torch for the process context and never imports
the networks.  Checkpoints are written with jpegfreq.checkpoint.save_checkpoint (atomic too).
"""
import argparse
import copy
import json
import os
import sys
from collections import OrderedDict

import numpy as np

from .files import atomic_write
from .presets import PRESETS
from .stats import Stats

# preset entries that are not command-line flags
PRESET_EXTRAS = ("synthetic", "inspect_one")


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

def backend_for(device) -> str:
    """The torch.distributed backend for a device: nccl for CUDA, gloo otherwise."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def cuda_device(device=None, local_rank: int = 0):
    """The torch.device a process uses: ``device`` (default "cuda" when CUDA is available,
    else "cpu"); a CUDA device is made current with torch.cuda.set_device.  "cuda" without an
    index picks local_rank % torch.cuda.device_count(); an index that is not visible, or CUDA
    asked for where there is none, is a ValueError saying so."""
    import torch
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise ValueError(f"device {device}: CUDA is not available on this machine")
    count = torch.cuda.device_count()
    index = int(local_rank) % count if dev.index is None else dev.index
    if not 0 <= index < count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        raise ValueError(f"device {device}: only {count} CUDA device(s) are visible "
                         f"(CUDA_VISIBLE_DEVICES={visible})")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


class Context:
    """Rank, world size, local rank and device of this process; rank 0 prints and writes.

    Distributed when torchrun's RANK and WORLD_SIZE say more than one process (the process
    group is created here, nccl on CUDA, gloo on CPU); otherwise one process, rank 0 of 1.
    device (default cuda when available, else cpu): a CUDA device without an index becomes
    cuda:(LOCAL_RANK % visible devices) -- a scheduler that shows each task only its own GPU
    gives every process device 0 whatever its LOCAL_RANK -- and one with an index (cuda:1) is
    used as given; either way it is made the current CUDA device (torch.cuda.set_device), so
    kernels, collectives and page-locked copies of this process go to it.  The collective
    helpers are no-ops in one process.
    """

    def __init__(self, device=None):
        import torch
        import torch.distributed as dist
        self._dist = dist
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.distributed = "RANK" in os.environ and self.world > 1
        self.device = cuda_device(device, self.local_rank) if device is None or \
            str(device).startswith("cuda") else torch.device(device)
        self.backend = backend_for(self.device)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group(self.backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def log(self, *a, **kw):
        if self.main:
            print(*a, **kw, flush=True)

    def barrier(self):
        if self.distributed:
            self._dist.barrier()

    def _reduce(self, values, op):
        import torch
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device)
        self._dist.all_reduce(t, op=op)
        return t.cpu().tolist()

    @property
    def _comm_device(self):
        """Where collective inputs live: CPU when the backend takes CPU tensors (gloo; small
        reductions need no device copy), else this process's device (nccl: CUDA only)."""
        import torch
        devices = self._dist.Backend.backend_capability.get(str(self.backend).lower(), ["cpu"])
        return torch.device("cpu") if "cpu" in devices else self.device

    def all_sum(self, values):
        """A list of numbers summed over all ranks (as floats)."""
        if not self.distributed:
            return [float(v) for v in values]
        return self._reduce(values, self._dist.ReduceOp.SUM)

    def all_min(self, value):
        """The smallest of one number over all ranks."""
        if not self.distributed:
            return value
        return self._reduce([value], self._dist.ReduceOp.MIN)[0]

    def all_reduce_(self, tensor):
        """Sum a tensor over all ranks in place (moved to the backend's device and back)."""
        if self.distributed:
            t = tensor.to(self._comm_device)
            self._dist.all_reduce(t)
            if t is not tensor:
                tensor.copy_(t)
        return tensor

    def broadcast_(self, tensor, src=0):
        """Overwrite a tensor with rank src's, in place."""
        if self.distributed:
            t = tensor.to(self._comm_device)
            self._dist.broadcast(t, src)
            if t is not tensor:
                tensor.copy_(t)
        return tensor

    def all_max(self, value):
        """The largest of one number over all ranks."""
        if not self.distributed:
            return value
        return self._reduce([value], self._dist.ReduceOp.MAX)[0]

    def sync_buffers(self, module, src=0):
        """Give every rank rank src's buffers (BatchNorm running statistics, which each rank
        updates with its own batches), so that all ranks evaluate and save one model."""
        if self.distributed:
            for b in module.buffers():
                self.broadcast_(b, src)
        return module

    def broadcast_object(self, obj, src=0):
        """Rank src's obj (picklable; small: metadata, not weights) on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        self._dist.broadcast_object_list(box, src, device=self._comm_device
                                         if self._comm_device.type != "cpu" else None)
        return box[0]

    def sync_optimizer(self, optimizer, src=0):
        """Give every rank rank src's optimizer state (momentum buffers, Adam moments and
        step counts), in place.  Needed where ranks took different numbers of steps (DDP's
        uneven inputs: a rank that ran out of batches early shadows the others' all-reduces
        and ends with the same weights, but its momentum missed the last steps).  The layout
        (which parameters have state, each tensor's shape and type) is sent as one small
        object; the tensors then go one broadcast each, on the parameters' own device."""
        if not self.distributed:
            return optimizer
        import torch
        sd = optimizer.state_dict()
        layout = {i: {k: (tuple(v.shape), str(v.dtype).replace("torch.", ""))
                      if isinstance(v, torch.Tensor) else v for k, v in st.items()}
                  for i, st in sd["state"].items()}
        layout = self.broadcast_object(layout, src)
        params = [q for g in optimizer.param_groups for q in g["params"]]
        state = {}
        for i in sorted(layout):
            own = sd["state"].get(i, {})
            entry = {}
            for k, v in layout[i].items():
                if isinstance(v, tuple):
                    shape, dtype = v
                    t = own.get(k)
                    if self.rank != src or not isinstance(t, torch.Tensor):
                        # a step count lives on the CPU (unless capturable); the rest beside
                        # its parameter
                        where = t.device if isinstance(t, torch.Tensor) else \
                            (torch.device("cpu") if k == "step" else params[i].device)
                        t = torch.empty(shape, dtype=getattr(torch, dtype), device=where)
                    entry[k] = self.broadcast_(t, src)
                else:
                    entry[k] = v
            state[i] = entry
        optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
        return optimizer

    def gather(self, obj):
        """Every rank's obj (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        parts = [None] * self.world
        self._dist.all_gather_object(parts, obj)
        return parts

    def close(self):
        if self.distributed and self._dist.is_initialized():
            self._dist.destroy_process_group()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ShardSampler:
    """Indices rank, rank + world, ... of range(n): over all ranks every index exactly once,
    none repeated or padded (unlike DistributedSampler), so pooled evaluation sums are exact.
    Usable as a DataLoader sampler."""

    def __init__(self, n: int, rank: int = 0, world: int = 1):
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        self.indices = range(rank, int(n), world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def progress(iterable=None, ctx=None, enabled=True, **kw):
    """A tqdm bar on stderr, shown on rank 0 only and only when enabled."""
    from tqdm import tqdm
    disable = not enabled or (ctx is not None and not ctx.main)
    return tqdm(iterable, disable=disable, file=sys.stderr, dynamic_ncols=True, leave=False, **kw)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def write_text(path, text: str, newline=None) -> None:
    """Write a text file atomically (jpegfreq.files.atomic_write)."""
    atomic_write(path, lambda f: f.write(text), newline=newline, make_folder=True)


def write_json(path, data, indent=1) -> None:
    """Write a json file atomically (jpegfreq.files.atomic_write)."""
    atomic_write(path, lambda f: json.dump(data, f, indent=indent), make_folder=True)


def plain(obj, where="checkpoint"):
    """obj as tensors and plain data only (None, bool, int, float, str, lists, tuples, dicts),
    which torch.load(weights_only=True) reads back: argparse Namespaces and objects with a
    to_dict() become dicts, numpy arrays lists, numpy scalars numbers.  Anything else is a
    ValueError naming where it sits (as jpegfreq.checkpoint.save_checkpoint would raise)."""
    import torch
    if isinstance(obj, np.generic):      # before float: np.float64 is a float subclass
        return obj.item()
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    elif hasattr(obj, "to_dict") and not isinstance(obj, dict):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        # state dicts stay OrderedDicts with their _metadata (module versions)
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise ValueError(f"{where}: key {k!r} is not a string or an integer")
            out[k] = plain(v, f"{where}[{k!r}]")
        if isinstance(obj, OrderedDict) and isinstance(getattr(obj, "_metadata", None), dict):
            out._metadata = plain(obj._metadata, f"{where}._metadata")
        return out
    if isinstance(obj, tuple):
        return tuple(plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, list):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise ValueError(f"{where}: {type(obj).__name__} is not plain data (checkpoints hold "
                    "tensors, numbers, strings, lists and dicts only)")


# ---------------------------------------------------------------------------
# Normalisation statistics
# ---------------------------------------------------------------------------

def check_stats(stats: Stats, path, channels, source, geometry=None) -> Stats:
    """stats, when they normalise these inputs (Stats.check: the channel set, the source
    kind, the geometry: an eval Geometry for classification cubes, a detection record for
    detection cubes); else a ValueError naming path and the reason."""
    try:
        stats.check(channels, source, geometry)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return stats


def _load_stats(path, what):
    try:
        with open(path) as f:
            d = json.load(f)
        if not isinstance(d, dict):
            raise ValueError("not a json object")
        return d, Stats.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: cannot read {what}: {e}") from None


def resolve_stats(ctx, *, given, cache, key, compute, channels, source, geometry=None) -> Stats:
    """The statistics to normalise with, checked against the inputs (check_stats).

    given: a --stats file, used as it is (a mismatch is an error).  Else cache (a
    stats.json) when it records the same key (a dict of the settings the statistics depend
    on: channels, source, size, training folder, limit, ...); a cache for other settings is
    recomputed, one that is unreadable or whose key matches but whose contents disagree is a
    ValueError naming it.  Else compute(), called on every rank, returning (Stats, "what
    they were pooled over") and the same Stats on every rank; rank 0 writes the cache.
    """
    expect = dict(channels=channels, source=source, geometry=geometry)
    if given:
        _, st = _load_stats(given, "statistics")
        check_stats(st, given, **expect)
        ctx.log(f"stats: {given} ({st.count} positions per channel)")
        return st
    if cache and os.path.exists(cache):
        d, st = _load_stats(cache, "cached statistics (delete the file to recompute them)")
        if all(d.get(k) == v for k, v in key.items()):
            check_stats(st, cache, **expect)
            ctx.log(f"stats: reusing {cache}")
            return st
        ctx.log(f"stats: {cache} is for other settings; recomputing")
    st, what = compute()
    check_stats(st, "computed statistics", **expect)
    if cache and ctx.main:
        write_json(cache, dict(st.to_dict(), **key))
    ctx.log(f"stats: computed over {what}" + (f", cached in {cache}" if cache else ""))
    return st


# ---------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------

def preset(name: str) -> dict:
    """A copy of one jpegfreq.presets table."""
    if name not in PRESETS:
        raise KeyError(f"no preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    return copy.deepcopy(PRESETS[name])


def fill_defaults(args, table: dict):
    """Set every attribute of args that is None (or missing) from table; returns args."""
    for k, v in table.items():
        if k not in PRESET_EXTRAS and getattr(args, k, None) is None:
            setattr(args, k, copy.deepcopy(v))
    return args


def apply_preset(args, *names) -> dict:
    """Fill args from the named presets, first name first (a flag given explicitly always
    wins); returns the presets merged the same way, extras such as "synthetic" included."""
    merged = {}
    for name in names:
        table = preset(name)
        fill_defaults(args, table)
        for k, v in table.items():
            merged.setdefault(k, v)
    return merged
