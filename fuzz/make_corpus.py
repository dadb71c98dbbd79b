"""Write the fuzzer's seed corpus: every test JPEG kind and its damaged variants.

    .venv/bin/python fuzz/make_corpus.py fuzz/corpus

Seeds come from tests/jpeg_factory (the same deterministic files the tests
use): every valid case, the unsupported ones (12-bit, lossless), a few extra
sizes, and damaged() of several base kinds.  Files are named seed-*.jpg, so
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


def seeds():
    """[(name, bytes)] of the whole seed corpus."""
    out = []
    for case in F.ALL_CASES:
        out.append((case, F.make_jpeg(case)))
    # Sizes whose MCU grid does not divide the image, small enough to run fast.
    for case in ("baseline-420", "progressive-420", "sample-411", "arithmetic-420"):
        out.append((f"{case}-37x29", F.make_jpeg(case, 37, 29, seed=1)))
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
