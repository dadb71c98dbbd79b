"""The C reader (issue 2): header facts, coefficients, quantization, errors, warnings, limits, threads.

Every JPEG comes from jpeg_factory.  References are independent of the reader:
the SOF/DQT bytes parsed here, Pillow's decode (libjpeg-turbo, fancy upsampling)
and jpeg2dct's coefficient reader.
"""
import io
import math
import os
import pickle
import re
import threading

import numpy as np
import pytest
from PIL import Image

import jpegfreq

from reference import reconstruct_rgb
from jpeg_factory import (CASES, DAMAGE_OUTCOME, DQT, SOF_MARKERS, UNSUPPORTED_CASES, damaged,
                          frame_header, make_jpeg, markers)
from threads import run_in_threads

# What each case's name promises, written out here rather than read from the factory.
S444, S420 = ((1, 1),) * 3, ((2, 2), (1, 1), (1, 1))
EXPECTED_SAMPLING = {
    "baseline-444": S444, "baseline-422": ((2, 1), (1, 1), (1, 1)), "baseline-420": S420,
    "progressive-420": S420, "progressive-444": S444, "restart-420": S420,
    "arithmetic-420": S420, "arithmetic-progressive": S420,
    "sample-411": ((4, 1), (1, 1), (1, 1)), "sample-440": ((1, 2), (1, 1), (1, 1)),
    "sample-all-2x1": ((2, 1),) * 3, "sample-2x2-1x2-2x1": ((2, 2), (1, 2), (2, 1)),
    "gray": ((1, 1),), "gray-progressive": ((1, 1),),
    "cmyk": ((1, 1),) * 4, "ycck": ((1, 1),) * 4, "rgb-adobe": S444,
}
EXPECTED_SUBSAMPLING = {S444: "4:4:4", S420: "4:2:0", ((2, 1), (1, 1), (1, 1)): "4:2:2",
                        ((4, 1), (1, 1), (1, 1)): "4:1:1", ((1, 2), (1, 1), (1, 1)): "4:4:0"}
EXPECTED_COLOR = {"gray": "GRAY", "gray-progressive": "GRAY", "cmyk": "CMYK", "ycck": "YCCK",
                  "rgb-adobe": "RGB"}
EXPECTED_SIZE = {"odd-size": (333, 217), "tiny-1x1": (1, 1), "tiny-8x8": (8, 8), "tiny-17x9": (17, 9)}

# Cases whose decode Pillow (libjpeg-turbo) upsamples with the triangle ("fancy") filter that
# jpegfreq.geometry.axis_matrix reproduces.  4:1:1 is absent on purpose: libjpeg upsamples h4v1
# chroma by replication, not by the triangle, so a float reconstruction differs there by design.
RECONSTRUCTED = ["baseline-444", "baseline-422", "baseline-420", "progressive-420", "sample-440",
                 "sample-2x2-1x2-2x1", "sample-all-2x1", "odd-size", "tiny-17x9", "quality-10",
                 "gray"]


def _sampling(case):
    if case in EXPECTED_SAMPLING:
        return EXPECTED_SAMPLING[case]
    return S420  # odd-size, tiny-*, quality-*, exif-orientation-*: Pillow's default 4:2:0


def _zigzag():
    """Natural index of each zigzag position, walking the anti-diagonals."""
    order = []
    for s in range(15):
        cells = [(u, s - u) for u in range(8) if 0 <= s - u < 8]
        if s % 2 == 0:
            cells.reverse()
        order.extend(8 * u + v for u, v in cells)
    return order


def _dqt_tables(data):
    """{table id: uint16 (64,) natural order} parsed from the file's DQT segments."""
    zz = _zigzag()
    tables = {}
    for off, marker, length in markers(data):
        if marker != DQT:
            continue
        p, end = off + 4, off + 2 + length
        while p < end:
            pq, tq = data[p] >> 4, data[p] & 15
            size = 2 if pq else 1
            vals = [int.from_bytes(data[p + 1 + size * i:p + 1 + size * (i + 1)], "big") for i in range(64)]
            table = np.zeros(64, np.uint16)
            table[zz] = vals
            tables[tq] = table
            p += 1 + 64 * size
    return tables


