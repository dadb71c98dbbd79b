"""Per-channel normalization statistics, pooled over a set of cubes.

    python -m jpegfreq.stats DIR --channels 192 --out stats.json [--size 448] [--source jpeg-coeffs]

Mean and std are pooled over every position of every cube (sums of x and x^2
per channel in float64), not averaged per batch.  A Stats object remembers the
channel set, source and geometry it was computed for (an output size for
classification cubes, the resize rule for detection cubes: compute_detection_stats);
Stats.check, the one statistics check, refuses another size or rule and channels
it does not hold.
"""
import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .channels import ChannelSet
from .files import atomic_write
from .geometry import PIXELS_PER_CELL, Geometry, eval_geometry, resized_size

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class Stats:
    """Pooled per-channel mean/std for one channel set, source and output size.

    channels: the ChannelSet the arrays are indexed by (or None for rgb: R, G, B).
    mean, std: float64 arrays, one value per channel.  size: (out_h, out_w) of the
    cubes they came from.  count: positions pooled per channel.
    """

    channels: Optional[ChannelSet]
    mean: np.ndarray
    std: np.ndarray
    source: str = "jpeg-coeffs"
    size: tuple = (448, 448)
    count: int = 0
    geometry: Optional[dict] = None

    def select(self, cs: Optional[ChannelSet]):
        """mean, std of the channels of cs (which these stats must hold)."""
        if cs is None or self.channels is None:
            if (cs is None) != (self.channels is None):
                raise ValueError("rgb statistics and coefficient statistics are not interchangeable")
            return self.mean, self.std
        pos = {g: i for i, g in enumerate(self.channels.indices)}
        missing = [n for g, n in zip(cs.indices, cs.names) if g not in pos]
        if missing:
            raise ValueError(f"statistics computed for {self.channels.name} lack channels "
                             f"{', '.join(missing[:8])}{'...' if len(missing) > 8 else ''}")
        idx = [pos[g] for g in cs.indices]
        return self.mean[idx], self.std[idx]

    @property
    def detection(self) -> Optional[dict]:
        """The detection record (detection_stats_geometry) these stats were computed for,
        None for classification statistics."""
        g = self.geometry
        return g if isinstance(g, dict) and g.get("kind") == "detection" else None

    def _describe(self) -> str:
        d = self.detection
        if d is not None:
            return f"detection cubes at min_size={d['min_size']}, max_size={d['max_size']}"
        return f"{self.size[0]}x{self.size[1]} inputs"

    def check(self, cs: Optional[ChannelSet], source: str = "jpeg-coeffs", geometry=None):
        """The one statistics check: may these stats normalize cubes of channel set cs (None:
        rgb), source and geometry?  Returns the selected (mean, std); raises ValueError.

        geometry: None (not checked); a Geometry or any object with out_h/out_w (and box
        for detection): classification stats must have been computed at its output size;
        detection stats (compute_detection_stats) accept only a whole-image box resized by
        their min_size/max_size rule; or a detection record (detection_stats_geometry),
        which must be the stats' own.
        """
        if (source == "rgb") != (self.source == "rgb"):
            raise ValueError(f"statistics computed for source {self.source!r} cannot "
                             f"normalize {source!r}")
        if geometry is not None:
            self._check_geometry(geometry)
        return self.select(cs)

    def _check_geometry(self, geometry):
        det = self.detection
        if isinstance(geometry, dict):
            if geometry.get("kind") == "detection":
                if det != geometry:
                    raise ValueError(
                        f"statistics were computed for {self._describe()}, not detection cubes "
                        f"at min_size={geometry['min_size']}, max_size={geometry['max_size']} "
                        "(a 2x grid has other AC statistics); use "
                        "jpegfreq.stats.compute_detection_stats")
                return
            geometry = Geometry.from_dict(geometry)
        out_h, out_w = int(geometry.out_h), int(geometry.out_w)
        if det is None:
            if tuple(self.size) != (out_h, out_w):
                raise ValueError(f"statistics were computed for {self._describe()}, not "
                                 f"{out_h}x{out_w}")
            return
        box = getattr(geometry, "box", None)
        k = 8 // int(det["pixels_per_cell"])
        ok = box is not None and box[0] == 0 and box[1] == 0 and box[2] >= 1 and box[3] >= 1
        if ok:
            w2, h2 = resized_size(int(round(box[2])), int(round(box[3])), det["min_size"],
                                  det["max_size"])
            ok = (out_w, out_h) == (k * w2, k * h2)
        if not ok:
            raise ValueError(f"statistics were computed for {self._describe()}, not a "
                             f"{out_h}x{out_w} cube of box {box}")

    def scale_offset(self, cs: Optional[ChannelSet], source: str = "jpeg-coeffs",
                     geometry=None):
        """float32 (scale, offset) with normalized = x * scale + offset = (x - mean) / std,
        after check(cs, source, geometry)."""
        mean, std = self.check(cs, source, geometry)
        std = np.where(std > 1e-6, std, 1.0)
        scale = (1.0 / std).astype(np.float32)
        return scale, (-mean * scale).astype(np.float32)

    def to_dict(self):
        return {"channels": None if self.channels is None else self.channels.spec,
                "names": None if self.channels is None else list(self.channels.names),
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "source": self.source, "size": list(self.size), "count": int(self.count),
                "geometry": self.geometry}

    @classmethod
    def coerce(cls, stats) -> Optional["Stats"]:
        """A ``stats=`` argument as Stats: a Stats, its dict, a path to its JSON, or None."""
        if stats is None or isinstance(stats, Stats):
            return stats
        if isinstance(stats, (str, os.PathLike)):
            return cls.load(stats)
        if isinstance(stats, dict):
            return cls.from_dict(stats)
        raise TypeError(f"stats must be a Stats, its dict, a path or None, "
                        f"not {type(stats).__name__}")

    @classmethod
    def from_dict(cls, d):
        """Stats from to_dict()'s form; ValueError saying what is wrong for anything else."""
        if not isinstance(d, dict):
            raise ValueError(f"statistics must be a JSON object, not {type(d).__name__}")
        spec = d.get("channels")
        if spec is not None and not isinstance(spec, str):
            raise ValueError(f"'channels' must be a channel-set spec string or null, "
                             f"not {type(spec).__name__}")
        cs = None if spec is None else ChannelSet.parse(spec)
        n = 3 if cs is None else cs.count
        mean, std = (_vector(d, key, n) for key in ("mean", "std"))
        if np.any(std < 0):
            raise ValueError("'std' holds negative values")
        with np.errstate(over="ignore", invalid="ignore"):
            scale = 1.0 / np.where(std > 1e-6, std, 1.0)
            folded = np.concatenate([scale, mean * scale]).astype(np.float32)
        if not np.all(np.isfinite(folded)):
            raise ValueError("'mean' / 'std' overflow float32 when folded into the operator "
                             "((x - mean) / std)")
        source = d.get("source", "jpeg-coeffs")
        if source not in ("jpeg-coeffs", "spatial", "rgb"):
            raise ValueError(f"'source' must be jpeg-coeffs, spatial or rgb, not {source!r}")
        size = d.get("size", (448, 448))
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(_is_int(v) and v >= 0 for v in size)):
            raise ValueError(f"'size' must be two non-negative integers, not {size!r}")
        count = d.get("count", 0)
        if not _is_int(count) or count < 0:
            raise ValueError(f"'count' must be a non-negative integer, not {count!r}")
        geometry = d.get("geometry")
        if geometry is not None and not isinstance(geometry, dict):
            raise ValueError(f"'geometry' must be an object or null, not {type(geometry).__name__}")
        return cls(cs, mean, std, source, tuple(int(v) for v in size), int(count), geometry)

    def save(self, path):
        """Write the statistics as JSON, atomically (jpegfreq.files.atomic_write)."""
        atomic_write(path, lambda f: json.dump(self.to_dict(), f, indent=1))

    @classmethod
    def load(cls, path):
        """Stats from a JSON file written by save().  A file that is not such JSON (malformed,
        truncated, of the wrong shape or layout) raises ValueError naming it and the reason;
        a file that cannot be opened raises OSError."""
        with open(path, "rb") as f:
            raw = f.read()
        try:
            return cls.from_dict(json.loads(raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            raise ValueError(f"{os.fspath(path)}: not a statistics file: not UTF-8 text "
                             f"(byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{os.fspath(path)}: not a statistics file: malformed JSON "
                             f"({e.msg} at line {e.lineno} column {e.colno})") from None
        except RecursionError:
            raise ValueError(f"{os.fspath(path)}: not a statistics file: JSON nested too "
                             "deeply") from None
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: not a statistics file: {e}") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _vector(d: dict, key: str, n: int) -> np.ndarray:
    """d[key] as float64 (n,) of finite numbers, else ValueError naming the key."""
    if key not in d:
        raise ValueError(f"'{key}' is missing")
    v = d[key]
    if (not isinstance(v, list) or
            not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
        raise ValueError(f"'{key}' must be a list of numbers")
    if len(v) != n:
        raise ValueError(f"'{key}' holds {len(v)} values for {n} channels")
    try:
        a = np.asarray(v, np.float64)
    except OverflowError:
        a = np.array([np.inf])
    if not np.all(np.isfinite(a)):
        raise ValueError(f"'{key}' holds values that are not finite")
    if np.any(np.abs(a) > np.finfo(np.float32).max):
        raise ValueError(f"'{key}' holds values beyond the float32 range")
    return a


class StatsAccumulator:
    """Running float64 sums of x and x^2 per channel over (C, H, W) cubes."""

    def __init__(self, n_channels: int):
        self.s1 = np.zeros(n_channels, np.float64)
        self.s2 = np.zeros(n_channels, np.float64)
        self.n = 0

    def update(self, cube: np.ndarray):
        x = np.asarray(cube, np.float64).reshape(cube.shape[0], -1)
        self.s1 += x.sum(1)
        self.s2 += np.einsum("ij,ij->i", x, x)
        self.n += x.shape[1]

    def merge(self, other: "StatsAccumulator"):
        self.s1 += other.s1
        self.s2 += other.s2
        self.n += other.n

    def result(self, channels, source, size, geometry=None) -> Stats:
        if self.n == 0:
            raise ValueError("no cubes: cannot compute statistics")
        mean = self.s1 / self.n
        var = np.maximum(self.s2 / self.n - mean ** 2, 0.0)
        return Stats(channels, mean, np.sqrt(var), source, tuple(size), self.n, geometry)


def list_images(root) -> list:
    """Image files under root (recursive, links followed, sorted; [] when root is absent)."""
    out = []
    for d, _, files in os.walk(root, followlinks=True):
        for f in files:
            if f.lower().endswith(IMAGE_EXTENSIONS):
                out.append(os.path.join(d, f))
    return sorted(out)


def compute_stats(files: Sequence[str], channels="192", size: int = 448,
                  source: str = "jpeg-coeffs", progress: bool = True, on_error="skip") -> Stats:
    """Pooled statistics of the eval-geometry cubes of ``files``.  Unreadable files are
    skipped and counted (``on_error="raise"`` re-raises)."""
    from tqdm import tqdm
    from .errors import JpegError
    from .pipeline import cube
    cs = None if source == "rgb" else ChannelSet.parse(channels)
    geometry = eval_geometry(size)
    acc = StatsAccumulator(3 if cs is None else cs.count)
    bad = 0
    for f in tqdm(files, desc="stats", unit="img", disable=not progress, file=sys.stderr):
        try:
            acc.update(cube(f, cs if cs is not None else "24S", size, source, geometry))
        except JpegError:
            if on_error == "raise":
                raise
            bad += 1
    if bad:
        print(f"stats: skipped {bad} unreadable file(s)", file=sys.stderr)
    return acc.result(cs, source, (geometry.out_h, geometry.out_w), geometry.to_dict())


def detection_stats_geometry(min_size: int, max_size: int) -> dict:
    """What detection statistics record (and Stats.check compares) as their geometry."""
    return {"kind": "detection", "min_size": int(min_size), "max_size": int(max_size),
            "pixels_per_cell": PIXELS_PER_CELL}


def compute_detection_stats(dataset, limit: Optional[int] = None, progress: bool = True) -> Stats:
    """Pooled per-channel mean/std of a detection set's cubes (no flip, unnormalised).

    dataset: a jpegfreq.detection.CocoJpeg (its source, channels, min_size, max_size are
    used; its own stats are ignored). limit (default all): use the first n images. The result
    records detection_stats_geometry(min_size, max_size); size is (0, 0) because detection
    cubes vary in size (a classification geometry never matches it).
    """
    from tqdm import tqdm
    if dataset.source == "rgb":
        raise ValueError("rgb inputs are normalised by the model; no statistics needed")
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n == 0:
        raise ValueError("no images: cannot compute statistics")
    acc = StatsAccumulator(dataset.channels.count)
    for i in tqdm(range(n), desc="stats", unit="img", disable=not progress, file=sys.stderr):
        x = dataset.load(i, dataset.geometry(i, flip=False), normalise=False)
        acc.update(x.astype(np.float32, copy=False))
    return acc.result(dataset.channels, dataset.source, (0, 0),
                      detection_stats_geometry(dataset.min_size, dataset.max_size))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m jpegfreq.stats", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="folder of images (searched recursively)")
    p.add_argument("--channels", default="192", help="channel set (default: 192)")
    p.add_argument("--size", type=int, default=448, help="crop size in pixels (default: 448)")
    p.add_argument("--source", default="jpeg-coeffs", choices=["jpeg-coeffs", "spatial", "rgb"],
                   help="pipeline (default: jpeg-coeffs)")
    p.add_argument("--out", default="stats.json", help="output JSON (default: stats.json)")
    p.add_argument("--limit", type=int, default=0, help="use at most N files (default: all)")
    a = p.parse_args(argv)
    files = list_images(a.dir)
    if a.limit:
        files = files[: a.limit]
    if not files:
        p.error(f"no images under {a.dir}")
    st = compute_stats(files, a.channels, a.size, a.source)
    st.save(a.out)
    print(f"wrote {a.out}: {len(st.mean)} channels, {st.count} positions each, from {len(files)} files")


if __name__ == "__main__":
    main()
