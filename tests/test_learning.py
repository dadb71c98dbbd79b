"""bench/learning.py: the symbolic-link split, the finished-run rule, and one small end-to-end
pass (rgb-112 and coeffs-24S, one epoch, one seed, on a generated set of 4 classes x 6 train /
3 val images) whose printed table and json must agree; a held run folder is refused, and
SIGTERM ends the bench's running train.py with it. About a minute on two quiet cores.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, BENCH)
sys.path.insert(0, ROOT)

import learning  # noqa: E402
from jpegfreq.synthetic import make_dataset  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("learning") / "data"), classes=4,
                        train_per_class=6, val_per_class=3, seed=5, min_size=64, max_size=96)


def test_split_is_links_in_file_order_and_repeatable(data, tmp_path):
    source = os.path.join(data, "train")           # 4 classes x 6 files
    dest = str(tmp_path / "split")
    info = learning.make_split(source, dest, learning.parse_ratio("2:1"))
    assert (info["train"], info["val"]) == (16, 8)
    for c in info["classes"]:
        files = sorted(os.listdir(os.path.join(source, c)))
        assert sorted(os.listdir(os.path.join(dest, "train", c))) == files[:4]
        assert sorted(os.listdir(os.path.join(dest, "val", c))) == files[4:]
        for split in ("train", "val"):
            for f in os.listdir(os.path.join(dest, split, c)):
                link = os.path.join(dest, split, c, f)
                assert os.path.islink(link)
                assert os.readlink(link) == os.path.join(os.path.abspath(source), c, f)
    # the same split again changes nothing
    assert learning.make_split(source, dest, (2, 1)) == info
    # another ratio would move files between the splits: refused, naming the folder
    with pytest.raises(ValueError, match="not part of the 1:1 split"):
        learning.make_split(source, dest, (1, 1))
    # a real file where a link belongs is refused, and nothing is overwritten
    c = info["classes"][0]
    victim = os.path.join(dest, "train", c, sorted(os.listdir(os.path.join(dest, "train", c)))[0])
    os.remove(victim)
    with open(victim, "w") as f:
        f.write("not a link")
    with pytest.raises(ValueError, match="is not a link to"):
        learning.make_split(source, dest, (2, 1))
    assert open(victim).read() == "not a link"


def test_split_refuses_bad_ratios_and_tiny_classes(data, tmp_path):
    for text in ("4", "4:x", "0:1", "4:1:1"):
        with pytest.raises(ValueError, match="--split"):
            learning.parse_ratio(text)
    with pytest.raises(ValueError, match="too few"):
        learning.make_split(os.path.join(data, "val"), str(tmp_path / "s"), (1, 9))  # 3 per class: 0 to train


def test_rows_selection():
    assert learning.select_rows("all") == list(learning.ROW_NAMES)
    # the picked set needs the gate run, which comes first
    assert learning.select_rows("gate-top24,rgb-112") == ["rgb-112", "gate-192", "gate-top24"]
    with pytest.raises(ValueError, match="unknown row"):
        learning.select_rows("rgb-224")


def _write_log(folder, epochs):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "log.jsonl"), "w") as f:
        for e in epochs:
            f.write(json.dumps({"epoch": e, "val_acc1": 50.0}) + "\n")


def test_finished_means_the_last_epoch_is_logged(tmp_path):
    run = str(tmp_path / "run")
    assert not learning.finished(run, 3, gate=False)          # no log yet
    _write_log(run, [0, 1])
    assert not learning.finished(run, 3, gate=False)          # killed after epoch 2
    _write_log(run, [0, 1, 2])
    assert learning.finished(run, 3, gate=False)
    assert not learning.finished(run, 4, gate=False)
    assert not learning.finished(run, 3, gate=True)           # the gate run also needs its map
    open(os.path.join(run, "heatmap.json"), "w").close()
    assert learning.finished(run, 3, gate=True)
    with open(os.path.join(run, "log.jsonl"), "a") as f:
        f.write("garbage\n")
    with pytest.raises(ValueError, match="log.jsonl"):
        learning.finished(run, 3, gate=False)


def _run(argv):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.run([sys.executable, os.path.join(BENCH, "learning.py"), *argv], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_smoke_table_and_json_agree(data, tmp_path):
    out, js = str(tmp_path / "runs"), str(tmp_path / "result.json")
    argv = ["--data", data, "--epochs", "1", "--seeds", "1", "--rows",
            "rgb-112,coeffs-24S,coeffs-24S-int8", "--batch-size", "8", "--out", out, "--json", js]
    stdout = _run(argv)
    with open(js) as f:
        result = json.load(f)
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["rgb-112", "coeffs-24S", "coeffs-24S-int8"]
    for r in rows.values():
        assert len(r["top1"]) == 1 and 0.0 <= r["top1"][0] <= 100.0
        assert len(r["best_top1"]) == 1 and r["best_top1"][0] >= r["top1"][0]
        assert r["images_per_s"] > 0 and r["time_s"] > 0 and r["wall_s"] > r["time_s"]
        assert r["layer1"] == [28, 28]                       # equal cost: same layer1 size
        log = learning.read_log(os.path.join(out, r["name"], "seed0"))
        assert [e["epoch"] for e in log] == [0]
        assert r["top1"][0] == log[-1]["val_acc1"]
    assert rows["rgb-112"]["input_shape"] == [3, 112, 112]
    assert rows["rgb-112"]["bytes_uint8"] == 3 * 112 * 112
    assert rows["coeffs-24S"]["input_shape"] == [24, 28, 28]
    assert rows["coeffs-24S"]["bytes_float32"] == 4 * 24 * 28 * 28
    assert rows["coeffs-24S"]["bytes_float16"] == 3 * 112 * 112   # the RGB image's bytes
    assert rows["coeffs-24S"]["bytes_int8"] is None and rows["coeffs-24S"]["flags"] == []
    assert rows["coeffs-24S-int8"]["flags"] == ["--dtype", "int8"]
    assert rows["coeffs-24S-int8"]["bytes_int8"] == 24 * 28 * 28       # half the RGB image's
    with open(os.path.join(out, "coeffs-24S-int8", "seed0", learning.RUN_FILE)) as f:
        assert json.load(f)["argv"][-2:] == ["--dtype", "int8"]
    assert result["settings"]["epochs"] == 1 and result["settings"]["train_images"] == 24

    # the printed table is the json's, line for line
    table = learning.format_table(result)
    assert table in stdout
    for name, r in rows.items():
        line = next(ln for ln in stdout.splitlines() if ln.startswith(name + " "))
        assert f"{r['top1_mean']:.1f} (1 seed)" in line
        assert f"{r['images_per_s']:.1f}" in line

    # a second pass finds both runs finished and trains nothing
    again = _run(argv)
    assert again.count("done before, not run again") == 3
    with open(js) as f:
        second = json.load(f)
    assert [r["top1"] for r in second["rows"]] == [r["top1"] for r in result["rows"]]
    assert [r["wall_s"] for r in second["rows"]] == [r["wall_s"] for r in result["rows"]]

    # other settings for the same folders are refused, not mixed in
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, os.path.join(BENCH, "learning.py"), *argv[:-2],
                        "--lr", "0.01"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode != 0 and "trained with other settings" in p.stderr


def test_a_locked_run_folder_is_refused(data, tmp_path):
    import fcntl
    out = str(tmp_path / "runs")
    args = learning.get_args_parser().parse_args(["--data", data, "--out", out])
    folder = learning.run_dir(out, "coeffs-24S", 0)
    os.makedirs(folder)
    with open(os.path.join(folder, learning.RUN_FILE + ".lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit, match="another learning.py is training"):
            learning.run_one(args, learning.row_spec("coeffs-24S"), 0, out, 1, 1)
    assert not os.path.exists(os.path.join(folder, "train.out"))   # nothing was started


def _processes_naming(text):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find the child")
def test_sigterm_ends_the_running_train_py(data, tmp_path):
    import signal
    import time
    out = str(tmp_path / "runs")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, os.path.join(BENCH, "learning.py"), "--data", data,
                          "--epochs", "3", "--seeds", "1", "--rows", "coeffs-24S", "--out", out],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    folder = learning.run_dir(out, "coeffs-24S", 0)
    deadline = time.monotonic() + 120
    while not _processes_naming(folder) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    children = _processes_naming(folder)
    assert children, "train.py never started"
    try:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) != 0
        deadline = time.monotonic() + 30
        while _processes_naming(folder) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _processes_naming(folder), "train.py outlived the bench"
    finally:
        for pid in _processes_naming(folder):     # a failed run leaves no orphan behind
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if p.poll() is None:
            p.kill()
        p.wait()
