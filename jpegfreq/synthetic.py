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

For detection: make_shapes_dataset("out/shapes", 60, "train") writes a COCO-format instance
segmentation set of coloured shapes (rectangle, ellipse, triangle) on textured backgrounds,
``ROOT/SPLIT/NNNN.jpg`` and ``ROOT/SPLIT.json``, for jpegfreq.detection.CocoJpeg.
"""
import json
import math
import os

import numpy as np
from PIL import Image

from .files import atomic_write

__all__ = ["CLASSES", "SHAPE_CLASSES", "make_dataset", "make_shapes_dataset", "render"]

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


# ---------------------------------------------------------------------------
# Detection: a COCO-format instance segmentation set of shapes
# ---------------------------------------------------------------------------

SHAPE_CLASSES = ("rectangle", "ellipse", "triangle")


def _shape_background(rng, w, h):
    """Smooth colour field + an oriented grating + grain: texture the detector must ignore."""
    low = rng.uniform(40, 215, size=(4, 4, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta, period = rng.uniform(0, math.pi), rng.uniform(6, 24)
    grating = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period)
    base += rng.uniform(8, 25) * grating[..., None] * rng.uniform(0.5, 1, size=3)
    base += rng.normal(0, 6, size=base.shape)
    return base


def _shape_mask(rng, kind, box, w, h):
    from PIL import ImageDraw
    x0, y0, x1, y1 = box
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    if kind == "ellipse":
        d.ellipse([x0, y0, x1 - 1, y1 - 1], fill=1)
    elif kind == "rectangle":
        # a rectangle turned by up to 30 degrees, fitted inside the box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        a = rng.uniform(-math.pi / 6, math.pi / 6)
        bw, bh = x1 - x0, y1 - y0
        c, s = abs(math.cos(a)), abs(math.sin(a))
        # half-sides (p, q) with p c + q s = bw/2 and p s + q c = bh/2 when solvable
        det = c * c - s * s
        p, q = (bw / 2 * c - bh / 2 * s) / det, (bh / 2 * c - bw / 2 * s) / det
        if p < 4 or q < 4:
            a, p, q = 0.0, bw / 2, bh / 2
        ca, sa = math.cos(a), math.sin(a)
        pts = [(cx + ca * u - sa * v, cy + sa * u + ca * v)
               for u, v in ((-p, -q), (p, -q), (p, q), (-p, q))]
        d.polygon(pts, fill=1)
    else:
        # apex somewhere on the top edge, base corners at the bottom: never degenerate
        apex = (rng.uniform(x0, x1), y0)
        if rng.random() < 0.5:   # or pointing down
            pts = [(x0, y0), (x1, y0), (rng.uniform(x0, x1), y1)]
        else:
            pts = [apex, (x1, y1), (x0, y1)]
        d.polygon(pts, fill=1)
    return np.asarray(im, np.uint8)


def make_shapes_dataset(root, num_images=60, split="train", seed=0, size=(256, 256),
                        objects=(1, 4), object_size=(40, 120), classes=SHAPE_CLASSES,
                        category_ids=None, quality=90, size_jitter=0.0):
    """Write a COCO-format instance segmentation set of coloured shapes on textured backgrounds.

    root: output folder; images go to root/split/NNNN.jpg, annotations to root/split.json.
    num_images (default 60). seed (default 0). size (default (256, 256)): (width, height);
    size_jitter (default 0): each side varies by up to this fraction. objects (default 1-4
    per image, non-overlapping boxes). object_size (default 40-120 px sides). classes
    (default rectangle, ellipse, triangle). category_ids (default 1..K). quality: JPEG
    quality (4:2:0). Masks are RLE; boxes are the masks' extents. Returns the json path.
    Deterministic in its arguments. About 30 ms per 256x256 image.
    """
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng([seed, sum(map(ord, split))])
    category_ids = list(category_ids or range(1, len(classes) + 1))
    if len(category_ids) != len(classes):
        raise ValueError("one category id per class")
    folder = os.path.join(os.fspath(root), split)
    os.makedirs(folder, exist_ok=True)
    images, anns = [], []
    for n in range(num_images):
        w = int(round(size[0] * (1 + rng.uniform(-size_jitter, size_jitter))))
        h = int(round(size[1] * (1 + rng.uniform(-size_jitter, size_jitter))))
        img = _shape_background(rng, w, h)
        placed = []
        for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
            for _attempt in range(30):
                bw = int(rng.integers(object_size[0], min(object_size[1], w - 2) + 1))
                bh = int(np.clip(bw * math.exp(rng.uniform(-0.5, 0.5)), object_size[0],
                                 min(object_size[1], h - 2)))
                x0, y0 = int(rng.integers(1, w - bw)), int(rng.integers(1, h - bh))
                box = (x0, y0, x0 + bw, y0 + bh)
                if all(box[0] >= b[2] + 4 or box[2] + 4 <= b[0] or box[1] >= b[3] + 4
                       or box[3] + 4 <= b[1] for b, _, _ in placed):
                    break
            else:
                continue
            cls = int(rng.integers(len(classes)))
            mask = _shape_mask(rng, classes[cls], box, w, h)
            if mask.sum() < 16:
                continue
            bg = img[mask.astype(bool)].mean(0)
            for _c in range(20):   # a colour that stands out from what is behind it
                colour = rng.uniform(0, 255, size=3)
                if np.abs(colour - bg).sum() > 150:
                    break
            tex = rng.normal(0, 8, size=(h, w, 1))
            img = np.where(mask[..., None] > 0, colour + tex, img)
            placed.append((box, cls, mask))
        fname = f"{n:04d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8)).save(
            os.path.join(folder, fname), quality=quality, subsampling="4:2:0")
        image_id = n + 1
        images.append({"id": image_id, "file_name": fname, "width": w, "height": h})
        for box, cls, mask in placed:
            ys, xs = np.nonzero(mask)
            rle = mask_utils.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode("ascii")
            x0, y0 = int(xs.min()), int(ys.min())
            anns.append({"id": len(anns) + 1, "image_id": image_id,
                         "category_id": category_ids[cls], "segmentation": rle,
                         "area": float(mask.sum()), "iscrowd": 0,
                         "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]})
    ann_path = os.path.join(os.fspath(root), f"{split}.json")
    data = {"images": images, "annotations": anns,
            "categories": [{"id": c, "name": n} for c, n in zip(category_ids, classes)]}
    atomic_write(ann_path, lambda f: json.dump(data, f))
    return ann_path
