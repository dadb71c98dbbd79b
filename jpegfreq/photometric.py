"""Photometric augmentation that is exact in the coefficient domain.

    p = Photometric(brightness=1.2, contrast=0.8, saturation=1.3, hue=0.05)
    x = jpegfreq.cube(data, "24S", geometry=g, photometric=p)
    p = Photometric.sample(rng, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)

The ops, in this fixed order, on the output image (after the geometry), with no clamping
(a coefficient cube has no pixels to clamp):

- brightness b: every pixel times b.  In YCbCr: Y times b, chroma (Cb - 128, Cr - 128) times b.
  A coefficient is the orthonormal 8x8 DCT of level-shifted samples (docs/design.md,
  "Coefficient definition"), whose DC of a constant block c is 8c, so every Y coefficient is
  multiplied by b and the Y DC gains 8 * 128 * (b - 1); chroma coefficients are multiplied by b
  (chroma is centred at 128 already: no offset).
- contrast f: a blend with the mean grey m of the image: pixel -> f * pixel + (1 - f) * m.  In
  YCbCr: Y AC times f, Y DC blended with its own mean over the output (the mean of the
  output's Y DC channel *is* 8 * (m - 128)), chroma times f.  The mean only enters the Y DC
  channel, so a channel set without Y0 needs nothing more.
- saturation s: a blend with the pixel's own grey (Y): chroma times s, Y unchanged.
- hue h (a fraction of a turn, -0.5..0.5): each frequency's (Cb, Cr) pair rotated by 2 pi h
  (Cb' = cos Cb - sin Cr, Cr' = sin Cb + cos Cr).  This is a hue rotation in YCbCr, not
  torchvision's HSV hue shift (see docs/augment.md): it keeps Y and the chroma magnitude of
  every pixel; HSV keeps each pixel's largest and smallest RGB value.  A rotation needs both
  Cb_k and Cr_k: when the channel set holds only one of them the operator computes the
  partner too and drops it afterwards.
- grayscale: chroma 0 (neutral grey), Y unchanged.

Cost: the C operator does it all while it writes the cube (csrc/jf_photo.c, with the
GIL released).  Brightness, saturation and grayscale (and contrast when the set has no Y0)
are per-channel scales and an offset on Y0, folded into the scale/offset it already
applies: no extra pass.  Contrast with Y0 reads the raw Y0 channel once (its mean) and
rescales it; hue is one pass over the chroma channels.

The same ops run in pixel space on the spatial path (``adjust_planes``, the reference) and on
RGB inputs (``adjust_rgb``).  This module does not import the pipeline; the pipeline calls
``coefficient_request`` (the channels to compute), ``adjust_planes`` and ``adjust_rgb``,
and hands ``Photometric.values`` to the operator.
"""
import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import _jpegfreq
from .channels import ChannelSet

__all__ = ["Photometric", "coefficient_request", "apply_to_cube", "adjust_planes",
           "adjust_rgb", "DC_GAIN", "LEVEL"]

#: DC of an 8x8 block of constant level-shifted value c under the orthonormal DCT: 8 c.
DC_GAIN = 8.0
#: JPEG's level shift (and the centre of full-range chroma).
LEVEL = 128.0

# JFIF full-range BT.601 luma weights (the Y of jpegfreq's YCbCr).
_LUMA = (0.299, 0.587, 0.114)

_FACTORS = ("brightness", "contrast", "saturation")

#: JFIF's full-range RGB -> YCbCr matrix (libjpeg's, without the +128 on chroma)
RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114],
                     [-0.168735892, -0.331264108, 0.5],
                     [0.5, -0.418687589, -0.081312411]], np.float32)


def _number(name, v) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"Photometric {name} must be a number, not {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"Photometric {name} must be finite, got {v}")
    return v


