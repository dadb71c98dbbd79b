"""train.py end to end on a tiny synthetic set: sources, evaluation, bad images, stats cache,
resume after a kill, the gate's heat map, and two-process DDP.

Every run is small (4 classes x 3 train / 2 val images of 200-300 px, 128 px crops giving
16x16 cubes, resnet18, batch 4, --max-steps), so the whole file takes about a minute.
"""
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402
from jpegfreq import ChannelSet  # noqa: E402
from jpegfreq.checkpoint import load_checkpoint  # noqa: E402 (weights_only=True)
from jpegfreq.synthetic import make_dataset  # noqa: E402
from pickles import pickled_globals  # noqa: E402

CKPT_KEYS = {"task", "model", "optimizer", "scheduler", "epoch", "args", "arch", "num_classes",
             "classes", "source", "channels", "size", "geometry", "stats", "gate", "best_acc1"}
LOG_KEYS = {"epoch", "train_loss", "train_acc1", "train_acc5", "val_acc1", "val_acc5",
            "images_per_s", "data_share", "skipped_bad"}
TOP_LINE = re.compile(r"^top1 (\d+\.\d+) top5 (\d+\.\d+)$")


def small(data, out, *extra, source="jpeg-coeffs"):
    """Flags of a tiny run."""
    size = "64" if source == "rgb" else "128"
    return ["--data", data, "--output-dir", str(out), "--arch", "resnet18", "--size", size,
            "--batch-size", "4", "--threads", "1", "--epochs", "1", "--max-steps", "2",
            "--source", source, "--no-progress", *extra]


def run_inproc(argv):
    return train.main(train.get_args_parser().parse_args(argv))


def run_cli(argv, timeout=240, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *argv], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout, **kw)