def _same_read(a, b):
    assert a.header == b.header
    assert a.warnings == b.warnings
    assert len(a.coefficients) == len(b.coefficients)
    for x, y, qx, qy in zip(a.coefficients, b.coefficients, a.quant, b.quant):
        assert x.dtype == y.dtype and np.array_equal(x, y)
        assert np.array_equal(qx, qy)


# -- header facts ----------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_header_facts(case):
    data = make_jpeg(case)
    h = jpegfreq.read_header(data)
    sampling = _sampling(case)
    assert (h.width, h.height) == EXPECTED_SIZE.get(case, (128, 96))
    assert h.precision == 8
    assert h.num_components == len(sampling) == len(h.components)
    assert tuple((c.h_samp, c.v_samp) for c in h.components) == sampling
    assert (h.max_h_samp, h.max_v_samp) == tuple(max(s[i] for s in sampling) for i in (0, 1))
    assert h.color_space == EXPECTED_COLOR.get(case, "YCbCr")
    assert h.progressive == ("progressive" in case)
    assert h.arithmetic == ("arithmetic" in case)
    assert h.restart_interval == (5 if case == "restart-420" else 0)
    assert h.orientation == (int(case[-1]) if case.startswith("exif-orientation-") else 1)
    assert h.subsampling == ("gray" if len(sampling) == 1 else
                             EXPECTED_SUBSAMPLING.get(sampling, ",".join(f"{a}x{b}" for a, b in sampling)))
    assert h.coding == ("progressive" if h.progressive else "sequential") + (
        ", arithmetic" if h.arithmetic else ", Huffman")
    # Adobe colour transform: 0 for CMYK and RGB, 2 for YCCK; -1 when there is no APP14.
    assert h.adobe == (case in ("cmyk", "ycck", "rgb-adobe"))
    assert h.adobe_transform == {"cmyk": 0, "ycck": 2, "rgb-adobe": 0}.get(case, -1)
    fh = frame_header(data)
    for c, (cid, hs, vs, tq) in zip(h.components, fh.components):
        assert (c.id, c.h_samp, c.v_samp, c.quant_tbl_no) == (cid, hs, vs, tq)
        assert c.width == math.ceil(h.width * c.h_samp / h.max_h_samp)
        assert c.height == math.ceil(h.height * c.v_samp / h.max_v_samp)
        assert (c.width_in_blocks, c.height_in_blocks) == (math.ceil(c.width / 8), math.ceil(c.height / 8))


def test_four_components_for_cmyk_and_ycck():
    for case in ("cmyk", "ycck"):
        r = jpegfreq.read_coefficients(make_jpeg(case))
        assert r.header.num_components == 4 and len(r.coefficients) == 4 and len(r.quant) == 4


#: the colour spaces libjpeg reads, per valid factory case, and which take the spatial path
SPATIAL_ROUTE = {"cmyk": "CMYK", "ycck": "YCCK", "rgb-adobe": "RGB"}


@pytest.mark.parametrize("case", CASES)
def test_spatial_reason_is_the_c_routing_decision(case):
    """read_header says which path a file takes: None for YCbCr/gray, else why not."""
    data = make_jpeg(case)
    h = jpegfreq.read_header(data)
    raw = jpegfreq._jpegfreq.read_header(data)
    assert raw["spatial_reason"] == h.spatial_reason
    if case in SPATIAL_ROUTE:
        assert h.color_space == SPATIAL_ROUTE[case]
        assert h.spatial_reason == (f"{SPATIAL_ROUTE[case]} JPEG: colour cannot be mapped "
                                    "linearly to YCbCr")
    else:
        assert h.color_space in ("YCbCr", "GRAY")
        assert h.spatial_reason is None


