"""jpegfreq.source.read_source: the one "bytes + header, or Pillow's facts" reader.

Guards: a damaged, unsupported or oversized JPEG being handed to Pillow instead of refused,
errors that do not name the file, the pixel limit skipped for non-JPEG images, the route
(compressed or spatial) decided anywhere but the C reader, and the pipeline re-reading or
renaming a Source it was given.
"""
import io
import os

import numpy as np
import pytest
from PIL import Image

import jpegfreq
from jpegfreq import JpegError
from jpegfreq.pipeline import decode_planes, rgb_image
from jpegfreq.source import Source, read_source

from jpeg_factory import damaged, make_jpeg, photo

pytestmark = pytest.mark.filterwarnings("ignore::jpegfreq.SpatialFallbackWarning")


def _png(width=40, height=24, orientation=None):
    buf = io.BytesIO()
    im = photo(width, height)
    if orientation is None:
        im.save(buf, "PNG")
    else:
        exif = Image.Exif()
        exif[274] = orientation
        im.save(buf, "PNG", exif=exif)
    return buf.getvalue()


def test_jpeg_path_bytes_and_header(tmp_path):
    data = make_jpeg("baseline-420")
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    for src, name in ((str(path), str(path)), (path, str(path)),
                      (data, f"<bytes: {len(data)}>"), (bytearray(data), f"<bytes: {len(data)}>"),
                      (memoryview(data), f"<bytes: {len(data)}>")):
        s = read_source(src)
        assert s.name == name and s.data == data
        assert s.header == jpegfreq.read_header(data)
        assert s.size == (s.header.width, s.header.height) and s.format == "JPEG"
        assert s.spatial_reason is None
    assert read_source(s) is s
    with pytest.raises(TypeError, match="path or a bytes-like"):
        read_source(12)


@pytest.mark.parametrize("case", ["cmyk", "ycck", "rgb-adobe"])
def test_route_is_the_c_readers(case):
    s = read_source(make_jpeg(case))
    assert s.spatial_reason is not None and s.spatial_reason == s.header.spatial_reason
    assert s.header.color_space in s.spatial_reason


def test_non_jpeg_facts_from_pillow():
    png = _png(40, 24, orientation=6)
    s = read_source(png)
    assert s.header is None and (s.format, s.mode, s.size) == ("PNG", "RGB", (40, 24))
    assert s.orientation == 6 and s.spatial_reason == "not a JPEG (PNG)"
    # the orientation Pillow reported is the one the pixel paths apply
    planes, _, (w, h) = decode_planes(png, exif=True)
    assert (w, h) == (24, 40) and planes[0].shape == (40, 24)
    assert read_source(_png()).orientation == 1


def test_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(JpegError, match="cannot read") as e:
        read_source(missing)
    assert e.value.source == str(missing) and e.value.kind == "io"

    bad = dict(damaged(make_jpeg("baseline-420")))
    for variant, kind in (("truncated-in-header", "jpeg"), ("huge-dimensions", None),
                          ("random-bytes", "jpeg"), ("empty", "jpeg")):
        path = tmp_path / f"{variant}.jpg"
        path.write_bytes(bad[variant])
        with pytest.raises(JpegError) as e:
            read_source(str(path))
        assert e.value.source == str(path) and str(e.value).startswith(f"{path}: ")
        if kind:
            assert e.value.kind == kind
    # not a JPEG and not an image: the JPEG reader's reason, and that Pillow could not either
    with pytest.raises(JpegError, match="cannot decode: not a JPEG file.*not an image Pillow"):
        read_source(b"hello, this is not an image" * 4)

    path = tmp_path / "deep.jpg"
    path.write_bytes(make_jpeg("12bit"))
    with pytest.raises(JpegError, match="12-bit") as e:
        read_source(str(path))
    assert e.value.source == str(path) and e.value.kind == "unsupported"


def test_damaged_jpegs_are_never_handed_to_pillow(tmp_path):
    """A JPEG whose header the reader refuses raises, even where Pillow would decode it."""
    data = make_jpeg("baseline-420")
    for variant, bytes_ in damaged(data):
        if bytes_[:2] != b"\xff\xd8":
            continue
        try:
            jpegfreq.read_header(bytes_)
        except JpegError as e:
            with pytest.raises(JpegError) as got:
                read_source(bytes_)
            assert got.value.reason == e.reason, variant
        else:
            assert read_source(bytes_).header is not None, variant


def test_pixel_limit_holds_for_every_format():
    jpeg, png = make_jpeg("baseline-420"), _png(40, 24)
    for data, fmt in ((jpeg, "JPEG"), (png, "PNG")):
        w, h = read_source(data).size
        with pytest.raises(JpegError, match="pixel limit") as e:
            read_source(data, max_pixels=w * h - 1)
        assert e.value.kind == "limit"
        assert read_source(data, max_pixels=w * h).size == (w, h)
        assert read_source(data, max_pixels=0).size == (w, h)
        for source in ("spatial", "rgb"):
            with pytest.raises(JpegError, match="pixel limit"):
                jpegfreq.cube(data, "24S", size=64, source=source, max_pixels=w * h - 1)


