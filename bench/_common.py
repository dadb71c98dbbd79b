"""Shared benchmark plumbing: one core, interleaved methods, medians per image.

Every method is timed on the same file in turn (A B C A B C ...), so a noisy
neighbour slows all of them alike; a file's time is its best of `repeat` runs,
and the figure reported is the median over files.
"""
import argparse
import glob
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEFAULT_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "imagenet-sample")


def one_core():
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass


def sample_files(folder=None, limit=0):
    folder = folder or DEFAULT_DATA
    files = sorted(f for f in glob.glob(os.path.join(folder, "*"))
                   if f.lower().endswith((".jpg", ".jpeg")))
    if not files:
        print(f"no JPEG files in {folder}: nothing to measure", file=sys.stderr)
        sys.exit(0)
    return files[:limit] if limit else files


def file_bench_args(*extra):
    """The interleaved benchmarks' command line: FOLDER (default: the ImageNet sample),
    --limit N, --repeat R, plus ``extra`` (args, kwargs) pairs for add_argument.
    Returns (args, files, {file: bytes})."""
    p = argparse.ArgumentParser()
    p.add_argument("folder", nargs="?")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3)
    for args, kwargs in extra:
        p.add_argument(*args, **kwargs)
    a = p.parse_args()
    files = sample_files(a.folder, a.limit)
    return a, files, {f: open(f, "rb").read() for f in files}


def interleaved(methods, items, repeat=3):
    """methods: list of (name, fn(item)). Returns {name: [best seconds per item]}."""
    out = {name: [] for name, _ in methods}
    for item in items:
        best = {name: float("inf") for name, _ in methods}
        for name, fn in methods:          # warm-up (first touch, caches, lazy imports)
            fn(item)
        for _ in range(repeat):
            for name, fn in methods:
                t = time.perf_counter()
                fn(item)
                best[name] = min(best[name], time.perf_counter() - t)
        for name in best:
            out[name].append(best[name])
    return out


def report(times, floor=None, title=None):
    """Print a table of medians (ms) and ratios to the floor."""
    if title:
        print(f"\n{title}")
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    w = max(len(k) for k in med) + 2
    print(f"{'method':<{w}} {'median ms':>10} {'x floor':>8}")
    for k, v in med.items():
        ratio = f"{v / med[floor]:8.2f}" if floor else ""
        print(f"{k:<{w}} {v:10.3f} {ratio}")
    return med