def test_non_integral_sampling_is_unsupported_not_rerouted():
    """Luma 2x2 under a 2x3 maximum: no decoder here can upsample it, so it is no spatial
    route; the cube refuses it as unsupported, naming the ratio."""
    data = bytearray(make_jpeg("baseline-420"))
    sof = data.index(b"\xff\xc0")
    assert data[sof + 11] == 0x22 and data[sof + 14] == 0x11
    data[sof + 14] = 0x13                  # Cb 1x3: max_v becomes 3
    data = bytes(data)
    h = jpegfreq.read_header(data)
    assert h.spatial_reason is None and h.max_v_samp == 3
    with pytest.raises(jpegfreq.JpegError, match="non-integral chroma sampling ratio") as info:
        jpegfreq.cube(data, size=64)
    assert info.value.kind == "unsupported"


# -- coefficients ----------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_coefficient_shapes_and_quant_tables(case):
    data = make_jpeg(case)
    r = jpegfreq.read_coefficients(data)
    assert r.warnings == []
    assert r.freqs is None
    assert r.sampling == list(_sampling(case))
    tables = _dqt_tables(data)
    for c, coefs, quant in zip(r.header.components, r.coefficients, r.quant):
        assert coefs.dtype == np.int16 and coefs.flags.c_contiguous
        assert coefs.shape == (math.ceil(c.height / 8), math.ceil(c.width / 8), 64)
        assert quant.dtype == np.uint16 and quant.shape == (64,)
        assert np.array_equal(quant, tables[c.quant_tbl_no])
    # DC of a flat-ish photo is not all zero; the reader really decoded something.
    assert np.any(r.coefficients[0][..., 0] != 0)


@pytest.mark.parametrize("case", RECONSTRUCTED)
def test_idct_and_fancy_upsampling_reconstruct_pillows_decode(case):
    data = make_jpeg(case)
    ref = np.asarray(Image.open(io.BytesIO(data)), np.float64)
    ref = ref[..., None] if ref.ndim == 2 else ref
    got = reconstruct_rgb(data)
    assert got.shape == ref.shape
    mad = np.abs(got - ref).mean(axis=(0, 1))
    # Pillow rounds to 8 bits after an integer IDCT: about 0.25 (gray) to 0.6 per channel.
    assert np.all(mad < 1.0), f"{case}: mean abs difference per channel {mad}"


@pytest.mark.parametrize("case", ["baseline-420", "baseline-444", "progressive-420", "gray"])
def test_freqs_gives_dequantized_selection(case):
    data = make_jpeg(case)
    full = jpegfreq.read_coefficients(data)
    freqs = [0, 1, 8, 9, 27, 63]
    sel = jpegfreq.read_coefficients(data, freqs=freqs)
    assert sel.freqs == tuple(freqs)
    assert sel.header == full.header
    for i, (coefs, quant) in enumerate(zip(full.coefficients, full.quant)):
        bh, bw, _ = coefs.shape
        got = sel.coefficients[i]
        assert got.dtype == np.float32 and got.shape == (bh, bw, len(freqs))
        want = coefs[..., freqs].astype(np.float32) * quant[freqs].astype(np.float32)
        assert np.array_equal(got, want)
        assert np.array_equal(full.dequantized(i)[..., freqs], want)
    with pytest.raises(ValueError, match="already dequantized"):
        sel.dequantized(0)


@pytest.mark.parametrize("freqs, match", [([64], "out of range"), ([-1], "out of range"),
                                          ([], "1 to 64")], ids=["64", "minus-1", "empty"])
def test_freqs_validation(freqs, match):
    with pytest.raises(ValueError, match=match):
        jpegfreq.read_coefficients(make_jpeg("baseline-420"), freqs=freqs)


@pytest.mark.parametrize("case", ["baseline-420", "odd-size", "progressive-420", "restart-420",
                                  "tiny-17x9", "gray"])
