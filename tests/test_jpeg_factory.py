"""The test-JPEG factory makes what its case names say: SOF type, sampling, markers, colour."""
import io
import subprocess

import numpy as np
import pytest
from PIL import Image

import jpeg_factory as F
from jpeg_factory import CASES, DAMAGE_OUTCOME, damaged, frame_header, make_jpeg, markers, photo

S420 = ((2, 2), (1, 1), (1, 1))

# What each case name promises, written out independently of the factory's recipes.
EXPECTED_SAMPLING = {
    "baseline-444": ((1, 1), (1, 1), (1, 1)),
    "baseline-422": ((2, 1), (1, 1), (1, 1)),
    "baseline-420": S420,
    "progressive-420": S420,
    "progressive-444": ((1, 1), (1, 1), (1, 1)),
    "restart-420": S420,
    "arithmetic-420": S420,
    "arithmetic-progressive": S420,
    "sample-411": ((4, 1), (1, 1), (1, 1)),
    "sample-440": ((1, 2), (1, 1), (1, 1)),
    "sample-all-2x1": ((2, 1), (2, 1), (2, 1)),
    "sample-2x2-1x2-2x1": ((2, 2), (1, 2), (2, 1)),
    "gray": ((1, 1),),
    "gray-progressive": ((1, 1),),
    "cmyk": ((1, 1),) * 4,
    "ycck": ((1, 1),) * 4,
    "rgb-adobe": ((1, 1),) * 3,
    "odd-size": S420,
    "tiny-1x1": S420,
    "tiny-8x8": S420,
    "tiny-17x9": S420,
    "quality-100": S420,
    "quality-10": S420,
    **{f"exif-orientation-{n}": S420 for n in range(1, 9)},
}
EXPECTED_SOF = {
    "progressive-420": 0xFFC2, "progressive-444": 0xFFC2, "gray-progressive": 0xFFC2,
    "arithmetic-420": 0xFFC9, "arithmetic-progressive": 0xFFCA,
}  # everything else: baseline SOF0
EXPECTED_SIZE = {"odd-size": (333, 217), "tiny-1x1": (1, 1), "tiny-8x8": (8, 8), "tiny-17x9": (17, 9)}
EXPECTED_MODE = {"gray": "L", "gray-progressive": "L", "cmyk": "CMYK", "ycck": "CMYK"}
# Mean absolute pixel error of the decode against the source photo.
ERROR_BOUND = {"quality-10": 12, "tiny-8x8": 15, "tiny-17x9": 15}


def _decode(data):
    im = Image.open(io.BytesIO(data), formats=["JPEG"])
    im.load()
    return im


def test_case_list_is_complete():
    assert set(CASES) == set(EXPECTED_SAMPLING)
    assert F.UNSUPPORTED_CASES == ["12bit", "lossless"]
    assert F.ALL_CASES == CASES + F.UNSUPPORTED_CASES


@pytest.mark.parametrize("case", CASES)
def test_case_decodes_to_the_photo(case):
    data = make_jpeg(case)
    im = _decode(data)
    mode = EXPECTED_MODE.get(case, "RGB")
    assert im.mode == mode
    assert im.size == EXPECTED_SIZE.get(case, F.DEFAULT_SIZE)
    ref = photo(*im.size, seed=0, mode=mode)
    err = np.abs(np.asarray(im, np.float64) - np.asarray(ref, np.float64)).mean()
    assert err < ERROR_BOUND.get(case, 5), f"{case}: mean abs error {err:.2f}"


@pytest.mark.parametrize("case", CASES)
def test_case_frame_header(case):
    data = make_jpeg(case)
    fh = frame_header(data)
    assert fh.marker == EXPECTED_SOF.get(case, 0xFFC0)
    assert fh.precision == 8
    assert (fh.width, fh.height) == EXPECTED_SIZE.get(case, F.DEFAULT_SIZE)
    assert tuple((h, v) for _, h, v, _ in fh.components) == EXPECTED_SAMPLING[case]


@pytest.mark.parametrize("case", CASES)
def test_case_marker_walk(case):
    data = make_jpeg(case)
    entries = markers(data)
    assert entries[0] == (0, F.SOI, 0)
    assert entries[-1] == (len(data) - 2, F.EOI, 0)
    offsets = [o for o, _, _ in entries]
    assert offsets == sorted(set(offsets))
    # Segments before the first scan tile the header exactly.
    first_sos = next(i for i, e in enumerate(entries) if e[1] == F.SOS)
    for (o, _, length), (o_next, _, _) in zip(entries[1:first_sos], entries[2:first_sos + 1]):
        assert o + 2 + length == o_next
    n_scans = sum(1 for e in entries if e[1] == F.SOS)
    progressive = EXPECTED_SOF.get(case, 0xFFC0) in (0xFFC2, 0xFFCA)
    assert (n_scans > 1) == progressive


