"""Early-stop benchmark: the 24S eval cube with and without stopping each scan below the crop.

    python bench/bench_early_stop.py FOLDER [--limit N] [--repeat R]

The files as they are, then the same files re-encoded progressive by libjpeg-turbo's
jpegtran (lossless: same coefficients, several scans), so both ways of stopping are
measured: a sequential file ends its only scan, a progressive scan skips to the next
one.  One process, one core, interleaved; the floor is the whole-file entropy decode.
"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import file_bench_args, interleaved, one_core, report  # noqa: E402

import jpegfreq  # noqa: E402
from jpegfreq import _jpegfreq  # noqa: E402

CS24 = jpegfreq.ChannelSet.parse("24S")


def cube(data, early_stop):
    out, _ = _jpegfreq.cube(data, CS24.component_of, CS24.k, 448, 448, resize=512,
                            early_stop=early_stop)
    return out


def run(title, blobs, repeat):
    methods = [
        ("floor: entropy decode", lambda f: _jpegfreq.entropy_decode(blobs[f])),
        ("24S eval, early stop", lambda f: cube(blobs[f], True)),
        ("24S eval, whole file", lambda f: cube(blobs[f], False)),
    ]
    med = report(interleaved(methods, list(blobs), repeat), floor="floor: entropy decode",
                 title=title)
    print(f"early stop saves {1 - med['24S eval, early stop'] / med['24S eval, whole file']:.1%}")


def main():
    a, files, blobs = file_bench_args(description=__doc__)
    one_core()
    run(f"{len(files)} files as they are", blobs, a.repeat)
    if shutil.which("jpegtran") is None:
        print("jpegtran not found (libjpeg-turbo-progs): no progressive run", file=sys.stderr)
        return
    prog = {}
    for f in files:
        r = subprocess.run(["jpegtran", "-progressive", "-copy", "none"], input=blobs[f],
                           capture_output=True)
        if r.returncode == 0 and r.stdout:
            prog[f] = r.stdout
    run(f"{len(prog)} files re-encoded progressive (jpegtran -progressive)", prog, a.repeat)


if __name__ == "__main__":
    main()
