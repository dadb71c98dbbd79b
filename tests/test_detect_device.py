"""detect.py as a GPU run executes it, checked on the CPU.

Guards: a host synchronisation per training step (the loss read back every step instead of once
per --print-freq interval), a non-finite loss going unnoticed, --amp not reaching the forward
(or float16 asked of the CPU), SyncBatchNorm missing from a distributed run with learning
BatchNorm layers or forced onto frozen ones, --channels-last not reaching the weights, and the
evaluation copying every rank's results to every rank instead of to rank 0 alone.
"""
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import detect  # noqa: E402
from jpegfreq.runtime import Context  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.usefixtures("torch_one_thread")]

LIGHT = dict(box_batch_size_per_image=32, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
             rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, box_detections_per_img=20)


def _args(**kw):
    a = detect.get_args_parser().parse_args(["--no-progress"])
    a.clip_grad, a.batch_size = 0.0, 2
    for k, v in kw.items():
        setattr(a, k, v)
    return a


@pytest.fixture
def one_process(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    ctx = Context("cpu")
    yield ctx
    ctx.close()


# ---------------------------------------------------------------------------
# The training loop: losses read once per interval
# ---------------------------------------------------------------------------

class FakeDetector(nn.Module):
    """model(images, targets) -> a torchvision-style loss dict, from one conv and one BatchNorm;
    records the autocast state it ran under. nan_at: the step whose losses are NaN."""

    def __init__(self, nan_at=None):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.nan_at, self.calls, self.autocast = nan_at, 0, []

    def forward(self, images, targets):
        self.calls += 1
        self.autocast.append((torch.is_autocast_enabled("cpu"),
                              torch.get_autocast_dtype("cpu")))
        x = self.bn(self.conv(torch.stack(images)))
        a, b = x.float().square().mean(), x.float().abs().mean()
        if self.calls == self.nan_at:
            a = a * float("nan")
        return {"loss_classifier": a, "loss_box_reg": b}


def _batches(steps):
    g = torch.Generator().manual_seed(0)
    return [([torch.rand(3, 8, 8, generator=g) for _ in range(2)],
             [{"boxes": torch.zeros(0, 4)} for _ in range(2)]) for _ in range(steps)]


def _run(ctx, steps, print_freq, model=None, **kw):
    torch.manual_seed(0)
    model = model or FakeDetector()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, detect.WarmupMultiStep(steps, 2, [5]))
    args = _args(**{"print_freq": print_freq, "amp": False, **kw})
    return detect.train_one_epoch(model, opt, sched, _batches(steps), ctx.device, 1, args, ctx)


HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__",
              "__format__")


def _count_host_reads(monkeypatch, fn):
    """How many times fn's work copies a tensor's value to the host (any of HOST_READS)."""
    count = [0]
    for name in HOST_READS:
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, **kw):
            count[0] += 1
            return _orig(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, wrapped)
    out = fn()
    monkeypatch.undo()
    return count[0], out


def test_losses_are_read_once_per_interval(monkeypatch, one_process):
    ctx = one_process
    six_by_three, m63 = _count_host_reads(monkeypatch, lambda: _run(ctx, 6, 3))
    six_by_six, _ = _count_host_reads(monkeypatch, lambda: _run(ctx, 6, 6))
    twelve_by_six, _ = _count_host_reads(monkeypatch, lambda: _run(ctx, 12, 6))
    every_step, m61 = _count_host_reads(monkeypatch, lambda: _run(ctx, 6, 1))
    # one read per interval: the count follows the intervals (2, 1, 2, 6), not the steps
    assert six_by_three == twelve_by_six == 2 * six_by_six
    assert every_step == 6 * six_by_six
    assert 1 <= six_by_six <= 2
    # the epoch means are the same however often they are read
    assert set(m63) == {"loss", "loss_classifier", "loss_box_reg"}
    for k in m63:
        assert m63[k] == pytest.approx(m61[k], rel=1e-6)
    assert m63["loss"] == pytest.approx(m63["loss_classifier"] + m63["loss_box_reg"], rel=1e-6)


def test_an_epoch_that_is_not_a_multiple_of_the_interval_is_read_to_its_end(one_process):
    ctx = one_process
    a = _run(ctx, 5, 3)          # intervals 1-3 and 4-5
    b = _run(ctx, 5, 1)
    for k in b:
        assert a[k] == pytest.approx(b[k], rel=1e-6)


def test_a_non_finite_loss_stops_the_run_at_its_interval(one_process):
    ctx = one_process
    model = FakeDetector(nan_at=2)
    with pytest.raises(SystemExit, match=r"epoch 1: loss is not finite in steps 1-3 .*lower --lr"):
        _run(ctx, 6, 3, model=model)
    assert model.calls == 3          # found at the interval's read, not at step 6
    model = FakeDetector(nan_at=5)
    with pytest.raises(SystemExit, match="steps 4-6"):
        _run(ctx, 6, 3, model=model)


