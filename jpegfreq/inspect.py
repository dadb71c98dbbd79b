"""What is in a JPEG, as the frequency-domain pipeline sees it.

    python -m jpegfreq.inspect IMAGE [--channels 24S] [--size 448] [--json]
                                     [--png montage.png] [--npz dump.npz]

Prints the header facts (size, components with sampling factors and block
counts, precision, coding, restart interval, quantization tables, EXIF
orientation, colour space), which path jpegfreq.cube takes for the file and
why, libjpeg's warnings for a damaged file, and per-frequency statistics of
each component: mean |dequantized coefficient|, fraction of non-zero
quantized coefficients and share of the component's energy, as 8x8 grids
(rows u = vertical frequency, columns v = horizontal, k = 8u + v; a ``*``
marks the frequencies the channel set keeps).

--json   the same report as one JSON object on stdout.
--png    an 8x8 montage per component of the per-frequency maps at the native
         block grid (the paper's DCT reshape), log(1 + |coef|) scaled per
         component; the kept frequencies are outlined.
--npz    per component float32 (64, bh, bw) dequantized coefficients (keys Y,
         Cb, Cr; CMYK files C, M, Y, K with ``color_space`` saying so), their
         quantization tables (quant_<name>, uint16 8x8), and the cube of
         --channels/--size (``cube``, ``cube_channels``, ``cube_source``).

Images that are not JPEGs but that Pillow reads are described from their
decoded YCbCr pixels (block DCT, no quantization).  A file that cannot be read
at all prints the reason and exits with status 1.
"""
import argparse
import json
import os
import re
import sys
import warnings

import numpy as np

from .channels import ChannelSet
from .errors import JpegError
from .reader import read_coefficients
from .source import Source, read_source

__all__ = ["inspect_image", "format_report", "write_png", "main"]

_COMPONENT_NAMES = {
    "YCbCr": ("Y", "Cb", "Cr"),
    "GRAY": ("Y",),
    "RGB": ("R", "G", "B"),
    "CMYK": ("C", "M", "Y", "K"),
    "YCCK": ("Y", "Cb", "Cr", "K"),
}

_ORIENTATION = {
    1: "normal",
    2: "mirrored left-right",
    3: "rotated 180",
    4: "mirrored top-bottom",
    5: "transposed (mirror + rotate 90 CCW to display)",
    6: "rotate 90 CW to display",
    7: "transverse (mirror + rotate 90 CW to display)",
    8: "rotate 90 CCW to display",
}


class _Fatal(Exception):
    """The file cannot be read at all; carries the JpegError and the report built so far."""

    def __init__(self, error: JpegError, report):
        super().__init__(str(error))
        self.error = error
        self.reason = str(error)      # "NAME: REASON"
        self.report = report


# ---------------------------------------------------------------------------
# Analysis (pure data: JSON-able report plus the per-frequency maps)
# ---------------------------------------------------------------------------

def _freq_stats(deq: np.ndarray, nonzero: np.ndarray) -> dict:
    """deq: float32 (64, bh, bw); nonzero: bool of the same shape."""
    flat = deq.reshape(64, -1).astype(np.float64)
    energy = np.einsum("kn,kn->k", flat, flat)
    total = energy.sum()
    return {
        "mean_abs": np.abs(flat).mean(axis=1),
        "nonzero": nonzero.reshape(64, -1).mean(axis=1),
        "energy_share": energy / total if total > 0 else np.zeros(64),
    }


def _grid(values) -> list:
    return [[float(f"{v:.6g}") for v in row] for row in np.asarray(values).reshape(8, 8)]


def _path_for(src: Source) -> tuple:
    """(source, reason): the path jpegfreq.cube takes for this file, and why.  The route is
    the C reader's (Header.spatial_reason); this only words it."""
    reason = src.spatial_reason
    if reason is not None:
        if src.header is None:
            return "spatial", (f"{reason}: decoded by Pillow, converted to YCbCr, block DCT")
        return "spatial", f"{reason}; decoded, converted to YCbCr, block DCT"
    hdr = src.header
    if hdr.num_components == 1:
        return "jpeg-coeffs", ("grayscale: Y coefficients read directly; the cube's Cb/Cr "
                               "channels are 0 (neutral chroma)")
    sub = hdr.subsampling
    how = ("chroma at full resolution" if sub == "4:4:4"
           else f"{sub} chroma upsampled inside the coefficient-domain operator")
    return "jpeg-coeffs", f"YCbCr: coefficients read directly (no IDCT); {how}"


