"""Equivalence and exactness checks on real JPEGs (issue 2 and 3 "Done when").

    python bench/check_equivalence.py FOLDER [--train-draws 2] [--exact-files 40] [--limit N]

FOLDER (or --data FOLDER) holds the JPEGs to check; without one the script stops with a
usage message (the unit tests make their own JPEGs and never need it).  Checks, each
printed with its figure (definitions in docs/design.md, "How equivalence is measured"):

1. reader: dequantized coefficients equal jpeg2dct's exactly (4:2:0 and grayscale files;
   jpeg2dct transcodes other samplings);
2. reader: float IDCT + fancy upsampling + JFIF colour reconstructs Pillow's RGB decode,
   mean absolute difference per channel (4:4:4, 4:2:2 and 4:2:0 files);
3. operator: jpeg-coeffs cube vs a float reference (float IDCT, upsampling, resize, DCT;
   no rounding), relative RMS per cube, bound 1e-5;
4. equivalence: jpeg-coeffs vs spatial (libjpeg's 8-bit decode, same geometry), relative RMS
   pooled over all files per component (kept 24S channels), eval and train geometries,
   overall and per subsampling, plus the per-image median.
Exit status 1 when a check misses its bound.
"""
import argparse
import io
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from _common import add_folder_argument, data_folder, list_jpegs  # noqa: E402

import jpegfreq  # noqa: E402
from jpegfreq import ChannelSet, SpatialFallbackWarning, eval_geometry, sample_train  # noqa: E402
from reference import float_reference, reconstruct_rgb  # noqa: E402  (tests/reference.py)

BOUNDS = {"reconstruction_mad": 1.0, "operator_rel": 1e-5, "Y": 0.01, "Cb": 0.02, "Cr": 0.02}
COMPONENTS = ("Y", "Cb", "Cr")


class Pooled:
    """Per-component sums of squared differences and squared reference values."""

    def __init__(self):
        self.num = np.zeros(3)
        self.den = np.zeros(3)
        self.count = np.zeros(3)
        self.per_image = []

    def add(self, got, ref, comp):
        num, den = np.zeros(3), np.zeros(3)
        for c in range(3):
            d = (got[comp == c] - ref[comp == c]).astype(np.float64)
            r = ref[comp == c].astype(np.float64)
            num[c], den[c] = np.sum(d * d), np.sum(r * r)
            self.count[c] += r.size
        self.num += num
        self.den += den
        with np.errstate(invalid="ignore", divide="ignore"):
            self.per_image.append(np.sqrt(num / den))

    def rel(self):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.num / self.den)

    def ref_rms(self):
        """RMS of the reference coefficients: how much signal the relative figure divides by."""
        return np.sqrt(self.den / np.maximum(self.count, 1))

    def median(self):
        return np.nanmedian(np.array(self.per_image), axis=0) if self.per_image else np.full(3, np.nan)


def fmt(v):
    return "  ".join(f"{n} {100 * x:6.3f}%" if np.isfinite(x) else f"{n}    n/a "
                     for n, x in zip(COMPONENTS, v))


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

def check_jpeg2dct(files):
    try:
        from jpeg2dct.numpy import loads
    except ImportError:
        print("1. jpeg2dct: not installed, skipped")
        return True
    n = bad = 0
    for path, data, hdr in files:
        if hdr.subsampling not in ("4:2:0", "gray"):
            continue
        theirs = loads(data)
        ours = jpegfreq.read_coefficients(data)
        n += 1
        for i in range(hdr.num_components):
            if theirs[i].shape != ours.coefficients[i].shape or not np.array_equal(
                    theirs[i].astype(np.float32), ours.dequantized(i)):
                bad += 1
                print(f"   MISMATCH {os.path.basename(path)} component {i}")
                break
    ok = bad == 0
    print(f"1. reader vs jpeg2dct (4:2:0 + gray): {n - bad}/{n} files exactly equal  "
          f"[{'PASS' if ok else 'FAIL'}]")
    return ok


def check_reconstruction(files):
    from PIL import Image
    by_kind = {}
    for path, data, hdr in files:
        if hdr.subsampling not in ("4:4:4", "4:2:2", "4:2:0"):
            continue
        ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64)
        mad = np.abs(reconstruct_rgb(data) - ref).mean(axis=(0, 1))
        by_kind.setdefault(hdr.subsampling, []).append(mad)
    ok = True
    print("2. IDCT + fancy upsampling vs Pillow's decode, mean abs difference per channel (R G B):")
    for kind in sorted(by_kind):
        m = np.array(by_kind[kind])
        worst = m.max(axis=0)
        ok &= bool(np.all(worst < BOUNDS["reconstruction_mad"]))
        print(f"   {kind}: {len(m):3d} files  mean {np.round(m.mean(axis=0), 3)}  worst {np.round(worst, 3)}")
    print(f"   bound: every file, every channel < {BOUNDS['reconstruction_mad']}  "
          f"[{'PASS' if ok else 'FAIL'}]")
    return ok