@dataclass(frozen=True)
class Photometric:
    """Brightness, contrast, saturation, hue and grayscale as plain numbers.

    brightness, contrast, saturation: factors >= 0 (1 = unchanged), meaning what
    torchvision.transforms.v2.functional.adjust_brightness / adjust_contrast /
    adjust_saturation mean, without their clamp to [0, 1]; contrast blends with the mean
    grey of the output image.  hue: a rotation of the chroma plane by ``hue`` turns
    (-0.5..0.5; 0 = unchanged): a YCbCr hue rotation, not torchvision's HSV adjust_hue.
    grayscale: drop the chroma.  Applied in that fixed order.
    """

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    grayscale: bool = False

    def __post_init__(self):
        for name in _FACTORS + ("hue",):
            object.__setattr__(self, name, _number(name, getattr(self, name)))
        for name in _FACTORS:
            if getattr(self, name) < 0:
                raise ValueError(f"Photometric {name} must be >= 0, got {getattr(self, name)}")
        if not -0.5 <= self.hue <= 0.5:
            raise ValueError(f"Photometric hue must be within [-0.5, 0.5] turns, got {self.hue}")
        if not isinstance(self.grayscale, (bool, np.bool_)):
            raise TypeError(f"Photometric grayscale must be a bool, not "
                            f"{type(self.grayscale).__name__}")
        object.__setattr__(self, "grayscale", bool(self.grayscale))

    @property
    def identity(self) -> bool:
        """True when the ops change nothing."""
        return (self.brightness == 1.0 and self.contrast == 1.0 and self.saturation == 1.0
                and self.hue == 0.0 and not self.grayscale)

    @property
    def rotates(self) -> bool:
        """True when the chroma pairs are rotated (hue != 0 and colour kept)."""
        return self.hue != 0.0 and not self.grayscale and self.chroma_gain != 0.0

    @property
    def luma_gain(self) -> float:
        """What every Y coefficient (AC, and DC before its offset) is multiplied by."""
        return self.brightness * self.contrast

    @property
    def chroma_gain(self) -> float:
        """What every chroma coefficient is multiplied by (before the hue rotation)."""
        return 0.0 if self.grayscale else self.brightness * self.contrast * self.saturation

    @property
    def values(self) -> tuple:
        """(brightness, contrast, saturation, hue, grayscale as 0.0 / 1.0): the C operator's
        form."""
        return (self.brightness, self.contrast, self.saturation, self.hue,
                1.0 if self.grayscale else 0.0)

    def to_dict(self) -> dict:
        return {"brightness": self.brightness, "contrast": self.contrast,
                "saturation": self.saturation, "hue": self.hue, "grayscale": self.grayscale}

    @classmethod
    def from_dict(cls, d) -> "Photometric":
        if not isinstance(d, dict):
            raise ValueError(f"a Photometric record must be a dict, not {type(d).__name__}")
        unknown = set(d) - set(cls().to_dict())
        if unknown:
            raise ValueError(f"unknown Photometric fields: {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def sample(cls, rng, brightness=None, contrast=None, saturation=None, hue=None,
               grayscale_p: float = 0.0) -> "Photometric":
        """Draw one Photometric from ``rng`` (a numpy Generator, e.g. the per-sample one).

        brightness, contrast, saturation: torchvision ColorJitter's meaning: a number v >= 0
        draws the factor uniformly from [max(0, 1 - v), 1 + v]; a pair (lo, hi) with
        0 <= lo <= hi from [lo, hi]; None or 0 leaves the factor at 1 and draws nothing.
        hue: a number 0 <= h <= 0.5 draws from [-h, h], a pair from [lo, hi] within
        [-0.5, 0.5].  grayscale_p: probability of grayscale (RandomGrayscale's p).
        Draws happen in the fixed order brightness, contrast, saturation, hue, grayscale
        (ColorJitter also shuffles the order of the ops; here the order is always that one).
        """
        spec = (brightness, contrast, saturation, hue, grayscale_p)
        try:
            hash(spec)
        except TypeError:                   # lists: checked on every call
            ranges, p = _ranges.__wrapped__(*spec)
        else:                               # checked once per spec (a per-sample cost)
            ranges, p = _ranges(*spec)
        vals = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
        if ranges:  # rng.uniform(lo, hi) is lo + (hi - lo) * rng.random(): one call for all
            for (name, lo, hi), u in zip(ranges, rng.random(len(ranges)).tolist()):
                vals[name] = lo + (hi - lo) * u
        vals["grayscale"] = bool(p > 0.0 and rng.random() < p)
        # the values lie in checked ranges: skip __post_init__'s checks (a per-sample cost)
        out = object.__new__(cls)
        out.__dict__.update(vals)
        return out