def test_restart_interval():
    data = make_jpeg("restart-420")
    entries = markers(data)
    dri = [e for e in entries if e[1] == F.DRI]
    assert len(dri) == 1
    off = dri[0][0]
    assert int.from_bytes(data[off + 4:off + 6], "big") == 5
    # 128x96 at 4:2:0 is 8x6 = 48 MCUs: intervals of 5 give 9 RSTn markers, cycling D0..D7.
    rst = [m for _, m, _ in entries if 0xFFD0 <= m <= 0xFFD7]
    assert rst == [0xFFD0 + i % 8 for i in range(9)]
    assert not any(e[1] == F.DRI for e in markers(make_jpeg("baseline-420")))


@pytest.mark.parametrize("n", range(1, 9))
def test_exif_orientation(n):
    data = make_jpeg(f"exif-orientation-{n}")
    im = Image.open(io.BytesIO(data))
    assert im.getexif()[0x0112] == n
    app1 = [(o, length) for o, m, length in markers(data) if m == F.APP1]
    assert any(data[o + 4:o + 10] == b"Exif\0\0" for o, _ in app1)
    assert 0x0112 not in Image.open(io.BytesIO(make_jpeg("baseline-420"))).getexif()


def _adobe_transform(data):
    for o, m, length in markers(data):
        if m == F.APP14 and data[o + 4:o + 9] == b"Adobe":
            return data[o + 15]
    return None


def test_rgb_adobe_stores_rgb():
    data = make_jpeg("rgb-adobe")
    assert [c[0] for c in frame_header(data).components] == [ord("R"), ord("G"), ord("B")]
    assert _adobe_transform(data) == 0
    assert _decode(data).info["adobe_transform"] == 0
    assert _adobe_transform(make_jpeg("baseline-420")) is None


def test_cmyk_and_ycck_colour_transforms():
    cmyk, ycck = make_jpeg("cmyk"), make_jpeg("ycck")
    assert _adobe_transform(cmyk) == 0
    assert _adobe_transform(ycck) == 2
    assert _decode(ycck).info["adobe_transform"] == 2
    trace = subprocess.run(["djpeg", "-verbose", "-verbose"], input=ycck, capture_output=True).stderr
    assert b"transform 2" in trace
    # The planes really are YCC: decoding them as plain CMYK gives something else.
    ref = np.asarray(photo(*F.DEFAULT_SIZE, mode="CMYK"), np.float64)
    as_ycck = np.asarray(_decode(ycck), np.float64)
    relabelled = bytearray(ycck)
    relabelled[relabelled.index(b"Adobe") + 11] = 0
    as_cmyk = np.asarray(_decode(bytes(relabelled)), np.float64)
    assert np.abs(as_ycck - ref).mean() < 5
    assert np.abs(as_cmyk - ref).mean() > 20


def test_quality_cases():
    sizes = {c: len(make_jpeg(c)) for c in ("quality-10", "baseline-420", "quality-100")}
    assert sizes["quality-10"] < sizes["baseline-420"] < sizes["quality-100"]
    data = make_jpeg("quality-100")
    off = next(o for o, m, _ in markers(data) if m == F.DQT)
    assert set(data[off + 5:off + 5 + 64]) == {1}


def test_12bit_is_refused():
    data = make_jpeg("12bit")
    fh = frame_header(data)
    assert (fh.marker, fh.precision) == (0xFFC1, 12)
    with pytest.raises(Exception):
        _decode(data)
    proc = subprocess.run(["djpeg"], input=data, capture_output=True)
    assert proc.returncode != 0 and b"precision 12" in proc.stderr


def test_lossless_is_refused():
    data = make_jpeg("lossless")
    assert frame_header(data).marker == 0xFFC3
    with pytest.raises(Exception):
        _decode(data)
    proc = subprocess.run(["djpeg"], input=data, capture_output=True)
    assert proc.returncode != 0 and b"0xc3" in proc.stderr.lower()


# -- arguments, determinism ----------------------------------------------------

def test_size_and_seed_arguments():
    data = make_jpeg("sample-411", width=100, height=50, quality=70, seed=3)
    assert _decode(data).size == (100, 50)
    assert make_jpeg("odd-size", width=40, height=30) != make_jpeg("odd-size")
    assert make_jpeg("baseline-420", seed=1) != make_jpeg("baseline-420", seed=0)


