"""Gate heat maps (paper Fig. 5): how often each of the 192 frequency channels is open.

    python -m jpegfreq.heatmap out/heatmap.json --out out/heatmap.png

The JSON is models.HeatmapAccumulator.to_json's: {"samples", "channels", "frequency"}.
The picture has three 8x8 grids (Y, Cb, Cr); the square at row u, column v is channel
k = 8u + v, labelled with k and coloured by its open frequency (0 white .. 1 dark).
Drawing uses matplotlib's Agg canvas directly: no display, no global backend change.
"""
import argparse
import json
import os

import numpy as np

from .channels import heatmap_frequencies, read_heatmap_json

__all__ = ["load_heatmap", "frequency_grid", "summarize", "plot_heatmap", "main"]

COMPONENTS = ("Y", "Cb", "Cr")


def load_heatmap(src) -> np.ndarray:
    """Open frequency of the 192 channels, float64 (192,) in global order (Y0..Cr63).

    src: a path to heat-map JSON or the loaded dict: {"channels": [...], "frequency": [...]}
    as train.py --gate writes it, or the plain {"Y0": 0.9, ...}.  Channels missing from the
    file are NaN.
    A file or dict that is not a heat map (malformed or truncated JSON, a missing or
    misshapen "frequency", bad channel names, values outside 0..1) raises ValueError naming
    the file and what is wrong; a path that cannot be opened raises OSError.
    """
    return _load(src)[1]


def _load(src):
    """(the heat-map dict, its frequencies) of a path or dict; ValueError naming the file."""
    name = "heat map"
    if not isinstance(src, dict):
        name = os.fspath(src)
        src = read_heatmap_json(name)
    try:
        return src, heatmap_frequencies(src)
    except ValueError as e:
        raise ValueError(f"{name}: not a heat map: {e}") from None


def frequency_grid(freq) -> np.ndarray:
    """(3, 8, 8) view of a (192,) frequency vector: [component, u, v]."""
    return np.asarray(freq, np.float64).reshape(3, 8, 8)


def summarize(freq, low_band: int = 3) -> dict:
    """Mean open frequency of Y, Cb, Cr, of low (u + v <= low_band) and high frequencies.

    low_band: the largest u + v counted as low (default 3: the 10 channels of the
    top-left triangle).  Returns a dict of floats (NaN channels ignored).
    """
    g = frequency_grid(freq)
    u, v = np.mgrid[0:8, 0:8]
    low = (u + v) <= low_band
    out = {c: float(np.nanmean(g[i])) for i, c in enumerate(COMPONENTS)}
    out["low"] = float(np.nanmean(g[:, low]))
    out["high"] = float(np.nanmean(g[:, ~low]))
    out["Y_low"] = float(np.nanmean(g[0][low]))
    out["Y_high"] = float(np.nanmean(g[0][~low]))
    out["chroma"] = float(np.nanmean(g[1:]))
    return out


def plot_heatmap(src, path, title=None) -> str:
    """Draw the three 8x8 grids to ``path`` (PNG); returns path.

    src: heat-map JSON path, dict, or a (192,) frequency array.  title: figure title
    (default: the sample count when known).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    samples = None
    if isinstance(src, (str, os.PathLike, dict)):
        src, freq = _load(src)
        samples = src.get("samples")
    else:
        freq = np.asarray(src, np.float64)
    grid = frequency_grid(freq)
    fig = Figure(figsize=(13, 4.9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    image = None
    for c, ax in enumerate(axes):
        image = ax.imshow(grid[c], cmap="Blues", vmin=0.0, vmax=1.0)
        for u in range(8):
            for v in range(8):
                f = grid[c, u, v]
                colour = "white" if np.isfinite(f) and f > 0.6 else "black"
                label = f"{8 * u + v}\n{f:.2f}" if np.isfinite(f) else f"{8 * u + v}\n-"
                ax.text(v, u, label, ha="center", va="center", fontsize=7, color=colour)
        ax.set_title(f"{COMPONENTS[c]} (mean open {np.nanmean(grid[c]):.2f})")
        ax.set_xticks(range(8))
        ax.set_yticks(range(8))
        ax.set_xlabel("v (horizontal frequency)")
        if c == 0:
            ax.set_ylabel("u (vertical frequency)")
    fig.colorbar(image, ax=list(axes), shrink=0.9, label="open frequency")
    if title is None:
        title = "gate open frequency per DCT channel" + (
            f" over {samples} images" if samples is not None else "")
    fig.suptitle(title)
    fig.savefig(path)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m jpegfreq.heatmap", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("heatmap", help="heat-map JSON written by train.py --gate")
    p.add_argument("--out", default=None, help="PNG to write (default: the JSON's name with .png)")
    a = p.parse_args(argv)
    out = a.out or os.path.splitext(a.heatmap)[0] + ".png"
    plot_heatmap(a.heatmap, out)
    s = summarize(load_heatmap(a.heatmap))
    print(f"wrote {out}: mean open Y {s['Y']:.2f} Cb {s['Cb']:.2f} Cr {s['Cr']:.2f}; "
          f"low (u+v<=3) {s['low']:.2f}, high {s['high']:.2f}")


if __name__ == "__main__":
    main()
