"""Per-sample augmentations that stay exact on the cube: a TrivialAugment-style policy and
random erasing of whole cells.

    rng = jpegfreq.datasets.sample_rng(seed, epoch, index)     # the sample's generator
    g = jpegfreq.sample_train(w, h, 448, rng)                   # crop and flip first
    g, p = sample_policy(rng, "ta_exact").apply(g, w, h)        # one op: Geometry, Photometric
    e = sample_erase(rng, 56, 56, p=0.25)                       # an Erase or None
    x = jpegfreq.cube(data, "24S", geometry=g, photometric=p)
    if e is not None:
        e.apply(x)                                              # zeroes e's cells, in place

Everything here is plain numbers: a per-sample numpy Generator goes in, a small frozen
dataclass comes out, and the pipeline does the work (jpegfreq.JpegLoader calls these with
``auto_augment=`` and ``random_erase=``).  See docs/augment.md.

The policy "ta_exact" follows torchvision's TrivialAugmentWide scheme: per image one op drawn
uniformly from the set, one magnitude bin uniformly from 31 (magnitude = max * bin / 30), and
for a signed op a sign drawn with probability 1/2.  Its ops are those with an exact
coefficient-domain form:

- identity;
- brightness, color (saturation), contrast: factor 1 + m, m in [-0.99, 0.99] (as
  TrivialAugmentWide's), done by jpegfreq.Photometric;
- hue: a rotation of the (Cb, Cr) plane by m turns, m in [-0.5, 0.5] (TrivialAugmentWide has
  no hue op; this is Photometric's YCbCr rotation, not an HSV hue shift);
- translate_x, translate_y: the content moves by m of the output side, m in [-1/7, 1/7]
  (TrivialAugmentWide's 32 pixels at 224), done by moving the crop box, which stays within
  the image (a move past the edge stops at it) instead of exposing a filled border;
- rotate90, rotate180, rotate270 (anticlockwise, as torchvision's positive angles), transpose,
  transverse: whole quarter turns and diagonal mirrors of the output
  (Geometry.orientation), no magnitude.

Left out, because they have no exact form on 8x8 DCT coefficients: posterize, solarize and
equalize (non-linear in pixel values), autocontrast (needs the pixel minimum and maximum),
sharpness (a 3x3 blur that crosses block edges, with a clamp), shear and arbitrary rotation
(resampling along tilted axes: the operator is separable in rows and columns only).

Random erasing follows torchvision's RandomErasing sampling rule on the output grid (cube
cells for the coefficient sources, pixels for rgb): with probability p, up to 10 attempts at an
area uniform in ``scale`` of the grid and an aspect (height / width) log-uniform in ``ratio``;
the first whose rounded height and width fit strictly inside the grid is placed uniformly; if
none fits nothing is erased.  Erased cells are set to 0: the channel mean when the cube is
normalised (torchvision erases after Normalize), a flat mid-grey block when it is not.
"""
import math
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np

from .geometry import Geometry, compose_orientations
from .photometric import Photometric

__all__ = ["POLICIES", "TA_EXACT", "NUM_BINS", "Augment", "Erase", "sample_policy",
           "sample_erase", "check_policy", "check_erase_p", "combine"]

#: the policies sample_policy knows
POLICIES = ("ta_exact",)
#: magnitude bins of a signed or scaled op (TrivialAugmentWide's 31)
NUM_BINS = 31

#: op -> (largest magnitude, signed); magnitudes are max * bin / (NUM_BINS - 1).  Ops with
#: max None take no magnitude.  Dict order is the draw order of the op index.
TA_EXACT = {
    "identity": (None, False),
    "brightness": (0.99, True),
    "color": (0.99, True),
    "contrast": (0.99, True),
    "hue": (0.5, True),
    "translate_x": (32.0 / 224.0, True),
    "translate_y": (32.0 / 224.0, True),
    "rotate90": (None, False),
    "rotate180": (None, False),
    "rotate270": (None, False),
    "transpose": (None, False),
    "transverse": (None, False),
}

