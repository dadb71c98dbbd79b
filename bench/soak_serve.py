"""Soak examples/serve.py: many clients, real and broken JPEGs, answers checked, memory watched.

    python bench/soak_serve.py [FOLDER] [--requests 10000] [--clients 8] [--size 64]

Builds a small random-weight checkpoint (resnet18-DCT, 24S, 10 classes, eval crop --size),
starts examples/serve.py on 127.0.0.1 and has --clients threads send --requests POSTs over
keep-alive connections: half real JPEGs (the first 32 of FOLDER, or 32 generated ones of
every kind the test factory makes), half broken bodies made on the fly (cut at a random
point in the first 80%, random bytes with or without a JPEG start, empty).  Every real one
must come back 200 with the top-1 of the same checkpoint run in this process (Decoder +
model), every broken one 4xx with a JSON reason, none 5xx; the server's resident memory
(VmRSS) must grow less than 20 MB between the first quarter and the end.  Prints the
latency percentiles seen by the clients; exit status 1 when a check fails.
"""
import argparse
import glob
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the soak driver and the JPEG factory

from serving_util import ServerProcess, make_checkpoint, soak  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", metavar="FOLDER",
                   help="JPEGs to use as the real images (default: generated ones)")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--size", type=int, default=64, help="eval crop side (default: 64)")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    real = None
    if args.folder:
        paths = sorted(f for f in glob.glob(os.path.join(args.folder, "**", "*"), recursive=True)
                       if f.lower().endswith((".jpg", ".jpeg")))[:32]
        if not paths:
            p.error(f"no JPEG files in {args.folder}")
        real = [open(f, "rb").read() for f in paths]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ckpt.pth")
        ckpt = make_checkpoint(path, size=args.size, num_classes=10)
        srv = ServerProcess(path, os.path.join(d, "server.log"), "--quiet",
                            "--max-batch", str(args.max_batch))
        ok = True
        try:
            res = soak(srv, ckpt, requests=args.requests, clients=args.clients, seed=args.seed,
                       real=real)
            growth = (res["rss_end_kb"] - res["rss_quarter_kb"]) / 1024
            print(f"resident memory growth after the first quarter: {growth:+.1f} MB "
                  "(limit 20 MB)")
            for f in res["failures"]:
                print("wrong answer:", f)
            ok = (not res["failures"] and growth < 20
                  and all(0 < s < 500 for s in res["statuses"]))
        finally:
            rc = srv.terminate()
            print(f"server exit status after SIGTERM: {rc}")
            ok = ok and rc == 0
        print("all checks passed" if ok else "CHECKS FAILED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