def _component_names(color_space, n):
    names = _COMPONENT_NAMES.get(color_space)
    if names is None or len(names) != n:
        names = tuple(f"c{i}" for i in range(n))
    return names


def _jpeg_report(src: Source, cs: ChannelSet):
    data, name, hdr = src.data, src.name, src.header
    source, reason = _path_for(src)
    names = _component_names(hdr.color_space, hdr.num_components)
    comps = []
    for i, c in enumerate(hdr.components):
        comps.append({"name": names[i], "id": c.id, "h_samp": c.h_samp, "v_samp": c.v_samp,
                      "samples": [c.width, c.height],
                      "blocks": [c.width_in_blocks, c.height_in_blocks],
                      "quant_table": c.quant_tbl_no})
    report = {
        "file": name, "bytes": len(data), "format": "JPEG",
        "width": hdr.width, "height": hdr.height,
        "bits_per_pixel": round(8 * len(data) / max(hdr.width * hdr.height, 1), 3),
        "precision": hdr.precision, "color_space": hdr.color_space,
        "jfif": hdr.jfif, "adobe": hdr.adobe,
        "adobe_transform": hdr.adobe_transform if hdr.adobe else None,
        "progressive": hdr.progressive, "arithmetic": hdr.arithmetic, "coding": hdr.coding,
        "subsampling": hdr.subsampling, "restart_interval": hdr.restart_interval,
        "orientation": hdr.orientation, "orientation_meaning": _ORIENTATION.get(hdr.orientation),
        "components": comps,
        "cube_path": {"source": source, "reason": reason},
        "channels": cs.name,
        "warnings": [],
    }
    try:
        co = read_coefficients(data)
    except JpegError as e:
        raise _Fatal(JpegError(name, e.reason, e.kind), report) from None
    report["warnings"] = list(co.warnings)
    tables = {}
    maps = []
    for i, comp in enumerate(comps):
        q = co.coefficients[i]
        quant = co.quant[i]
        tables.setdefault(comp["quant_table"], quant)
        deq = np.moveaxis(q.astype(np.float32) * quant.astype(np.float32), -1, 0)
        comp["stats"] = _freq_stats(deq, np.moveaxis(q != 0, -1, 0))
        comp["quant"] = quant
        maps.append(np.ascontiguousarray(deq))
    report["quant_tables"] = {str(t): quant for t, quant in sorted(tables.items())}
    _mark_selection(report, cs, marked=source == "jpeg-coeffs")
    return report, maps


