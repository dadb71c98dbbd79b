"""A small labelled JPEG data set made from nothing, for the demo and the tests.

    make_dataset("out/synthetic", classes=6, train_per_class=60, val_per_class=20, seed=0)

writes ImageFolder layout ``ROOT/{train,val}/CLASS/NNNN.jpg``.  Classes are told apart by
shape and texture only (stripe orientation, checkerboards, rings, dots, ...); colours,
position, scale, phase and noise are jittered per image, so nothing trivial (mean colour,
file size) gives the label away and a network has to learn the pattern.  Every pattern
survives a horizontal flip as itself, because training flips images.

The files exercise the reader the way a real set does: sizes 300-700 px (by default),
4:4:4 / 4:2:2 / 4:2:0 chroma subsampling, quality 60-95, about one in five progressive,
about one in eight grayscale.  Everything is a pure function of the arguments: the same
call writes the same bytes (one Pillow/libjpeg version).  A manifest.json records the
arguments; a second call with the same arguments finds it and writes nothing.
"""
import json
import os

import numpy as np
from PIL import Image

__all__ = ["CLASSES", "make_dataset", "render"]

#: Class names in label order; ``classes=n`` uses the first n.
CLASSES = ("hstripes", "vstripes", "checker", "rings", "dots", "grid", "clouds", "rays",
           "triangles", "zigzag")

_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}   # Pillow's subsampling= values


def _colours(rng):
    """Two RGB colours far enough apart that the pattern is visible (luma contrast >= 50)."""
    while True:
        a, b = rng.uniform(0, 255, (2, 3))
        luma = np.array([0.299, 0.587, 0.114])
        if abs(float((a - b) @ luma)) >= 50:
            return a, b


def _rotated(xx, yy, angle):
    c, s = np.cos(angle), np.sin(angle)
    return xx * c + yy * s, -xx * s + yy * c


def _square(t):
    """Square wave in [0, 1] with period 1 (soft edges: a clipped, steep sine)."""
    return np.clip(0.5 + 3.0 * np.sin((2 * np.pi) * t), 0.0, 1.0)


def _pattern(name, w, h, rng):
    """Mask in [0, 1] (h, w): where the pattern's first colour shows."""
    yy = np.arange(h, dtype=np.float32)[:, None]     # broadcast: (h, 1) and (1, w)
    xx = np.arange(w, dtype=np.float32)[None, :]
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    period = rng.uniform(12, 40)
    phase = rng.uniform(0, 1)
    if name in ("hstripes", "vstripes"):
        # within 15 degrees of the axis: a flip mirrors the tilt, not the class
        tilt = np.deg2rad(rng.uniform(-15, 15))
        u, v = _rotated(xx, yy, tilt)
        coord = v if name == "hstripes" else u
        return _square(coord / period + phase)
    if name == "checker":
        u, v = _rotated(xx - cx, yy - cy, rng.uniform(0, np.pi / 2))
        return _square(u / (2 * period) + phase) * _square(v / (2 * period)) + \
            (1 - _square(u / (2 * period) + phase)) * (1 - _square(v / (2 * period)))
    if name == "rings":
        r = np.hypot(xx - cx, yy - cy)
        return _square(r / period + phase)
    if name == "dots":
        from PIL import ImageDraw, ImageFilter
        im = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(im)
        radius = rng.uniform(5, 18)
        n = int(rng.integers(12, 40) * (w * h) / 250000) + 6
        for x0, y0 in zip(rng.uniform(0, w, n), rng.uniform(0, h, n)):
            draw.ellipse([x0 - radius, y0 - radius, x0 + radius, y0 + radius], fill=255)
        return np.asarray(im.filter(ImageFilter.GaussianBlur(1.0)), np.float32) / 255.0
    if name == "grid":
        tilt = np.deg2rad(rng.uniform(-10, 10))
        u, v = _rotated(xx - cx, yy - cy, tilt)
        width = rng.uniform(0.08, 0.2)   # line width as a fraction of the period

        def lines(t):
            f = np.abs(((t / period) % 1.0) - 0.5)
            return (f > 0.5 - width / 2).astype(np.float64)
        return np.maximum(lines(u), lines(v))
    if name == "clouds":
        # band-limited noise: a few octaves of random low-frequency sinusoids
        m = np.zeros((h, w))
        for octave in range(4):
            for _ in range(3):
                ang = rng.uniform(0, np.pi)
                f = (2 ** octave) / rng.uniform(80, 160)
                u, _ = _rotated(xx, yy, ang)
                m += np.sin(2 * np.pi * f * u + rng.uniform(0, 2 * np.pi)) / (1 + octave)
        return (m - m.min()) / max(m.max() - m.min(), 1e-9)
    if name == "rays":
        n = int(rng.integers(6, 16))
        ang = np.arctan2(yy - cy, xx - cx)
        return _square(ang * n / (2 * np.pi) + phase)
    if name == "triangles":
        # rows of upward triangles: a sawtooth in x against y
        size = rng.uniform(30, 80)
        ty = ((yy - cy) / size) % 1.0
        tx = np.abs((((xx - cx) / size) % 1.0) - 0.5) * 2   # 0 at centre, 1 at the edge
        return np.clip(0.5 + 10.0 * (ty - tx), 0.0, 1.0)
    if name == "zigzag":
        amp = rng.uniform(0.3, 0.6) * period
        tooth = rng.uniform(1.0, 2.0) * period
        tri = np.abs(((xx - cx) / tooth) % 1.0 - 0.5) * 2 * amp   # symmetric: flip-safe
        return _square((yy + tri) / period + phase)
    raise ValueError(f"unknown pattern {name!r}; known: {', '.join(CLASSES)}")


