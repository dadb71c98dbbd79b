"""Photometric ops on real files: the coefficient domain against pixels and torchvision.

    python bench/check_photometric.py FOLDER [--limit N] [--channels 24S]

For every op (and one combination), on the eval geometry and one sampled train geometry
per file, pooled relative RMS per component (docs/design.md, "How equivalence is
measured") of the jpeg-coeffs cube with the op against:

- spatial: the spatial path with the same op done in pixel space (the reference; bounds
  Y < 1%, chroma < 2%, exit status 1 when missed);
- tv: torchvision.transforms.v2.functional's adjust_brightness / adjust_contrast /
  adjust_saturation / adjust_hue / rgb_to_grayscale, in that order, on the decoded image
  at the same geometry (the spatial path's YCbCr planes, from the block IDCT of its
  192-channel cube, as float RGB clamped to [0, 1]), then YCbCr and the block DCT.  Each adjust_* clamps to [0, 1]
  and adjust_hue is HSV's, so this column holds the decode residue, the clamping and (for
  hue) the difference between the two hue models;
- unclamped: the same decoded image with our ops in RGB (jpegfreq.photometric.adjust_rgb, no
  clamp): the decode residue alone.  tv minus unclamped is what clamping (and HSV hue) moves.

"clamped" is the share of RGB values the unclamped ops put outside [0, 1].
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_folder_argument, data_folder, sample_files  # noqa: E402

import argparse  # noqa: E402

import numpy as np  # noqa: E402

import jpegfreq  # noqa: E402
from jpegfreq.geometry import block_dct, block_idct, eval_geometry, sample_train  # noqa: E402
from jpegfreq.photometric import Photometric, adjust_rgb  # noqa: E402
from jpegfreq.photometric import RGB_TO_YCBCR  # noqa: E402

OPS = [
    ("none", Photometric()),
    ("brightness 1.2", Photometric(brightness=1.2)),
    ("brightness 0.8", Photometric(brightness=0.8)),
    ("contrast 1.3", Photometric(contrast=1.3)),
    ("contrast 0.7", Photometric(contrast=0.7)),
    ("saturation 1.4", Photometric(saturation=1.4)),
    ("saturation 0.6", Photometric(saturation=0.6)),
    ("hue 0.05", Photometric(hue=0.05)),
    ("hue -0.1", Photometric(hue=-0.1)),
    ("grayscale", Photometric(grayscale=True)),
    ("b0.9 c1.2 s0.8 h0.03", Photometric(0.9, 1.2, 0.8, 0.03)),
]
BOUND = (0.01, 0.02, 0.02)


def decoded_rgb(f, g):
    """The spatial path's decoded image at geometry g as float RGB in [0, 1]."""
    full = jpegfreq.cube(f, "192", geometry=g, source="spatial")
    ycc = np.stack([block_idct(np.moveaxis(full[64 * c:64 * (c + 1)], 0, -1))
                    for c in range(3)])
    ycc[0] += 128.0
    rgb = np.einsum("ij,jhw->ihw", np.linalg.inv(RGB_TO_YCBCR.astype(np.float64)), ycc) / 255.0
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def torchvision_rgb(rgb, p):
    import torch
    import torchvision.transforms.v2.functional as TF
    t = torch.from_numpy(rgb)
    if p.brightness != 1.0:
        t = TF.adjust_brightness(t, p.brightness)
    if p.contrast != 1.0:
        t = TF.adjust_contrast(t, p.contrast)
    if p.saturation != 1.0:
        t = TF.adjust_saturation(t, p.saturation)
    if p.hue != 0.0:
        t = TF.adjust_hue(t, p.hue)
    if p.grayscale:
        t = TF.rgb_to_grayscale(t, 3)
    return t.numpy()


