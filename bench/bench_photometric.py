"""What photometric augmentation costs on a 24S train cube, part by part.

    python bench/bench_photometric.py FOLDER [--limit N] [--repeat R]

One core, methods interleaved per file (bench/_common.py), each file's own sampled train
crop for every method; medians over files and ratios to the plain 24S train cube.  Rows:
the plain cube; with normalisation statistics (what training does); with per-channel ops
only (brightness and saturation: folded into the operator's scale/offset, no pass); with
every op at fixed factors (contrast's Y0 pass and the hue rotation pass); with a
ColorJitter(0.4, 0.4, 0.4, 0.1) draw per call, without and with statistics; the draw
alone; and the loader's other per-image ops: a ta_exact policy op
(jpegfreq.augment.sample_policy) with a random_erase=0.25 draw per call, and those draws alone;
and two of the policy's orientations on their own (a quarter turn, a transpose).
"""
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import file_bench_args, interleaved, one_core, report  # noqa: E402

import numpy as np  # noqa: E402

import jpegfreq  # noqa: E402
from jpegfreq import augment  # noqa: E402
from jpegfreq.geometry import sample_train  # noqa: E402
from jpegfreq.photometric import Photometric  # noqa: E402
from jpegfreq.stats import Stats  # noqa: E402

CS24 = jpegfreq.ChannelSet.parse("24S")
JITTER = (0.4, 0.4, 0.4, 0.1)


def main():
    a, files, blobs = file_bench_args(description=__doc__)
    rng = np.random.default_rng(0)
    geo, size = {}, {}
    for f in files:
        h = jpegfreq.read_header(blobs[f])
        geo[f] = sample_train(h.width, h.height, 448, rng)
        size[f] = (h.width, h.height)
    stats = Stats(CS24, np.linspace(-50, 50, 24), np.linspace(5, 60, 24), size=(448, 448))
    prng = np.random.default_rng(1)
    fixed = Photometric(1.2, 0.8, 1.3, 0.05)
    per_channel = Photometric(brightness=1.2, saturation=1.3)
    cube = jpegfreq.cube

    def policy_draws(f):
        g, p = augment.sample_policy(prng, "ta_exact").apply(geo[f], *size[f])
        return g, p, augment.sample_erase(prng, 56, 56, 0.25)

    def with_policy(f):
        g, p, e = policy_draws(f)
        x = cube(blobs[f], CS24, geometry=g, photometric=p)
        if e is not None:
            e.apply(x)
        return x

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
        ("+ a quarter turn (orientation 6)", lambda f: cube(
            blobs[f], CS24, geometry=dataclasses.replace(geo[f], orientation=6))),
        ("+ transpose (orientation 5)", lambda f: cube(
            blobs[f], CS24, geometry=dataclasses.replace(geo[f], orientation=5))),
        ("+ ta_exact op, erasing 0.25", with_policy),
        ("their draws alone", policy_draws),
    ]
    one_core()
    print(f"{len(files)} files, one core, best of {a.repeat} per file, median over files")
    med = report(interleaved(methods, files, a.repeat), floor="24S train")
    print(f"\nColorJitter draw per call: {med['+ ColorJitter draw'] / med['24S train']:.3f}x "
          f"24S train; with stats {med['+ stats + ColorJitter draw'] / med['24S train + stats']:.3f}x "
          f"24S train + stats")
    print(f"ta_exact op and random_erase=0.25 draw per call: "
          f"{med['+ ta_exact op, erasing 0.25'] / med['24S train']:.3f}x 24S train")


if __name__ == "__main__":
    main()
