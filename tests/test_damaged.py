"""Damaged JPEGs: every public reader returns data (maybe with warnings) or raises JpegError.

Six base kinds (baseline 4:2:0, progressive, arithmetic, restart intervals,
grayscale, 4:4:4) are broken deterministically: truncated at every marker
boundary and at points inside the entropy data, seeded bit flips anywhere,
bogus SOF/SOS/DHT/DQT/DRI/DAC fields, a 65535x65535 frame, segment lengths of
0, 1, 2 and 65535, and non-JPEG inputs (plus jpeg_factory.damaged()).  Each
base kind's variants run in a child process (a crash fails that kind and
names the variant it was on) where, per variant, read_header,
read_coefficients (strict False and True) and cube (jpeg-coeffs, spatial, and
with band_cutoff and EXIF orientation) are called, half with the path and half with the bytes (placed to end at
an unmapped page, so reading one byte past the input is a SIGSEGV), and:

- the only exception allowed is JpegError (a ValueError); its message is
  "SOURCE: reason" with SOURCE the path or "<bytes: N>";
- nothing reaches fd 2 (libjpeg prints nothing);
- no call takes longer than 5 s (a hang or a scan bomb; generous because the
  machines are noisy);
- what must fail fails, what must give data gives finite data, strict=True
  raises exactly when the lenient read returned warnings.

Run one child by hand: python tests/test_damaged.py --worker DIR (DIR holds
manifest.json and the files the parent wrote).
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import jpeg_factory as F
import jpegfreq
from jpegfreq import JpegError

BASES = ["baseline-420", "progressive-420", "arithmetic-420", "restart-420", "gray", "baseline-444"]
CALL_SECONDS = 5.0          # per call: generous, the machines are noisy
CHILD_SECONDS = 600         # per base kind, all variants

# Expected outcome of the lenient read_coefficients (and of cube, jpeg-coeffs):
#   "fail": JpegError;  "data": arrays (warnings allowed);
#   "warn": arrays and at least one warning;  "any": either.
_OUTCOME = {"fail": "fail", "warn": "data", "any": "any"}
#: how a read with no decoded row in what it reads fails (jpegfreq.reader.account_share)
TRUNCATED_BEFORE = "truncated before any image data"


# ---------------------------------------------------------------------------
# Input that ends at an unmapped page: a read past its end is a SIGSEGV
# ---------------------------------------------------------------------------

class Guarded:
    """``data`` copied to the very end of an mmap whose next page is PROT_NONE.

    ``.view`` is a memoryview of exactly len(data) bytes (the readers accept
    any bytes-like object); reading even one byte past it faults, so an
    over-read that a bytes object's spare capacity would hide crashes the
    child process instead.  Linux only (mprotect through ctypes).
    """

    def __init__(self, data):
        import ctypes
        import mmap
        page = mmap.PAGESIZE
        n = len(data)
        pages = max(1, -(-n // page))
        self._mm = mmap.mmap(-1, (pages + 1) * page)
        anchor = ctypes.c_char.from_buffer(self._mm)
        base = ctypes.addressof(anchor)
        del anchor                       # release the export, or mmap cannot close
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        if libc.mprotect(base + pages * page, page, 0) != 0:          # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect failed")
        start = pages * page - n
        self._mm[start:start + n] = data
        self.view = memoryview(self._mm)[start:start + n]

    def close(self):
        self.view.release()
        self._mm.close()


# ---------------------------------------------------------------------------
# The damaged variants
# ---------------------------------------------------------------------------

def _patch(data, offset, new):
    return data[:offset] + bytes(new) + data[offset + len(new):]


def _segments(data, code):
    return [e for e in F.markers(data) if e[1] == code]


def _entropy_positions(data):
    """Offsets of every entropy-coded byte (all scans), in order."""
    entries = F.markers(data)
    out = []
    for i, (off, marker, length) in enumerate(entries):
        if marker == F.SOS:
            end = next(o for o, m, _ in entries[i + 1:] if not 0xFFD0 <= m <= 0xFFD7)
            out.extend(range(off + 2 + length, end))
    return out


def truncations(data):
    """[(id, bytes, expect)]: cuts at every marker boundary and inside the entropy data.

    Before the end of the first SOS header nothing can be decoded ("fail").
    After it, a cut in entropy data or between segments gives the decoded
    part and a warning ("warn"): libjpeg pads the rest.  A cut inside a later
    segment (the DHT or SOS of a later progressive scan) makes libjpeg parse
    its padding as table bytes, which may be a hard error: "any".
    """
    entries = F.markers(data)
    sos = _segments(data, F.SOS)[0]
    first_scan = sos[0] + 2 + sos[2]
    cuts = {}
    for off, marker, length in entries:
        inside = "any"
        for name, cut, expect in ((f"at-{marker:04X}@{off}", off, "warn"),
                                  (f"in-{marker:04X}@{off}", off + 1, "warn"),
                                  (f"len-{marker:04X}@{off}", off + 3, inside)):
            cuts.setdefault(cut, (name, expect))
        if length > 4:
            cuts.setdefault(off + 2 + length // 2, (f"mid-{marker:04X}@{off}", inside))
        if length:
            cuts.setdefault(off + 2 + length, (f"after-{marker:04X}@{off}", "warn"))
    entropy = _entropy_positions(data)
    for pct in (1, 5, 10, 33, 50, 66, 90, 99):
        cuts.setdefault(entropy[len(entropy) * pct // 100], (f"entropy-{pct}pct", "warn"))
    cuts.setdefault(entropy[-1], ("entropy-last-byte", "warn"))
    out = []
    for cut in sorted(cuts):
        name, expect = cuts[cut]
        if 0 < cut < len(data):
            out.append((f"cut{cut}-{name}", data[:cut], "fail" if cut < first_scan else expect))
    return out


def bitflips(data, seeds=range(24)):
    """Seeded bit flips anywhere past SOI (markers, tables and entropy data alike)."""
    out = []
    for seed in seeds:
        rng = np.random.default_rng(1000 + seed)
        buf = bytearray(data)
        count = (1, 2, 5)[seed % 3]
        for pos in rng.integers(2, len(data), count):
            buf[int(pos)] ^= 1 << int(rng.integers(0, 8))
        out.append((f"flip-s{seed}-n{count}", bytes(buf), "any"))
    return out


def bogus_fields(data):
    """Crafted header faults: [(id, bytes, expect)]."""
    out = []
    add = lambda name, value, expect="any": out.append((name, bytes(value), expect))  # noqa: E731
    fh = F.frame_header(data)
    sof = next(e for e in F.markers(data) if e[1] in F.SOF_MARKERS)
    p = sof[0] + 4                       # precision, height, width, ncomp, components
    ncomp = len(fh.components)

    # SOF
    add("sof-precision-0", _patch(data, p, [0]), "fail")
    add("sof-precision-12", _patch(data, p, [12]), "fail")
    add("sof-precision-16", _patch(data, p, [16]), "fail")
    add("sof-height-0", _patch(data, p + 1, b"\0\0"), "fail")
    add("sof-width-0", _patch(data, p + 3, b"\0\0"), "fail")
    add("sof-size-65535x65535", _patch(data, p + 1, b"\xff\xff\xff\xff"), "fail")
    add("sof-size-65500x65500", _patch(data, p + 1, (65500).to_bytes(2, "big") * 2), "fail")
    add("sof-size-1x65500", _patch(data, p + 1, (65500).to_bytes(2, "big") + b"\0\1"), "any")
    add("sof-ncomp-0", _patch(data, p + 5, [0]), "fail")
    add("sof-ncomp-2", _patch(data, p + 5, [2]), "fail")
    add("sof-ncomp-255", _patch(data, p + 5, [255]), "fail")
    add("sof-sampling-0x0", _patch(data, p + 7, [0x00]), "fail")
    add("sof-sampling-5x5", _patch(data, p + 7, [0x55]), "fail")
    add("sof-sampling-4x4", _patch(data, p + 7, [0x44]))
    add("sof-sampling-15x1", _patch(data, p + 7, [0xF1]), "fail")
    add("sof-quant-4", _patch(data, p + 8, [4]), "fail")
    add("sof-quant-255", _patch(data, p + 8, [255]), "fail")
    if ncomp == 3:
        # Cb 1x3 under Y 2x2: max_v 3 is not a multiple of Y's 2 (libjpeg reads
        # it; the coefficient-domain operator refuses non-integral ratios).
        add("sof-sampling-nonintegral", _patch(data, p + 10, [0x13]))
        add("sof-duplicate-id", _patch(data, p + 9, [fh.components[0][0]]))
    else:
        add("sof-quant-1-undefined", _patch(data, p + 8, [1]), "fail")
    add("sof-length-short", _patch(data, sof[0] + 2, (sof[2] - 1).to_bytes(2, "big")))
    add("sof-length-long", _patch(data, sof[0] + 2, (sof[2] + 3).to_bytes(2, "big")))

    # SOS (the first scan)
    sos = _segments(data, F.SOS)[0]
    s = sos[0] + 4                       # Ns, (Cs, TdTa) * Ns, Ss, Se, AhAl
    ns = data[s]
    add("sos-ns-0", _patch(data, s, [0]), "fail")
    add("sos-ns-5", _patch(data, s, [5]), "fail")
    # Huffman tables are 0..3; arithmetic conditioning tables 0..15 all have defaults
    arithmetic = fh.marker in (0xFFC9, 0xFFCA)
    add("sos-tables-7", _patch(data, s + 2, [0x77]), "any" if arithmetic else "fail")
    add("sos-ss-63", _patch(data, s + 1 + 2 * ns, [63]))
    add("sos-se-255", _patch(data, s + 2 + 2 * ns, [255]))
    add("sos-ahal-ff", _patch(data, s + 3 + 2 * ns, [0xFF]))
    add("sos-length-0", _patch(data, sos[0] + 2, b"\0\0"), "fail")

    # DHT
    for i, (off, _, length) in enumerate(_segments(data, F.DHT)[:2]):
        d = off + 4
        add(f"dht{i}-class-2", _patch(data, d, [0x20 | (data[d] & 15)]), "fail")
        add(f"dht{i}-counts-zero", _patch(data, d + 1, bytes(16)))
        add(f"dht{i}-counts-256", _patch(data, d + 1, bytes(15) + b"\xff"))
        counts = list(data[d + 1:d + 17])
        k = next((j for j in range(15, 0, -1) if counts[j] >= 2), None)
        if k is not None:   # same total, overfull code space (3 codes of length 1)
            counts[0] += 2
            counts[k] -= 2
            add(f"dht{i}-overfull", _patch(data, d + 1, bytes(counts)))
        add(f"dht{i}-values-ff", _patch(data, d + 17, b"\xff" * min(4, length - 19)))

    # DQT
    for i, (off, _, length) in enumerate(_segments(data, F.DQT)[:1]):
        q = off + 4
        add(f"dqt{i}-index-15", _patch(data, q, [(data[q] & 0xF0) | 15]), "fail")
        add(f"dqt{i}-precision-16bit", _patch(data, q, [0x10 | (data[q] & 15)]))
        add(f"dqt{i}-precision-2", _patch(data, q, [0x20 | (data[q] & 15)]))
        add(f"dqt{i}-values-0", _patch(data, q + 1, bytes(64)), "data")
        add(f"dqt{i}-values-255", _patch(data, q + 1, b"\xff" * 64), "data")

    # DRI / DAC inserted after SOI or patched
    dri = _segments(data, F.DRI)
    if dri:
        add("dri-interval-0", _patch(data, dri[0][0] + 4, b"\0\0"), "data")
        add("dri-interval-65535", _patch(data, dri[0][0] + 4, b"\xff\xff"), "data")
        add("dri-length-3", _patch(data, dri[0][0] + 2, b"\0\3"))
    else:
        # every MCU a restart interval, but no RSTn in the data
        add("dri-inserted-1", data[:2] + b"\xff\xdd\x00\x04\x00\x01" + data[2:], "data")
    dac = _segments(data, 0xFFCC)
    if dac:
        a = dac[0][0] + 4
        add("dac-index-15", _patch(data, a, [(data[a] & 0xF0) | 15]))
        add("dac-value-0", _patch(data, a + 1, [0]))
        add("dac-class-2", _patch(data, a, [0x20 | (data[a] & 15)]))

    # Zero-length and other bad segment lengths, every segment before the first scan
    for off, marker, length in F.markers(data):
        if marker == F.SOS:
            break
        if length == 0:
            continue
        for bad in (0, 1, 2, 0xFFFF):
            add(f"seglen-{marker:04X}@{off}-{bad}", _patch(data, off + 2, bad.to_bytes(2, "big")))
    # Legal oddities: empty APP0 and COM segments inserted, fill bytes before a marker
    add("empty-app-and-com", data[:2] + b"\xff\xe0\x00\x02\xff\xfe\x00\x02" + data[2:], "data")
    add("fill-bytes", data[:2] + b"\xff\xff\xff" + data[2:], "data")
    return out


NOT_JPEG = [
    ("soi-only", b"\xff\xd8", "fail"),
    ("soi-ff", b"\xff\xd8\xff", "fail"),
    ("soi-eoi", b"\xff\xd8\xff\xd9", "fail"),
    ("text", b"hello, this is not a JPEG\n" * 4, "fail"),
    ("gif-header", b"GIF89a" + bytes(64), "fail"),
    ("zeros", bytes(4096), "fail"),
    ("ff-run", b"\xff" * 4096, "fail"),
]


def variants(base):
    """Every damaged variant of one base kind: [(id, bytes, expect)] with unique ids."""
    data = F.make_jpeg(base)
    out = []
    for seed in (0, 1):
        for name, value in F.damaged(data, seed):
            if seed == 1 and F.READER_OUTCOME[name] != "any":
                continue  # only the seeded header flips differ between seeds
            out.append((f"damaged-s{seed}-{name}", value, _OUTCOME[F.READER_OUTCOME[name]]))
    out += truncations(data) + bitflips(data) + bogus_fields(data) + NOT_JPEG
    ids = [v[0] for v in out]
    assert len(ids) == len(set(ids)), "duplicate variant ids"
    return out


# ---------------------------------------------------------------------------
# The child: runs every call on every variant, reports JSON lines
# ---------------------------------------------------------------------------

def _calls(jpegfreq):
    """(name, use_path, fn) of every call made on a variant."""
    return [
        ("read_header", True, lambda s: jpegfreq.read_header(s)),
        ("read_coefficients", False, lambda s: jpegfreq.read_coefficients(s)),
        ("read_coefficients_strict", True, lambda s: jpegfreq.read_coefficients(s, strict=True)),
        ("cube_coeffs", False, lambda s: jpegfreq.cube(s, "24S", size=64)),
        ("cube_spatial", True, lambda s: jpegfreq.cube(s, "24S", size=64, source="spatial")),
        # progressive scan cut-off and EXIF orientation: more marker walking in C
        ("cube_cutoff_exif", False, lambda s: jpegfreq.cube(
            s, "6S", geometry=jpegfreq.Geometry(out_h=32, out_w=48, resize=48, exif=True),
            band_cutoff=True)),
    ]


def _summarize(value):
    """What the parent needs to know about a successful call's result."""
    if isinstance(value, np.ndarray):
        return {"shape": list(value.shape), "finite": bool(np.isfinite(value).all()),
                "sum": float(np.float64(value.sum()))}
    if isinstance(value, jpegfreq.Coefficients):
        return {"warnings": list(value.warnings), "decoded": value.decoded,
                "shapes": [list(c.shape) for c in value.coefficients],
                "digest": [int(np.int64(c.astype(np.int64).sum())) for c in value.coefficients]}
    return {"width": value.width, "height": value.height}


