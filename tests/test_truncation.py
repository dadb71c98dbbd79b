"""The decoded share: how much of what a read uses was really in the file.

A file cut inside its entropy-coded data decodes as far as it goes; every read says
which share of the MCU rows it reads was decoded (Coefficients.decoded,
cube(..., info={})), adds "truncated: N% ..." to its warnings, raises JpegError when
nothing was decoded, and strict=True refuses it.
"""
import warnings

import numpy as np
import pytest
from jpeg_factory import SOS, make_jpeg, markers

import jpegfreq
from jpegfreq import Geometry
from jpegfreq.reader import decoded_share, stored_rows

W, H = 256, 192          # 4:2:0: 12 MCU rows of 16 pixels


def _first_scan_data(data):
    off, _, length = next(m for m in markers(data) if m[1] == SOS)
    return off + 2 + length


@pytest.fixture(scope="module")
def baseline():
    return make_jpeg("baseline-420", W, H)


def _call(src, source, **kw):
    info, warns = {}, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = jpegfreq.cube(src, "6S", size=64, source=source, info=info, warnings_out=warns, **kw)
    return x, info, warns


@pytest.mark.parametrize("source", ["jpeg-coeffs", "spatial", "rgb"])
def test_cut_after_the_headers_is_an_error_naming_where(baseline, source):
    start = _first_scan_data(baseline)
    cut = baseline[:start]
    with pytest.raises(jpegfreq.JpegError) as e:
        _call(cut, source)
    assert e.value.reason.startswith("truncated before any image data")
    assert f"at byte {start} of {start}" in e.value.reason
    assert str(e.value).startswith(f"<bytes: {start}>: ")


def test_read_coefficients_of_a_cut_after_the_headers(baseline):
    cut = baseline[:_first_scan_data(baseline) + 3]
    with pytest.raises(jpegfreq.JpegError, match="truncated before any image data"):
        jpegfreq.read_coefficients(cut)


@pytest.mark.parametrize("source", ["jpeg-coeffs", "spatial", "rgb"])
def test_cut_inside_the_data_reports_the_share(baseline, source):
    start = _first_scan_data(baseline)
    shares = []
    for frac in (0.2, 0.5, 0.8):
        cut = baseline[:start + int((len(baseline) - start) * frac)]
        x, info, warns = _call(cut, source)
        assert np.isfinite(x).all()
        d = info["decoded"]
        assert 0.0 < d < 1.0, (frac, d)
        assert info["warnings"] == warns
        assert "Premature end of JPEG file" in warns          # libjpeg's text is kept
        assert f"truncated: {int(d * 100)}% of the rows the cube reads were decoded" in warns
        shares.append(d)
        with pytest.raises(jpegfreq.JpegError, match="strict mode"):
            _call(cut, source, strict=True)
    assert shares == sorted(shares) and shares[0] < shares[-1]