@functools.lru_cache(maxsize=64, typed=True)
def _ranges(brightness, contrast, saturation, hue, grayscale_p):
    """((name, lo, hi) of each drawn factor, grayscale probability) of a sample() spec."""
    ranges = []
    for name, spec in (("brightness", brightness), ("contrast", contrast),
                       ("saturation", saturation), ("hue", hue)):
        r = _hue_range(spec) if name == "hue" else _factor_range(name, spec)
        if r is not None:
            ranges.append((name, r[0], r[1]))
    p = _number("grayscale_p", grayscale_p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"grayscale_p must be within [0, 1], got {p}")
    return tuple(ranges), p


def _pair(name, spec):
    if not isinstance(spec, (tuple, list)) or len(spec) != 2:
        raise TypeError(f"{name} range must be a number or a (lo, hi) pair, not {spec!r}")
    lo, hi = _number(name, spec[0]), _number(name, spec[1])
    if lo > hi:
        raise ValueError(f"{name} range ({lo}, {hi}): lo must not exceed hi")
    return lo, hi


def _factor_range(name, spec):
    if spec is None:
        return None
    if isinstance(spec, (tuple, list)):
        lo, hi = _pair(name, spec)
        if lo < 0:
            raise ValueError(f"{name} range ({lo}, {hi}) must not go below 0")
    else:
        v = _number(name, spec)
        if v < 0:
            raise ValueError(f"{name} jitter must be >= 0, got {v}")
        lo, hi = max(0.0, 1.0 - v), 1.0 + v
    return None if (lo, hi) == (1.0, 1.0) else (lo, hi)


def _hue_range(spec):
    if spec is None:
        return None
    if isinstance(spec, (tuple, list)):
        lo, hi = _pair("hue", spec)
    else:
        h = _number("hue", spec)
        if h < 0:
            raise ValueError(f"hue jitter must be >= 0, got {h}")
        lo, hi = -h, h
    if lo < -0.5 or hi > 0.5:
        raise ValueError(f"hue range ({lo}, {hi}) must lie within [-0.5, 0.5]")
    return None if (lo, hi) == (0.0, 0.0) else (lo, hi)


# ---------------------------------------------------------------------------
# Coefficient domain: the C operator folds the ops (csrc/jf_photo.c)
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=128)
def _request(cs: ChannelSet, pairs: bool):
    if pairs:
        ycb, ycr = set(cs.per_component[1]), set(cs.per_component[2])
        both = ycb | ycr
        if both and ycb != ycr:
            request = ChannelSet(set(cs.indices) | {64 + k for k in both} | {128 + k for k in both})
            idx = {g: i for i, g in enumerate(request.indices)}
            keep = np.array([idx[g] for g in cs.indices], np.intp)
            keep.flags.writeable = False
            return request, keep
    return cs, None


def coefficient_request(p: Optional[Photometric], cs: ChannelSet):
    """(request, keep): the channels the operator computes for Photometric ``p`` on channel
    set ``cs``, and the positions of cs's channels in it (None when request is cs).  A hue
    rotation needs each frequency's Cb and Cr: a set holding only one of them is widened by
    the partners, which are dropped afterwards (``result[keep]``)."""
    return _request(cs, p is not None and p.rotates)


def widen(values, keep, n: int, fill: float):
    """Per-channel ``values`` of cs (or None) placed at ``keep`` in a float32 array of the
    request's n channels, ``fill`` elsewhere (``keep`` None: values unchanged)."""
    if keep is None or values is None:
        return values
    out = np.full(n, fill, np.float32)
    out[keep] = values
    return out