def _pillow_report(src: Source, cs: ChannelSet):
    """A non-JPEG image Pillow can read: statistics of its decoded YCbCr pixels."""
    from .geometry import block_dct
    from .pipeline import decode_planes
    data, name = src.data, src.name
    fmt, mode, (w, h) = src.format, src.mode, src.size
    try:
        planes, _, _ = decode_planes(src)
    except JpegError as e:
        raise _Fatal(e, {"file": name, "bytes": len(data), "format": fmt}) from None
    names = ("Y", "Cb", "Cr")[:len(planes)]
    comps, maps = [], []
    for i, p in enumerate(planes):
        ph, pw = p.shape
        bh, bw = -(-ph // 8), -(-pw // 8)
        padded = np.pad(p - 128.0, ((0, bh * 8 - ph), (0, bw * 8 - pw)), mode="edge")
        deq = block_dct(padded, range(8), range(8)).reshape(64, bh, bw).astype(np.float32)
        comps.append({"name": names[i], "id": None, "h_samp": 1, "v_samp": 1,
                      "samples": [pw, ph], "blocks": [bw, bh], "quant_table": None,
                      # without quantization, "non-zero" means it would survive step 1
                      "stats": _freq_stats(deq, np.abs(deq) >= 0.5)})
        maps.append(deq)
    report = {
        "file": name, "bytes": len(data), "format": fmt or "unknown", "mode": mode,
        "width": w, "height": h,
        "bits_per_pixel": round(8 * len(data) / max(w * h, 1), 3),
        "color_space": mode, "components": comps,
        "cube_path": dict(zip(("source", "reason"), _path_for(src))),
        "channels": cs.name, "warnings": [], "quant_tables": {},
        "note": "statistics of the decoded pixels' block DCT (no quantization: non-zero "
                "means |coef| >= 0.5)",
    }
    _mark_selection(report, cs, marked=True)
    return report, maps


def _mark_selection(report, cs: ChannelSet, marked: bool):
    """Per component, the frequencies the channel set keeps.  marked: the components are the
    cube's (a JPEG the compressed path takes, or a non-JPEG's decoded YCbCr planes); a JPEG
    on the spatial path gets its cube's channels from decoded pixels, so nothing is marked."""
    for i, comp in enumerate(report["components"]):
        ks = list(cs.per_component[i]) if marked and i < 3 else []
        comp["selected"] = ks
        comp["kept_energy_share"] = float(sum(comp["stats"]["energy_share"][k] for k in ks))


def inspect_image(path, channels="24S", size=448):
    """(report dict, maps): the analysis behind the CLI (without the cube).

    maps[i] is component i's float32 (64, bh, bw) per-frequency channels
    (dequantized).  Raises JpegError when the file cannot be read at all.
    """
    try:
        report, maps, _ = _inspect(path, ChannelSet.parse(channels), size)
        return report, maps
    except _Fatal as e:
        raise e.error from None


def _inspect(path, cs, size):
    """(report, maps, Source) of the file at path; _Fatal when it cannot be read at all."""
    try:
        src = read_source(os.fspath(path))
    except JpegError as e:
        report = {"file": e.source}
        try:
            report["bytes"] = os.stat(e.source).st_size
        except OSError:
            pass
        raise _Fatal(e, report) from None
    if src.header is None:
        return _pillow_report(src, cs) + (src,)
    return _jpeg_report(src, cs) + (src,)


def _cube(src: Source, report, cs, size):
    """(cube, error): jpegfreq.cube of the file with --channels/--size, on the path the
    report names."""
    from .pipeline import cube
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report already says which path it takes
            return cube(src, cs, size, report["cube_path"]["source"]), None
    except JpegError as e:
        return None, e.reason


# ---------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------

def _num(v):
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 10:
        return f"{v:.2f}"
    if a >= 0.0005:
        return f"{v:.3f}"
    return "~0"


def _grid_lines(values, selected, fmt, indent="    "):
    sel = set(selected)
    head = indent + "     " + "".join(f"{'v=' + str(v) if v == 0 else v:>8}" for v in range(8))
    lines = [head]
    for u in range(8):
        cells = []
        for v in range(8):
            k = 8 * u + v
            cells.append(f"{fmt(values[k]):>7}{'*' if k in sel else ' '}")
        lines.append((f"{indent}u={u}  " + "".join(cells)).rstrip())
    return lines


def _pct(v):
    return _num(100.0 * v)


def format_report(report: dict) -> str:
    """The human-readable report (what the CLI prints without --json)."""
    out = []
    add = out.append
    add(f"file         {report['file']}  ({report['bytes']:,} bytes, "
        f"{report['bits_per_pixel']} bits/pixel)")
    if report["format"] == "JPEG":
        add(f"format       JPEG {report['width']}x{report['height']}, "
            f"{len(report['components'])} component(s), {report['precision']}-bit, "
            f"{report['coding']}")
        markers = [m for m, on in (("JFIF", report["jfif"]), ("Adobe", report["adobe"])) if on]
        extra = f" (Adobe transform {report['adobe_transform']})" if report["adobe"] else ""
        add(f"colour       {report['color_space']}, {report['subsampling']}; markers: "
            f"{', '.join(markers) or 'neither JFIF nor Adobe'}{extra}")
        ri = report["restart_interval"]
        add(f"restart      {'every ' + str(ri) + ' MCUs' if ri else 'none'}")
        add(f"orientation  {report['orientation']} ({report['orientation_meaning']}); "
            "the cube ignores it unless Geometry(exif=True)")
    else:
        add(f"format       {report['format']} {report['width']}x{report['height']}, "
            f"mode {report['mode']} (not a JPEG)")
    add(f"cube path    {report['cube_path']['source']}: {report['cube_path']['reason']}")
    if "cube" in report:
        c = report["cube"]
        if c.get("error"):
            add(f"cube         {report['channels']} at {c['size']}: failed: {c['error']}")
        else:
            add(f"cube         {report['channels']} at {c['size']}: {tuple(c['shape'])} "
                f"float32, {c['bytes']:,} bytes")
    if report["warnings"]:
        add("warnings     libjpeg: " + "; ".join(report["warnings"]))
    else:
        add("warnings     none")
    add("")
    add("components   name  id  sampling  samples     blocks     quant table")
    for comp in report["components"]:
        ident = "-" if comp["id"] is None else comp["id"]
        qt = "-" if comp["quant_table"] is None else comp["quant_table"]
        samples = f"{comp['samples'][0]}x{comp['samples'][1]}"
        blocks = f"{comp['blocks'][0]}x{comp['blocks'][1]}"
        add(f"             {comp['name']:<4} {ident!s:>3}  {comp['h_samp']}x{comp['v_samp']}"
            f"       {samples:<11} {blocks:<10} {qt}")
    for t, quant in report["quant_tables"].items():
        users = ", ".join(c["name"] for c in report["components"] if str(c["quant_table"]) == t)
        add("")
        add(f"quantization table {t} (used by {users})")
        q = np.asarray(quant).reshape(8, 8)
        for u in range(8):
            add("    " + "".join(f"{int(x):>5}" for x in q[u]))
    if report.get("note"):
        add("")
        add(f"note: {report['note']}")
    for comp in report["components"]:
        st = comp["stats"]
        nz = float(np.mean(st["nonzero"]))
        add("")
        kept = ""
        if comp["selected"]:
            kept = (f"; {report['channels']} keeps {len(comp['selected'])} of 64 frequencies "
                    f"(*), {_pct(comp['kept_energy_share'])}% of its energy")
        add(f"{comp['name']}: {comp['blocks'][0]}x{comp['blocks'][1]} blocks, "
            f"{_pct(nz)}% of coefficients non-zero{kept}")
        add("  mean |dequantized coefficient|   (rows u: vertical frequency, columns v: "
            "horizontal; k = 8u + v)")
        out.extend(_grid_lines(st["mean_abs"], comp["selected"], _num))
        add("  non-zero %")
        out.extend(_grid_lines(st["nonzero"], comp["selected"], _pct))
        add("  energy share %")
        out.extend(_grid_lines(st["energy_share"], comp["selected"], _pct))
    return "\n".join(out)


def _jsonable(report: dict) -> dict:
    r = dict(report)
    r["quant_tables"] = {t: _grid(q) for t, q in report.get("quant_tables", {}).items()}
    comps = []
    for comp in report.get("components", []):
        c = {k: v for k, v in comp.items() if k not in ("stats", "quant")}
        if "stats" in comp:
            c["stats"] = {k: _grid(v) for k, v in comp["stats"].items()}
            c["kept_energy_share"] = float(f"{comp['kept_energy_share']:.6g}")
        comps.append(c)
    r["components"] = comps
    return r


# ---------------------------------------------------------------------------
# Montage and dump
# ---------------------------------------------------------------------------

_GAP = 3
_OUTLINE = (255, 140, 0)
_BACKGROUND = (24, 24, 24)
_MAX_TILE = 256


def _tile_scale(bh, bw):
    """(zoom, shrink) so a tile is at least ~32 px and at most _MAX_TILE px on its long side."""
    longest = max(bh, bw)
    if longest > _MAX_TILE:
        return 1, longest / _MAX_TILE
    return max(1, min(16, 32 // longest)), 1.0


def _montage(maps: np.ndarray, selected, label: str):
    from PIL import Image, ImageDraw
    _, bh, bw = maps.shape
    mag = np.log1p(np.abs(maps))
    top = float(mag.max()) or 1.0
    zoom, shrink = _tile_scale(bh, bw)
    th, tw = max(1, round(bh * zoom / shrink)), max(1, round(bw * zoom / shrink))
    title_h = 14
    width = 8 * tw + 9 * _GAP
    height = title_h + 8 * th + 9 * _GAP
    img = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((_GAP, 1), label, fill=(230, 230, 230))
    sel = set(selected)
    for k in range(64):
        u, v = divmod(k, 8)
        x0 = _GAP + v * (tw + _GAP)
        y0 = title_h + _GAP + u * (th + _GAP)
        tile = Image.fromarray(np.clip(mag[k] * (255.0 / top), 0, 255).astype(np.uint8), "L")
        if (th, tw) != (bh, bw):
            tile = tile.resize((tw, th), Image.NEAREST if shrink == 1.0 else Image.BOX)
        img.paste(tile.convert("RGB"), (x0, y0))
        if k in sel:
            draw.rectangle([x0 - 2, y0 - 2, x0 + tw + 1, y0 + th + 1], outline=_OUTLINE, width=1)
    return img


def write_png(path, report: dict, maps) -> None:
    """The per-frequency montage of every component, side by side, as one PNG."""
    from PIL import Image
    panels = []
    for comp, m in zip(report["components"], maps):
        label = f"{comp['name']}: {comp['blocks'][0]}x{comp['blocks'][1]} blocks"
        if comp["selected"]:
            label += f" [{report['channels']}]"
        panels.append(_montage(m, comp["selected"], label))
    width = sum(p.width for p in panels) + _GAP * (len(panels) - 1)
    height = max(p.height for p in panels)
    img = Image.new("RGB", (width, height), _BACKGROUND)
    x = 0
    for p in panels:
        img.paste(p, (x, 0))
        x += p.width + _GAP
    img.save(path, "PNG")


def write_npz(path, report: dict, maps, cube, cs: ChannelSet) -> None:
    arrays = {}
    for comp, m in zip(report["components"], maps):
        arrays[comp["name"]] = m.astype(np.float32, copy=False)
        if comp.get("quant") is not None:
            arrays[f"quant_{comp['name']}"] = np.asarray(comp["quant"], np.uint16).reshape(8, 8)
    arrays["components"] = np.array([c["name"] for c in report["components"]])
    arrays["color_space"] = np.array(report["color_space"])
    if cube is not None:
        arrays["cube"] = cube
        arrays["cube_channels"] = np.array(cs.names)
        arrays["cube_source"] = np.array(report["cube_path"]["source"])
    np.savez(path, **arrays)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def _parser():
    p = argparse.ArgumentParser(prog="python -m jpegfreq.inspect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="a JPEG (or any image Pillow reads)")
    p.add_argument("--channels", default="24S",
                   help="channel set marked in the tables and used for the cube (default: 24S)")
    p.add_argument("--size", type=int, default=448,
                   help="crop size in pixels for the cube (default: 448 -> 56x56)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (default: text)")
    p.add_argument("--png", metavar="OUT.png", help="write the per-frequency montage")
    p.add_argument("--npz", metavar="OUT.npz",
                   help="write per-component (64, bh, bw) channels and the cube")
    return p


def main(argv=None) -> int:
    """Run the CLI; returns the exit status (0, or 1 when the file cannot be read)."""
    p = _parser()
    a = p.parse_args(argv)
    try:
        cs = ChannelSet.parse(a.channels)
    except (ValueError, TypeError) as e:
        p.error(f"--channels: {e}")
    if a.size <= 0 or a.size % 8:
        p.error(f"--size must be a positive multiple of 8, not {a.size}")
    try:
        report, maps, src = _inspect(a.image, cs, a.size)
    except _Fatal as e:
        if a.json:
            print(_dumps({**_jsonable(e.report), "error": e.reason}))
        else:
            print(f"inspect: {e.reason}", file=sys.stderr)
        return 1
    cube, err = _cube(src, report, cs, a.size)
    report["cube"] = {"size": a.size, "error": err,
                      "shape": None if cube is None else list(cube.shape),
                      "bytes": 0 if cube is None else int(cube.nbytes)}
    if a.png:
        write_png(a.png, report, maps)
    if a.npz:
        write_npz(a.npz, report, maps, cube, cs)
    if a.json:
        print(_dumps(_jsonable(report)))
    else:
        print(format_report(report))
        for what, path in (("montage", a.png), ("arrays", a.npz)):
            if path:
                print(f"\nwrote {what} to {path}")
    if err:  # the file was read; only the cube failed: the report says so
        print(f"inspect: note: jpegfreq.cube fails on this file: {err}", file=sys.stderr)
    return 0


def _dumps(obj) -> str:
    """JSON with one line per innermost list of numbers (8x8 grids stay readable)."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s+([-+.\deE,\s]+?)\s+\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


if __name__ == "__main__":
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 0
    sys.exit(status)