def test_the_three_sources_agree_on_the_share(baseline):
    start = _first_scan_data(baseline)
    cut = baseline[:start + (len(baseline) - start) // 2]
    got = {s: _call(cut, s)[1]["decoded"] for s in ("jpeg-coeffs", "spatial", "rgb")}
    # the same crop box: the same MCU rows, up to the pixel paths' row rounding
    assert max(got.values()) - min(got.values()) <= 1 / 12 + 1e-9, got


def test_share_matches_the_rows_that_hold_data(baseline):
    """The rows counted as decoded equal the intact file's rows; the next one differs."""
    start = _first_scan_data(baseline)
    cut = baseline[:start + (len(baseline) - start) // 2]
    whole = jpegfreq.read_coefficients(baseline).coefficients[0]
    part = jpegfreq.read_coefficients(cut)
    rows = 12
    good = round(part.decoded * rows)
    assert part.decoded == good / rows
    y = part.coefficients[0]        # 2 block rows of luma per MCU row
    assert np.array_equal(y[:2 * good], whole[:2 * good])
    assert not np.array_equal(y[2 * good:2 * good + 2], whole[2 * good:2 * good + 2])


def test_intact_and_missing_eoi_files_are_whole(baseline):
    for data in (baseline, baseline[:-2]):
        x, info, warns = _call(data, "jpeg-coeffs")
        assert info["decoded"] == 1.0
        assert not any(w.startswith("truncated:") for w in warns)
        assert jpegfreq.read_coefficients(data).decoded == 1.0


def test_a_crop_below_the_cut_has_nothing_and_one_above_it_everything(baseline):
    start = _first_scan_data(baseline)
    cut = baseline[:start + (len(baseline) - start) // 2]
    top = Geometry(32, 64, (0, 0, 256, 48))          # MCU rows 0..2
    bottom = Geometry(32, 64, (0, 160, 256, 192))    # MCU rows 10..11
    for source in ("jpeg-coeffs", "spatial"):
        info = {}
        jpegfreq.cube(cut, "6S", geometry=top, source=source, info=info)
        assert info["decoded"] == 1.0, source
        with pytest.raises(jpegfreq.JpegError, match="truncated before any image data the cube "
                                                     "reads .*the rows read are"):
            jpegfreq.cube(cut, "6S", geometry=bottom, source=source)


@pytest.mark.parametrize("case", ["progressive-420", "arithmetic-420", "restart-420", "gray"])
def test_other_codings(case):
    data = make_jpeg(case, W, H)
    start = _first_scan_data(data)
    with pytest.raises(jpegfreq.JpegError, match="truncated before any image data"):
        jpegfreq.read_coefficients(data[:start])
    cut = data[:start + (len(data) - start) // 2]
    r = jpegfreq.read_coefficients(cut)
    assert 0.0 < r.decoded < 1.0, case
    assert any(w.startswith("truncated: ") for w in r.warnings)
    info = {}
    jpegfreq.cube(cut, "24S", size=64, info=info)
    assert 0.0 < info["decoded"] < 1.0


def test_progressive_counts_each_scan_that_began():
    data = make_jpeg("progressive-420", W, H)
    sos = [m for m in markers(data) if m[1] == SOS]
    # a cut just after the second scan's header: the first scan is whole, the second empty
    off, _, length = sos[1]
    r = jpegfreq.read_coefficients(data[:off + 2 + length])
    assert r.decoded == pytest.approx(0.5)
    assert any("scan 2 ran out" in w for w in r.warnings)
    # a cut between scans: every scan that began is whole
    r = jpegfreq.read_coefficients(data[:off])
    assert r.decoded == 1.0 and "Premature end of JPEG file" in r.warnings


def test_decoded_share_and_stored_rows():
    ext = (1, 3, 12, 0, 12, 600, 5000)
    assert decoded_share(ext) == 0.25
    assert decoded_share(ext, 2, 6) == 0.25
    assert decoded_share(ext, 4, 8) == 0.0
    assert decoded_share(ext, 0, 2) == 1.0
    assert decoded_share((0, 0, 12, 0, 12, 600, 5000)) == 1.0
    assert decoded_share((3, 6, 12, 0, 12, 600, 5000)) == pytest.approx((2 + 0.5) / 3)
    # stored rows of a displayed box: orientation 1, 3 (rows flipped), 6 (columns are rows)
    assert stored_rows((0, 0, 10, 32), 1, 100, 64, 16) == (0, 2)
    assert stored_rows((0, 0, 10, 16), 3, 100, 64, 16) == (3, 4)
    assert stored_rows((0, 0, 16, 100), 6, 100, 64, 16) == (3, 4)
    assert stored_rows((0, 0, 16, 100), 5, 100, 64, 16) == (0, 1)


def test_exif_orientation_maps_the_crop_to_stored_rows():
    data = make_jpeg("exif-orientation-6", W, H)
    hdr = jpegfreq.read_header(data)
    start = _first_scan_data(data)
    cut = data[:start + (len(data) - start) // 2]
    g = Geometry(64, 64, resize=73, exif=True)
    a, b = {}, {}
    jpegfreq.cube(cut, "6S", geometry=g, info=a)
    jpegfreq.cube(cut, "6S", geometry=g, source="spatial", info=b)
    assert hdr.orientation == 6
    assert 0.0 < a["decoded"] < 1.0
    assert abs(a["decoded"] - b["decoded"]) <= 1 / 12 + 1e-9
