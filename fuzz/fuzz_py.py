"""Python-level fuzzer (atheris) over the entry points that take untrusted input.

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_py.py --seeds fuzz/build/corpus-py
    .venv/bin/python fuzz/fuzz_py.py -runs=1000000 fuzz/build/corpus-py     # or: make fuzz-py RUNS=N

Each input is 16 bytes of arguments followed by the data.  The first byte picks the
entry point:

- jpegfreq.cube(data, channels, size | geometry, source, strict, max_pixels, dtype,
  band_cutoff, info=...) with fuzzed values and types for every argument;
- jpegfreq.read_coefficients(data, strict, max_pixels, freqs);
- jpegfreq.ChannelSet.parse(text) on the data as text;
- jpegfreq.Stats.load(path) of a file holding the data;
- jpegfreq.Geometry(out_h, out_w, box, resize, flip, exif) from fuzzed numbers.

Rule: only ValueError (jpegfreq.JpegError is one) may escape, and TypeError only when
an argument of the wrong type was passed on purpose; anything else, a non-finite or
misshapen result, or a decoded share outside (0, 1] is a finding (the harness raises,
atheris records the input).  The pixel limit is held at 1 megapixel (max_pixels is
fuzzed below it, never 0) so that a hostile header cannot ask for gigabytes.  The seed
corpus (--seeds DIR) is small generated JPEGs from tests/jpeg_factory with a few
argument prefixes, and stats.json-like texts.
"""
import math
import os
import struct
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))

import atheris  # noqa: E402

with atheris.instrument_imports():
    import numpy as np
    import jpegfreq
    from jpegfreq import ChannelSet, Geometry, JpegError, Stats

ARGS = 16
LIMIT = 1_000_000
SPECS = ["24S", "64S", "6S", "192", "64T", "Y:0-3;Cb:0;Cr:0", "Y:0", "Cb:0-63", "Cr:5,9",
         "Y0,Cb0", "", "Y:64", "24X", "bogus", "Y:0-63;Cb:0-63;Cr:0-63"]
SIZES = [None, 8, 16, 64, 104, 224, 0, -8, 7, 65]
SOURCES = ["jpeg-coeffs", "spatial", "rgb", "pixels"]
DTYPES = ["float32", "float16", None, "int8", "float64", np.float16]
FLOATS = [0.0, 1.0, -1.0, 7.5, 64.0, 100.0, 1e9, -1e9, math.nan, math.inf, -math.inf, 0.5]
LIMITS = [None, LIMIT, 4096, 64, 1]
WRONG = [object(), 3.5, b"24S", [1, 2], {"a": 1}]

_stats_path = None


def _finite(x):
    return np.all(np.isfinite(np.asarray(x, np.float32)))


def _cube(a, data):
    wrong = False
    spec = SPECS[a[1] % len(SPECS)]
    if a[1] >= 240:
        spec, wrong = WRONG[a[1] % len(WRONG)], True
    source = SOURCES[a[2] % len(SOURCES)]
    kw = dict(channels=spec, source=source, strict=bool(a[3] & 1), band_cutoff=bool(a[3] & 2),
              max_pixels=LIMITS[(a[3] >> 2) % len(LIMITS)], dtype=DTYPES[a[4] % len(DTYPES)])
    if a[3] & 0x80:
        kw["dtype"], wrong = WRONG[a[4] % len(WRONG)], True
    if a[5] & 1:
        box = None if a[5] & 2 else tuple(FLOATS[v % len(FLOATS)] for v in a[6:10])
        try:
            g = Geometry(8 * (1 + a[10] % 28), 8 * (1 + a[11] % 28), box,
                         resize=int.from_bytes(a[12:14], "little") % 1024 - 8,
                         flip=bool(a[5] & 4), exif=bool(a[5] & 8))
        except ValueError:
            return
        kw["geometry"] = g
    else:
        kw["size"] = SIZES[a[10] % len(SIZES)]
    info = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = jpegfreq.cube(data, info=info, **kw)
    except TypeError:
        if not wrong:
            raise
        return
    except ValueError:
        return
    assert x.ndim == 3 and x.dtype in (np.float32, np.float16), (x.shape, x.dtype)
    assert _finite(x), "non-finite cube"
    assert 0.0 < info["decoded"] <= 1.0, info
    assert isinstance(info["warnings"], list)