def worker(folder):
    """Run every call on the files listed in folder/manifest.json; JSON lines to stdout."""
    import tempfile
    import warnings

    warnings.simplefilter("ignore")      # Python warnings would go to stderr
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    err_file = tempfile.TemporaryFile()
    saved = os.dup(2)
    out = sys.stdout
    for vid, fname in manifest:
        path = os.path.join(folder, fname)
        with open(path, "rb") as f:
            data = f.read()
        out.write(json.dumps({"begin": vid}) + "\n")
        out.flush()
        guarded = Guarded(data)          # byte calls read up to an unmapped page
        results = {}
        err_file.seek(0)
        err_file.truncate()
        os.dup2(err_file.fileno(), 2)    # libjpeg would print here, if anywhere
        try:
            for name, use_path, fn in _calls(jpegfreq):
                src = path if use_path else guarded.view
                t0 = time.perf_counter()
                try:
                    r = {"ok": _summarize(fn(src))}
                except jpegfreq.JpegError as e:
                    r = {"error": "JpegError", "kind": e.kind, "source": e.source,
                         "reason": e.reason, "str": str(e), "valueerror": isinstance(e, ValueError)}
                except BaseException as e:  # noqa: BLE001 - reported, the parent fails on it
                    r = {"error": type(e).__name__, "str": repr(e)[:300]}
                r["seconds"] = time.perf_counter() - t0
                r["expected_source"] = path if use_path else f"<bytes: {len(data)}>"
                results[name] = r
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            guarded.close()
        err_file.seek(0)
        stderr_bytes = err_file.read()
        out.write(json.dumps({"id": vid, "results": results,
                              "stderr": stderr_bytes.decode("latin-1")[:500]}) + "\n")
        out.flush()
    return 0