def rgb_to_cube(rgb, cs):
    """(3, H, W) RGB in [0, 1] -> the kept channels of the block DCT of its YCbCr."""
    ycc = np.einsum("ij,jhw->ihw", RGB_TO_YCBCR, rgb * 255.0)
    ycc[0] -= 128.0                    # chroma rows of the matrix are already centred
    out = np.empty((cs.count, rgb.shape[1] // 8, rgb.shape[2] // 8), np.float32)
    for i, (c, k) in enumerate(zip(cs.component_of, cs.k)):
        out[i] = block_dct(np.ascontiguousarray(ycc[c], np.float32), [int(k) >> 3],
                           [int(k) & 7])[0, 0]
    return out


class Pooled:
    def __init__(self, cs):
        self.comp = np.asarray(cs.component_of)
        self.num, self.den = np.zeros(3), np.zeros(3)

    def add(self, got, ref):
        for c in range(3):
            m = self.comp == c
            d = (got[m] - ref[m]).astype(np.float64)
            r = ref[m].astype(np.float64)
            self.num[c] += np.sum(d * d)
            self.den[c] += np.sum(r * r)

    def value(self):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.num / self.den)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_folder_argument(p)
    p.add_argument("--limit", type=int, default=0, help="use at most N files (default: all)")
    p.add_argument("--channels", default="24S", help="channel set (default: 24S)")
    a = p.parse_args()
    files = sample_files(p, data_folder(p, a), a.limit)
    cs = jpegfreq.ChannelSet.parse(a.channels)
    rng = np.random.default_rng(0)
    geoms = []
    for f in files:
        h = jpegfreq.read_header(f)
        geoms.append((f, "eval", eval_geometry(448)))
        geoms.append((f, "train", sample_train(h.width, h.height, 448, rng)))
    res = {(name, kind, ref): Pooled(cs) for name, _ in OPS for kind in ("eval", "train")
           for ref in ("spatial", "tv", "unclamped")}
    clamped = {(name, kind): [0, 0] for name, _ in OPS for kind in ("eval", "train")}
    skipped = set()
    for f, kind, g in geoms:
        try:
            rgb = decoded_rgb(f, g)
        except jpegfreq.JpegError as e:
            skipped.add(f"{f}: {e.reason}")
            continue
        for name, op in OPS:
            got = jpegfreq.cube(f, cs, geometry=g, photometric=op)
            res[name, kind, "spatial"].add(
                got, jpegfreq.cube(f, cs, geometry=g, source="spatial", photometric=op))
            res[name, kind, "tv"].add(got, rgb_to_cube(torchvision_rgb(rgb, op), cs))
            free = adjust_rgb(op, rgb)
            res[name, kind, "unclamped"].add(got, rgb_to_cube(free, cs))
            clamped[name, kind][0] += int(np.sum((free < 0) | (free > 1)))
            clamped[name, kind][1] += free.size
    for s in sorted(skipped):
        print("skipped", s, file=sys.stderr)
    n = len(files) - len(skipped)
    print(f"{n} files, {cs.name}, eval geometry and one train geometry per file; pooled "
          "relative RMS % (Y / Cb / Cr) of jpeg-coeffs + op against each reference\n")
    print(f"{'op':22s} {'geometry':8s} {'vs spatial + op':>20s} {'vs torchvision':>20s} "
          f"{'vs unclamped RGB':>20s} {'clamped':>8s}")
    fmt = lambda v: " / ".join("  -  " if not np.isfinite(x) else f"{100 * x:5.2f}" for x in v)
    bad = []
    for name, op in OPS:
        for kind in ("eval", "train"):
            sp = res[name, kind, "spatial"].value()
            tv = res[name, kind, "tv"].value()
            un = res[name, kind, "unclamped"].value()
            c = clamped[name, kind]
            share = c[0] / c[1] if c[1] else 0.0
            print(f"{name:22s} {kind:8s} {fmt(sp):>20s} {fmt(tv):>20s} {fmt(un):>20s} "
                  f"{100 * share:7.2f}%")
            ok = [not np.isfinite(v) or v < b for v, b in zip(sp, BOUND)]
            if not all(ok):
                bad.append(f"{name} {kind}")
    print("\n(grayscale: the cube's chroma is exactly 0, the spatial path's too; the RGB references'\n"
          " is float round-off, so their 100% chroma figures are round-off over round-off)")
    if bad:
        print("bound (Y < 1%, chroma < 2% against spatial + op) missed: " + ", ".join(bad))
        sys.exit(1)
    print("every op within Y < 1%, chroma < 2% of the spatial path with the same op")


if __name__ == "__main__":
    main()