def _coefficients(a, data):
    freqs = None
    if a[1] & 1:
        freqs = [v % 70 for v in a[2:2 + 1 + a[1] % 8]]
    try:
        r = jpegfreq.read_coefficients(data, strict=bool(a[1] & 2),
                                       max_pixels=LIMITS[(a[1] >> 2) % len(LIMITS)], freqs=freqs)
    except ValueError:
        return
    assert 0.0 < r.decoded <= 1.0, r.decoded
    for c, comp in zip(r.coefficients, r.header.components):
        assert c.shape[:2] == (comp.height_in_blocks, comp.width_in_blocks)


def _channels(a, data):
    text = data.decode("utf-8", "replace")
    try:
        cs = ChannelSet.parse(text)
    except ValueError:
        return
    assert 1 <= cs.count <= 192
    assert ChannelSet.parse(cs.spec) == cs, "spec does not round-trip"


def _stats(a, data):
    with open(_stats_path, "wb") as f:
        f.write(data)
    try:
        st = Stats.load(_stats_path)
    except ValueError as e:
        assert _stats_path in str(e), f"error does not name the file: {e}"
        return
    assert st.mean.shape == st.std.shape and _finite(st.mean) and _finite(st.std)


def _geometry(a, data):
    vals = struct.unpack("<4d", (data + bytes(32))[:32])
    box = None if a[1] & 1 else vals
    try:
        g = Geometry(int.from_bytes(a[2:4], "little", signed=True),
                     int.from_bytes(a[4:6], "little", signed=True), box,
                     resize=int.from_bytes(a[6:8], "little", signed=True),
                     flip=bool(a[1] & 2), exif=bool(a[1] & 4))
        b = g.box_for(1 + a[8] * 7, 1 + a[9] * 5)
    except ValueError:
        return
    assert len(b) == 4


TARGETS = [_cube, _cube, _cube, _coefficients, _channels, _stats, _geometry]


def one_input(buf: bytes):
    if len(buf) < ARGS:
        return
    a, data = buf[:ARGS], buf[ARGS:]
    TARGETS[a[0] % len(TARGETS)](a, data)


def write_seeds(folder):
    """Seeds: small JPEGs of several kinds with argument prefixes for each entry point."""
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import jpeg_factory as F
    os.makedirs(folder, exist_ok=True)
    kinds = ["baseline-420", "progressive-420", "arithmetic-420", "restart-420", "gray",
             "baseline-444", "exif-orientation-6", "cmyk", "tiny-17x9"]
    prefixes = [bytes([0, 0, 0, 0, 0, 0] + [0] * 10), bytes([1, 2, 1, 1, 1, 1, 1, 2, 3, 4, 7, 7,
                                                          64, 0, 0, 0]),
                bytes([2, 6, 2, 4, 2, 3, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0]),
                bytes([3, 1, 0, 8, 9] + [0] * 11)]
    n = 0
    for kind in kinds:
        data = F.make_jpeg(kind) if kind.startswith("tiny") else F.make_jpeg(kind, 64, 48)
        for i, p in enumerate(prefixes):
            for j, d in enumerate((data, data[:len(data) // 2])):
                with open(os.path.join(folder, f"seed-{kind}-{i}-{j}"), "wb") as f:
                    f.write(p + d)
                n += 1
    st = Stats(ChannelSet.parse("6S"), np.zeros(6), np.ones(6), size=(64, 64))
    import json
    texts = [json.dumps(st.to_dict()).encode(), b"[1, 2]", b"{\"mean\": [1e999]}"]
    for i, t in enumerate(texts):
        with open(os.path.join(folder, f"seed-stats-{i}"), "wb") as f:
            f.write(bytes([5]) + bytes(15) + t)
        n += 1
    for i, t in enumerate([b"24S", b"Y:0-3;Cb:0;Cr:0", b"64T"]):
        with open(os.path.join(folder, f"seed-channels-{i}"), "wb") as f:
            f.write(bytes([4]) + bytes(15) + t)
        n += 1
    return n


def main():
    global _stats_path
    if len(sys.argv) >= 3 and sys.argv[1] == "--seeds":
        print(f"fuzz_py: {write_seeds(sys.argv[2])} seeds in {sys.argv[2]}")
        return
    jpegfreq.set_max_pixels(LIMIT)
    fd, _stats_path = tempfile.mkstemp(prefix="fuzz-py-stats-", suffix=".json")
    os.close(fd)
    try:
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
    finally:
        os.unlink(_stats_path)


if __name__ == "__main__":
    main()