# ---------------------------------------------------------------------------
# The parent: one child per base kind, then the checks
# ---------------------------------------------------------------------------

def _run_child(tmp_path, items):
    manifest = []
    for i, (vid, value, _) in enumerate(items):
        fname = f"v{i:04d}.jpg"
        (tmp_path / fname).write_bytes(value)
        manifest.append((vid, fname))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    root = os.path.dirname(os.path.dirname(os.path.abspath(jpegfreq.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, os.path.dirname(os.path.abspath(__file__)),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", str(tmp_path)],
                          capture_output=True, timeout=CHILD_SECONDS, env=env)
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]
    begun = [x["begin"] for x in lines if "begin" in x]
    done = {x["id"]: x for x in lines if "id" in x}
    assert proc.returncode == 0, (
        f"child died with status {proc.returncode} on variant {begun[-1] if begun else None!r}: "
        f"{proc.stderr.decode(errors='replace')[-2000:]}")
    assert proc.stderr == b"", f"child wrote to stderr: {proc.stderr[:2000]!r}"
    assert len(done) == len(items)
    return done


def _check_variant(vid, expect, rep):
    """All the per-variant rules; returns a list of problems (empty when fine)."""
    bad = []
    res = rep["results"]
    if rep["stderr"]:
        bad.append(f"wrote to stderr: {rep['stderr']!r}")
    for name, r in res.items():
        if r["seconds"] > CALL_SECONDS:
            bad.append(f"{name} took {r['seconds']:.1f} s")
        if "error" in r:
            if r["error"] != "JpegError":
                bad.append(f"{name} raised {r['error']}: {r['str']}")
                continue
            if not r["valueerror"]:
                bad.append(f"{name}: JpegError is not a ValueError")
            named = f"{r['expected_source']}: {r['reason']}"
            if r["source"] != r["expected_source"] or r["str"] != named:
                bad.append(f"{name}: message does not name the source: {r['str']!r}")
            if not r["reason"].strip():
                bad.append(f"{name}: empty reason")
        elif "finite" in r["ok"] and not r["ok"]["finite"]:
            bad.append(f"{name}: non-finite values in the cube")
    lenient, strict, coeffs_cube = (res["read_coefficients"], res["read_coefficients_strict"],
                                    res["cube_coeffs"])
    if expect == "fail":
        for name in ("read_coefficients", "read_coefficients_strict", "cube_coeffs"):
            if "error" not in res[name]:
                bad.append(f"{name} gave data for a file that must fail")
    if expect in ("data", "warn"):
        for name in ("read_coefficients", "cube_coeffs", "cube_spatial"):
            # a file whose data ends before any row the call reads has nothing to give
            if "error" in res[name] and not res[name].get("reason", "").startswith(
                    TRUNCATED_BEFORE):
                bad.append(f"{name} failed on a file that must give data: {res[name]['str']}")
    if "ok" in lenient:
        share, warns = lenient["ok"]["decoded"], lenient["ok"]["warnings"]
        if not 0.0 < share <= 1.0:
            bad.append(f"decoded share {share} outside (0, 1]")
        if (share < 1.0) != any(w.startswith("truncated: ") for w in warns):
            bad.append(f"decoded share {share} and warnings {warns} disagree")
    if expect == "warn" and "ok" in lenient and not lenient["ok"]["warnings"]:
        bad.append("no warning for a damaged file that must warn")
    if "ok" in lenient:
        if lenient["ok"]["warnings"]:
            if "ok" in strict or "strict mode" not in strict.get("reason", ""):
                bad.append(f"strict=True did not raise on warnings {lenient['ok']['warnings']}")
        elif "ok" not in strict:
            bad.append(f"strict=True raised without a warning: {strict.get('str')}")
        elif strict["ok"]["digest"] != lenient["ok"]["digest"]:
            bad.append("strict and lenient reads differ")
        if "ok" in coeffs_cube and coeffs_cube["ok"]["shape"] != [24, 8, 8]:
            bad.append(f"cube shape {coeffs_cube['ok']['shape']}")
    elif "ok" in coeffs_cube:
        bad.append("cube (jpeg-coeffs) gave data where read_coefficients failed")
    return bad


@pytest.mark.parametrize("base", BASES)
def test_damaged_variants(base, tmp_path):
    """Guards: no crash, hang, stderr output or foreign exception on any damaged input."""
    items = variants(base)
    reports = _run_child(tmp_path, items)
    problems = []
    for vid, _, expect in items:
        for p in _check_variant(vid, expect, reports[vid]):
            problems.append(f"{base}/{vid}: {p}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])


def test_variants_are_deterministic():
    """Same base, same damaged bytes: failures can be reproduced by id."""
    a = variants("baseline-420")
    b = variants("baseline-420")
    assert [(i, v) for i, v, _ in a] == [(i, v) for i, v, _ in b]
    assert len(a) > 100


def test_truncation_cuts_cover_every_marker():
    data = F.make_jpeg("progressive-420")
    cuts = {len(v) for _, v, _ in truncations(data)}
    for off, _, _ in F.markers(data)[1:]:
        assert off in cuts


# ---------------------------------------------------------------------------
# Specific promises
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case,word", [("12bit", "12-bit"), ("lossless", "lossless")])
@pytest.mark.parametrize("call", ["read_header", "read_coefficients", "cube", "cube_spatial"])
def test_unsupported_processes_are_named(case, word, call):
    data = F.make_jpeg(case)
    fn = {"read_header": jpegfreq.read_header,
          "read_coefficients": jpegfreq.read_coefficients,
          "cube": lambda s: jpegfreq.cube(s, size=64),
          "cube_spatial": lambda s: jpegfreq.cube(s, size=64, source="spatial")}[call]
    with pytest.raises(JpegError, match=word) as info:
        fn(data)
    assert info.value.kind == "unsupported"
    assert str(info.value).startswith(f"<bytes: {len(data)}>: ")


def test_unsupported_named_with_path(tmp_path):
    path = tmp_path / "twelve.jpg"
    path.write_bytes(F.make_jpeg("12bit"))
    with pytest.raises(JpegError, match="12-bit") as info:
        jpegfreq.read_coefficients(str(path))
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: ")


def test_huge_frame_is_a_limit_error_with_numbers():
    """Regression: a 65535x65535 SOF used to surface as kind "jpeg" with libjpeg's
    "Maximum supported image dimension is 65500 pixels" and no image size
    (libjpeg refuses it inside jpeg_read_header, before jf_open's pixel limit);
    jf_error_exit now maps JERR_IMAGE_TOO_BIG to kind "limit" with the numbers."""
    bad = dict(F.damaged(F.make_jpeg("baseline-420")))["huge-dimensions"]
    for max_pixels in (None, 0):
        with pytest.raises(JpegError, match=r"65535x65535 = 4294836225 pixels") as info:
            jpegfreq.read_header(bad, max_pixels=max_pixels)
        assert info.value.kind == "limit"
        assert "65500" in info.value.reason


def test_missing_file_is_an_io_error(tmp_path):
    path = str(tmp_path / "nope.jpg")
    for fn in (jpegfreq.read_header, jpegfreq.read_coefficients, jpegfreq.cube):
        with pytest.raises(JpegError) as info:
            fn(path)
        assert info.value.kind == "io"
        assert info.value.source == path and "cannot" in info.value.reason


def test_truncated_file_returns_data_and_warning():
    data = F.make_jpeg("baseline-420")
    cut = data[:len(data) // 2]
    co = jpegfreq.read_coefficients(cut)
    assert any("Premature end" in w for w in co.warnings)
    with pytest.raises(JpegError, match=r"^<bytes: \d+>: strict mode: Premature end"):
        jpegfreq.read_coefficients(cut, strict=True)
    warns = []
    out = jpegfreq.cube(cut, size=64, warnings_out=warns)
    assert out.shape == (24, 8, 8) and warns


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    sys.exit(worker(sys.argv[2]))


_DOWNSCALE_CHILD = r"""
import sys, json
import numpy as np
import jpegfreq
data = open(sys.argv[1], "rb").read()
a = jpegfreq.cube(data, "24S", size=64)
b = jpegfreq.cube(data, "24S", size=64, source="spatial")
y = slice(0, 16)
rel = float(np.sqrt(((a[y] - b[y]) ** 2).sum() / (b[y] ** 2).sum()))
print(json.dumps({"finite": bool(np.isfinite(a).all()), "rel": rel}))
"""


def test_strong_downscale_does_not_overflow_pass2(tmp_path):
    """Regression: pass 2 of the operator listed the intermediate rows of one
    output block row in fixed stack arrays of 64 (rp[64], wr[64][8]); a strong
    downscale (here 2048x1536 to a 73-pixel short side, about 27 input blocks
    of 8 rows per output block) wrote past them: a stack overflow (SIGSEGV on
    an 8000x6000 photo at the default size 448).  They are sized A.nb * 8 now."""
    from PIL import Image
    im = Image.merge("RGB", [Image.effect_noise((2048, 1536), 60)] * 3)
    path = tmp_path / "noise.jpg"
    im.save(path, quality=95)
    root = os.path.dirname(os.path.dirname(os.path.abspath(jpegfreq.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _DOWNSCALE_CHILD, str(path)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-1500:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["finite"]
    assert out["rel"] < 0.05, out     # the compressed path still agrees with the spatial one


_CUTOFF_CHILD = r"""
import json, sys
import numpy as np
import jpegfreq
from test_damaged import Guarded
out = {}
for name in sys.argv[1:]:
    data = open(name, "rb").read()
    g = Guarded(data)
    try:
        a = jpegfreq.cube(g.view, "24S", size=64, band_cutoff=True)
        b = jpegfreq.cube(data, "24S", size=64)
        out[name] = {"same": bool(np.array_equal(a, b))}
    except jpegfreq.JpegError as e:
        out[name] = {"error": str(e)}
    g.close()
print(json.dumps(out))
"""


def _cutoff_dup_ids():
    """progressive-420 with every component (SOF and each SOS) given id 1."""
    data = bytearray(F.make_jpeg("progressive-420"))
    for off, marker, _ in F.markers(data):
        if marker in F.SOF_MARKERS:
            for i in range(data[off + 9]):
                data[off + 10 + 3 * i] = 1
        elif marker == F.SOS:
            for i in range(data[off + 4]):
                data[off + 5 + 2 * i] = 1
    return bytes(data)


def _cutoff_sos_at_end():
    """progressive-420 cut after its second SOS marker and a length field of 2."""
    data = F.make_jpeg("progressive-420")
    second = [off for off, marker, _ in F.markers(data) if marker == F.SOS][1]
    return data[:second] + b"\xff\xda\x00\x02"


def test_progressive_cutoff_stays_in_bounds(tmp_path):
    """Regression, two bugs of jf_progressive_cutoff (cube(band_cutoff=True)):
    (1) a progressive file whose frame repeats a component id (libjpeg accepts
    it) matched each scan component to every frame component with that id,
    writing up to 16 indices into comps[4] on the stack; (2) an SOS of length 2
    ending the file made it read Ns one byte past the input.  Inputs end at an
    unmapped page, so (2) is a SIGSEGV without the fix; (1) smashes the stack."""
    files = []
    for name, data in (("dup-ids", _cutoff_dup_ids()), ("sos-at-end", _cutoff_sos_at_end())):
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data)
        files.append(str(path))
    assert jpegfreq.read_header(_cutoff_dup_ids()).progressive
    root = os.path.dirname(os.path.dirname(os.path.abspath(jpegfreq.__file__)))
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, here, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _CUTOFF_CHILD, *files],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-1500:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out[files[0]] == {"same": True}      # duplicate ids: the whole file is read
    assert set(out[files[1]]) <= {"same", "error"}
