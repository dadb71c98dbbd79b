"""Reader benchmark: our coefficient read against libjpeg-turbo's floor and jpeg2dct.

    python bench/bench_reader.py FOLDER [--limit N] [--repeat R]

Same files, one process, one core, interleaved.  The floor is libjpeg-turbo's
jpeg_read_coefficients alone (entropy decoding, nothing copied out), called
through the same extension so the Python call overhead is counted in both.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import file_bench_args, interleaved, one_core, report  # noqa: E402

import jpegfreq  # noqa: E402
from jpegfreq import _jpegfreq  # noqa: E402


def main():
    a, files, blobs = file_bench_args(description=__doc__)
    one_core()
    methods = [
        ("floor: jpeg_read_coefficients", lambda f: _jpegfreq.entropy_decode(blobs[f])),
        ("read_coefficients(bytes)", lambda f: jpegfreq.read_coefficients(blobs[f])),
        ("read_coefficients(path)", lambda f: jpegfreq.read_coefficients(f)),
        ("read_coefficients(bytes, 24 freqs dequantized)",
         lambda f: jpegfreq.read_coefficients(blobs[f], freqs=range(24))),
    ]
    try:
        from jpeg2dct.numpy import loads
        methods.append(("jpeg2dct.loads", lambda f: loads(blobs[f])))
    except ImportError:
        print("jpeg2dct not installed: its row is left out", file=sys.stderr)
    print(f"{len(files)} files, one core, best of {a.repeat} per file, median over files "
          f"(libjpeg-turbo {jpegfreq.libjpeg_version})")
    med = report(interleaved(methods, files, a.repeat), floor="floor: jpeg_read_coefficients")
    if "jpeg2dct.loads" in med:
        print(f"\njpeg2dct / read_coefficients(bytes) = "
              f"{med['jpeg2dct.loads'] / med['read_coefficients(bytes)']:.2f}x")


if __name__ == "__main__":
    main()
