"""What photometric augmentation costs on a 24S train cube, part by part.

    python bench/bench_photometric.py FOLDER [--limit N] [--repeat R]

One core, methods interleaved per file (bench/_common.py), each file's own sampled train
crop for every method; medians over files and ratios to the plain 24S train cube.  Rows:
the plain cube; with normalisation statistics (what training does); with per-channel ops
only (brightness and saturation: folded into the operator's scale/offset, no pass); with
every op at fixed factors (contrast's Y0 pass and the hue rotation pass); with a
ColorJitter(0.4, 0.4, 0.4, 0.1) draw per call, without and with statistics; and the draw and
the plan alone.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import file_bench_args, interleaved, one_core, report  # noqa: E402

import numpy as np  # noqa: E402

import jpegfreq  # noqa: E402
from jpegfreq.geometry import sample_train  # noqa: E402
from jpegfreq.photometric import Photometric, coefficient_plan  # noqa: E402
from jpegfreq.stats import Stats  # noqa: E402

CS24 = jpegfreq.ChannelSet.parse("24S")
JITTER = (0.4, 0.4, 0.4, 0.1)


def main():
    a, files, blobs = file_bench_args(description=__doc__)
    rng = np.random.default_rng(0)
    geo = {}
    for f in files:
        h = jpegfreq.read_header(blobs[f])
        geo[f] = sample_train(h.width, h.height, 448, rng)
    stats = Stats(CS24, np.linspace(-50, 50, 24), np.linspace(5, 60, 24), size=(448, 448))
    prng = np.random.default_rng(1)
    fixed = Photometric(1.2, 0.8, 1.3, 0.05)
    per_channel = Photometric(brightness=1.2, saturation=1.3)
    cube = jpegfreq.cube
    methods = [
        ("24S train", lambda f: cube(blobs[f], CS24, geometry=geo[f])),
        ("24S train + stats", lambda f: cube(blobs[f], CS24, geometry=geo[f], stats=stats)),
        ("+ brightness, saturation", lambda f: cube(blobs[f], CS24, geometry=geo[f],
                                                    photometric=per_channel)),
        ("+ all four ops, fixed", lambda f: cube(blobs[f], CS24, geometry=geo[f],
                                                 photometric=fixed)),
        ("+ ColorJitter draw", lambda f: cube(blobs[f], CS24, geometry=geo[f],
                                              photometric=Photometric.sample(prng, *JITTER))),
        ("+ stats + ColorJitter draw", lambda f: cube(
            blobs[f], CS24, geometry=geo[f], stats=stats,
            photometric=Photometric.sample(prng, *JITTER))),
        ("the draw alone", lambda f: Photometric.sample(prng, *JITTER)),
        ("the plan alone", lambda f: coefficient_plan(fixed, CS24)),
    ]
    one_core()
    print(f"{len(files)} files, one core, best of {a.repeat} per file, median over files")
    med = report(interleaved(methods, files, a.repeat), floor="24S train")
    print(f"\nColorJitter draw per call: {med['+ ColorJitter draw'] / med['24S train']:.3f}x "
          f"24S train; with stats {med['+ stats + ColorJitter draw'] / med['24S train + stats']:.3f}x "
          f"24S train + stats")


if __name__ == "__main__":
    main()
