"""Channel sets: which of the 192 DCT frequency channels a cube keeps.

One vocabulary for every part of jpegfreq (readers, both cube paths, stats,
models, the gate heat map):

- Within a component the frequency index is ``k = 8*u + v``: ``u`` the vertical
  and ``v`` the horizontal frequency, row-major ("natural") order, as DCTNet.
- The full spectrum is 192 channels ``Y0..Y63, Cb0..Cb63, Cr0..Cr63``; the global
  index of ``<comp>k`` is ``64*comp + k`` (Y=0, Cb=1, Cr=2).  A cube holds the
  selected channels in ascending global order: all Y, then Cb, then Cr.
- Zigzag order only serves to define the triangle ("T") presets.

Specs accepted by :meth:`ChannelSet.parse`::

    "24S"                              a preset (see PRESETS; case-insensitive)
    "Y:0-3,8-11; Cb:0,1; Cr:0,1"       custom: inclusive ranges, omitted component = none
    "top 24 of heatmap.json"           the 24 channels most often open overall
    "top 16,4,4 of heatmap.json"       the top 16 Y, 4 Cb and 4 Cr channels

A heat map file is JSON, either ``{"channels": ["Y0", ...], "frequency": [...]}``
or a plain mapping ``{"Y0": 0.93, ...}``; ties go to the lower global index.
"""
import json
import math
import os
import re

import numpy as np

__all__ = [
    "ChannelSet",
    "COMPONENTS",
    "PRESETS",
    "ZIGZAG",
    "channel_name",
    "parse_channel_name",
]

#: Component names in cube order.
COMPONENTS = ("Y", "Cb", "Cr")

#: Number of frequency channels per component and in the full spectrum.
PER_COMPONENT = 64
FULL = 3 * PER_COMPONENT

#: JPEG zigzag scan: ZIGZAG[position] is the natural index k = 8*u + v.
ZIGZAG = (
    0, 1, 8, 16, 9, 2, 3, 10,
    17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34,
    27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36,
    29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46,
    53, 60, 61, 54, 47, 55, 62, 63,
)

# The reference the bandwidth figures compare with: an RGB 224x224x3 uint8 image.
_RGB_ELEMENTS = 224 * 224 * 3

_COMPONENT_BY_LOWER = {name.lower(): i for i, name in enumerate(COMPONENTS)}

# (Y, Cb, Cr) counts of the triangle presets; each takes the first n zigzag
# positions of its component.
_TRIANGLES = {"24T": (16, 4, 4), "48T": (32, 8, 8), "64T": (44, 10, 10)}

# The square presets of the paper and DCTNet (docs/design.md, "Channel sets").
_SQUARES = {
    "6S": "Y:0,1,8,9;Cb:0;Cr:0",
    "24S": "Y:0-3,8-11,16-19,24-27;Cb:0,1,8,9;Cr:0,1,8,9",
    "32S": "Y:0-4,8-12,16-20,24-27,32-34;Cb:0-2,8,9;Cr:0-2,8,9",
    "48S": "Y:0-5,8-13,16-21,24-29,32-35,40-43;Cb:0-2,8-10,16,17;Cr:0-2,8-10,16,17",
    "64S": ("Y:0-6,8-14,16-21,24-29,32-37,40-45,48-53;"
            "Cb:0-2,8-10,16,17,24,25;Cr:0-2,8-10,16,17,24,25"),
    "192": "Y:0-63;Cb:0-63;Cr:0-63",
}


def channel_name(index):
    """Name of global channel ``index`` (0..191): 0 -> "Y0", 73 -> "Cb9"."""
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"channel index must be an int, not {type(index).__name__}")
    if not 0 <= index < FULL:
        raise ValueError(f"channel index {index} is out of range 0..{FULL - 1}")
    comp, k = divmod(int(index), PER_COMPONENT)
    return f"{COMPONENTS[comp]}{k}"


_NAME_RE = re.compile(r"^\s*(y|cb|cr)\s*(\d+)\s*$", re.IGNORECASE)