def read_log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("train") / "data"), classes=4,
                        train_per_class=3, val_per_class=2, seed=11, min_size=200, max_size=300)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A jpeg-coeffs run (checkpoints for the evaluation tests)."""
    out = tmp_path_factory.mktemp("coeffs")
    run_inproc(small(data, out, "--predictions", str(out / "train-preds.csv")))
    return str(out)


# ---------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["jpeg-coeffs", "spatial", "rgb"])
def test_each_source_trains_an_epoch_and_logs(data, tmp_path, capsys, source):
    result = run_inproc(small(data, tmp_path, "--epochs", "2", source=source))
    text = capsys.readouterr().out
    assert re.search(r"epoch 2/2: train loss \d", text)
    assert "bytes per sample" in text and "RGB 224x224x3" in text
    log = read_log(tmp_path)
    assert [r["epoch"] for r in log] == [0, 1]
    assert LOG_KEYS <= set(log[0])
    assert all(r["steps"] == 2 and r["images"] == 8 and r["skipped_bad"] == 0 for r in log)
    assert 0 <= log[0]["data_share"] <= 1 and log[0]["images_per_s"] > 0
    ckpt = load_checkpoint(tmp_path / "checkpoint.pth")
    assert CKPT_KEYS <= set(ckpt) and ckpt["task"] == "classify"
    assert ckpt["epoch"] == 1 and ckpt["source"] == source and ckpt["num_classes"] == 4
    assert (ckpt["channels"] is None) == (source == "rgb")
    assert os.path.exists(tmp_path / "best.pth")
    assert result["val"]["images"] == 8


def test_input_summary_states_the_paper_ratio():
    line = train.input_summary(ChannelSet.parse("24S"), "jpeg-coeffs", 448, "float32")
    assert "24x56x56 = 75,264 values" in line and "0.50x" in line and "301,056 bytes" in line
    line = train.input_summary(ChannelSet.parse("24S"), "jpeg-coeffs", 448, "float16")
    assert "150,528 bytes" in line and "(1.00x" in line


def test_evaluate_prints_top1_top5_last(trained, data, tmp_path):
    preds = tmp_path / "preds.csv"
    r = run_cli(["--data", data, "--evaluate", os.path.join(trained, "checkpoint.pth"),
                 "--threads", "1", "--no-progress", "--predictions", str(preds)])
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    m = TOP_LINE.match(last)
    assert m, last
    assert 0 <= float(m.group(1)) <= float(m.group(2)) <= 100
    with open(preds, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 8
    assert all(os.path.exists(p) and 0 <= int(c) < 4 for p, c in rows)
    # the predictions written at the end of training are the same model's
    with open(os.path.join(trained, "train-preds.csv"), newline="") as f:
        assert list(csv.reader(f)) == rows


def test_evaluate_with_another_coefficient_source(trained, data, tmp_path, capsys):
    ckpt = os.path.join(trained, "checkpoint.pth")
    run_inproc(["--data", data, "--evaluate", ckpt, "--threads", "1", "--no-progress",
                "--predictions", str(tmp_path / "c.csv")])
    out = run_inproc(["--data", data, "--evaluate", ckpt, "--source", "spatial", "--threads",
                      "1", "--no-progress", "--predictions", str(tmp_path / "s.csv")])
    text = capsys.readouterr().out
    assert "with source spatial" in text and TOP_LINE.match(text.strip().splitlines()[-1])
    assert out["images"] == 8
    rows = [list(csv.reader(open(tmp_path / n, newline=""))) for n in ("c.csv", "s.csv")]
    assert [p for p, _ in rows[0]] == [p for p, _ in rows[1]]
    # RGB inputs are not coefficients: refused with a reason
    with pytest.raises(SystemExit, match="cannot be evaluated on 'rgb'"):
        run_inproc(["--data", data, "--evaluate", ckpt, "--source", "rgb", "--no-progress"])


@pytest.fixture
def data_with_bad(data, tmp_path):
    root = tmp_path / "bad-data"
    shutil.copytree(data, root)
    folder = root / "train" / "rings"
    (folder / "garbage.jpg").write_bytes(b"\x00not a jpeg\xff" * 40)
    (folder / "truncated.jpg").write_bytes((folder / "0000.jpg").read_bytes()[:150])
    return str(root)


def test_bad_images_are_skipped_counted_not_replaced(data_with_bad, tmp_path, capsys):
    # 12 good + 2 bad train images, batch 7: two full steps see all 14 samples
    run_inproc(small(data_with_bad, tmp_path, "--batch-size", "7", "--max-steps", "0"))
    log = read_log(tmp_path)[0]
    assert log["skipped_bad"] == 2 and log["images"] == 12 and log["steps"] == 2
    assert "skipped 2 bad image(s)" in capsys.readouterr().out


@pytest.fixture
def data_with_cut(data, tmp_path):
    """Two validation images cut inside their entropy-coded data (25% and 90% of it): the
    eval crop reads rows on both sides of either cut (a training crop might not)."""
    from jpeg_factory import damaged, make_jpeg
    root = tmp_path / "cut-data"
    shutil.copytree(data, root)
    folder = root / "val" / "rings"
    # sequential: a progressive file cut between two scans reads as whole (docs/reliability.md)
    cuts = dict(damaged(make_jpeg("baseline-420", 256, 200)))
    (folder / "cut25.jpg").write_bytes(cuts["truncated-25pct"])
    (folder / "cut90.jpg").write_bytes(cuts["truncated-90pct"])
    return str(root)


def test_partly_decoded_images_are_counted_damaged_and_min_decoded_skips(data_with_cut,
                                                                          tmp_path, capsys):
    # 8 good + 2 cut val images
    run_inproc(small(data_with_cut, tmp_path / "keep"))
    log = read_log(tmp_path / "keep")[0]
    assert log["val_damaged"] == 2 and log["val_skipped_bad"] == 0 and log["damaged"] == 0
    assert "0 train + 2 val damaged image(s)" in capsys.readouterr().out
    run_inproc(small(data_with_cut, tmp_path / "min", "--min-decoded", "0.6"))
    log = read_log(tmp_path / "min")[0]
    assert log["val_damaged"] == 1 and log["val_skipped_bad"] == 1


def test_colour_jitter_grayscale_and_label_smoothing_train(data, tmp_path):
    """The recipe flags reach the loader and the loss: a run with them learns something
    different from the plain run on the same seed."""
    run_inproc(small(data, tmp_path / "plain"))
    run_inproc(small(data, tmp_path / "jit", "--color-jitter", "0.4", "0.4", "0.4", "0.1",
                     "--grayscale-p", "0.5", "--label-smoothing", "0.1"))
    a, b = read_log(tmp_path / "plain")[0], read_log(tmp_path / "jit")[0]
    assert a["steps"] == b["steps"] > 0
    assert a["train_loss"] != b["train_loss"]
    ckpt = load_checkpoint(str(tmp_path / "jit" / "checkpoint.pth"))
    assert ckpt["args"]["color_jitter"] == [0.4, 0.4, 0.4, 0.1]
    assert ckpt["args"]["label_smoothing"] == 0.1


def test_bad_image_error_stops_naming_the_file(data_with_bad, tmp_path):
    r = run_cli(small(data_with_bad, tmp_path, "--on-bad-image", "error", "--threads", "1",
                      "--max-steps", "0", "--batch-size", "7"))
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: bad image ")
    assert re.search(r"(garbage|truncated)\.jpg", last), last


def test_stats_are_cached_and_reused(data, tmp_path, capsys):
    args = small(data, tmp_path, "--epochs", "0")
    run_inproc(args)
    assert "stats: computed over 12 training images" in capsys.readouterr().out
    with open(tmp_path / "stats.json") as f:
        first = json.load(f)
    assert first["channels"] and len(first["mean"]) == 24 and first["size"] == [128, 128]
    run_inproc(args)
    assert "stats: reusing" in capsys.readouterr().out
    run_inproc(small(data, tmp_path, "--epochs", "0", "--channels", "6S"))
    assert "recomputing" in capsys.readouterr().out
    run_inproc(small(data, tmp_path, "--epochs", "0", "--channels", "6S", "--stats-limit", "5"))
    assert "computed over 5 training images" in capsys.readouterr().out
    # an explicit file that lacks the channels is refused
    with pytest.raises(ValueError, match="lack channels"):
        run_inproc(small(data, tmp_path, "--epochs", "0", "--stats",
                         str(tmp_path / "stats.json")))


def test_resume_after_kill_finishes_with_the_right_epochs(data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = small(data, out, "--epochs", "6", "--max-steps", "2")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *argv], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoint.pth"
    deadline = time.time() + 180
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = load_checkpoint(ckpt)["epoch"]
    assert done < 5
    capsys.readouterr()
    run_inproc(argv + ["--resume", "auto"])
    text = capsys.readouterr().out
    assert f"resume: {ckpt} (epoch {done} done" in text
    assert f"epochs {done + 1}..5" in text
    assert [e["epoch"] for e in read_log(out)] == list(range(6))
    assert load_checkpoint(ckpt)["epoch"] == 5
    # resuming a finished run trains nothing
    assert run_inproc(argv + ["--resume", "auto"])["val"] is None
    assert "nothing to train" in capsys.readouterr().out


def test_gate_writes_heatmap_json_and_png(data, tmp_path, capsys):
    run_inproc(small(data, tmp_path, "--gate", "--gate-lambda", "1.0"))
    with open(tmp_path / "heatmap.json") as f:
        hm = json.load(f)
    assert hm["samples"] == 8
    assert len(hm["channels"]) == len(hm["frequency"]) == 192
    assert hm["channels"][:2] == ["Y0", "Y1"] and hm["channels"][-1] == "Cr63"
    assert all(0.0 <= v <= 1.0 for v in hm["frequency"])
    with open(tmp_path / "heatmap.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "gate open" in capsys.readouterr().out
    assert "gate_open" in read_log(tmp_path)[0]
    ckpt = load_checkpoint(tmp_path / "checkpoint.pth")
    assert ckpt["gate"] is True and ChannelSet.parse(ckpt["channels"]).count == 192
    # a static set picked from the heat map trains as any other
    spec = f"top 24 of {tmp_path / 'heatmap.json'}"
    run_inproc(small(data, tmp_path / "top", "--channels", spec))
    assert len(load_checkpoint(tmp_path / "top" / "checkpoint.pth")["stats"]["mean"]) == 24


class _RunsCode:
    """Pickles as a call of os.system: loading it unsafely would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_that_would_run_code_are_refused(data, tmp_path):
    import detect
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {}, "arch": "resnet18", "num_classes": 4, "source": "jpeg-coeffs",
                "channels": "24S", "args": _RunsCode(marker)}, evil)
    refused = "holds pickled Python objects"
    with pytest.raises(ValueError, match=refused):
        run_inproc(["--data", data, "--evaluate", str(evil), "--threads", "1", "--no-progress"])
    with pytest.raises(ValueError, match=refused):
        run_inproc(small(data, tmp_path / "run", "--resume", str(evil)))
    d = ["--data", data, "--ann", "a.json", "--val-ann", "a.json", "--output-dir",
         str(tmp_path / "det"), "--no-progress"]
    for extra in (["--evaluate", str(evil)], ["--resume", str(evil)]):
        with pytest.raises(ValueError, match=refused):
            detect.main(detect.get_args_parser().parse_args(d + extra))
    assert not marker.exists()
    # the file does carry a live call (read from its opcodes, not run): the check above can fail
    assert f"{os.system.__module__} system" in pickled_globals(evil)