def test_amp_reaches_the_forward_and_defaults_off_on_cpu(one_process):
    ctx = one_process
    model = FakeDetector()
    _run(ctx, 2, 1, model=model, amp=True)
    assert model.autocast == [(True, torch.bfloat16)] * 2        # CPU autocast is bfloat16
    model = FakeDetector()
    _run(ctx, 2, 1, model=model, amp=False)
    assert [on for on, _ in model.autocast] == [False, False]
    args = _args(amp=None, cudnn_benchmark=None)
    detect.setup_device(args, ctx)
    assert args.amp is False and args.cudnn_benchmark is False
    args = _args(amp=True, cudnn_benchmark=None)
    detect.setup_device(args, SimpleNamespace(device=torch.device("cpu")))
    assert args.amp is True                                       # asked for: kept
    with pytest.warns(UserWarning, match="CUDA is not available") if not \
            torch.cuda.is_available() else contextlib.nullcontext():
        assert detect.autocast(torch.device("cuda"), True).fast_dtype == torch.float16


def test_amp_trains_a_real_detector_on_cpu(one_process, tmp_path):
    """bfloat16 autocast through torchvision's R-CNN (RoIAlign, NMS, losses) on cubes."""
    from jpegfreq.detection import CocoJpeg, collate
    from jpegfreq.models.detection import build_detector
    from jpegfreq.synthetic import make_shapes_dataset
    ann = make_shapes_dataset(str(tmp_path), 4, "val", seed=3, size=(128, 96), objects=(1, 2),
                              object_size=(28, 56), category_ids=[2, 5, 9])
    ds = CocoJpeg(str(tmp_path / "val"), ann, train=True, min_size=64, max_size=96, masks=False)
    loader = [collate([ds[0], ds[1]])]        # one step: bfloat16 is slow on most CPUs
    torch.manual_seed(0)
    model = build_detector("bbox", "jpeg-coeffs", "24S", ds.num_classes, **LIGHT)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    before = model.backbone.body["layer2"][0].conv1.weight.detach().clone()
    args = _args(print_freq=20, amp=True, clip_grad=10.0)
    means = detect.train_one_epoch(model, opt, sched, loader, one_process.device, 1, args,
                                   one_process)
    assert {"loss", "loss_objectness", "loss_classifier"} <= set(means)
    assert all(torch.isfinite(torch.tensor(v)) for v in means.values())
    after = model.backbone.body["layer2"][0].conv1.weight
    assert after.dtype == torch.float32 and not torch.equal(before, after)


# ---------------------------------------------------------------------------
# SyncBatchNorm and channels-last
# ---------------------------------------------------------------------------

def _norms(model):
    kinds = {}
    for m in model.modules():
        name = type(m).__name__
        if "BatchNorm" in name:
            kinds[name] = kinds.get(name, 0) + 1
    return kinds


def _distributed(device):
    """What prepare_model reads of a torchrun context, without a process group."""
    return SimpleNamespace(distributed=True, device=torch.device(device), local_rank=0,
                           log=lambda *a, **kw: None)


def test_sync_batchnorm_in_distributed_cuda_runs_unless_frozen():
    from jpegfreq.models.detection import build_detector
    learning = build_detector("bbox", "jpeg-coeffs", "24S", 3, frozen_bn=False, **LIGHT)
    frozen = build_detector("bbox", "jpeg-coeffs", "24S", 3, frozen_bn=True, **LIGHT)
    n_bn = _norms(learning)["BatchNorm2d"]
    assert n_bn > 50 and "BatchNorm2d" not in _norms(frozen)

    args = _args(sync_bn=None)
    cuda = _distributed("cuda")
    converted = detect.convert_norm(args, learning, cuda)
    assert _norms(converted) == {"SyncBatchNorm": n_bn}
    kept = detect.convert_norm(args, frozen, cuda)
    assert kept is frozen and _norms(kept) == _norms(frozen)     # FrozenBatchNorm2d untouched
    assert not detect.use_sync_bn(args, frozen, cuda)

    fresh = build_detector("bbox", "rgb", None, 3, **LIGHT)      # the RGB baseline learns BN
    assert detect.use_sync_bn(args, fresh, cuda)
    assert not detect.use_sync_bn(args, fresh, SimpleNamespace(distributed=False,
                                                               device=torch.device("cuda")))
    assert not detect.use_sync_bn(_args(sync_bn=False), fresh, cuda)
    # gloo on CPU: SyncBatchNorm cannot synchronise there; by default it is left out, asked
    # for it is an error
    assert not detect.use_sync_bn(args, fresh, _distributed("cpu"))
    with pytest.raises(SystemExit, match="--sync-bn: SyncBatchNorm needs CUDA"):
        detect.use_sync_bn(_args(sync_bn=True), fresh, _distributed("cpu"))


