"""Decoder.decode_batch: how decoding scales with threads, compressed vs spatial path.

    python bench/bench_threads.py FOLDER [--channels 24S] [--size 448] [--batch 32]
                                  [--repeats 7] [--threads 1,2] [--sources jpeg-coeffs,spatial]
                                  [--limit N]

Every file is read into memory first (no disk in the timing).  One pass decodes
all files with decode_batch in batches of --batch; the configurations
(source x threads) are timed in turn, pass after pass (interleaved, so a
change of machine load hits them all alike), and the median pass is reported
as images per second, with the speed-up of each thread count over one thread
and of the compressed path over the spatial one.  "CPU use" is process CPU
time over wall time (above 100% only if the threads really run at once, i.e.
the GIL is released).  The load average is printed before and after: on a
shared machine, other processes take cores and the ratios shrink.
"""
import argparse
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_folder_argument, data_folder  # noqa: E402  (puts the checkout on sys.path)

import jpegfreq  # noqa: E402
from jpegfreq import _jpegfreq  # noqa: E402
from jpegfreq.serving import Decoder  # noqa: E402
from jpegfreq.stats import list_images  # noqa: E402


def load(folder, limit):
    files = list_images(folder)
    if limit:
        files = files[:limit]
    blobs = []
    for f in files:
        with open(f, "rb") as fh:
            blobs.append(fh.read())
    return files, blobs


def one_pass(dec, blobs, batch):
    t, cpu = time.perf_counter(), time.process_time()
    failed = 0
    for i in range(0, len(blobs), batch):
        _, failures = dec.decode_batch(blobs[i:i + batch], errors="return")
        failed += len(failures)
    return time.perf_counter() - t, time.process_time() - cpu, failed


def floor_pass(blobs):
    """libjpeg-turbo's entropy decode alone, one thread: the floor of the compressed path."""
    t, cpu = time.perf_counter(), time.process_time()
    for b in blobs:
        try:
            _jpegfreq.entropy_decode(b)
        except _jpegfreq.Error:
            pass
    return time.perf_counter() - t, time.process_time() - cpu, 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_folder_argument(p)
    p.add_argument("--channels", default="24S", help="channel set (default: 24S)")
    p.add_argument("--size", type=int, default=448, help="crop size in pixels (default: 448)")
    p.add_argument("--batch", type=int, default=32, help="images per decode_batch (default: 32)")
    p.add_argument("--repeats", type=int, default=7, help="timed passes per config (default: 7)")
    p.add_argument("--threads", default="1,2", help="thread counts to compare (default: 1,2)")
    p.add_argument("--sources", default="jpeg-coeffs,spatial",
                   help="pipelines to compare (default: jpeg-coeffs,spatial)")
    p.add_argument("--limit", type=int, default=0, help="use at most N files (default: all)")
    a = p.parse_args(argv)
    folder = data_folder(p, a)
    files, blobs = load(folder, a.limit)
    if not blobs:
        p.error(f"no images under {folder!r}")
    threads = [int(t) for t in a.threads.split(",")]
    sources = a.sources.split(",")
    configs = [(s, t) for s in sources for t in threads]
    decoders = {c: Decoder(a.channels, a.size, source=c[0], threads=c[1]) for c in configs}
    runs = [(c, (lambda d=decoders[c]: one_pass(d, blobs, a.batch))) for c in configs]
    runs.append(((("entropy decode only", 1)), lambda: floor_pass(blobs)))

    mb = sum(map(len, blobs)) / 1e6
    print(f"{len(blobs)} files ({mb:.1f} MB) from {folder}")
    print(f"channels {a.channels}, size {a.size}, batch {a.batch}, {a.repeats} interleaved "
          f"passes, median; {os.cpu_count()} CPUs, libjpeg {jpegfreq.libjpeg_version}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    times = {c: [] for c, _ in runs}
    cpu = {c: [] for c, _ in runs}
    failed = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CMYK files take the spatial path: said once, ignored
        for c, run in runs:  # warm-up: imports, pools, caches
            failed[c] = run()[2]
        for _ in range(a.repeats):
            for c, run in runs:
                wall, used, _ = run()
                times[c].append(wall)
                cpu[c].append(used / wall)
    for dec in decoders.values():
        dec.close()
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    med = {c: statistics.median(v) for c, v in times.items()}
    print(f"{'pipeline':<22}{'threads':>8}{'images/s':>11}{'ms/image':>10}{'vs 1 thread':>13}"
          f"{'CPU use':>9}")
    for c, _ in runs:
        s, t = c
        ips = len(blobs) / med[c]
        base = med.get((s, 1))
        ratio = f"{base / med[c]:.2f}x" if base and t != 1 else ""
        print(f"{s:<22}{t:>8}{ips:>11.0f}{1000 * med[c] / len(blobs):>10.3f}{ratio:>13}"
              f"{100 * statistics.median(cpu[c]):>8.0f}%")
    if ("jpeg-coeffs" in sources and "spatial" in sources):
        print()
        for t in threads:
            print(f"jpeg-coeffs vs spatial, {t} thread{'s' if t > 1 else ''}: "
                  f"{med[('spatial', t)] / med[('jpeg-coeffs', t)]:.2f}x faster")
    bad = {c: n for c, n in failed.items() if n}
    if bad:
        print(f"\nunreadable files skipped per pass: {bad}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
