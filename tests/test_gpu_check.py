"""bench/gpu_check.py in its CPU version: every check runs at a tiny size and prints its line.

The GPU version is the same script without --cpu; on a machine without CUDA it refuses
(exit 2) instead of pretending.  About two minutes on 2 CPU cores (detection is most of it).
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "gpu_check.py")
CHECKS = ["train-coeffs", "train-rgb", "evaluate", "loader", "serve", "detect", "ddp"]


def test_cpu_version_runs_every_check_and_reports_each_on_one_line(tmp_path):
    p = subprocess.run([sys.executable, SCRIPT, "--cpu", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=1200)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("gpu_check ")]
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert [ln.split()[1] for ln in lines] == CHECKS
    assert all(ln.split()[2] == "ok" for ln in lines), lines
    assert p.stdout.strip().splitlines()[-1] == f"gpu_check: {len(CHECKS)}/{len(CHECKS)} " \
                                                "checks passed on cpu"
    evaluate = next(ln for ln in lines if ln.split()[1] == "evaluate")
    assert re.search(r"top1 \d+\.\d+ top5 \d+\.\d+", evaluate)
    loader = next(ln for ln in lines if ln.split()[1] == "loader")
    assert re.search(r"bound by (data loading|compute)", loader)
    assert "SIGTERM -> exit 0" in next(ln for ln in lines if ln.split()[1] == "serve")
    assert "identical on both" in next(ln for ln in lines if ln.split()[1] == "ddp")


def test_gpu_version_refuses_without_cuda(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")   # no device visible, even on a GPU host
    p = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert "no CUDA device" in p.stderr
