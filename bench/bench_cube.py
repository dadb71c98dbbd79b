"""Cube benchmark: the input pipelines side by side, on the same files.

    python bench/bench_cube.py FOLDER [--limit N] [--repeat R] [--no-threads]

First one 24S eval pass over the files in a shuffled order, as a data loader
makes it (operators are built when an image size is first seen).  Then one
process, one core, methods interleaved per file; medians over files and ratios
to the floor (libjpeg-turbo's entropy decode alone).  Then the 24S eval cube
over the whole file list with two threads against one.
"""
import dataclasses
import io
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import file_bench_args, interleaved, one_core, report  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import jpegfreq  # noqa: E402
from jpegfreq import _jpegfreq  # noqa: E402
from jpegfreq.geometry import sample_train  # noqa: E402
from jpegfreq.photometric import Photometric  # noqa: E402

CS24 = jpegfreq.ChannelSet.parse("24S")


def _decode_resize_crop(data, resize, crop):
    """Pillow decode to RGB, short side to ``resize`` (bilinear), centre crop ``crop``."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size
    s = resize / min(w, h)
    im = im.resize((max(resize, int(w * s)), max(resize, int(h * s))), Image.BILINEAR)
    w, h = im.size
    left, top = int(round((w - crop) / 2)), int(round((h - crop) / 2))
    return im.crop((left, top, left + crop, top + crop))


def pil_rgb_224(data):
    """torchvision-style eval: decode, resize short side 256 (bilinear), centre crop 224."""
    return np.asarray(_decode_resize_crop(data, 256, 224))


def dctnet_flow(data, loads):
    """DCTNet's eval flow to a 24x56x56 cube: decode, resize 512, crop 448, then
    two JPEG re-encodes at quality 100 (4:2:0) read back with jpeg2dct: the 448
    crop for Y and its 2x upscale for chroma; then the 24S subset."""
    crop = _decode_resize_crop(data, 512, 448)
    up = crop.resize((896, 896), Image.BILINEAR)
    outs = []
    for img in (crop, up):
        b = io.BytesIO()
        img.save(b, "JPEG", quality=100, subsampling=2)
        outs.append(loads(b.getvalue()))
    y = outs[0][0][:56, :56]
    cb, cr = outs[1][1][:56, :56], outs[1][2][:56, :56]
    ky = [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27]
    kc = [0, 1, 8, 9]
    return np.concatenate([y[..., ky], cb[..., kc], cr[..., kc]], -1).transpose(2, 0, 1)


def main():
    a, files, blobs = file_bench_args((("--no-threads",), {"action": "store_true",
                                                           "help": "skip the two-thread run"}),
                                     description=__doc__)
    hdrs = {f: jpegfreq.read_header(blobs[f]) for f in files}
    rng = np.random.default_rng(0)
    # as in training, every call gets a new random crop (so its operator is built, not cached)
    train_lists = {f: [sample_train(hdrs[f].width, hdrs[f].height, 448, rng)
                       for _ in range(a.repeat + 1)] for f in files}
    train_geo = {f: iter(g) for f, g in train_lists.items()}
    def moved(eps):
        """The same crops with their top-left corner moved by eps pixels: a row using them
        does not find another row's operator in the cache (each builds one per call, as
        training does)."""
        return {f: iter([dataclasses.replace(g, box=(g.box[0] + eps, g.box[1] + eps)
                                             + tuple(g.box[2:])) for g in gs])
                for f, gs in train_lists.items()}

    # the same crops again, each with a ColorJitter(0.4, 0.4, 0.4, 0.1) draw: every op on
    photo_geo = moved(1e-6)
    prng = np.random.default_rng(2)
    # and once more with the draws made beforehand: the ops without the per-call draw
    early_geo = moved(2e-6)
    drawn = iter([Photometric.sample(np.random.default_rng(3), 0.4, 0.4, 0.4, 0.1)
                  for _ in range(len(files) * (a.repeat + 1))])
    methods = [
        ("floor: entropy decode", lambda f: _jpegfreq.entropy_decode(blobs[f])),
        ("jpeg-coeffs 24S eval", lambda f: jpegfreq.cube(blobs[f], CS24)),
        ("jpeg-coeffs 64S eval", lambda f: jpegfreq.cube(blobs[f], "64S")),
        ("jpeg-coeffs 192 eval", lambda f: jpegfreq.cube(blobs[f], "192")),
        ("jpeg-coeffs 24S train", lambda f: jpegfreq.cube(blobs[f], CS24, geometry=next(train_geo[f]))),
        ("24S train + photometric", lambda f: jpegfreq.cube(
            blobs[f], CS24, geometry=next(photo_geo[f]),
            photometric=Photometric.sample(prng, 0.4, 0.4, 0.4, 0.1))),
        ("24S train + photometric drawn", lambda f: jpegfreq.cube(
            blobs[f], CS24, geometry=next(early_geo[f]), photometric=next(drawn))),
        ("spatial 24S eval", lambda f: jpegfreq.cube(blobs[f], CS24, source="spatial")),
        ("Pillow RGB resize 256 crop 224", lambda f: pil_rgb_224(blobs[f])),
    ]
    try:
        from jpeg2dct.numpy import loads
        methods.append(("jpeg2dct.loads", lambda f: loads(blobs[f])))
        methods.append(("DCTNet flow 24x56x56", lambda f: dctnet_flow(blobs[f], loads)))
    except ImportError:
        print("jpeg2dct not installed: its rows are left out", file=sys.stderr)

    one_core()
    # One eval pass as a data loader makes it: each file once, in a shuffled order, so an
    # image size seen for the first time builds its operators inside the timed call
    # (the table below times cached operators: each file is warmed up first).  Run
    # before the table, in a fresh process: the operator cache starts empty.
    order = list(files)
    np.random.default_rng(1).shuffle(order)
    first, again = [], []
    for f in order:
        for out in (first, again):
            t = time.perf_counter()
            jpegfreq.cube(blobs[f], CS24)
            out.append(time.perf_counter() - t)
    print(f"one 24S eval pass in shuffled order (operators built on a size's first sight): "
          f"mean {statistics.mean(first) * 1e3:.3f} ms, median {statistics.median(first) * 1e3:.3f}; "
          f"same files, operators cached: mean {statistics.mean(again) * 1e3:.3f}, "
          f"median {statistics.median(again) * 1e3:.3f}\n")

    print(f"{len(files)} files, one core, best of {a.repeat} per file, median over files")
    med = report(interleaved(methods, files, a.repeat), floor="floor: entropy decode")
    c24 = med["jpeg-coeffs 24S eval"]
    print(f"\n24S eval cube: {c24 / med['floor: entropy decode']:.2f}x the floor; "
          f"{med['Pillow RGB resize 256 crop 224'] / c24:.2f}x faster than Pillow RGB 224")
    print(f"24S train + photometric (ColorJitter 0.4/0.4/0.4/0.1, sampled per call): "
          f"{med['24S train + photometric'] / med['jpeg-coeffs 24S train']:.3f}x 24S train; "
          f"drawn beforehand {med['24S train + photometric drawn'] / med['jpeg-coeffs 24S train']:.3f}x")
    if "DCTNet flow 24x56x56" in med:
        print(f"24S eval cube {med['DCTNet flow 24x56x56'] / c24:.1f}x faster than DCTNet's flow; "
              f"spatial path {med['DCTNet flow 24x56x56'] / med['spatial 24S eval']:.1f}x faster")

    if a.no_threads:
        return
    try:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    except (AttributeError, OSError):
        pass
    items = [blobs[f] for f in files]

    def run(threads):
        t = time.perf_counter()
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(lambda d: jpegfreq.cube(d, CS24), items))
        return time.perf_counter() - t

    one, two = [], []
    for _ in range(5):
        one.append(run(1))
        two.append(run(2))
    t1, t2 = statistics.median(one), statistics.median(two)
    print(f"\nthreads over {len(items)} files (24S eval): 1 thread {len(items) / t1:.0f} img/s, "
          f"2 threads {len(items) / t2:.0f} img/s, speed-up {t1 / t2:.2f}x "
          f"({os.cpu_count()} cores visible)")


if __name__ == "__main__":
    main()
