"""Shared benchmark plumbing: one core, interleaved methods, medians per image.

Every method is timed on the same file in turn (A B C C B A A B C ...), so a noisy
neighbour slows all of them alike and none always runs right after another; a file's time
is its best of `repeat` runs, and the figure reported is the median over files.
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

JPEG_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif")
FOLDER_USAGE = ("give the folder of JPEG files to use, as FOLDER or --data FOLDER "
                "(for example a few hundred ImageNet validation images)")


def one_core():
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass


def add_folder_argument(parser):
    """The data folder every benchmark takes: positional FOLDER or --data FOLDER (no default:
    the data is the caller's, not the repository's)."""
    parser.add_argument("folder", nargs="?", metavar="FOLDER", help="folder of JPEG files")
    parser.add_argument("--data", metavar="FOLDER", help="the same, as an option")


def data_folder(parser, args):
    """The folder given on the command line; exits with a usage message (status 2) when it is
    missing, ambiguous or not a directory."""
    if args.folder and args.data and args.folder != args.data:
        parser.error(f"two data folders given ({args.folder!r} and --data {args.data!r}): give one")
    folder = args.folder or args.data
    if not folder:
        parser.error(FOLDER_USAGE)
    if not os.path.isdir(folder):
        parser.error(f"data folder {folder!r} is not a directory; {FOLDER_USAGE}")
    return folder


def list_jpegs(folder):
    """JPEG files directly in ``folder``, sorted."""
    return sorted(f for f in glob.glob(os.path.join(glob.escape(folder), "*"))
                  if f.lower().endswith(JPEG_EXTENSIONS) and os.path.isfile(f))


def sample_files(parser, folder, limit=0):
    """The JPEGs of ``folder`` (the first ``limit`` when limit > 0); a folder without any is a
    usage error, not an empty measurement."""
    files = list_jpegs(folder)
    if not files:
        parser.error(f"no JPEG files ({', '.join(JPEG_EXTENSIONS)}) in {folder!r}")
    return files[:limit] if limit else files


def file_bench_args(*extra, description=None):
    """The interleaved benchmarks' command line: FOLDER (or --data FOLDER, required),
    --limit N, --repeat R, plus ``extra`` (args, kwargs) pairs for add_argument.
    Returns (args, files, {file: bytes})."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_folder_argument(p)
    p.add_argument("--limit", type=int, default=0, help="use at most N files (default: all)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per file (default: 3)")
    for args, kwargs in extra:
        p.add_argument(*args, **kwargs)
    a = p.parse_args()
    files = sample_files(p, data_folder(p, a), a.limit)
    blobs = {}
    for f in files:
        with open(f, "rb") as fh:
            blobs[f] = fh.read()
    return a, files, blobs


def interleaved(methods, items, repeat=3):
    """methods: list of (name, fn(item)). Returns {name: [best seconds per item]}."""
    out = {name: [] for name, _ in methods}
    for item in items:
        best = {name: float("inf") for name, _ in methods}
        for name, fn in methods:          # warm-up (first touch, caches, lazy imports)
            fn(item)
        for r in range(repeat):
            # every other round runs the methods backwards: a method that benefits from
            # following another (caches the one before it warmed) gets no lasting edge
            for name, fn in methods if r % 2 == 0 else methods[::-1]:
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
