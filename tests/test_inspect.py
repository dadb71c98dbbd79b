"""python -m jpegfreq.inspect: every kind of JPEG, damaged files, and its three outputs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import jpegfreq
from jpegfreq import ChannelSet, JpegError
from jpegfreq.inspect import inspect_image, main

from jpeg_factory import CASES, READER_OUTCOME, UNSUPPORTED_CASES, damaged, make_jpeg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPATIAL_CASES = {"cmyk", "ycck", "rgb-adobe"}
DAMAGE_BASES = ["baseline-420", "progressive-420", "arithmetic-420", "gray", "cmyk"]

pytestmark = pytest.mark.filterwarnings("ignore::jpegfreq.SpatialFallbackWarning")


def _write(tmp_path, name, data):
    path = tmp_path / f"{name}.jpg"
    path.write_bytes(data)
    return str(path)


def _run(capsys, argv):
    """main() in this process: (status, stdout, stderr); main must not raise."""
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def _run_module(argv):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "jpegfreq.inspect", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", CASES)
def test_every_case(tmp_path, capsys, case):
    path = _write(tmp_path, case, make_jpeg(case))
    status, out, err = _run(capsys, [path])
    assert status == 0, err
    hdr = jpegfreq.read_header(path)
    assert f"JPEG {hdr.width}x{hdr.height}" in out
    want = "spatial" if case in SPATIAL_CASES else "jpeg-coeffs"
    assert f"cube path    {want}:" in out
    assert "quantization table 0" in out
    names = {"GRAY": ["Y"], "CMYK": ["C", "M", "Y", "K"], "YCCK": ["Y", "Cb", "Cr", "K"],
             "RGB": ["R", "G", "B"]}.get(hdr.color_space, ["Y", "Cb", "Cr"])
    for name in names:
        assert f"\n{name}: " in out
    if case.startswith("exif-orientation-"):
        assert f"orientation  {case[-1]} (" in out
    if case == "restart-420":
        assert "restart      every 5 MCUs" in out
    if case.startswith("arithmetic"):
        assert "arithmetic" in out
    if case.startswith("progressive"):
        assert "progressive" in out


@pytest.mark.parametrize("case", UNSUPPORTED_CASES)
def test_unsupported_cases_exit_1_with_the_reason(tmp_path, capsys, case):
    path = _write(tmp_path, case, make_jpeg(case))
    status, out, err = _run(capsys, [path])
    assert status == 1 and out == ""
    assert err.startswith(f"inspect: {path}: ")
    assert {"12bit": "12-bit", "lossless": "lossless"}[case] in err


@pytest.mark.parametrize("base", DAMAGE_BASES)
def test_damaged_files(tmp_path, capsys, base):
    for name, data in damaged(make_jpeg(base)):
        path = _write(tmp_path, name, data)
        status, out, err = _run(capsys, [path])
        outcome = READER_OUTCOME[name]
        if name == "png":  # a valid image, not a JPEG: described from its pixels
            assert status == 0 and "spatial: not a JPEG (PNG)" in out
        elif outcome == "fail":
            assert status == 1, (name, out)
            assert err.startswith(f"inspect: {path}: ") and err.count("\n") == 1, (name, err)
        elif outcome == "warn":
            assert status == 0, (name, err)
            if name.startswith("truncated"):
                assert "warnings     libjpeg: Premature end of JPEG file" in out, name
        else:
            assert status in (0, 1)
        assert "Traceback" not in out + err


def test_damaged_via_python_m(tmp_path):
    bad = dict(damaged(make_jpeg("progressive-420")))
    cases = {"truncated-50pct": 0, "bitflip-entropy-10": 0, "random-bytes": 1, "empty": 1,
             "bogus-dqt-index": 1, "png": 0}
    for name, want in cases.items():
        path = _write(tmp_path, name, bad[name])
        proc = _run_module([path])
        assert proc.returncode == want, (name, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        if want:
            assert proc.stderr.startswith("inspect: ") and proc.stdout == ""
    proc = _run_module([_write(tmp_path, "ok", make_jpeg("gray-progressive")), "--json"])
    assert proc.returncode == 0 and json.loads(proc.stdout)["color_space"] == "GRAY"
    proc = _run_module([str(tmp_path / "does-not-exist.jpg")])
    assert proc.returncode == 1 and "cannot read" in proc.stderr


def test_json_report(tmp_path, capsys):
    path = _write(tmp_path, "a", make_jpeg("baseline-420", seed=3))
    status, out, _ = _run(capsys, [path, "--json", "--channels", "32S", "--size", "224"])
    assert status == 0
    r = json.loads(out)
    assert (r["width"], r["height"], r["precision"], r["subsampling"]) == (128, 96, 8, "4:2:0")
    assert r["cube_path"]["source"] == "jpeg-coeffs"
    assert r["cube"] == {"size": 224, "error": None, "shape": [32, 28, 28],
                         "bytes": 32 * 28 * 28 * 4}
    co = jpegfreq.read_coefficients(path)
    assert [c["blocks"] for c in r["components"]] == [[16, 12], [8, 6], [8, 6]]
    assert [[c["h_samp"], c["v_samp"]] for c in r["components"]] == [[2, 2], [1, 1], [1, 1]]
    assert r["quant_tables"]["0"] == co.quant[0].reshape(8, 8).tolist()
    cs = ChannelSet.parse("32S")
    for i, comp in enumerate(r["components"]):
        assert comp["selected"] == list(cs.per_component[i])
        deq = co.dequantized(i).reshape(-1, 64).astype(np.float64)
        st = comp["stats"]
        for key in ("mean_abs", "nonzero", "energy_share"):
            assert np.asarray(st[key]).shape == (8, 8)
        np.testing.assert_allclose(np.ravel(st["mean_abs"]), np.abs(deq).mean(0), rtol=1e-5)
        np.testing.assert_allclose(np.ravel(st["nonzero"]),
                                   (co.coefficients[i].reshape(-1, 64) != 0).mean(0), rtol=1e-5)
        energy = (deq ** 2).sum(0)
        np.testing.assert_allclose(np.ravel(st["energy_share"]), energy / energy.sum(),
                                   rtol=1e-5, atol=1e-9)
        assert comp["kept_energy_share"] == pytest.approx(
            energy[list(cs.per_component[i])].sum() / energy.sum(), rel=1e-5)


def test_json_error(tmp_path, capsys):
    path = _write(tmp_path, "empty", b"")
    status, out, _ = _run(capsys, [path, "--json"])
    assert status == 1
    r = json.loads(out)
    assert r["file"] == path and "empty input" in r["error"]


def test_png_montage(tmp_path, capsys):
    path = _write(tmp_path, "a", make_jpeg("baseline-420"))
    png = str(tmp_path / "m.png")
    status, out, _ = _run(capsys, [path, "--png", png])
    assert status == 0 and f"wrote montage to {png}" in out
    im = Image.open(png)
    assert im.format == "PNG" and im.mode == "RGB"
    px = np.asarray(im)
    # three panels of 8x8 tiles at the native block grid (zoomed to >= 32 px), outlines drawn
    assert px.shape[1] > 3 * 8 * 16 and px.shape[0] > 8 * 12
    assert np.any(np.all(px == (255, 140, 0), axis=-1))
    # grayscale: one panel only
    png2 = str(tmp_path / "g.png")
    assert main([_write(tmp_path, "g", make_jpeg("gray")), "--png", png2]) == 0
    assert Image.open(png2).width < im.width


@pytest.mark.parametrize("case", ["baseline-420", "gray", "cmyk", "sample-2x2-1x2-2x1",
                                  "tiny-1x1"])
def test_npz_dump(tmp_path, capsys, case):
    path = _write(tmp_path, case, make_jpeg(case))
    npz = str(tmp_path / "d.npz")
    status, _, _ = _run(capsys, [path, "--npz", npz, "--channels", "48S", "--size", "224"])
    assert status == 0
    z = np.load(npz)
    hdr = jpegfreq.read_header(path)
    co = jpegfreq.read_coefficients(path)
    names = list(z["components"])
    assert len(names) == hdr.num_components and str(z["color_space"]) == hdr.color_space
    for i, (name, comp) in enumerate(zip(names, hdr.components)):
        arr = z[name]
        assert arr.dtype == np.float32
        assert arr.shape == (64, comp.height_in_blocks, comp.width_in_blocks)
        assert np.array_equal(arr, np.moveaxis(co.dequantized(i), -1, 0))
        assert np.array_equal(z[f"quant_{name}"].ravel(), co.quant[i])
    assert z["cube"].shape == (48, 28, 28) and z["cube"].dtype == np.float32
    assert np.array_equal(z["cube"], jpegfreq.cube(path, "48S", 224))
    assert list(z["cube_channels"]) == list(ChannelSet.parse("48S").names)
    assert str(z["cube_source"]) == ("spatial" if case == "cmyk" else "jpeg-coeffs")


def test_progressive_has_the_baseline_coefficients(tmp_path):
    """Same picture and tables, other coding: the same per-frequency channels."""
    dumps = []
    for case in ("baseline-420", "progressive-420"):
        npz = str(tmp_path / f"{case}.npz")
        assert main([_write(tmp_path, case, make_jpeg(case, seed=4)), "--npz", npz]) == 0
        dumps.append(np.load(npz))
    for name in ("Y", "Cb", "Cr"):
        assert np.array_equal(dumps[0][name], dumps[1][name])


def test_non_jpeg_image(tmp_path, capsys):
    png = tmp_path / "p.png"
    Image.new("RGB", (40, 24), (200, 30, 90)).save(png)
    npz = str(tmp_path / "p.npz")
    status, out, _ = _run(capsys, [str(png), "--npz", npz])
    assert status == 0
    assert "format       PNG 40x24" in out and "spatial: not a JPEG (PNG)" in out
    z = np.load(npz)
    assert z["Y"].shape == (64, 3, 5) and z["cube"].shape == (24, 56, 56)
    # a flat image: all energy in DC
    assert np.allclose(z["Y"][1:], 0, atol=1e-3)


def test_inspect_image_api(tmp_path):
    path = _write(tmp_path, "a", make_jpeg("baseline-444"))
    report, maps = inspect_image(path, channels="24S")
    assert report["color_space"] == "YCbCr" and len(maps) == 3
    assert maps[0].shape == (64, 12, 16)
    with pytest.raises(JpegError, match="empty input"):
        inspect_image(_write(tmp_path, "e", b""))


def test_bad_arguments(tmp_path, capsys):
    path = _write(tmp_path, "a", make_jpeg("baseline-420"))
    with pytest.raises(SystemExit) as e:
        main([path, "--channels", "25Q"])
    assert e.value.code == 2 and "--channels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([path, "--size", "100"])


def test_cube_failure_is_reported_not_fatal(tmp_path, capsys):
    """A truncated CMYK file: its coefficients read (with warnings) but the spatial
    path's decoder refuses it; the report says so and the status stays 0."""
    data = dict(damaged(make_jpeg("cmyk")))["truncated-50pct"]
    status, out, err = _run(capsys, [_write(tmp_path, "t", data)])
    assert status == 0
    assert "warnings     libjpeg:" in out
    if "cube         24S at 448: failed" in out:
        assert "jpegfreq.cube fails on this file" in err


@pytest.mark.parametrize("case", ["cmyk", "ycck", "rgb-adobe", "baseline-420", "gray"])
def test_cube_path_reports_the_c_readers_route(tmp_path, capsys, case):
    """The report's path and reason are the C reader's decision (Header.spatial_reason),
    and the cube the CLI builds takes that path."""
    path = _write(tmp_path, case, make_jpeg(case))
    reason = jpegfreq.read_header(path).spatial_reason
    npz = str(tmp_path / "d.npz")
    status, out, _ = _run(capsys, [path, "--json", "--npz", npz, "--size", "64"])
    assert status == 0
    r = json.loads(out)
    if reason is None:
        assert r["cube_path"]["source"] == "jpeg-coeffs"
        assert any(c["selected"] for c in r["components"])
    else:
        assert r["cube_path"]["source"] == "spatial"
        assert r["cube_path"]["reason"].startswith(reason)
        # the file's own components are not the cube's: nothing is marked as kept
        assert not any(c["selected"] for c in r["components"])
    assert r["cube"]["error"] is None
    # jpegfreq.cube left to route the file itself gives the cube the report's path gave
    assert np.array_equal(np.load(npz)["cube"], jpegfreq.cube(path, "24S", 64))