def render(name, width, height, rng):
    """One RGB image (uint8 (height, width, 3)) of class ``name``, jittered by ``rng``."""
    fg, bg = _colours(rng)
    mask = _pattern(name, width, height, rng)
    mask = mask.astype(np.float32)[..., None]
    img = mask * fg.astype(np.float32) + (1 - mask) * bg.astype(np.float32)
    # a slow illumination gradient and sensor-like noise
    gx, gy = rng.uniform(-40, 40, 2)
    img += (gx * (np.arange(width, dtype=np.float32) / width - 0.5))[None, :, None]
    img += (gy * (np.arange(height, dtype=np.float32) / height - 0.5))[:, None, None]
    noise = np.frombuffer(rng.bytes(img.size), np.uint8).reshape(img.shape)   # cheap uniform
    img += (noise.astype(np.float32) - 127.5) * np.float32(rng.uniform(4, 16) / 127.5)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write(path, pixels, rng):
    im = Image.fromarray(pixels, "RGB")
    gray = rng.random() < 0.125
    progressive = bool(rng.random() < 0.2)
    quality = int(rng.integers(60, 96))
    kw = {"quality": quality, "progressive": progressive}
    if gray:
        im = im.convert("L")
    else:
        kw["subsampling"] = _SUBSAMPLING[int(rng.integers(0, 3))]
    if not progressive:
        im.save(path, "JPEG", **kw)
        return
    # Pillow encodes a progressive file in one buffer of width x height bytes (below quality
    # 95); noisy 4:4:4 images need up to ~1.6 bytes per pixel, and libjpeg then fails with
    # "Suspension not allowed here".  Its floor MAXBLOCK sets a larger buffer; the bytes
    # written do not depend on it.
    from PIL import ImageFile
    saved = ImageFile.MAXBLOCK
    ImageFile.MAXBLOCK = max(saved, 4 * im.size[0] * im.size[1])
    try:
        im.save(path, "JPEG", **kw)
    finally:
        ImageFile.MAXBLOCK = saved


def make_dataset(root, classes=6, train_per_class=60, val_per_class=20, seed=0,
                 min_size=300, max_size=700, progress=False):
    """Write a labelled JPEG set under ``root``; returns ``root``.

    root: output folder (ROOT/train/CLASS/*.jpg and ROOT/val/CLASS/*.jpg).
    classes: number of classes, 4..10 (default 6), the first n of CLASSES.
    train_per_class, val_per_class: images per class (default 60 and 20).
    seed: everything derives from it (default 0).
    min_size, max_size: each side is drawn uniformly from this range (default 300..700 px).
    progress: show a tqdm bar (default False).
    Cost: about 10 ms per 500x500 image on one core.
    """
    if not 4 <= int(classes) <= len(CLASSES):
        raise ValueError(f"classes must be between 4 and {len(CLASSES)}, got {classes}")
    if min_size < 8 or max_size < min_size:
        raise ValueError(f"bad size range {min_size}..{max_size}")
    params = {"classes": int(classes), "train_per_class": int(train_per_class),
              "val_per_class": int(val_per_class), "seed": int(seed),
              "min_size": int(min_size), "max_size": int(max_size), "version": 1}
    manifest = os.path.join(root, "manifest.json")
    try:
        with open(manifest) as f:
            if json.load(f) == params:
                return root
    except (OSError, ValueError):
        pass
    names = CLASSES[: int(classes)]
    jobs = [(split, c, i) for split, n in (("train", train_per_class), ("val", val_per_class))
            for c in range(len(names)) for i in range(n)]
    if progress:
        from tqdm import tqdm
        jobs = tqdm(jobs, desc="synthesizing", unit="img")
    for split, c, i in jobs:
        folder = os.path.join(root, split, names[c])
        os.makedirs(folder, exist_ok=True)
        # one generator per image: any subset regenerates identically
        rng = np.random.default_rng([int(seed), 0 if split == "train" else 1, c, i])
        w, h = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
        _write(os.path.join(folder, f"{i:04d}.jpg"), render(names[c], w, h, rng), rng)
    with open(manifest, "w") as f:
        json.dump(params, f)
    return root