def check_operator(files, n_files, rng):
    cs = ChannelSet.parse("192")
    errs = []
    picked = [f for f in files if f[2].spatial_reason is None][:n_files]
    for path, data, hdr in picked:
        for g in (eval_geometry(448), sample_train(hdr.width, hdr.height, 448, rng)):
            got = jpegfreq.cube(data, cs, geometry=g)
            ref = float_reference(data, g, cs)
            errs.append(np.sqrt(np.sum((got - ref) ** 2) / np.sum(ref ** 2)))
    errs = np.array(errs)
    ok = bool(errs.max() < BOUNDS["operator_rel"]) if len(errs) else True
    print(f"3. operator vs float reference (192 channels, eval + 1 train geometry, {len(picked)} files): "
          f"relative RMS median {np.median(errs):.2e}, max {errs.max():.2e}  "
          f"(bound {BOUNDS['operator_rel']:.0e})  [{'PASS' if ok else 'FAIL'}]")
    return ok


def check_equivalence(files, draws, rng):
    cs = ChannelSet.parse("24S")
    comp = np.asarray(cs.component_of)
    pooled = {"eval": Pooled(), "train": Pooled()}
    by_kind = {}
    fallback = 0
    for path, data, hdr in files:
        if hdr.spatial_reason is not None:  # the C route: these take the spatial path
            fallback += 1
            continue
        geoms = [("eval", eval_geometry(448))] + [
            ("train", sample_train(hdr.width, hdr.height, 448, rng)) for _ in range(draws)]
        for kind, g in geoms:
            a = jpegfreq.cube(data, cs, geometry=g)
            s = jpegfreq.cube(data, cs, geometry=g, source="spatial")
            pooled[kind].add(a, s, comp)
            by_kind.setdefault((hdr.subsampling, kind), Pooled()).add(a, s, comp)
    ok = True
    print("4. jpeg-coeffs vs spatial, 24S kept channels, relative RMS pooled per component:")
    for kind in ("eval", "train"):
        rel = pooled[kind].rel()
        good = rel[0] < BOUNDS["Y"] and np.all(np.nan_to_num(rel[1:]) < BOUNDS["Cb"])
        ok &= bool(good)
        print(f"   {kind:5s} ({len(pooled[kind].per_image):3d} cubes): pooled {fmt(rel)}   "
              f"per-image median {fmt(pooled[kind].median())}  [{'PASS' if good else 'FAIL'}]")
    for (sub, kind), p in sorted(by_kind.items()):
        print(f"     {sub:6s} {kind:5s} ({len(p.per_image):3d} cubes): pooled {fmt(p.rel())}   "
              f"reference RMS {' '.join(f'{v:6.2f}' for v in p.ref_rms())}")
    print("   (a subsampling with few, nearly grey files has a tiny chroma reference RMS: its relative")
    print("   figure is meaningless alone, which is why the bound applies to the pooled set)")
    print(f"   bounds: Y < {100 * BOUNDS['Y']:.0f}%, chroma < {100 * BOUNDS['Cb']:.0f}%"
          + (f"; {fallback} non-YCbCr files skipped (spatial fallback)" if fallback else ""))
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_folder_argument(ap)
    ap.add_argument("--limit", type=int, default=0, help="check at most N files (default: all)")
    ap.add_argument("--train-draws", type=int, default=2, help="train geometries per file (default 2)")
    ap.add_argument("--exact-files", type=int, default=40,
                    help="files for the float-reference exactness check (default 40)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the train geometries (default 0)")
    args = ap.parse_args(argv)
    folder = data_folder(ap, args)
    paths = list_jpegs(folder)
    if not paths:
        ap.error(f"no JPEG files in {folder!r}")
    if args.limit:
        paths = paths[:args.limit]
    files, unreadable = [], 0
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        try:
            files.append((p, data, jpegfreq.read_header(data)))
        except jpegfreq.JpegError as e:
            unreadable += 1
            print(f"   unreadable: {e}")
    kinds = {}
    for _, _, h in files:
        kinds[h.subsampling] = kinds.get(h.subsampling, 0) + 1
    print(f"{len(files)} JPEGs in {folder} ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))})"
          f"; libjpeg-turbo {jpegfreq.libjpeg_version}")
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpatialFallbackWarning)
        results = [check_jpeg2dct(files), check_reconstruction(files),
                   check_operator(files, args.exact_files, np.random.default_rng([args.seed, 3])),
                   check_equivalence(files, args.train_draws, np.random.default_rng([args.seed, 4]))]
    print(f"{'all checks pass' if all(results) else 'SOME CHECKS FAILED'} ({time.time() - t0:.1f} s)")
    return 0 if all(results) and not unreadable else 1


if __name__ == "__main__":
    sys.exit(main())