def apply_to_cube(p: Optional[Photometric], cube: np.ndarray, cs: ChannelSet,
                  scale=None, offset=None) -> np.ndarray:
    """Photometric ``p`` (then the normalisation ``x * scale + offset``) applied to an
    unnormalised cube of ``coefficient_request(p, cs)[0]``'s channels: what the operator
    does while it writes the cube, as a separate step (float32 result for cs)."""
    request, keep = coefficient_request(p, cs)
    x = np.array(cube, np.float32)
    if x.ndim != 3 or x.shape[0] != request.count:
        raise ValueError(f"cube must be ({request.count}, H, W) for channels "
                         f"{request.name}, got shape {x.shape}")
    n = request.count
    scale = widen(None if scale is None else np.asarray(scale, np.float32), keep, n, 1.0)
    offset = widen(None if offset is None else np.asarray(offset, np.float32), keep, n, 0.0)
    if p is None or p.identity:
        if scale is not None:
            x *= scale[:, None, None]
        if offset is not None:
            x += offset[:, None, None]
    else:
        _jpegfreq.photometric(x, request.component_of, request.k, p.values, scale, offset)
    return x if keep is None else x[keep]


# ---------------------------------------------------------------------------
# Pixel space: the reference (spatial path) and RGB inputs
# ---------------------------------------------------------------------------

def adjust_planes(p: Optional[Photometric], planes):
    """The ops on level-shifted YCbCr pixel planes of the output image (sample - 128), one
    after the other as written: ``planes`` is [Y] (grayscale: chroma is neutral and stays so)
    or [Y, Cb, Cr], float (H, W) arrays.  Returns new float32 planes."""
    planes = [np.asarray(q, np.float32) for q in planes]
    if p is None or p.identity:
        return planes
    y = planes[0].astype(np.float64)
    ch = [q.astype(np.float64) for q in planes[1:3]]
    # brightness: pixels times b (level-shifted: y + 128 -> b * (y + 128))
    y = p.brightness * (y + LEVEL) - LEVEL
    ch = [p.brightness * c for c in ch]
    # contrast: blend with the image's mean grey
    if p.contrast != 1.0:
        m = y.mean()
        y = p.contrast * y + (1.0 - p.contrast) * m
        ch = [p.contrast * c for c in ch]
    # saturation: blend with the pixel's grey (same Y, neutral chroma)
    ch = [p.saturation * c for c in ch]
    if len(ch) == 2 and p.hue != 0.0:
        th = 2.0 * math.pi * p.hue
        cb, cr = ch
        ch = [math.cos(th) * cb - math.sin(th) * cr, math.sin(th) * cb + math.cos(th) * cr]
    if p.grayscale:
        ch = [np.zeros_like(c) for c in ch]
    return [q.astype(np.float32) for q in [y] + ch]


def adjust_rgb(p: Optional[Photometric], rgb: np.ndarray) -> np.ndarray:
    """The ops on an RGB image (3, H, W) in [0, 1], without clamping (the caller clamps
    once at the end): brightness scales, contrast blends with the mean of Y, saturation with
    each pixel's Y, hue rotates the chroma plane (the YCbCr rotation of the cube paths, done
    as a 3x3 matrix on RGB), grayscale sets R = G = B = Y.  Returns float32 (3, H, W)."""
    x = np.asarray(rgb, np.float32)
    if p is None or p.identity:
        return x
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"rgb must be (3, H, W), got shape {x.shape}")
    fwd = RGB_TO_YCBCR.astype(np.float64)
    inv = np.linalg.inv(fwd)
    luma = np.asarray(_LUMA, np.float64)
    # Each op is affine on RGB: compose them into one 3x3 matrix and an offset.
    mat, off = np.eye(3) * p.brightness, np.zeros(3)
    if p.contrast != 1.0:
        m = float(np.tensordot(luma, x.reshape(3, -1).mean(1, dtype=np.float64), 1))
        m = p.brightness * m                       # mean grey after brightness
        mat = p.contrast * mat
        off = p.contrast * off + (1.0 - p.contrast) * m
    gray = np.outer(np.ones(3), luma)              # rgb -> (Y, Y, Y)
    sat = p.saturation * np.eye(3) + (1.0 - p.saturation) * gray
    mat, off = sat @ mat, sat @ off
    if p.hue != 0.0:
        th = 2.0 * math.pi * p.hue
        rot = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(th), -math.sin(th)],
                        [0.0, math.sin(th), math.cos(th)]])
        hue = inv @ rot @ fwd                      # chroma rotation, Y kept
        mat, off = hue @ mat, hue @ off
    if p.grayscale:
        mat, off = gray @ mat, gray @ off
    out = np.tensordot(mat.astype(np.float32), x, 1)
    out += off.astype(np.float32)[:, None, None]
    return out
