"""Training input throughput: JpegLoader against its ceiling and torchvision's and DALI's pipelines.

    python bench/bench_loader.py FOLDER [--epochs 10] [--rounds 3] [--batch 64] [--threads 2]
                                 [--channels 24S] [--size 448] [--repeat 1] [--methods A,B,...]

FOLDER is an ImageFolder split (CLASS/IMAGE) or a flat folder of JPEGs (then a temporary
ImageFolder of links to them is made, one class per file-name prefix before "_").  Every
method reads the same files on the same cores, as training cubes (train=True, batch --batch)
or, for torchvision, RandomResizedCrop 224 + flip + ToTensor + Normalize crops:

- ceiling: --threads threads of read_source + sample_train + cube into a batch row, from the
  files' bytes already in memory (no file reads, no batching logic);
- JpegLoader float32 / float16 / int8 from the folder (int8 normalised with statistics of
  32 of the files), and float32 from tar shards of the same files (written to a temporary
  folder with jpegfreq.shards);
- torchvision ImageFolder + DataLoader with --threads worker processes (persistent);
- NVIDIA DALI's CPU pipeline (fn.readers.file, fn.decoders.image_random_crop on the CPU,
  resize 224, crop_mirror_normalize with a random mirror; device_id=None, --threads
  threads), when nvidia.dali imports (else a line says how to install it).

Each method runs in a fresh process (so its peak resident memory, ru_maxrss, is its own): one
untimed warm-up epoch, then --epochs timed epochs; the methods take turns for --rounds rounds
(A B C ... A B C ...) and the median round is reported, as images per second and as a ratio
to the ceiling and to torchvision.  The page cache is warm for all of them.

Memory: after the timed rounds the folder loader (float32) runs once more on 4x the files
(each file linked four times) and its peak RSS is printed beside the one of the 1x run: the
loader's memory is its buffers and pool, not a function of the data set's size.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_folder_argument, data_folder  # noqa: E402  (puts the checkout on sys.path)

METHODS = ("ceiling", "loader-f32", "loader-f16", "loader-int8", "loader-shards-f32",
           "torchvision", "dali")
DALI_INSTALL = "pip install nvidia-dali-cuda120"


def dali_available():
    try:
        import nvidia.dali  # noqa: F401
        return True
    except ImportError:
        return False


def _peak_mib():
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return me, kids


def _images(folder):
    from jpegfreq.datasets import list_samples
    return list_samples(folder)[0]


def run_ceiling(a):
    import numpy as np
    import jpegfreq
    from jpegfreq.source import read_source
    blobs = []
    for p, _ in _images(a.folder):
        with open(p, "rb") as f:
            blobs.append(f.read())
    n = len(blobs)
    cs = jpegfreq.ChannelSet.parse(a.channels)
    side = a.size // 8
    buffers = [np.empty((a.batch, cs.count, side, side), np.float32) for _ in range(a.threads)]

    def epoch(e):
        counter = iter(range(n))
        lock = threading.Lock()

        def work(t):
            buf = buffers[t]
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                s = read_source(blobs[i])
                g = jpegfreq.sample_train(s.width, s.height, a.size,
                                          np.random.default_rng([0, e, i]))
                jpegfreq.cube(s, cs, a.size, geometry=g, out=buf[i % a.batch])
        ts = [threading.Thread(target=work, args=(t,)) for t in range(a.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return n
    return epoch


def run_loader(a, dtype, shards=None):
    from jpegfreq import JpegLoader
    data = shards if shards else a.folder
    ld = JpegLoader(data, a.batch, channels=a.channels, size=a.size, train=True,
                    threads=a.threads, dtype=dtype, pin_memory=False,
                    stats=a.stats if dtype == "int8" else None)

    def epoch(e):
        ld.set_epoch(e)
        return sum(len(y) for _, y in ld)
    return epoch


def run_torchvision(a):
    import torch
    from torchvision import datasets, transforms
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = datasets.ImageFolder(a.folder, tf)
    dl = torch.utils.data.DataLoader(ds, a.batch, shuffle=True, num_workers=a.threads,
                                     drop_last=True, persistent_workers=True)

    def epoch(e):
        return sum(len(y) for _, y in dl)
    return epoch


def run_dali(a):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def
    def pipeline():
        jpegs, labels = fn.readers.file(file_root=a.folder, random_shuffle=True, name="files")
        images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB)
        images = fn.resize(images, resize_x=224, resize_y=224)
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW", mirror=fn.random.coin_flip(),
            mean=[0.485 * 255, 0.456 * 255, 0.406 * 255],
            std=[0.229 * 255, 0.224 * 255, 0.225 * 255])
        return images, labels
    pipe = pipeline(batch_size=a.batch, num_threads=a.threads, device_id=None, seed=0)
    pipe.build()
    n = pipe.epoch_size("files")

    def epoch(e):
        return sum(len(pipe.run()[1]) for _ in range(n // a.batch))
    return epoch


def worker(a):
    """One method in this process: warm-up epoch, timed epochs; prints a JSON line."""
    import torch
    torch.set_num_threads(1)
    if a.worker == "ceiling":
        epoch = run_ceiling(a)
    elif a.worker == "loader-f32":
        epoch = run_loader(a, "float32")
    elif a.worker == "loader-f16":
        epoch = run_loader(a, "float16")
    elif a.worker == "loader-int8":
        epoch = run_loader(a, "int8")
    elif a.worker == "dali":
        epoch = run_dali(a)
    elif a.worker == "loader-shards-f32":
        epoch = run_loader(a, "float32", a.shards.split(","))
    else:
        epoch = run_torchvision(a)
    epoch(0)
    t = time.perf_counter()
    images = sum(epoch(e) for e in range(1, a.epochs + 1))
    dt = time.perf_counter() - t
    me, kids = _peak_mib()
    print(json.dumps({"method": a.worker, "images": images, "seconds": dt,
                      "img_s": images / dt, "rss_mib": me, "worker_rss_mib": kids}))


def image_folder(src, tmp):
    """src itself when it holds class folders, else an ImageFolder of links to its JPEGs."""
    if any(e.is_dir() for e in os.scandir(src)):
        return src
    root = os.path.join(tmp, "images")
    for f in sorted(os.listdir(src)):
        if not f.lower().endswith((".jpg", ".jpeg")):
            continue
        cls = f.split("_", 1)[0] if "_" in f else "all"
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        os.symlink(os.path.abspath(os.path.join(src, f)), os.path.join(root, cls, f))
    if not os.path.isdir(root):
        raise SystemExit(f"no JPEG files in {src}")
    return root


def repeated_folder(root, dst, times):
    """An ImageFolder of ``times`` links to every image of ``root`` (same classes)."""
    from jpegfreq.datasets import list_samples
    samples, classes = list_samples(root)
    for path, label in samples:
        d = os.path.join(dst, classes[label])
        os.makedirs(d, exist_ok=True)
        base = os.path.basename(path)
        for k in range(times):
            os.symlink(os.path.realpath(path), os.path.join(d, f"{k}-{base}"))
    return dst


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_folder_argument(p)
    p.add_argument("--epochs", type=int, default=10, help="timed epochs per method (10)")
    p.add_argument("--rounds", type=int, default=3, help="turns of every method (3)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="threads / worker processes (2)")
    p.add_argument("--channels", default="24S")
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--repeat", type=int, default=1,
                   help="links to every file in the timed folder (1): an epoch of N times the "
                        "files, so each epoch's start and drain weigh as on a larger data set")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--shards", help=argparse.SUPPRESS)
    p.add_argument("--stats", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        a.folder = a.folder or a.data
        return worker(a)
    folder = data_folder(p, a)
    methods = [m for m in a.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; choose from {','.join(METHODS)}")
    dali_note = None
    if "dali" in methods and not dali_available():
        methods.remove("dali")
        dali_note = (f"dali: skipped, nvidia.dali does not import here; install it into the "
                     f"benchmark's environment with `{DALI_INSTALL}` (CPU pipeline, no GPU "
                     f"needed)")
    tmp = tempfile.mkdtemp(prefix="bench-loader-")
    try:
        from jpegfreq.shards import write_shards
        root = image_folder(folder, tmp)
        if a.repeat > 1:
            root = repeated_folder(root, os.path.join(tmp, "repeated"), a.repeat)
        n = len(_images(root))
        paths = write_shards(root, os.path.join(tmp, "shards", "train"),
                             shard_size=max(1, -(-n // 4)), progress=False)
        from jpegfreq.stats import compute_stats
        stats = os.path.join(tmp, "stats.json")
        compute_stats([f for f, _ in _images(root)][::max(1, n // 32)][:32], a.channels,
                      a.size, progress=False).save(stats)
        big = repeated_folder(root, os.path.join(tmp, "x4"), 4)
        print(f"{n} images from {folder}"
              + (f" ({a.repeat} links to each file)" if a.repeat > 1 else "") + f"; {a.channels} {a.size} train cubes, batch {a.batch}, "
              f"{a.threads} threads/workers, {len(os.sched_getaffinity(0))} cores; "
              f"{a.epochs} timed epochs x {a.rounds} rounds; {len(paths)} shards")
        print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        results = {m: [] for m in methods}
        base = [sys.executable, os.path.abspath(__file__), root, "--epochs", str(a.epochs),
                "--batch", str(a.batch), "--threads", str(a.threads), "--channels", a.channels,
                "--size", str(a.size), "--shards", ",".join(paths), "--stats", stats]

        def child(m, folder_arg=root):
            out = subprocess.run([base[0], base[1], folder_arg] + base[3:] + ["--worker", m],
                                 capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{m} failed:\n{out.stderr[-3000:]}")
            return json.loads(out.stdout.strip().splitlines()[-1])
        for _ in range(a.rounds):
            for m in methods:
                results[m].append(child(m))
        rss4 = child("loader-f32", big)["rss_mib"] if "loader-f32" in methods else None
        print(f"load average after:  {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(m, key):
        return statistics.median(r[key] for r in results[m])
    speed = {m: med(m, "img_s") for m in methods}

    def ratio(m, peer, width):
        return f"{speed[m] / speed[peer]:{width}.2f}" if peer in speed else f"{'-':>{width}}"
    print(f"\n{'method':<20} {'img/s':>8} {'x ceiling':>10} {'x torchvision':>14} "
          f"{'x DALI':>7} {'peak RSS MiB':>13} {'per worker':>11}")
    for m in methods:
        w = f"{med(m, 'worker_rss_mib'):11.0f}" if m == "torchvision" else f"{'-':>11}"
        print(f"{m:<20} {speed[m]:8.0f} {ratio(m, 'ceiling', 10)} "
              f"{ratio(m, 'torchvision', 14)} {ratio(m, 'dali', 7)} "
              f"{med(m, 'rss_mib'):13.0f} {w}")
    if dali_note:
        print(dali_note)
    if "loader-f32" in speed and "loader-shards-f32" in speed:
        print(f"shards / folder (float32): {speed['loader-shards-f32'] / speed['loader-f32']:.2f}")
    cs = None
    try:
        import jpegfreq
        cs = jpegfreq.ChannelSet.parse(a.channels)
    except ValueError:
        pass
    if cs is not None:
        side = a.size // 8
        print(f"bytes per sample: {a.channels} {a.size} int8 {cs.count} x {side} x {side} = "
              f"{cs.count * side * side:,}; float16 {2 * cs.count * side * side:,}; float32 "
              f"{4 * cs.count * side * side:,}; uint8 RGB 224 {3 * 224 * 224:,}")
    if rss4 is not None:
        r1 = med("loader-f32", "rss_mib")
        print(f"peak RSS of the folder loader (float32): {n} files {r1:.0f} MiB, {4 * n} files "
              f"{rss4:.0f} MiB ({100 * (rss4 - r1) / r1:+.1f}%): "
              + ("it does not grow with the data set" if rss4 <= r1 * 1.05 else
                 "it GROWS with the data set"))
    spread = {m: (min(r["img_s"] for r in results[m]), max(r["img_s"] for r in results[m]))
              for m in methods}
    print("spread over rounds (img/s): " + ", ".join(f"{m} {lo:.0f}-{hi:.0f}"
                                                    for m, (lo, hi) in spread.items()))


if __name__ == "__main__":
    main()
