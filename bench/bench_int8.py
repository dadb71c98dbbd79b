"""How wide the int8 clip of JpegLoader(dtype="int8") should be: clipped share and RMS error.

    python bench/bench_int8.py FOLDER [--channels 24S] [--size 448] [--epochs 2]

Statistics (jpegfreq.stats.compute_stats, eval geometry, as train.py computes them) come
from the first half of the files; the other half is read as training cubes (RandomResizedCrop
+ flip, --epochs epochs) and as evaluation cubes, normalised with them, in float32 by
JpegLoader.  For each clip K (in standard deviations) the values are quantised with step
K / 127 as the loader does, and the script prints the share of values clipped and the RMS
error of the dequantised values (in standard deviations, i.e. relative to unit-variance
input), per component and overall.
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_folder_argument, data_folder  # noqa: E402
from bench_loader import image_folder  # noqa: E402

CLIPS = (4, 6, 8, 10, 12, 14, 16, 20, 24)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_folder_argument(p)
    p.add_argument("--channels", default="24S")
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--epochs", type=int, default=2, help="training epochs measured (2)")
    a = p.parse_args()
    folder = data_folder(p, a)
    import torch
    import jpegfreq
    from jpegfreq.datasets import list_samples
    from jpegfreq.loader import INT8_CLIP, JpegLoader
    from jpegfreq.stats import compute_stats
    tmp = tempfile.mkdtemp(prefix="bench-int8-")
    try:
        root = image_folder(folder, tmp)
        files = [s for s, _ in list_samples(root)[0]]
        fit, held = files[0::2], files[1::2]
        stats = compute_stats(fit, a.channels, a.size, progress=False)
        part = os.path.join(tmp, "held", "all")
        os.makedirs(part)
        for f in held:
            os.symlink(os.path.realpath(f), os.path.join(part, os.path.basename(f)))
        cs = jpegfreq.ChannelSet.parse(a.channels)
        comp = torch.tensor(list(cs.component_of))
        runs = {}
        for train in (True, False):
            ld = JpegLoader(os.path.dirname(part), 32, a.channels, a.size, train=train,
                            threads=2, stats=stats, pin_memory=False, drop_last=False)
            xs = []
            for e in range(a.epochs if train else 1):
                ld.set_epoch(e)
                xs += [x.clone() for x, _ in ld]
            runs["train" if train else "eval"] = torch.cat(xs).transpose(0, 1).reshape(
                cs.count, -1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{a.channels} {a.size}: statistics from {len(fit)} files, measured on the other "
          f"{len(held)}; step = K / 127 in standard deviations; loader's K = {INT8_CLIP:g}")
    print(f"int8 {cs.count * (a.size // 8) ** 2:,} bytes per sample vs uint8 RGB 224 "
          f"{3 * 224 * 224:,}")
    for name, z in runs.items():
        print(f"\n{name} cubes: {z.shape[1]:,} values per channel; overall std "
              f"{float(z.std()):.3f}, max |z| {float(z.abs().max()):.1f}")
        print(f"{'K':>4} {'clipped %':>10} {'RMS err':>9} " + " ".join(
            f"{'RMS ' + c:>9}" for c in ("Y", "Cb", "Cr")))
        for k in CLIPS:
            step = k / 127.0
            q = (z / step).round_().clamp_(-127, 127) * step
            err = (q - z).pow_(2)
            clipped = float((z.abs() > 127.5 * step).double().mean()) * 100
            per = [float(err[comp == c].mean().sqrt()) for c in range(3)]
            print(f"{k:>4} {clipped:10.4f} {float(err.mean().sqrt()):9.4f} "
                  + " ".join(f"{v:9.4f}" for v in per))


if __name__ == "__main__":
    main()
