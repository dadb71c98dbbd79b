"""Write the fuzzer's seed corpus: every test JPEG kind and its damaged variants.

    .venv/bin/python fuzz/make_corpus.py fuzz/corpus

Seeds come from tests/jpeg_factory (the same deterministic files the tests
use): every valid case, the unsupported ones (12-bit, lossless), a few extra
sizes, damaged() of several base kinds, and a few files with a cube request
appended after EOI (the target reads its last 16 bytes as a request; see
fuzzed_request in fuzz_reader.c).  Files are named seed-*.jpg, so
the units libFuzzer adds to the same folder never collide with them.  Same
environment, same bytes: re-running rewrites identical files.
"""
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import jpeg_factory as F  # noqa: E402

#: Base kinds whose damaged() variants are seeds (one per coding mode / sampling).
DAMAGE_BASES = ("baseline-420", "baseline-444", "progressive-420", "arithmetic-420",
                "arithmetic-progressive", "restart-420", "gray", "gray-progressive",
                "sample-2x2-1x2-2x1", "cmyk")


def request(orientation=0, flags=0, out_h=64, out_w=64, resize=73, box=(0, 0, 0, 0),
            channels=0, param=0):
    """The 16 request bytes fuzz_reader.c decodes (fuzzed_request)."""
    t = bytes([(orientation + 1) % 11, flags, out_h // 8 - 1, out_w // 8 - 1])
    t += ((resize - 1) % 512).to_bytes(2, "little")
    t += b"".join(int(v).to_bytes(2, "little", signed=i < 2) for i, v in enumerate(box))
    return t + bytes([channels, param])


#: (name, request) appended to a few bases: eval from EXIF, a flipped train-like
#: box relative to the image, a band cut-off, a box in pixels, every channel,
#: strict mode without early stop.
REQUESTS = [
    ("eval-exif", request(-1, 0x40)),
    ("box-rel-flip", request(6, 0x31 | 0x40, 48, 40, box=(-300, 200, 4600, 3900), channels=4,
                             param=77)),
    ("band-cutoff", request(0, 0x02, 32, 32, resize=40, channels=0)),
    ("box-pixels", request(3, 0x10, 16, 24, box=(-20, 12, 400, 300), channels=3, param=9)),
    ("all-192", request(1, 0x40, 24, 16, resize=30, channels=1)),
    ("strict-full", request(8, 0x0C, 128, 8, resize=200, channels=2, param=100)),
]


def seeds():
    """[(name, bytes)] of the whole seed corpus."""
    out = []
    for case in F.ALL_CASES:
        out.append((case, F.make_jpeg(case)))
    # Sizes whose MCU grid does not divide the image, small enough to run fast.
    for case in ("baseline-420", "progressive-420", "sample-411", "arithmetic-420"):
        out.append((f"{case}-37x29", F.make_jpeg(case, 37, 29, seed=1)))
    for case in ("baseline-420", "progressive-420", "gray", "sample-411",
                 "exif-orientation-6"):
        for name, tail in REQUESTS:
            out.append((f"{case}+{name}", F.make_jpeg(case) + tail))
    for case in DAMAGE_BASES:
        for name, data in F.damaged(F.make_jpeg(case), seed=0):
            out.append((f"{case}.{name}", data))
    return out


def main(argv):
    dest = argv[1] if len(argv) > 1 else os.path.join(HERE, "corpus")
    os.makedirs(dest, exist_ok=True)
    digests = set()
    n = 0
    for name, data in seeds():
        digest = hashlib.sha1(data).hexdigest()
        if digest in digests:
            continue  # identical inputs (e.g. "empty" of every base) once only
        digests.add(digest)
        with open(os.path.join(dest, f"seed-{name}.jpg"), "wb") as f:
            f.write(data)
        n += 1
    print(f"fuzz corpus: {n} seed files in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