def test_equals_jpeg2dct(case):
    """jpeg2dct (libjpeg's coefficient reader, dequantized int16) agrees exactly."""
    loads = pytest.importorskip("jpeg2dct.numpy").loads
    data = make_jpeg(case)
    theirs = loads(data)
    ours = jpegfreq.read_coefficients(data)
    for i in range(ours.header.num_components):  # jpeg2dct pads grayscale with chroma planes
        assert theirs[i].shape == ours.coefficients[i].shape
        assert np.array_equal(theirs[i].astype(np.float32), ours.dequantized(i))


# -- sources ---------------------------------------------------------------------

def test_path_bytes_bytearray_memoryview_numpy_agree(tmp_path):
    data = make_jpeg("baseline-422")
    path = tmp_path / "a file with 'single' and \"double\" quotes.jpg"
    path.write_bytes(data)
    ref = jpegfreq.read_coefficients(data)
    for src in (path, str(path), bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        _same_read(jpegfreq.read_coefficients(src), ref)
        assert jpegfreq.read_header(src) == ref.header
    sel = [jpegfreq.read_coefficients(s, freqs=[0, 9]).coefficients for s in (path, memoryview(data))]
    assert all(np.array_equal(a, b) for a, b in zip(*sel))


def test_errors_name_the_path_with_quotes_and_spaces(tmp_path):
    path = tmp_path / "it's a \"bad\" file.jpg"
    path.write_bytes(b"not a jpeg at all")
    with pytest.raises(jpegfreq.JpegError) as info:
        jpegfreq.read_coefficients(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: not a JPEG file")
    missing = tmp_path / "no such 'file'.jpg"
    with pytest.raises(jpegfreq.JpegError, match="No such file") as info:
        jpegfreq.read_header(missing)
    assert info.value.kind == "io" and info.value.source == str(missing)


def test_directory_is_an_io_error(tmp_path):
    """Regression: fopen succeeds on a directory; ftell then gave a huge size (MemoryError)."""
    with pytest.raises(jpegfreq.JpegError) as info:
        jpegfreq.read_coefficients(tmp_path)
    assert info.value.kind == "io" and "is a directory" in info.value.reason


def test_non_regular_files_and_unreadable_files_are_io_errors(tmp_path):
    import os
    with pytest.raises(jpegfreq.JpegError) as info:
        jpegfreq.read_header("/dev/zero")   # endless: refused before reading
    assert info.value.kind == "io" and "not a regular file" in info.value.reason
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # keeps open() from blocking on the fifo
    try:
        with pytest.raises(jpegfreq.JpegError, match="not a regular file"):
            jpegfreq.read_coefficients(str(fifo))
    finally:
        os.close(fd)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(jpegfreq.JpegError, match="empty input"):
        jpegfreq.cube(empty)


def test_non_bytes_source_is_a_type_error():
    with pytest.raises(TypeError):
        jpegfreq.read_header(12)


# -- errors and warnings ---------------------------------------------------------

@pytest.mark.parametrize("case, word", [("12bit", "12-bit"), ("lossless", "lossless")])
def test_unsupported_precision_and_lossless(case, word):
    assert case in UNSUPPORTED_CASES
    data = make_jpeg(case)
    for call in (jpegfreq.read_header, jpegfreq.read_coefficients,
                 lambda d: jpegfreq.cube(d, size=64),
                 lambda d: jpegfreq.cube(d, size=64, source="spatial")):
        with pytest.raises(jpegfreq.JpegError, match=word) as info:
            call(data)
        assert info.value.kind == "unsupported"
        assert info.value.source == f"<bytes: {len(data)}>"


@pytest.mark.parametrize("data, reason", [(b"", "empty input"), (b"GIF89a" + b"\0" * 64, "not a JPEG file"),
                                          (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "PNG data")],
                         ids=["empty", "gif", "png"])
def test_non_jpeg_names_the_source(data, reason):
    for src in (data, bytearray(data)):
        with pytest.raises(jpegfreq.JpegError) as info:
            jpegfreq.read_coefficients(src)
        assert str(info.value) == f"<bytes: {len(data)}>: {info.value.reason}"
        assert reason in info.value.reason
        assert isinstance(info.value, ValueError)


def test_jpeg_error_pickles():
    with pytest.raises(jpegfreq.JpegError) as info:
        jpegfreq.read_header(b"")
    back = pickle.loads(pickle.dumps(info.value))
    assert (back.source, back.reason, back.kind, str(back)) == (
        info.value.source, info.value.reason, info.value.kind, str(info.value))


def test_strict_turns_premature_end_into_an_error():
    data = make_jpeg("baseline-420")
    cut = data[:len(data) // 2]
    r = jpegfreq.read_coefficients(cut)
    assert any("Premature end" in w for w in r.warnings)
    whole = jpegfreq.read_coefficients(data)
    assert [a.shape for a in r.coefficients] == [a.shape for a in whole.coefficients]
    with pytest.raises(jpegfreq.JpegError, match="Premature end") as info:
        jpegfreq.read_coefficients(cut, strict=True)
    assert info.value.source == f"<bytes: {len(cut)}>"
    # The decoded first half agrees with the intact file's (the top block rows).
    assert np.array_equal(r.coefficients[0][:2], whole.coefficients[0][:2])
    # cube follows the same rule.
    out = []
    jpegfreq.cube(cut, size=64, warnings_out=out)
    assert any("Premature end" in w for w in out)
    with pytest.raises(jpegfreq.JpegError, match="Premature end"):
        jpegfreq.cube(cut, size=64, strict=True)


DAMAGED = [(case, name, blob) for case in ("baseline-420", "progressive-420", "arithmetic-420")
           for name, blob in damaged(make_jpeg(case), seed=1)]


@pytest.mark.parametrize("case, name, blob", DAMAGED, ids=[f"{c}/{n}" for c, n, _ in DAMAGED])
def test_damaged_inputs_fail_or_warn_and_stay_off_stderr(case, name, blob, captured_stderr):
    outcome = DAMAGE_OUTCOME[name]
    with captured_stderr() as err:
        try:
            r = jpegfreq.read_coefficients(blob)
        except jpegfreq.JpegError as e:
            r = None
            # a cut before any entropy-coded data has nothing to give (decoded share 0)
            assert outcome != "warn" or e.reason.startswith("truncated before any image data"), \
                f"{name}: {e}"
            assert e.source == f"<bytes: {len(blob)}>"
        else:
            assert outcome != "fail", f"{name} decoded"
            assert [a.shape[:2] for a in r.coefficients] == [
                (c.height_in_blocks, c.width_in_blocks) for c in r.header.components]
        if r is not None:
            if r.warnings:
                with pytest.raises(jpegfreq.JpegError, match=re.escape(r.warnings[0])):
                    jpegfreq.read_coefficients(blob, strict=True)
            else:
                _same_read(jpegfreq.read_coefficients(blob, strict=True), r)
        for call in (jpegfreq.read_header, lambda d: jpegfreq.cube(d, size=64)):
            try:
                call(blob)
            except jpegfreq.JpegError:
                pass
    assert err[0] == b"", f"libjpeg wrote to stderr: {err[0][:200]!r}"


# -- pixel limit ------------------------------------------------------------------

def _with_size(data, width, height):
    off = next(o for o, m, _ in markers(data) if m in SOF_MARKERS)
    return data[:off + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[off + 9:]


def test_pixel_limit_per_call():
    data = make_jpeg("baseline-420")  # 128 x 96 = 12288 pixels
    assert jpegfreq.read_coefficients(data, max_pixels=12288).header.width == 128
    for call in (jpegfreq.read_header, jpegfreq.read_coefficients,
                 lambda d, max_pixels: jpegfreq.cube(d, size=64, max_pixels=max_pixels),
                 lambda d, max_pixels: jpegfreq.cube(d, size=64, source="spatial", max_pixels=max_pixels)):
        with pytest.raises(jpegfreq.JpegError, match="12288 pixels exceeds the pixel limit of 12287") as info:
            call(data, max_pixels=12287)
        assert info.value.kind == "limit"
    assert jpegfreq.read_coefficients(data, max_pixels=0).header.width == 128  # 0: no limit


def test_pixel_limit_refuses_before_allocating():
    """A 60000 x 60000 header: allocating first would need ~0.7 TB and fail with MemoryError."""
    bomb = _with_size(make_jpeg("baseline-420"), 60000, 60000)
    assert jpegfreq.DEFAULT_MAX_PIXELS == 178_956_970
    for call in (jpegfreq.read_header, jpegfreq.read_coefficients, jpegfreq.cube,
                 lambda d: jpegfreq.cube(d, source="spatial")):
        with pytest.raises(jpegfreq.JpegError, match="3600000000 pixels exceeds") as info:
            call(bomb)
        assert info.value.kind == "limit"


def test_global_pixel_limit(pixel_limit):
    data = make_jpeg("baseline-420")
    jpegfreq.set_max_pixels(1000)
    assert jpegfreq.get_max_pixels() == 1000
    with pytest.raises(jpegfreq.JpegError, match="pixel limit of 1000"):
        jpegfreq.read_coefficients(data)
    assert jpegfreq.read_coefficients(data, max_pixels=0).header.height == 96  # per call wins
    jpegfreq.set_max_pixels(None)
    assert jpegfreq.get_max_pixels() == 0
    assert jpegfreq.read_coefficients(data).header.height == 96


# -- build facts, threads, memory ----------------------------------------------------

def test_build_facts():
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", jpegfreq.libjpeg_version)
    assert jpegfreq.libjpeg_turbo is True
    assert isinstance(jpegfreq.arithmetic_decoding, bool)
    if jpegfreq.arithmetic_decoding:
        assert jpegfreq.read_coefficients(make_jpeg("arithmetic-420")).header.arithmetic


def test_threads_give_the_serial_results():
    blobs = [make_jpeg(c, 256, 192, seed=s) for s in range(2)
             for c in ("baseline-420", "progressive-444", "arithmetic-420", "gray")]
    serial = [jpegfreq.read_coefficients(b) for b in blobs]
    results = {}
    barrier = threading.Barrier(4)

    def work(t):
        barrier.wait()
        results[t] = [jpegfreq.read_coefficients(b) for _ in range(3) for b in blobs]

    run_in_threads(work, 4)
    for t in range(4):
        assert len(results[t]) == 3 * len(blobs)
        for got, ref in zip(results[t], serial * 3):
            _same_read(got, ref)


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_repeated_reads_do_not_leak():
    data = make_jpeg("baseline-420", 256, 192)
    bad = data[:len(data) // 2]
    for _ in range(50):  # warm up allocator pools
        jpegfreq.read_coefficients(data)
    before = _rss_bytes()
    for _ in range(1500):
        jpegfreq.read_coefficients(data)
        jpegfreq.read_coefficients(bad)
        try:
            jpegfreq.read_coefficients(bad, strict=True)
        except jpegfreq.JpegError:
            pass
    grown = _rss_bytes() - before
    assert grown < 8 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 4500 reads"


def test_the_extension_stub_names_everything_the_module_has():
    """jpegfreq/_jpegfreq.pyi declares every public function, constant and exception."""
    import ast
    stub = os.path.join(os.path.dirname(jpegfreq.__file__), "_jpegfreq.pyi")
    tree = ast.parse(open(stub).read())
    declared = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    declared |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
    public = {n for n in dir(jpegfreq._jpegfreq) if not n.startswith("_")}
    assert public <= declared, f"missing from the stub: {sorted(public - declared)}"
    helpers = {"Source", "ComponentDict", "HeaderDict"}
    assert declared - helpers <= public, f"stub names what the module lacks: {sorted(declared - public - helpers)}"
    header = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "HeaderDict")
    keys = {n.target.id for n in header.body if isinstance(n, ast.AnnAssign)}
    assert keys == set(jpegfreq._jpegfreq.read_header(make_jpeg("baseline-420")))