def test_pipeline_takes_a_source_and_names_its_file(tmp_path):
    path = tmp_path / "p.jpg"
    path.write_bytes(make_jpeg("baseline-420", 160, 120))
    s = read_source(str(path))
    for source in ("jpeg-coeffs", "spatial", "rgb"):
        size = 64
        assert np.array_equal(jpegfreq.cube(s, "24S", size=size, source=source),
                              jpegfreq.cube(str(path), "24S", size=size, source=source)), source
    png_path = tmp_path / "p.png"
    png_path.write_bytes(_png(64, 48))
    s = read_source(str(png_path))
    with pytest.raises(JpegError, match="not a JPEG") as e:
        jpegfreq.cube(s, "24S", size=64)                # the compressed path takes JPEGs only
    assert e.value.source == str(png_path)
    assert rgb_image(s).shape == (3, 224, 224)
    # a broken PNG: Pillow identifies it, the decode fails, the error names the file
    broken = tmp_path / "broken.png"
    broken.write_bytes(png_path.read_bytes()[:80])
    s = read_source(str(broken))
    assert isinstance(s, Source) and s.header is None
    with pytest.raises(JpegError, match="cannot decode") as e:
        jpegfreq.cube(s, "24S", size=64, source="spatial")
    assert e.value.source == str(broken)


def test_read_sources_is_read_source_for_each_path(tmp_path):
    """The loader's batched read gives what read_source gives (or raises) path by path:
    intact JPEGs, a PNG probed by Pillow, damaged JPEGs, junk, a missing path, a folder,
    a file name that is not UTF-8, and bytes among the paths."""
    from jpegfreq.source import read_sources
    bad = dict(damaged(make_jpeg("baseline-420")))
    files = {"a.jpg": make_jpeg("baseline-420"), "b.jpg": make_jpeg("exif-orientation-6"),
             "c.png": _png(40, 24, orientation=6), "cut.jpg": bad["truncated-in-header"],
             "junk.jpg": b"hello, this is not an image" * 4, "empty.jpg": b"",
             "deep.jpg": make_jpeg("12bit")}
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")   # Latin-1: not UTF-8
    with open(odd, "wb") as f:
        f.write(files["a.jpg"])
    paths += [os.fsdecode(odd), str(tmp_path / "missing.jpg"), str(tmp_path)]
    srcs = paths + [files["a.jpg"], b"\xff\xd8"]
    got = read_sources(srcs)
    assert len(got) == len(srcs)
    for src, g in zip(srcs, got):
        try:
            want = read_source(src)
        except JpegError as e:
            assert isinstance(g, JpegError), src
            assert (g.source, g.kind) == (e.source, e.kind), src
            if e.kind != "io":
                assert g.reason == e.reason, src
            continue
        assert isinstance(g, Source), src
        assert (g.name, bytes(g.data), g.header, g.size, g.orientation, g.format, g.mode) == \
            (want.name, bytes(want.data), want.header, want.size, want.orientation,
             want.format, want.mode), src
    kinds = [type(g).__name__ for g in got]
    assert kinds.count("Source") == 5      # a, b, the PNG, the odd name, the bytes
    assert got[-3].kind == "io" and "directory" in got[-3].reason
    # more paths than one C call takes: read in several
    many = read_sources(paths[:1] * 2500)
    assert len(many) == 2500 and all(m.header == got[0].header for m in many)
    # the pixel limit holds on the batched read too
    w, h = got[0].size
    lim = read_sources(paths[:1], max_pixels=w * h - 1)[0]
    assert isinstance(lim, JpegError) and lim.kind == "limit"


def test_read_files_refuses_bad_arguments(tmp_path):
    from jpegfreq import _jpegfreq
    with pytest.raises(TypeError):
        _jpegfreq.read_files([1])
    with pytest.raises(TypeError):
        _jpegfreq.read_files(5)
    with pytest.raises(ValueError, match="null"):
        _jpegfreq.read_files(["a\0b"])
    with pytest.raises(ValueError, match="at most 1024"):
        _jpegfreq.read_files([str(tmp_path)] * 1025)
    assert _jpegfreq.read_files([]) == []


def test_a_file_range_reads_as_the_bytes_it_holds(tmp_path):
    """A shard's member: bytes offset..offset+size of a file, read like the file itself."""
    from jpegfreq import _jpegfreq
    from jpegfreq.source import FileRange, read_sources
    jpeg = make_jpeg("baseline-420")
    path = tmp_path / "shard.bin"
    path.write_bytes(b"x" * 700 + jpeg + b"y" * 300)
    good = FileRange(str(path), 700, len(jpeg), "shard:0")
    past = FileRange(str(path), 700, len(jpeg) + 301, "shard:1")
    junk = FileRange(str(path), 0, 700, "shard:2")
    got = read_sources([good, past, junk, FileRange(str(tmp_path / "no"), 0, 1, "shard:3")])
    want = read_source(jpeg)
    assert isinstance(got[0], Source) and bytes(got[0].data) == jpeg
    assert (got[0].name, got[0].header) == ("shard:0", want.header)
    assert isinstance(got[1], JpegError) and got[1].kind == "io"
    assert got[1].source == "shard:1" and "cut short" in got[1].reason
    assert isinstance(got[2], JpegError) and got[2].source == "shard:2"
    assert isinstance(got[3], JpegError) and got[3].kind == "io"
    with pytest.raises(ValueError, match="non-negative"):
        _jpegfreq.read_files([(str(path), -1, 5)])
    with pytest.raises(TypeError):
        _jpegfreq.read_files([(str(path), 0)])