def test_deterministic():
    uncached = F._make.__wrapped__
    for case in ("baseline-420", "arithmetic-420", "ycck", "12bit"):
        assert uncached(case, 64, 48, 85, 7) == uncached(case, 64, 48, 85, 7)
    a = np.asarray(photo(50, 40, seed=5))
    assert np.array_equal(a, np.asarray(photo(50, 40, seed=5)))
    assert not np.array_equal(a, np.asarray(photo(50, 40, seed=6)))


def test_photo_has_realistic_spectrum():
    y = np.asarray(photo(128, 96, seed=0, mode="L"), np.float64)
    blocks = y.reshape(12, 8, 16, 8).transpose(0, 2, 1, 3)
    # Within-block detail exists everywhere, but most energy is in the block means.
    detail = blocks - blocks.mean(axis=(2, 3), keepdims=True)
    assert (detail.std(axis=(2, 3)) > 1).all()
    assert detail.var() < 0.2 * y.var()


def test_argument_errors():
    with pytest.raises(ValueError, match="unknown JPEG test case 'nope'"):
        make_jpeg("nope")
    with pytest.raises(ValueError, match="fixed at 8x8"):
        make_jpeg("tiny-8x8", width=16)
    with pytest.raises(ValueError, match="fixed at quality 10"):
        make_jpeg("quality-10", quality=50)
    with pytest.raises(ValueError, match="mode"):
        photo(8, 8, mode="HSV")


def test_missing_tools_name_the_package(monkeypatch):
    monkeypatch.setattr(F.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="libjpeg-turbo-progs"):
        F.cjpeg(b"P6\n1 1\n255\n\0\0\0")


def test_tool_helpers():
    flipped = F.jpegtran(make_jpeg("baseline-444"), "-flip", "horizontal")
    ppm = F.djpeg(flipped)
    assert Image.open(io.BytesIO(ppm)).size == F.DEFAULT_SIZE
    with pytest.raises(RuntimeError, match="djpeg"):
        F.djpeg(b"not a jpeg")


def test_markers_rejects_non_jpeg():
    with pytest.raises(ValueError, match="no SOI"):
        markers(b"\x89PNG\r\n")
    with pytest.raises(ValueError, match="truncated"):
        markers(make_jpeg("baseline-420")[:-2])


# -- damaged inputs ------------------------------------------------------------

def test_damaged_ids_and_determinism():
    data = make_jpeg("baseline-420")
    items = damaged(data, seed=0)
    ids = [i for i, _ in items]
    assert ids == list(DAMAGE_OUTCOME)
    assert all(isinstance(b, bytes) for _, b in items)
    assert items == damaged(data, seed=0)
    again = dict(damaged(data, seed=1))
    first = dict(items)
    assert again["bitflip-entropy-10"] != first["bitflip-entropy-10"]
    assert first["empty"] == b"" and first["png"].startswith(b"\x89PNG")
    assert first["truncated-after-soi"] == b"\xff\xd8"
    assert first["missing-eoi"] == data[:-2]
    assert frame_header(first["huge-dimensions"])[2:4] == (65535, 65535)
    # Arithmetic-coded input has no DHT, so the Huffman faults are left out.
    arith_ids = [i for i, _ in damaged(make_jpeg("arithmetic-420"))]
    assert arith_ids == [i for i in DAMAGE_OUTCOME if not i.startswith("bogus-dht")]


def test_entropy_bitflips_keep_the_marker_structure():
    data = make_jpeg("restart-420")
    items = dict(damaged(data, seed=4))
    expected = [m for _, m, _ in markers(data)]
    for count in (1, 10, 100):
        flipped = items[f"bitflip-entropy-{count}"]
        assert flipped != data and len(flipped) == len(data)
        assert [m for _, m, _ in markers(flipped)] == expected


@pytest.mark.parametrize("case", ["baseline-420", "progressive-420", "restart-420", "arithmetic-progressive",
                                  "gray", "cmyk", "sample-2x2-1x2-2x1", "tiny-1x1"])
@pytest.mark.parametrize("seed", [0, 1])
def test_damage_outcomes_match_libjpeg(case, seed):
    for id_, data in damaged(make_jpeg(case), seed):
        proc = subprocess.run(["djpeg"], input=data, capture_output=True)
        expected = DAMAGE_OUTCOME[id_]
        if expected == "fail":  # djpeg exits 1 on an error
            assert proc.returncode == 1, f"{id_}: {proc.stderr!r}"
        elif expected == "warn":  # 0 clean, 2 warnings, an image either way
            assert proc.returncode in (0, 2) and proc.stdout, f"{id_}: {proc.stderr!r}"
        # Pillow's JPEG decoder must raise or decode, never crash; for "fail" it must raise.
        try:
            _decode(data)
            decoded = True
        except Exception:
            decoded = False
        assert not (expected == "fail" and decoded), id_