def test_demo_flag_with_data_is_refused():
    # --demo writes its own data set; with --data it would silently train on the other one
    with pytest.raises(SystemExit, match="--demo writes its own data"):
        run_inproc(["--demo", "--data", "somewhere", "--no-progress"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_end_with_identical_weights(data, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", os.path.join(ROOT, "train.py"),
           *small(data, out, "--max-steps", "3", "--debug-dump-weights", "--epochs", "2")]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = ((out / f"rank{i}.sha").read_text().strip() for i in range(2))
    assert len(a) == 64 and a == b
    assert "2 process(es)" in r.stdout
    assert r.stdout.count("epoch 2/2:") == 1                 # only rank 0 speaks
    log = read_log(out)
    # 12 images over 2 ranks: 6 per rank, batch 4 with drop_last: one step each
    assert [e["epoch"] for e in log] == [0, 1] and log[0]["images"] == 8


def test_every_flag_states_its_default():
    parser = train.get_args_parser()
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert "default" in (action.help or ""), action.dest
    args = parser.parse_args([])
    assert args.data is None and args.channels == "24S" and args.weight_decay == 4e-5
    assert args.momentum == 0.9 and args.lr_step == 30 and args.lr is None


# ---------------------------------------------------------------------------
# The input path (JpegLoader) and the loop's behaviour around it
# ---------------------------------------------------------------------------

def _loader_threads():
    import threading
    return [t.name for t in threading.enumerate() if t.name.startswith("jpegfreq-loader")]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_an_interrupt_in_the_loop_leaves_no_loader_thread(data, tmp_path, monkeypatch, exc):
    real, calls = train.train_step, []

    def step_then_fail(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise exc("interrupted")
        return real(*a, **kw)

    monkeypatch.setattr(train, "train_step", step_then_fail)
    with pytest.raises(exc, match="interrupted"):
        run_inproc(small(data, tmp_path, "--threads", "2", "--batch-size", "2",
                         "--max-steps", "0"))
    assert len(calls) == 2              # it stopped inside the loop, loader threads running
    assert _loader_threads() == []


def test_host_syncs_follow_the_print_interval_not_the_steps(data, tmp_path, monkeypatch):
    """12 steps (2 epochs x 6 batches of 2): with --print-freq 6 the metrics are read twice an
    epoch (step 6 and the epoch's end) plus once per evaluation pass; with --print-freq 1
    once a step.  Every read from the device (item, tolist, cpu) is counted."""
    counts = {"n": 0}
    for name in ("item", "tolist", "cpu"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **kw):
            counts["n"] += 1
            return _real(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, counted)

    def run(freq):
        counts["n"] = 0
        run_inproc(small(data, tmp_path / f"f{freq}", "--batch-size", "2", "--max-steps", "0",
                         "--epochs", "2", "--print-freq", str(freq), "--stats",
                         str(stats_file)))
        return counts["n"]

    # statistics first, so that both counted runs do the same work apart from the reads
    run_inproc(small(data, tmp_path / "s", "--epochs", "0"))
    stats_file = tmp_path / "s" / "stats.json"
    sparse, dense = run(6), run(1)
    assert read_log(tmp_path / "f6")[-1]["steps"] == 6
    assert sparse <= 2 * 2 + 2, sparse      # 2 reads per epoch + 1 per val pass, 2 epochs
    assert dense >= 12, dense               # the counter does see one read per step


@pytest.mark.parametrize("named", [False, True])
def test_a_failed_checkpoint_write_stops_with_one_line(data, tmp_path, monkeypatch, named):
    import errno
    real = train.save_checkpoint

    def full_disk(path, state):
        if state["epoch"] == 1:    # as the OS says it, or as save_checkpoint words it
            reason = "No space left on device"
            raise OSError(errno.ENOSPC, f"{path}: cannot write checkpoint: {reason}" if named
                          else reason)
        return real(path, state)

    monkeypatch.setattr(train, "save_checkpoint", full_disk)
    with pytest.raises(SystemExit) as e:
        run_inproc(small(data, tmp_path, "--epochs", "3"))
    path = os.path.join(str(tmp_path), "checkpoint.pth")
    # a string code: Python prints it on stderr and exits with status 1
    assert e.value.code == f"train.py: error: cannot write {path}: No space left on device"
    assert load_checkpoint(path)["epoch"] == 0          # the previous checkpoint stays
    assert [r["epoch"] for r in read_log(tmp_path)] == [0, 1]
    assert _loader_threads() == []


@pytest.fixture(scope="module")
def shards(data, tmp_path_factory):
    """The tiny set as tar shards: train 12 images in shards of 5, 5, 2; val 8 in 5, 3."""
    from jpegfreq.shards import write_shards
    root = tmp_path_factory.mktemp("shards")
    for split in ("train", "val"):
        write_shards(os.path.join(data, split), str(root / split), shard_size=5, progress=False)
    return str(root)


def test_trains_and_evaluates_from_shards(data, shards, tmp_path, capsys):
    train_pat = os.path.join(shards, "train-{000000..000002}.tar")
    val_pat = os.path.join(shards, "val-{000000..000001}.tar")
    flags = small(data, tmp_path, "--predictions", str(tmp_path / "p.csv"))
    flags = flags[2:] + ["--shards", train_pat, "--val-shards", val_pat]   # no --data
    result = run_inproc(flags)
    assert "train: 12 images, val: 8 images, 4 classes" in capsys.readouterr().out
    assert result["val"]["images"] == 8 and read_log(tmp_path)[0]["images"] == 8
    ckpt = load_checkpoint(tmp_path / "checkpoint.pth")
    assert ckpt["classes"] == sorted(os.listdir(os.path.join(data, "train")))
    with open(tmp_path / "p.csv", newline="") as f:
        rows = [(int(i), int(c)) for i, c in csv.reader(f)]
    assert [i for i, _ in rows] == list(range(8)) and all(0 <= c < 4 for _, c in rows)
    # the checkpoint's own evaluation from the val shards: the same predictions
    run_inproc(["--val-shards", val_pat, "--evaluate", str(tmp_path / "checkpoint.pth"),
                "--threads", "1", "--no-progress", "--predictions", str(tmp_path / "e.csv")])
    assert (tmp_path / "e.csv").read_text() == (tmp_path / "p.csv").read_text()
    with pytest.raises(SystemExit, match="--shards needs --val-shards"):
        run_inproc(flags[:-2])


def test_int8_cubes_train_and_evaluate(data, tmp_path):
    result = run_inproc(small(data, tmp_path, "--dtype", "int8"))
    assert result["val"]["images"] == 8 and np.isfinite(result["val"]["loss"])
    ckpt = load_checkpoint(tmp_path / "checkpoint.pth")
    assert ckpt["model"]["int8_scale"].shape == (24,)
    m = run_inproc(["--data", data, "--evaluate", str(tmp_path / "checkpoint.pth"),
                    "--threads", "1", "--no-progress", "--dtype", "int8"])
    assert m["images"] == 8


def test_ddp_uneven_shards_end_with_identical_weights(data, shards, tmp_path):
    """Shards of 5, 5 and 2 images over 2 ranks: the ranks get different numbers of batches
    (DDP join) and after each epoch one optimizer state, so weights and momentum buffers stay
    identical (the digest covers both; without the optimizer sync the momentum of the rank
    that ran out early differs, and so do the digests)."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    flags = small(data, out, "--max-steps", "0", "--batch-size", "2", "--epochs", "3",
                  "--debug-dump-weights")[2:]
    flags += ["--shards", os.path.join(shards, "train-{000000..000002}.tar"),
              "--val-shards", os.path.join(shards, "val-{000000..000001}.tar")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", os.path.join(ROOT, "train.py"), *flags]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = ((out / f"rank{i}.sha").read_text().strip() for i in range(2))
    assert len(a) == 64 and a == b
    log = read_log(out)
    # every epoch: shards of 5 + 5 or 5 + 2 on one rank, 2 or 5 on the other -> uneven steps
    assert [e["epoch"] for e in log] == [0, 1, 2]
    assert all(e["images"] in (10, 12) for e in log), log
