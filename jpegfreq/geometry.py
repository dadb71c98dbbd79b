"""Geometry shared by both paths: what part of the image becomes the cube, and how.

A :class:`Geometry` is plain numbers: the crop box in source pixels (or the eval
rule that derives it from the image size), the output size in pixels, and the
horizontal flip.  The jpeg-coeffs path hands them to the C operator
(out = A Q B^T); the spatial path hands the very same numbers to
:func:`resample_plane`, which applies the same 1-D weights in pixel space.
There is one implementation of the weights (csrc/jf_resample.c):

- resize/crop: antialiased bilinear (triangle, support widened by the scale
  when downscaling), the weights of PIL's and torchvision's bilinear resize;
- chroma upsampling: the triangle libjpeg's fancy upsampling uses (3/4, 1/4
  for a factor of 2), generalised to any integer factor;
- flip: reversing the output axis;
- EXIF orientation (off by default): transposes and flips of the source;
- a further orientation of the output (``Geometry.orientation``, default 1 = none):
  a quarter turn, half turn, transpose or flip of the resized crop, after the flip
  (jpegfreq.augment's rotations).  The jpeg-coeffs path folds it, the file's EXIF
  orientation and the flip into one orientation of the source and a moved box
  (:func:`compose_orientations`, :func:`orient_box`); the spatial and rgb paths
  apply it to the resized planes with :func:`orient_plane`.

Eval geometry: resize the short side to ``resize`` (default size * 8 / 7: 512
for 448, 1024 for 896, 256 for 224) and centre-crop ``size``.  Train geometry:
RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3)) and a flip with
p = 0.5, sampled from a seeded numpy Generator.
"""
import math
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np

from . import _jpegfreq

Box = Tuple[float, float, float, float]


@dataclass(frozen=True)
class Geometry:
    """Where the cube comes from.  Sizes are output pixels (multiples of 8).

    box: (x0, y0, x1, y1) in source pixels of the displayed image, or None for
    the eval rule (resize the short side to ``resize``, centre crop).
    flip: mirror horizontally.  exif: apply the file's EXIF orientation first.
    orientation: an EXIF-style value 1..8 applied to the output after the flip
    (1 = none, the default; 6 = a quarter turn clockwise, 3 = a half turn, 8 = a
    quarter turn anticlockwise, 5 = transpose, 7 = transverse, 2 / 4 = mirror
    horizontally / vertically): the output is orientation(flip(resized crop)), in that
    order after the file's own EXIF orientation.  out_h x out_w is the size of the
    result; with a transposing value (5..8) the resized crop is out_w high and out_h
    wide (``crop_size``).
    """

    out_h: int = 448
    out_w: int = 448
    box: Optional[Box] = None
    resize: int = 512
    flip: bool = False
    exif: bool = False
    orientation: int = 1

    def __post_init__(self):
        o = self.orientation
        if isinstance(o, (bool, np.bool_)) or not isinstance(o, (int, np.integer)):
            raise TypeError(f"Geometry orientation must be an int 1..8, not {type(o).__name__}")
        if not 1 <= o <= 8:
            raise ValueError(f"Geometry orientation must be 1..8 (EXIF's values), got {o}")
        object.__setattr__(self, "orientation", int(o))
        if self.out_h <= 0 or self.out_w <= 0 or self.out_h % 8 or self.out_w % 8:
            raise ValueError(f"output size {self.out_h}x{self.out_w} must be positive multiples of 8")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (x1 > x0 and y1 > y0):
                raise ValueError(f"box {self.box} is empty")
        elif self.resize <= 0:
            raise ValueError("eval geometry needs a positive resize")

    @property
    def size(self) -> Tuple[int, int]:
        return self.out_h, self.out_w

    @property
    def crop_size(self) -> Tuple[int, int]:
        """(height, width) in pixels of the resized crop before ``orientation``: out_w x out_h
        (swapped) when it transposes, else (out_h, out_w)."""
        if self.orientation >= 5:
            return self.out_w, self.out_h
        return self.out_h, self.out_w

    def box_for(self, width: int, height: int) -> Box:
        """The crop box in displayed source pixels for an image of width x height."""
        if self.box is not None:
            return tuple(float(v) for v in self.box)
        ch, cw = self.crop_size
        return _jpegfreq.eval_box(int(width), int(height), self.resize, ch, cw)

    def scaled(self, factor: int) -> "Geometry":
        """The same source box at factor x the output pixels (used for H/4 detection cubes)."""
        return replace(self, out_h=self.out_h * factor, out_w=self.out_w * factor,
                       resize=self.resize * factor)

    def to_dict(self):
        return {"out_h": self.out_h, "out_w": self.out_w,
                "box": None if self.box is None else list(self.box),
                "resize": self.resize, "flip": self.flip, "exif": self.exif,
                "orientation": self.orientation}

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        if d.get("box") is not None:
            d["box"] = tuple(d["box"])
        return cls(**d)