#: the output orientation (an EXIF value, jpegfreq.geometry.orient_plane's meaning) of each
#: orienting op: 8 turns a quarter anticlockwise (np.rot90), 6 clockwise
_ORIENT = {"rotate90": 8, "rotate180": 3, "rotate270": 6, "transpose": 5, "transverse": 7}
_POLICY_OPS = {"ta_exact": tuple(TA_EXACT)}


def check_policy(policy) -> Optional[str]:
    """``policy`` (None or a name in POLICIES) or ValueError naming ``auto_augment``."""
    if policy is None:
        return None
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ValueError(f"auto_augment must be None or one of {POLICIES}, not {policy!r}")
    return policy


def check_erase_p(p) -> float:
    """``p`` as a float probability, or an error naming ``random_erase``."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer,
                                                             np.floating)):
        raise TypeError(f"random_erase must be a probability (a number), not {type(p).__name__}")
    p = float(p)
    if not 0.0 <= p <= 1.0:          # also refuses nan
        raise ValueError(f"random_erase is a probability, 0..1, not {p}")
    return p


@dataclass(frozen=True)
class Augment:
    """One op of the policy with its signed magnitude (0 for ops without one)."""

    op: str
    magnitude: float = 0.0

    def __post_init__(self):
        if self.op not in TA_EXACT:
            raise ValueError(f"Augment op must be one of {tuple(TA_EXACT)}, not {self.op!r}")
        m = float(self.magnitude)
        top = TA_EXACT[self.op][0] or 0.0
        if not abs(m) <= top:         # also refuses nan
            raise ValueError(f"Augment {self.op} magnitude must lie within [-{top}, {top}], "
                             f"got {m}")
        object.__setattr__(self, "magnitude", m)

    @property
    def orientation(self) -> int:
        """The output orientation this op adds (1: none)."""
        return _ORIENT.get(self.op, 1)

    @property
    def photometric(self) -> Optional[Photometric]:
        """The colour op as a Photometric, or None for the other ops."""
        m = self.magnitude
        if self.op == "brightness":
            return Photometric(brightness=1.0 + m)
        if self.op == "color":
            return Photometric(saturation=1.0 + m)
        if self.op == "contrast":
            return Photometric(contrast=1.0 + m)
        if self.op == "hue":
            return Photometric(hue=m)
        return None

    def apply(self, geometry: Geometry, width: int, height: int,
              photometric: Optional[Photometric] = None
              ) -> Tuple[Geometry, Optional[Photometric]]:
        """(Geometry, Photometric or None) with this op added to a sample's own.

        geometry: the sample's crop and flip (e.g. sample_train's) for a displayed image of
        width x height.  photometric: the sample's colour ops drawn before (ColorJitter's),
        combined with this op's by :func:`combine`.
        """
        p = self.photometric
        if p is not None:
            return geometry, combine(photometric, p)
        if self.orientation != 1:
            o = compose_orientations(geometry.orientation, self.orientation)
            return replace(geometry, orientation=o), photometric
        if self.op in ("translate_x", "translate_y"):
            return _translate(geometry, width, height, self.op == "translate_x",
                              self.magnitude), photometric
        return geometry, photometric


def _translate(geometry: Geometry, width: int, height: int, horizontal: bool,
               m: float) -> Geometry:
    """The crop box moved so that the content moves by m of the output side (positive: right
    or down, as torchvision's translate), stopping at the image's edge."""
    x0, y0, x1, y1 = geometry.box_for(width, height)
    if horizontal:
        d = m * (x1 - x0) * (1.0 if geometry.flip else -1.0)   # flipped: the source moves back
        d = min(max(d, min(0.0, -x0)), max(0.0, width - x1))
        box = (x0 + d, y0, x1 + d, y1)
    else:
        d = -m * (y1 - y0)
        d = min(max(d, min(0.0, -y0)), max(0.0, height - y1))
        box = (x0, y0 + d, x1, y1 + d)
    return replace(geometry, box=box)


def combine(first: Optional[Photometric], then: Optional[Photometric]) -> Optional[Photometric]:
    """One Photometric doing ``first`` then ``then``: brightness, contrast and saturation
    factors multiply, hue turns add (wrapped to [-0.5, 0.5)), grayscale if either.  Without
    clamping these ops commute (contrast keeps the mean grey; brightness scales it and
    every pixel alike), so the product is exactly the two applied one after the other."""
    if first is None or then is None:
        return then if first is None else first
    hue = first.hue + then.hue
    if not -0.5 <= hue <= 0.5:
        hue = (hue + 0.5) % 1.0 - 0.5
    return Photometric(first.brightness * then.brightness, first.contrast * then.contrast,
                       first.saturation * then.saturation, hue,
                       first.grayscale or then.grayscale)


def sample_policy(rng: np.random.Generator, policy: str = "ta_exact") -> Augment:
    """Draw one Augment: the op uniformly, then (if it has magnitudes) a bin uniformly from
    NUM_BINS, then (if signed) the sign with probability 1/2 (TrivialAugmentWide's order)."""
    ops = _POLICY_OPS[check_policy(policy)]
    op = ops[int(rng.integers(len(ops)))]
    top, signed = TA_EXACT[op]
    if top is None:
        return Augment(op)
    m = top * int(rng.integers(NUM_BINS)) / (NUM_BINS - 1)
    if signed and rng.integers(2):
        m = -m
    return Augment(op, m)


@dataclass(frozen=True)
class Erase:
    """A rectangle of the output grid to set to 0: rows [top, top + height), columns
    [left, left + width) of every channel (cube cells, or pixels for rgb)."""

    top: int
    left: int
    height: int
    width: int

    @property
    def area(self) -> int:
        return self.height * self.width

    def apply(self, row):
        """Zero the rectangle of ``row`` (C, H, W), a numpy array or torch tensor, in place;
        returns row."""
        row[..., self.top:self.top + self.height, self.left:self.left + self.width] = 0
        return row


def _range(name, spec, low_ok):
    if not isinstance(spec, (tuple, list)) or len(spec) != 2:
        raise TypeError(f"random erasing {name} must be a (lo, hi) pair, not {spec!r}")
    lo, hi = float(spec[0]), float(spec[1])
    if not (low_ok(lo) and lo <= hi and math.isfinite(hi)):
        raise ValueError(f"random erasing {name} ({lo}, {hi}) is not a valid range")
    return lo, hi


def sample_erase(rng: np.random.Generator, grid_h: int, grid_w: int, p: float,
                 scale=(0.02, 0.33), ratio=(0.3, 3.3)) -> Optional[Erase]:
    """Draw RandomErasing's rectangle on a grid_h x grid_w grid, or None (not erased).

    p: the probability of erasing (p = 0 draws nothing from rng).  scale: the erased share
    of the grid's area, uniform; ratio: its height / width, log-uniform.  Ten attempts, as
    torchvision's; an attempt is kept when its rounded height and width are at least 1 and
    below the grid's (torchvision accepts a rounded 0, an empty erase, which only grids of
    under about 40 cells can draw)."""
    p = check_erase_p(p)
    lo_s, hi_s = _range("scale", scale, lambda v: 0.0 <= v <= 1.0)
    lo_r, hi_r = _range("ratio", ratio, lambda v: v > 0.0)
    if p == 0.0 or rng.random() >= p:
        return None
    area = grid_h * grid_w
    log_lo, log_hi = math.log(lo_r), math.log(hi_r)
    for _ in range(10):
        target = area * rng.uniform(lo_s, hi_s)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if 0 < h < grid_h and 0 < w < grid_w:
            top = int(rng.integers(0, grid_h - h + 1))
            left = int(rng.integers(0, grid_w - w + 1))
            return Erase(top, left, h, w)
    return None