def test_channels_last_reaches_the_weights(one_process):
    def conv_weights(model):
        return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    model = detect.prepare_model(_args(channels_last=True, sync_bn=None), FakeDetector(),
                                 one_process)
    w = conv_weights(model)[0]
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    model = detect.prepare_model(_args(channels_last=False, sync_bn=None), FakeDetector(),
                                 one_process)
    assert conv_weights(model)[0].is_contiguous()
    assert _norms(model) == {"BatchNorm2d": 1}                   # one process: no SyncBatchNorm


def test_loaders_pin_memory_with_cuda_only():
    data = [(torch.full((1, 2 + i, 3), float(i)), {"i": i}) for i in range(4)]
    args = _args(workers=0, batch_size=2)
    assert detect.make_loader(data, args, None, torch.device("cuda")).pin_memory
    assert not detect.make_loader(data, args, None, torch.device("cpu")).pin_memory
    batches = list(detect.make_loader(data, args, None, torch.device("cpu"), batch_size=3))
    # images of different sizes stay a tuple (the model pads them), targets their dicts
    assert [len(images) for images, _ in batches] == [3, 1]
    assert [tuple(im.shape) for im in batches[0][0]] == [(1, 2, 3), (1, 3, 3), (1, 4, 3)]
    assert [t["i"] for t in batches[0][1]] == [0, 1, 2]


def test_flags():
    a = detect.get_args_parser().parse_args([])
    assert (a.amp, a.channels_last, a.sync_bn, a.cudnn_benchmark, a.print_freq) == \
        (None, False, None, None, 20)
    a = detect.get_args_parser().parse_args(["--no-amp", "--channels-last", "--no-sync-bn",
                                             "--print-freq", "5", "--device", "cpu"])
    assert (a.amp, a.channels_last, a.sync_bn, a.print_freq, a.device) == \
        (False, True, False, 5, "cpu")


# ---------------------------------------------------------------------------
# Evaluation: results to rank 0 only, metrics to every rank (2 gloo processes)
# ---------------------------------------------------------------------------

CHILD = textwrap.dedent('''
    import json, os, sys
    sys.path.insert(0, {root!r})
    import torch
    import torch.distributed as dist
    import detect
    from jpegfreq.detection import CocoJpeg
    from jpegfreq.runtime import Context, ShardSampler

    def forbidden(*a, **kw):
        raise AssertionError("all_gather_object: every rank's results sent to every rank")
    dist.all_gather_object = forbidden

    def perfect(model, dataset, device, args, ctx, batch_size=None):
        # this rank's share, predicted exactly: AP 1 only if rank 0 gets every share
        out = []
        for i in ShardSampler(len(dataset), ctx.rank, ctx.world):
            _, t = dataset[i]
            n = len(t["boxes"])
            out.extend(dataset.to_coco(t, {{"boxes": t["boxes"], "labels": t["labels"],
                                            "scores": torch.ones(n)}}))
        return out
    detect.predict = perfect

    ctx = Context("cpu")
    ds = CocoJpeg({folder!r}, {ann!r}, min_size=96, max_size=128, masks=False)
    args = detect.get_args_parser().parse_args(["--task", "bbox", "--no-progress"])
    metrics, results = detect.evaluate(None, ds, ctx.device, args, ctx)
    mine = len(perfect(None, ds, None, args, ctx))
    with open(os.path.join({out!r}, f"rank{{ctx.rank}}.json"), "w") as f:
        json.dump({{"metrics": metrics, "results": None if results is None else len(results),
                   "mine": mine}}, f)
    ctx.close()
''')


def test_evaluation_gathers_results_on_rank_zero_only(tmp_path):
    from jpegfreq.synthetic import make_shapes_dataset
    ann = make_shapes_dataset(str(tmp_path / "data"), 5, "val", seed=3, size=(128, 96),
                              objects=(1, 2), object_size=(28, 56), category_ids=[2, 5, 9])
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=ROOT, folder=str(tmp_path / "data" / "val"), ann=ann,
                                   out=str(tmp_path)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        f"--master_port={port}", str(script)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    zero, one = (json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1))
    assert zero["mine"] > 0 and one["mine"] > 0               # both ranks hold a share
    assert zero["results"] == zero["mine"] + one["mine"]      # rank 0 received both
    assert one["results"] is None                             # rank 1 received none
    assert zero["metrics"]["bbox"]["AP"] > 0.99               # only with every share
    assert one["metrics"] == zero["metrics"]                  # and rank 1 the metrics