def default_resize(size: int) -> int:
    """Short side before the centre crop: 512 for 448, 1024 for 896, 256 for 224."""
    return int(round(size * 8 / 7))


def eval_geometry(size: int = 448, resize: Optional[int] = None, exif: bool = False) -> Geometry:
    """Eval geometry: resize the short side to ``resize`` (default size*8/7), centre crop size."""
    return Geometry(size, size, None, resize or default_resize(size), False, exif)


def sample_train(width: int, height: int, size: int = 448, rng=None,
                 scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip_p: float = 0.5,
                 exif: bool = False) -> Geometry:
    """RandomResizedCrop(size, scale, ratio) + horizontal flip with probability flip_p.

    width, height: displayed image size (after EXIF orientation when exif=True).
    rng: numpy Generator (or a seed).  Ten attempts at an area/aspect sample, then
    the central crop with the aspect clamped to ``ratio`` (torchvision's rule).
    """
    rng = np.random.default_rng(rng)
    area = width * height
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            box = (x0, y0, x0 + w, y0 + h)
            break
    if box is None:
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, int(round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            h, w = height, int(round(height * ratio[1]))
        else:
            w, h = width, height
        x0, y0 = (width - w) // 2, (height - h) // 2
        box = (x0, y0, x0 + w, y0 + h)
    flip = bool(rng.random() < flip_p)
    return Geometry(size, size, tuple(float(v) for v in box), default_resize(size), flip, exif)


# ---------------------------------------------------------------------------
# Orientation: displayed = flips(transpose?(stored))
# ---------------------------------------------------------------------------

def orientation_ops(orientation: int) -> Tuple[bool, bool, bool]:
    """(transpose, flip_h, flip_v) taking the stored image to the displayed one."""
    o = int(orientation)
    return (5 <= o <= 8, o in (2, 3, 6, 7), o in (3, 4, 7, 8))


def displayed_size(width: int, height: int, orientation: int) -> Tuple[int, int]:
    return (height, width) if orientation_ops(orientation)[0] else (width, height)


def _composition_table():
    """table[a][b]: the orientation equal to applying a, then b (found on a 2x3 plane whose
    eight orientations all differ)."""
    plane = np.arange(6).reshape(2, 3)
    images = {o: orient_plane(plane, o) for o in range(1, 9)}
    table = [[0] * 9 for _ in range(9)]
    for a in range(1, 9):
        for b in range(1, 9):
            both = orient_plane(images[a], b)
            table[a][b] = next(o for o, im in images.items()
                               if im.shape == both.shape and np.array_equal(im, both))
    return table


def compose_orientations(first: int, then: int) -> int:
    """The EXIF orientation value equal to orientation ``first`` followed by ``then``."""
    return _COMPOSE[int(first)][int(then)]


def orient_box(box: Box, orientation: int, width: int, height: int) -> Box:
    """Where box (x0, y0, x1, y1) of a width x height image lies once the image has the
    orientation applied (the same transpose and flips as :func:`orient_plane`)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    t, fh, fv = orientation_ops(orientation)
    if t:
        x0, y0, x1, y1, width, height = y0, x0, y1, x1, height, width
    if fh:
        x0, x1 = width - x1, width - x0
    if fv:
        y0, y1 = height - y1, height - y0
    return x0, y0, x1, y1


def orient_plane(plane: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to a 2-D plane (pixel domain; the spatial reference)."""
    t, fh, fv = orientation_ops(orientation)
    if t:
        plane = plane.T
    if fh:
        plane = plane[:, ::-1]
    if fv:
        plane = plane[::-1, :]
    return np.ascontiguousarray(plane)


_COMPOSE = _composition_table()


# ---------------------------------------------------------------------------
# The operators, from the one C implementation
# ---------------------------------------------------------------------------

def axis_matrix(image_size: int, comp_size: int, factor: int, box0: float, box1: float,
                out_size: int, flip: bool = False) -> np.ndarray:
    """Dense pixel-domain operator M = F R U (out_size x comp_size), float64.

    Row y holds the weights of output pixel y on the component's samples: chroma
    upsampling by ``factor`` (fancy triangle), then the resize of the box
    [box0, box1) to out_size pixels, then the flip.  For tests and references.
    """
    return _jpegfreq.axis_matrix(image_size, comp_size, factor, box0, box1, out_size, flip)


def resample_plane(plane: np.ndarray, image_h: int, image_w: int, factor_v: int, factor_h: int,
                   box: Box, out_h: int, out_w: int, flip: bool = False) -> np.ndarray:
    """M_h X M_w^T for one component plane X (float32), in C with the GIL released."""
    return _jpegfreq.resample_plane(plane, image_h, image_w, factor_v, factor_h, tuple(box),
                                    out_h, out_w, flip)


def dct_matrix(n: int = 8) -> np.ndarray:
    """Orthonormal DCT-II basis C[u, x] (JPEG's), float64."""
    x = np.arange(n)
    c = np.cos((2 * x[None, :] + 1) * np.arange(n)[:, None] * np.pi / (2 * n))
    c *= np.sqrt(2.0 / n)
    c[0] /= np.sqrt(2.0)
    return c




def block_dct(plane: np.ndarray, us, vs) -> np.ndarray:
    """8x8 block DCT of a (H, W) plane for the u rows ``us`` and v columns ``vs`` only.

    Returns float32 (len(us), len(vs), H/8, W/8).  In C, GIL released (no BLAS threads,
    so concurrent callers scale).
    """
    return _jpegfreq.block_dct(plane, [int(u) for u in us], [int(v) for v in vs])


def block_idct(coefs: np.ndarray) -> np.ndarray:
    """Inverse of the full 8x8 block DCT: (bh, bw, 64) natural order -> (8bh, 8bw) float64."""
    bh, bw, _ = coefs.shape
    c = dct_matrix(8)
    q = coefs.reshape(bh, bw, 8, 8).astype(np.float64)
    x = np.einsum("ux,ijuv,vy->ixjy", c, q, c, optimize=True)
    return x.reshape(bh * 8, bw * 8)


# ---------------------------------------------------------------------------
# Detection resize rule (aspect-preserving; the cube is taken at a 2x output grid)
# ---------------------------------------------------------------------------

#: Resized-image pixels per cube cell of a detection cube (2x output grid / 8 samples per block).
PIXELS_PER_CELL = 4


def resized_size(width: int, height: int, min_size: int = 800, max_size: int = 1333,
                 multiple: int = PIXELS_PER_CELL):
    """(W', H'): short side min_size unless the long side would pass max_size; multiples of 4.

    The scale is min(min_size / short, max_size / long) (torchvision's rule); each side is
    then rounded to the nearest multiple and kept within [multiple, max_size].
    """
    if min_size <= 0 or max_size < min_size:
        raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
    if width <= 0 or height <= 0:
        raise ValueError(f"empty image {width}x{height}")
    s = min(min_size / min(width, height), max_size / max(width, height))
    top = max(multiple, max_size // multiple * multiple)

    def side(n):
        return int(min(top, max(multiple, round(n * s / multiple) * multiple)))

    return side(width), side(height)
