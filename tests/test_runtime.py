"""jpegfreq.runtime, what train.py and detect.py share: the exact evaluation shards, atomic
writes, plain checkpoint data, statistics resolution, presets; and a detect.py checkpoint read
back through jpegfreq.models.load_model.

Guards: an evaluation sampler that drops, repeats or pads an index on some world size; a
failed write that leaves a torn or missing file behind; checkpoint contents that only unsafe
unpickling could read; a stale or foreign stats.json used silently; a demo preset overriding
a flag the user gave; detector checkpoints that the library cannot rebuild.
"""
import argparse
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jpegfreq import ChannelSet, runtime  # noqa: E402
from jpegfreq.checkpoint import check_plain, load_checkpoint, save_checkpoint  # noqa: E402
from jpegfreq.geometry import eval_geometry  # noqa: E402
from jpegfreq.runtime import Context, ShardSampler  # noqa: E402
from jpegfreq.stats import Stats  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 7, 10, 13])
def test_shards_cover_every_index_exactly_once(world, n):
    shards = [list(ShardSampler(n, r, world)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert sum(len(ShardSampler(n, r, world)) for r in range(world)) == n
    # as balanced as possible: shard sizes differ by at most one
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shards_feed_a_dataloader_and_refuse_a_bad_rank():
    data = torch.arange(11)
    seen = []
    for r in range(3):
        loader = torch.utils.data.DataLoader(data, batch_size=2, sampler=ShardSampler(11, r, 3))
        seen += [int(v) for batch in loader for v in batch]
    assert sorted(seen) == list(range(11))
    with pytest.raises(ValueError, match="rank 3"):
        ShardSampler(10, 3, 3)
    with pytest.raises(ValueError):
        ShardSampler(10, 0, 0)


def test_one_process_context(monkeypatch, capsys):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    ctx = Context("cpu")
    assert (ctx.rank, ctx.world, ctx.local_rank, ctx.distributed, ctx.main) == (0, 1, 0, False, True)
    assert ctx.device == torch.device("cpu") and ctx.backend == "gloo"
    assert ctx.all_sum([1, 2.5]) == [1.0, 2.5] and ctx.all_min(3) == 3
    t = torch.ones(3)
    assert ctx.all_reduce_(t) is t and t.tolist() == [1.0, 1.0, 1.0]
    assert ctx.gather({"a": 1}) == [{"a": 1}]
    ctx.barrier()
    ctx.log("spoken", 1)
    assert capsys.readouterr().out == "spoken 1\n"
    ctx.close()
    assert runtime.backend_for("cuda:1") == "nccl" and runtime.backend_for("cpu") == "gloo"


class _FakeCuda:
    """torch.cuda as a machine with ``count`` visible GPUs would answer (no GPU needed)."""

    def __init__(self, monkeypatch, count):
        self.current = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", self.current.append)


def _torchrun_env(monkeypatch, rank, world, local_rank):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    groups = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, **kw: groups.append(backend))
    return groups


def test_one_visible_gpu_per_task_is_device_zero_for_every_local_rank(monkeypatch):
    # a scheduler that gives each task its own GPU: CUDA_VISIBLE_DEVICES of one device, so
    # LOCAL_RANK 1 must not ask for cuda:1
    cuda = _FakeCuda(monkeypatch, 1)
    groups = _torchrun_env(monkeypatch, 1, 2, 1)
    ctx = Context()
    assert ctx.device == torch.device("cuda", 0) and cuda.current == [0]
    assert ctx.backend == "nccl" and groups == ["nccl"] and ctx.distributed
    # a machine with 4 GPUs: local rank 1 takes cuda:1, local rank 5 (a second job) cuda:1
    cuda = _FakeCuda(monkeypatch, 4)
    assert Context("cuda").device == torch.device("cuda", 1) and cuda.current == [1]
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert Context("cuda").device == torch.device("cuda", 1)


def test_a_device_index_given_is_made_current(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    cuda = _FakeCuda(monkeypatch, 2)
    ctx = Context("cuda:1")
    assert ctx.device == torch.device("cuda", 1) and cuda.current == [1] and not ctx.distributed
    assert Context(None).device == torch.device("cuda", 0) and cuda.current == [1, 0]
    assert Context("cpu").device == torch.device("cpu") and cuda.current == [1, 0]
    with pytest.raises(ValueError, match="cuda:2: only 2 CUDA device"):
        Context("cuda:2")
    _FakeCuda(monkeypatch, 0)
    with pytest.raises(ValueError, match="CUDA is not available"):
        Context("cuda")
    assert Context().device == torch.device("cpu")


def test_collectives_go_to_the_device_the_backend_takes(monkeypatch):
    """gloo reduces CPU tensors (no device copy for a few numbers); a backend registered for
    CUDA only (nccl, or a plug-in backend) gets them on this process's device."""
    import torch.distributed as dist
    ctx = Context("cpu")
    ctx.device = torch.device("cuda", 1)
    for backend, want in (("gloo", "cpu"), ("nccl", "cuda:1")):
        ctx.backend = backend
        assert ctx._comm_device == torch.device(want)
    if "jfcudaonly" not in dist.Backend.backend_capability:
        dist.Backend.register_backend("jfcudaonly", lambda *a, **kw: None, devices=["cuda"])
    ctx.backend = "jfcudaonly"
    assert ctx._comm_device == torch.device("cuda", 1)
    # what the helpers hand to the backend: float64 values on its device, results on the host
    seen = []

    class FakeDist:
        ReduceOp, Backend = dist.ReduceOp, dist.Backend

        @staticmethod
        def all_reduce(t, op=None):
            seen.append((t.device, t.dtype, op))
            t.mul_(2)

    ctx.device, ctx.backend = torch.device("cpu"), "gloo"
    ctx.distributed, ctx._dist = True, FakeDist
    assert ctx.all_sum([1, 2]) == [2.0, 4.0] and ctx.all_max(3) == 6.0
    assert seen[0][:2] == (torch.device("cpu"), torch.float64)
    assert seen[1][2] == dist.ReduceOp.MAX


def test_only_rank_zero_speaks(monkeypatch, capsys):
    ctx = Context("cpu")
    monkeypatch.setattr(ctx, "rank", 1)
    ctx.log("quiet")
    assert capsys.readouterr().out == ""
    bar = runtime.progress(range(3), ctx)
    assert bar.disable and list(bar) == [0, 1, 2]


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def test_write_json_and_text_replace_the_file(tmp_path):
    path = tmp_path / "sub" / "a.json"
    runtime.write_json(path, {"x": [1, 2]})
    assert json.loads(path.read_text()) == {"x": [1, 2]}
    runtime.write_json(path, {"x": 3})
    assert json.loads(path.read_text()) == {"x": 3}
    runtime.write_text(tmp_path / "t.txt", "one\ntwo\n")
    assert (tmp_path / "t.txt").read_text() == "one\ntwo\n"
    assert sorted(os.listdir(tmp_path / "sub")) == ["a.json"]


@pytest.mark.parametrize("fail", ["dump", "replace", "unserializable"])
def test_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch, fail):
    path = tmp_path / "history.json"
    runtime.write_json(path, [{"epoch": 1}])
    before = path.read_bytes()
    data = [{"epoch": 1}, {"epoch": 2}]

    def boom(*a, **kw):
        raise OSError("disk full")

    if fail == "dump":
        def half_then_boom(obj, f, **kw):
            f.write('[{"epoch": 1}, {"ep')
            raise OSError("disk full")
        monkeypatch.setattr(runtime.json, "dump", half_then_boom)
    elif fail == "replace":
        monkeypatch.setattr(runtime.os, "replace", boom)
    else:
        data = [{"epoch": object()}]
    with pytest.raises((OSError, TypeError)):     # json.dump's own TypeError
        runtime.write_json(path, data)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["history.json"]      # no temporary file left behind


def test_plain_turns_run_objects_into_plain_data(tmp_path):
    stats = Stats(ChannelSet.parse("6S"), np.arange(6.0), np.ones(6), "jpeg-coeffs", (64, 64),
                  10, eval_geometry(64).to_dict())
    lin = torch.nn.Linear(2, 2)
    state = {"args": argparse.Namespace(lr=0.1, steps=[1, 2], name="x", flag=None),
             "stats": stats, "geometry": eval_geometry(64), "ap": np.float64(0.25),
             "n": np.int64(3), "table": np.zeros((2, 2), np.float32), "pair": (1, 2.0),
             "model": lin.state_dict()}
    p = runtime.plain(state)
    check_plain(p)                                   # the checkpoint module's own verdict
    assert p["args"] == {"lr": 0.1, "steps": [1, 2], "name": "x", "flag": None}
    assert type(p["ap"]) is float and type(p["n"]) is int and p["table"] == [[0.0, 0.0]] * 2
    assert p["stats"]["channels"] == ChannelSet.parse("6S").spec
    assert p["geometry"]["out_h"] == 64
    assert p["pair"] == (1, 2.0)
    assert p["model"]["weight"] is state["model"]["weight"]     # tensors are kept as they are
    assert getattr(p["model"], "_metadata", None) == state["model"]._metadata
    torch.save(p, tmp_path / "p.pth")
    back = torch.load(tmp_path / "p.pth", weights_only=True)
    assert back["args"] == p["args"] and torch.equal(back["model"]["bias"], lin.bias)
    with pytest.raises(ValueError, match=r"checkpoint\['args'\]\['f'\]: .* is not plain data"):
        runtime.plain({"args": {"f": print}})
    with pytest.raises(ValueError, match="key"):
        runtime.plain({(1, 2): 3})


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------

def _stats(spec="24S", size=128):
    cs = ChannelSet.parse(spec)
    rng = np.random.default_rng(0)
    return Stats(cs, rng.normal(size=cs.count), rng.uniform(1, 2, cs.count), "jpeg-coeffs",
                 (size, size), 100, eval_geometry(size).to_dict())


class _Compute:
    def __init__(self, stats):
        self.stats, self.calls = stats, 0

    def __call__(self):
        self.calls += 1
        return self.stats, "12 training images"


def _resolve(cache, compute, key, spec="24S", size=128, given=None):
    return runtime.resolve_stats(Context("cpu"), given=given, cache=str(cache), key=key,
                                 compute=compute, channels=ChannelSet.parse(spec),
                                 source="jpeg-coeffs", geometry=eval_geometry(size))


def test_stats_are_computed_once_then_reused(tmp_path, capsys):
    cache, key = tmp_path / "stats.json", {"channels": "24S", "train_dir": "/d", "limit": 0}
    compute = _Compute(_stats())
    st = _resolve(cache, compute, key)
    assert compute.calls == 1 and "computed over 12 training images" in capsys.readouterr().out
    saved = json.loads(cache.read_text())
    assert saved["train_dir"] == "/d" and saved["limit"] == 0 and len(saved["mean"]) == 24
    again = _resolve(cache, compute, key)
    assert compute.calls == 1 and f"reusing {cache}" in capsys.readouterr().out
    np.testing.assert_allclose(again.mean, st.mean)
    # other settings (here another training folder): recomputed, the cache rewritten
    _resolve(cache, compute, dict(key, train_dir="/other"))
    assert compute.calls == 2 and "recomputing" in capsys.readouterr().out
    assert json.loads(cache.read_text())["train_dir"] == "/other"


def test_a_cache_that_disagrees_with_its_key_is_refused_naming_it(tmp_path):
    cache, key = tmp_path / "stats.json", {"train_dir": "/d", "limit": 0}
    # the key matches, the contents are 6S statistics at 64 (edited, or another program's)
    runtime.write_json(cache, dict(_stats("6S", 64).to_dict(), **key))
    compute = _Compute(_stats())
    with pytest.raises(ValueError, match=f"{cache}: .*(lack channels|64x64)"):
        _resolve(cache, compute, key)
    cache.write_text('{"mean": [1, 2')                          # torn / edited file
    with pytest.raises(ValueError, match=f"{cache}: cannot read cached statistics"):
        _resolve(cache, compute, key)
    assert compute.calls == 0


def test_given_stats_are_checked_naming_the_file(tmp_path):
    given = tmp_path / "given.json"
    _stats("6S").save(given)
    compute = _Compute(_stats())
    with pytest.raises(ValueError, match=f"{given}: .*lack channels"):
        _resolve(tmp_path / "stats.json", compute, {}, given=str(given))
    with pytest.raises(ValueError, match="statistics were computed for 128x128"):
        _resolve(tmp_path / "stats.json", compute, {}, spec="6S", size=64, given=str(given))
    with pytest.raises(ValueError, match="missing.json: cannot read statistics"):
        _resolve(tmp_path / "stats.json", compute, {}, given=str(tmp_path / "missing.json"))
    st = _resolve(tmp_path / "stats.json", compute, {}, spec="6S", given=str(given))
    assert st.channels == ChannelSet.parse("6S") and compute.calls == 0
    assert not (tmp_path / "stats.json").exists()


# ---------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------

def test_presets_fill_only_what_was_not_given():
    import detect
    import train
    args = train.get_args_parser().parse_args(["--epochs", "3"])
    extras = runtime.apply_preset(args, "train-demo", "train")
    assert args.epochs == 3                                      # the flag wins
    assert (args.arch, args.lr, args.lr_schedule, args.output_dir, args.source) == \
        ("resnet18", 0.02, "cosine", "demo-out", "jpeg-coeffs")
    assert extras["synthetic"]["classes"] == 6 and not hasattr(args, "synthetic")
    args = train.get_args_parser().parse_args([])
    runtime.apply_preset(args, "train")
    assert (args.arch, args.epochs, args.lr, args.lr_schedule) == ("resnet50", 90, None, "step")
    d = detect.get_args_parser().parse_args(["--lr-steps", "3"])
    runtime.apply_preset(d, "detect-demo", "detect")
    assert d.lr_steps == [3] and d.min_size == 160 and d.task == "segm" and d.eval_before is True
    runtime.preset("detect")["lr_steps"].append(99)                  # a copy: the table holds
    assert runtime.preset("detect")["lr_steps"] == [8, 11]
    with pytest.raises(KeyError, match="no preset 'nope'"):
        runtime.preset("nope")


# ---------------------------------------------------------------------------
# One checkpoint schema: a detect.py checkpoint loads through jpegfreq.models.load_model
# ---------------------------------------------------------------------------

def _detect_args(**kw):
    import detect
    a = detect.get_args_parser().parse_args(
        ["--data", "d", "--ann", "a.json", "--val-ann", "a.json", "--task", "bbox",
         "--min-size", "64", "--max-size", "96", "--box-batch-size-per-image", "16",
         "--rpn-post-nms-top-n", "40", "--detections-per-img", "7", "--device", "cpu"])
    for k, v in kw.items():
        setattr(a, k, v)
    return runtime.apply_preset(a, "detect") and a


@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_detector_checkpoint_loads_through_load_model(tmp_path, task):
    import detect
    from jpegfreq.models import load_model
    from jpegfreq.stats import detection_stats_geometry
    args = _detect_args(task=task)
    args.frozen_bn = False
    train_set = SimpleNamespace(num_classes=3, classes=["a", "b"], cat_ids=[4, 9],
                                channels=ChannelSet.parse(args.channels))
    torch.manual_seed(0)
    model = detect.make_model(args, train_set.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, detect.WarmupMultiStep(4, 2, [1]))
    stats = Stats(train_set.channels, np.zeros(24), np.ones(24), "jpeg-coeffs", (0, 0), 5,
                  detection_stats_geometry(64, 96))
    history = [{"epoch": 0, "loss": None, "bbox_AP": np.float64(0.0)}]
    state = detect.checkpoint_dict(args, model, optimizer, scheduler, 1, train_set, stats, history)
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(path, state)

    ckpt = load_checkpoint(path)                                  # weights_only=True
    assert ckpt["task"] == "detect" and ckpt["cat_ids"] == [4, 9] and ckpt["epoch"] == 1
    assert ckpt["arch"] == ("maskrcnn" if task == "segm" else "fasterrcnn") + "_resnet50_dct_fpn"
    assert ckpt["model_kwargs"]["box_detections_per_img"] == 7
    assert ckpt["stats"]["geometry"]["kind"] == "detection" and ckpt["args"]["task"] == task
    assert detect.checkpoint_settings(path, ckpt) == {
        "source": "jpeg-coeffs", "channels": ChannelSet.parse("24S").spec, "task": task,
        "min_size": 64, "max_size": 96}
    loaded = load_model(str(path))
    assert not loaded.training
    assert loaded.roi_heads.detections_per_img == 7
    assert loaded.roi_heads.has_mask() == (task == "segm")
    want = model.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    model.eval()
    cube = [torch.randn(24, 16, 24)]
    with torch.no_grad():
        a, b = model(cube)[0], loaded(cube)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_each_script_refuses_the_other_kind_of_checkpoint(tmp_path):
    import detect
    import train
    det = tmp_path / "det.pth"
    save_checkpoint(det, {"task": "detect", "model": {}, "arch": "fasterrcnn_resnet50_dct_fpn",
                          "num_classes": 3, "source": "jpeg-coeffs", "channels": "24S"})
    with pytest.raises(SystemExit, match="is a detect checkpoint"):
        train.main(train.get_args_parser().parse_args(
            ["--data", str(tmp_path), "--evaluate", str(det), "--device", "cpu"]))
    cls = tmp_path / "cls.pth"
    save_checkpoint(cls, {"task": "classify", "model": {}, "arch": "resnet18", "num_classes": 3,
                          "source": "rgb", "channels": None})
    with pytest.raises(ValueError, match="cls.pth: a classification checkpoint"):
        detect.main(detect.get_args_parser().parse_args(
            ["--data", str(tmp_path), "--val-ann", "a.json", "--evaluate", str(cls),
             "--device", "cpu", "--output-dir", str(tmp_path / "out")]))


def test_detect_under_two_processes_evaluates_the_saved_model_exactly(tmp_path):
    """torchrun, 2 CPU processes: each image predicted once (ShardSampler), every rank with
    rank 0's BatchNorm statistics, so the AP printed after the epoch is the AP of the saved
    checkpoint evaluated by one process, result for result."""
    import socket
    import subprocess
    from jpegfreq.synthetic import make_shapes_dataset
    ann = make_shapes_dataset(str(tmp_path / "data"), 5, "val", seed=3, size=(128, 96),
                              objects=(1, 2), object_size=(28, 56), category_ids=[2, 5, 9])
    folder = str(tmp_path / "data" / "val")
    common = ["--data", folder, "--ann", ann, "--val-ann", ann, "--task", "bbox", "--min-size",
              "64", "--max-size", "96", "--batch-size", "1", "--workers", "0", "--lr", "0.002",
              "--box-batch-size-per-image", "32", "--rpn-post-nms-top-n", "100", "--no-progress",
              "--threads", "1", "--device", "cpu", "--output-dir", str(tmp_path / "out")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        f"--master_port={port}", os.path.join(ROOT, "detect.py"), *common,
                        "--epochs", "1", "--predictions", str(tmp_path / "p2.json")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "batch=1x2" in r.stdout and r.stdout.count("epoch 1: ") == 1     # rank 0 speaks
    trained_ap = r.stdout.split("epoch 1: ")[1].split("bbox AP ")[1].split()[0]
    import detect
    metrics = detect.main(detect.get_args_parser().parse_args(
        common + ["--evaluate", str(tmp_path / "out" / "checkpoint.pth"),
                  "--predictions", str(tmp_path / "p1.json")]))
    assert f"{metrics['bbox']['AP']:.4f}" == trained_ap
    one, two = (json.load(open(tmp_path / f"p{n}.json")) for n in (1, 2))

    def key(r):
        return (r["image_id"], r["category_id"], round(r["score"], 5))
    assert len(one) == len(two) > 0
    assert {r["image_id"] for r in two} <= {1, 2, 3, 4, 5}
    assert sorted(map(key, one)) == sorted(map(key, two))