def parse_channel_name(name):
    """Global index of a channel name: "Y0" -> 0, "Cb9" -> 73, "cr63" -> 191."""
    if not isinstance(name, str):
        raise TypeError(f"channel name must be a str, not {type(name).__name__}")
    m = _NAME_RE.match(name)
    if m is None:
        raise ValueError(f"bad channel name {name!r}: expected Y<k>, Cb<k> or Cr<k> with k in 0..63")
    k = int(m.group(2))
    if k >= PER_COMPONENT:
        raise ValueError(f"bad channel name {name!r}: frequency index {k} is out of range 0..63")
    return _COMPONENT_BY_LOWER[m.group(1).lower()] * PER_COMPONENT + k


def _format_indices(ks):
    """Compact text for sorted natural indices: runs of 3+ become "a-b"."""
    parts = []
    i = 0
    while i < len(ks):
        j = i
        while j + 1 < len(ks) and ks[j + 1] == ks[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{ks[i]}-{ks[j]}")
        else:
            parts.extend(str(k) for k in ks[i:j + 1])
        i = j + 1
    return ",".join(parts)


def _canonical_spec(indices):
    groups = [[] for _ in COMPONENTS]
    for g in indices:
        groups[g // PER_COMPONENT].append(g % PER_COMPONENT)
    return ";".join(f"{COMPONENTS[c]}:{_format_indices(ks)}" for c, ks in enumerate(groups) if ks)


def _parse_custom(spec):
    """Global indices from the custom grammar "Y:0-3,8-11;Cb:0,1;Cr:0,1"."""
    chosen = set()
    seen = set()
    for part in spec.split(";"):
        if not part.strip():
            continue  # tolerate a trailing or doubled ';'
        comp_text, colon, body = part.partition(":")
        comp_name = comp_text.strip()
        if not colon:
            raise ValueError(
                f"bad channel set {spec!r}: {part.strip()!r} lacks 'component:' "
                f"(expected e.g. 'Y:0-3,8-11;Cb:0,1;Cr:0,1' or a preset: {', '.join(PRESETS)})")
        comp = _COMPONENT_BY_LOWER.get(comp_name.lower())
        if comp is None:
            raise ValueError(f"bad channel set {spec!r}: unknown component {comp_name!r} "
                             f"(expected Y, Cb or Cr)")
        if comp in seen:
            raise ValueError(f"bad channel set {spec!r}: component {COMPONENTS[comp]} appears twice")
        seen.add(comp)
        items = [item.strip() for item in body.split(",")]
        if not any(items):
            raise ValueError(f"bad channel set {spec!r}: component {COMPONENTS[comp]} lists no "
                             f"indices (omit a component to select none of it)")
        for item in items:
            if not item:
                raise ValueError(f"bad channel set {spec!r}: empty item in component {COMPONENTS[comp]}")
            lo_text, dash, hi_text = item.partition("-")
            try:
                lo = int(lo_text.strip())
                hi = int(hi_text.strip()) if dash else lo
            except ValueError:
                raise ValueError(f"bad channel set {spec!r}: {item!r} is not an index or a range "
                                 f"'a-b' of indices") from None
            for k in (lo, hi):
                if not 0 <= k < PER_COMPONENT:
                    raise ValueError(f"bad channel set {spec!r}: index {k} in component "
                                     f"{COMPONENTS[comp]} is out of range 0..63")
            if hi < lo:
                raise ValueError(f"bad channel set {spec!r}: bad range {item!r} (end before start)")
            chosen.update(comp * PER_COMPONENT + k for k in range(lo, hi + 1))
    if not chosen:
        raise ValueError(f"bad channel set {spec!r}: the set is empty")
    return chosen


def read_heatmap_json(name):
    """The JSON of a heat-map file; ValueError naming the file when it is not JSON text."""
    with open(name, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{name}: not a heat map: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{name}: not a heat map: malformed JSON ({e.msg} at line {e.lineno} "
                         f"column {e.colno})") from None
    except RecursionError:
        raise ValueError(f"{name}: not a heat map: JSON nested too deeply") from None


def heatmap_frequencies(d) -> np.ndarray:
    """(192,) open frequencies of a heat-map dict ({"channels": [...], "frequency": [...]}
    or the plain {"Y0": 0.9, ...}); NaN for channels it lacks; ValueError saying what is
    wrong.  jpegfreq.heatmap (load_heatmap) and the "top N of FILE" sets both read with it."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, not {type(d).__name__}")
    if "frequency" not in d:
        if not d or "channels" in d or "samples" in d or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in d.values()):
            raise ValueError("'frequency' is missing (and it is not a {\"Y0\": 0.9, ...} "
                             "map of channel names either)")
        d = {"channels": list(d), "frequency": list(d.values())}   # the plain form
    freq = d["frequency"]
    if not isinstance(freq, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in freq):
        raise ValueError("'frequency' must be a list of numbers")
    names = d.get("channels")
    if names is None:
        names = list([channel_name(g) for g in range(FULL)])
    elif not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("'channels' must be a list of channel names")
    if len(names) != len(freq):
        raise ValueError(f"{len(names)} channel names for {len(freq)} values")
    out = np.full(192, np.nan)
    for n, v in zip(names, freq):
        g = parse_channel_name(n)
        if not np.isnan(out[g]):
            raise ValueError(f"channel {n} appears twice")
        v = float(v)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"channel {n}: open frequency {v} is outside 0..1")
        out[g] = v
    return out


def _load_heatmap(path):
    """Heat map file -> {global index: open frequency} (the reader jpegfreq.heatmap uses too)."""
    name = os.fspath(path)
    try:
        raw = read_heatmap_json(name)
    except OSError as e:
        raise ValueError(f"cannot read heat map {name!r}: {e.strerror or e}") from None
    try:
        freq = heatmap_frequencies(raw)
    except ValueError as e:
        raise ValueError(f"{name}: not a heat map: {e}") from None
    scores = {g: float(v) for g, v in enumerate(freq) if not math.isnan(v)}
    if not scores:
        raise ValueError(f"heat map {name!r} holds no channels")
    return scores


def _top(candidates, scores, k, what):
    if k > len(candidates):
        raise ValueError(f"cannot take the top {k} {what}: the heat map has only {len(candidates)}")
    # Highest frequency first; ties go to the lower global index.
    return sorted(candidates, key=lambda g: (-scores[g], g))[:k]


_TOP_RE = re.compile(r"^\s*top\s+(\d+(?:\s*,\s*\d+\s*,\s*\d+)?)\s+of\s+(.+?)\s*$", re.IGNORECASE | re.DOTALL)


def _parse_top(spec, m):
    counts = [int(c) for c in m.group(1).split(",")]
    if sum(counts) == 0:
        raise ValueError(f"bad channel set {spec!r}: the set is empty")
    scores = _load_heatmap(m.group(2))
    if len(counts) == 1:
        return set(_top(list(scores), scores, counts[0], "channels"))
    chosen = set()
    for comp, n in enumerate(counts):
        if n > PER_COMPONENT:
            raise ValueError(f"bad channel set {spec!r}: {n} {COMPONENTS[comp]} channels requested, "
                             f"a component has 64")
        candidates = [g for g in scores if g // PER_COMPONENT == comp]
        chosen.update(_top(candidates, scores, n, f"{COMPONENTS[comp]} channels"))
    return chosen


def _build_presets():
    presets = {name: _canonical_spec(sorted(_parse_custom(spec))) for name, spec in _SQUARES.items()}
    for name, counts in _TRIANGLES.items():
        indices = [c * PER_COMPONENT + ZIGZAG[p] for c, n in enumerate(counts) for p in range(n)]
        presets[name] = _canonical_spec(sorted(indices))
    order = ["6S", "24S", "32S", "48S", "64S", "192", "24T", "48T", "64T"]
    return {name: presets[name] for name in order}


#: Preset name -> its spec in the custom grammar (T sets expanded to natural indices).
PRESETS = _build_presets()
_PRESET_BY_UPPER = {name.upper(): name for name in PRESETS}


class ChannelSet:
    """An immutable, hashable set of the 192 frequency channels, in cube order.

    Build one with :meth:`ChannelSet.parse` (presets, the custom grammar, top-k of a
    heat map) or ``ChannelSet(indices)`` from global indices 0..191.  Two sets are
    equal when they select the same channels, however they were written.
    """

    __slots__ = ("_indices", "_spec", "_name", "_component_of", "_k")

    def __init__(self, indices):
        """``indices``: iterable of global channel indices (0..191), any order; duplicates merge."""
        if isinstance(indices, (str, bytes)):
            raise TypeError("ChannelSet(indices) takes global indices; use ChannelSet.parse(spec) for text")
        chosen = set()
        for g in indices:
            if isinstance(g, (bool, np.bool_)) or not isinstance(g, (int, np.integer)):
                raise TypeError(f"channel indices must be ints, not {type(g).__name__}")
            if not 0 <= g < FULL:
                raise ValueError(f"channel index {g} is out of range 0..{FULL - 1}")
            chosen.add(int(g))
        if not chosen:
            raise ValueError("a channel set cannot be empty")
        ordered = tuple(sorted(chosen))
        spec = _canonical_spec(ordered)
        set_ = object.__setattr__
        set_(self, "_indices", ordered)
        set_(self, "_spec", spec)
        set_(self, "_name", _PRESET_NAME_BY_SPEC.get(spec, spec))
        comp = np.array([g // PER_COMPONENT for g in ordered], dtype=np.int32)
        k = np.array([g % PER_COMPONENT for g in ordered], dtype=np.int32)
        comp.flags.writeable = False
        k.flags.writeable = False
        set_(self, "_component_of", comp)
        set_(self, "_k", k)

    # -- construction ---------------------------------------------------------

    @classmethod
    def parse(cls, spec):
        """A ChannelSet from a preset name, custom spec, top-k spec, or a ChannelSet (returned as is).

        Raises ValueError naming the problem for any bad spec, TypeError for
        non-text input (an int count is ambiguous between S and T sets).
        """
        if isinstance(spec, ChannelSet):
            return spec
        if isinstance(spec, (bool, int, np.integer)):
            same_count = [p for p in PRESETS if p.rstrip("ST") == str(spec)]
            hint = f" such as {' or '.join(map(repr, same_count))}" if same_count else ""
            raise TypeError(f"ChannelSet.parse({spec!r}): a bare count is ambiguous; write a preset "
                            f"name{hint} (presets: {', '.join(PRESETS)})")
        if not isinstance(spec, str):
            raise TypeError(f"ChannelSet.parse expects a str or ChannelSet, not {type(spec).__name__}")
        text = spec.strip()
        if not text:
            raise ValueError("bad channel set '': empty spec (expected a preset such as '24S')")
        preset = _PRESET_BY_UPPER.get(text.upper())
        if preset is not None:
            return _PRESET_SETS[preset]
        m = _TOP_RE.match(text)
        if m is not None:
            return cls(_parse_top(text, m))
        if ":" not in text and ";" not in text:
            raise ValueError(f"unknown channel set preset {text!r}; presets are {', '.join(PRESETS)}, "
                             f"or write e.g. 'Y:0-3,8-11;Cb:0,1;Cr:0,1' or 'top 24 of heatmap.json'")
        return cls(_parse_custom(text))

    def to_dict(self):
        """JSON-able description: name, spec, counts and channel names."""
        return {"name": self._name, "spec": self._spec, "count": len(self._indices),
                "counts": list(self.counts), "channels": list(self.names)}

    def to_json(self, indent=None):
        """The set as JSON text (see :meth:`to_dict`); :meth:`from_json` reads it back."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, data):
        """Read :meth:`to_json` output: JSON text, bytes, or the already-loaded dict.

        The channel list wins when present; a spec that disagrees with it is an error.
        """
        if isinstance(data, (bytes, bytearray)):
            data = data.decode("utf-8")
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as e:
                raise ValueError(f"channel set JSON is malformed: {e}") from None
        if not isinstance(data, dict):
            raise ValueError("channel set JSON must be an object with 'spec' and/or 'channels'")
        from_spec = cls.parse(data["spec"]) if "spec" in data else None
        if "channels" in data:
            names = data["channels"]
            if not isinstance(names, list):
                raise ValueError("channel set JSON: 'channels' must be a list of names")
            result = cls(parse_channel_name(n) for n in names)
            if from_spec is not None and from_spec != result:
                raise ValueError(f"channel set JSON is inconsistent: spec {data['spec']!r} does not "
                                 f"match its channel list")
            return result
        if from_spec is None:
            raise ValueError("channel set JSON has neither 'spec' nor 'channels'")
        return from_spec

    # -- views ----------------------------------------------------------------

    @property
    def spec(self):
        """Canonical custom-grammar text; ChannelSet.parse(spec) gives this set back."""
        return self._spec

    @property
    def name(self):
        """The preset name when the set is a preset, else the canonical spec."""
        return self._name

    @property
    def indices(self):
        """Sorted tuple of global channel indices (0..191), the cube's channel order."""
        return self._indices

    @property
    def count(self):
        """Number of channels C (the cube's first dimension)."""
        return len(self._indices)

    @property
    def names(self):
        """Channel names in cube order: ("Y0", "Y1", ...)."""
        return tuple(channel_name(g) for g in self._indices)

    @property
    def per_component(self):
        """Three sorted tuples of natural indices k: (Y, Cb, Cr)."""
        groups = ([], [], [])
        for g in self._indices:
            groups[g // PER_COMPONENT].append(g % PER_COMPONENT)
        return tuple(tuple(ks) for ks in groups)

    @property
    def counts(self):
        """Channels per component: (nY, nCb, nCr)."""
        return tuple(len(ks) for ks in self.per_component)

    @property
    def component_of(self):
        """Read-only int32 array (count,): the component (0 Y, 1 Cb, 2 Cr) of each cube channel."""
        return self._component_of

    @property
    def k(self):
        """Read-only int32 array (count,): the natural index 8*u + v of each cube channel."""
        return self._k

    def input_size_ratio(self, size=448):
        """Cube elements over RGB 224x224x3 elements, for a ``size`` x ``size`` crop (default 448)."""
        side = size / 8
        return self.count * side * side / _RGB_ELEMENTS

    def bytes_ratio(self, dtype="float32", size=448):
        """Cube bytes in ``dtype`` (default float32) over the bytes of a uint8 RGB 224x224x3 image."""
        return self.input_size_ratio(size) * np.dtype(dtype).itemsize

    # -- protocol -------------------------------------------------------------

    def __len__(self):
        return len(self._indices)

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, item):
        if isinstance(item, str):
            try:
                item = parse_channel_name(item)
            except ValueError:
                return False
        return item in self._indices

    def __eq__(self, other):
        if not isinstance(other, ChannelSet):
            return NotImplemented
        return self._indices == other._indices

    def __hash__(self):
        return hash(("ChannelSet", self._indices))

    def __repr__(self):
        return f"ChannelSet.parse({self._name!r})"

    def __str__(self):
        return self._name

    def __setattr__(self, name, value):
        raise AttributeError("ChannelSet is immutable")

    def __delattr__(self, name):
        raise AttributeError("ChannelSet is immutable")

    def __reduce__(self):
        return (ChannelSet, (self._indices,))


# Canonical spec -> preset name, so that a set equal to a preset carries its name.
_PRESET_NAME_BY_SPEC = {spec: name for name, spec in PRESETS.items()}
_PRESET_SETS = {name: ChannelSet(_parse_custom(spec)) for name, spec in PRESETS.items()}
