"""train.py's batch-level recipe (torchvision's reference recipe on the compressed path):
--mixup-alpha / --cutmix-alpha (torchvision.transforms.v2 on each training batch), the EMA of
the weights (--model-ema*), --random-erase / --auto-augment handed to the training loader.

Runs are tiny (4 classes x 2 train / 1 val images, 128 px crops giving 16x16 cubes, resnet18,
batch 4, 2 steps), through test_train's helpers; the whole file takes well under a minute.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402
from jpegfreq.checkpoint import load_checkpoint  # noqa: E402
from jpegfreq.loader import JpegLoader  # noqa: E402
from jpegfreq.models import build_model  # noqa: E402
from jpegfreq.synthetic import make_dataset  # noqa: E402
from test_train import _free_port, read_log, run_inproc, small  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

EMA = ("--model-ema", "--model-ema-steps", "1", "--model-ema-decay", "0.9")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("recipe") / "data"), classes=4,
                        train_per_class=2, val_per_class=1, seed=7, min_size=200, max_size=300)


@pytest.fixture(scope="module")
def plain(data, tmp_path_factory):
    """The same tiny run without any recipe flag: its log record and checkpoint."""
    out = tmp_path_factory.mktemp("plain")
    run_inproc(small(data, out))
    return read_log(out)[0], load_checkpoint(str(out / "checkpoint.pth"))


def _ckpt(out):
    return load_checkpoint(str(out / "checkpoint.pth"))


# ---------------------------------------------------------------------------
# Each flag runs, reaches what it drives and is named on the startup line
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("flags, said", [
    (["--mixup-alpha", "0.4"], "mixup alpha 0.4"),
    (["--cutmix-alpha", "1.0"], "cutmix alpha 1"),
    (["--mixup-alpha", "0.4", "--cutmix-alpha", "1.0"], "(one of the two per batch)"),
    (["--random-erase", "1.0"], "random erase p 1"),
    (["--auto-augment", "ta_exact"], "auto-augment ta_exact"),
])
def test_each_recipe_flag_trains_and_changes_the_training(data, plain, tmp_path, capsys,
                                                          flags, said):
    run_inproc(small(data, tmp_path, *flags))
    text = capsys.readouterr().out
    assert "; recipe: " in text and said in text
    log = read_log(tmp_path)[0]
    assert log["steps"] == plain[0]["steps"] == 2 and np.isfinite(log["train_loss"])
    # the same seed, order and crops: only the recipe part makes the loss differ
    assert log["train_loss"] != plain[0]["train_loss"]
    assert "val_acc1_ema" not in log and "model_ema" not in _ckpt(tmp_path)


def test_no_recipe_flag_names_no_recipe(data, tmp_path, capsys):
    run_inproc(small(data, tmp_path, "--epochs", "0"))
    assert "recipe:" not in capsys.readouterr().out


def test_validation_never_mixes(data, tmp_path):
    """A run that mixes every training batch reports the val figures that --evaluate of
    its checkpoint (no recipe) gives."""
    run_inproc(small(data, tmp_path, "--mixup-alpha", "1.0", "--cutmix-alpha", "1.0"))
    log = read_log(tmp_path)[0]
    m = run_inproc(["--data", data, "--evaluate", str(tmp_path / "checkpoint.pth"),
                    "--threads", "1", "--no-progress"])
    assert m["images"] == 4
    assert m["loss"] == pytest.approx(log["val_loss"], rel=1e-6)
    assert m["acc1"] == log["val_acc1"]


# ---------------------------------------------------------------------------
# MixUp / CutMix at the function level
# ---------------------------------------------------------------------------

def _batch(n=6, c=24, side=8, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, side, side, generator=g),
            torch.randint(0, classes, (n,), generator=g))


def test_mixup_blends_each_sample_with_its_neighbour_and_its_label():
    x, _ = _batch(n=5)
    y = torch.arange(5)
    torch.manual_seed(1)
    xm, ym = train.BatchMix(5, mixup_alpha=0.4)(x, y)
    assert ym.shape == (5, 5) and ym.dtype == torch.float32
    assert torch.allclose(ym.sum(1), torch.ones(5))
    assert not torch.equal(xm, x)
    # one weight for the batch: x_i lam + x_(i-1) (1 - lam), the labels the same way
    lam = float(ym[0, 0])
    assert 0 < lam < 1
    one_hot = nn.functional.one_hot(y, 5).float()
    assert torch.allclose(ym, lam * one_hot + (1 - lam) * one_hot.roll(1, 0), atol=1e-6)
    assert torch.allclose(xm, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-5)


def test_cutmix_pastes_whole_cube_cells_weighted_by_area():
    """On a cube the box is in cube cells: every cell of a mixed sample holds exactly its own
    coefficients or its neighbour's, all channels alike, and the neighbour's label weight is
    the pasted share of the cells."""
    x, y = _batch(n=4, side=16)
    y = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(3)
    xm, ym = train.BatchMix(5, cutmix_alpha=1.0)(x, y)
    assert torch.allclose(ym.sum(1), torch.ones(4))
    rolled = x.roll(1, 0)
    own = (xm == x).all(1)              # (N, H, W): every channel of the cell kept
    pasted = (xm == rolled).all(1)
    assert bool((own | pasted).all())
    assert bool(pasted.any())           # alpha 1: a box of at least one cell, with this seed
    share = pasted.float().mean((1, 2))
    assert torch.allclose(ym[torch.arange(4), y.roll(1)], share, atol=1e-6)
    # the box is one rectangle of cells, the same for the whole batch
    rows, cols = pasted[0].any(1).nonzero().flatten(), pasted[0].any(0).nonzero().flatten()
    assert bool(pasted[0][rows.min():rows.max() + 1, cols.min():cols.max() + 1].all())
    assert bool((pasted == pasted[0]).all())


def test_mixup_and_cutmix_together_pick_one_per_batch():
    x, y = _batch(n=4, side=16)
    y = torch.tensor([0, 1, 2, 3])
    mix = train.BatchMix(5, mixup_alpha=1.0, cutmix_alpha=1.0)
    kinds = set()
    torch.manual_seed(0)
    for _ in range(12):
        xm, ym = mix(x, y)
        assert torch.allclose(ym.sum(1), torch.ones(4))
        kinds.add("cutmix" if bool(((xm == x) | (xm == x.roll(1, 0))).all()) else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_int8_batches_are_dequantized_with_the_loader_step_before_mixing(tmp_path):
    g = torch.Generator().manual_seed(2)
    q = torch.randint(-127, 128, (4, 24, 8, 8), generator=g, dtype=torch.int8)
    scale = torch.rand(24, generator=g) * 0.1 + 0.01
    y = torch.tensor([0, 1, 2, 3])
    dequantized = q.float() * scale[:, None, None]
    for kw in ({"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}):
        torch.manual_seed(5)
        a = train.BatchMix(4, int8_scale=scale, **kw)(q, y)
        torch.manual_seed(5)
        b = train.BatchMix(4, **kw)(dequantized, y)
        assert a[0].dtype == torch.float32
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="int8_scale"):
        train.BatchMix(4, mixup_alpha=0.4)(q, y)
    # the network built for int8 input takes the float batch as it is
    net = build_model("resnet18", "jpeg-coeffs", "24S", 4, int8_scale=scale).eval()
    with torch.no_grad():
        assert torch.allclose(net(q), net(dequantized), atol=1e-5)


def test_batch_mix_needs_one_of_them_on():
    with pytest.raises(ValueError, match="mixup_alpha or cutmix_alpha"):
        train.BatchMix(4)
    args = train.get_args_parser().parse_args([])
    assert train.batch_mix(args, 4) is None


def test_int8_cubes_train_with_mixup_and_cutmix(data, tmp_path):
    result = run_inproc(small(data, tmp_path, "--dtype", "int8", "--mixup-alpha", "0.4",
                              "--cutmix-alpha", "1.0"))
    log = read_log(tmp_path)[0]
    assert log["steps"] == 2 and np.isfinite(log["train_loss"])
    assert result["val"]["images"] == 4 and np.isfinite(result["val"]["loss"])
    assert _ckpt(tmp_path)["model"]["int8_scale"].shape == (24,)


# ---------------------------------------------------------------------------
# The EMA of the weights
# ---------------------------------------------------------------------------

def test_ema_is_logged_checkpointed_and_restored_on_resume(data, plain, tmp_path, capsys):
    out = tmp_path / "ema"
    argv = small(data, out, *EMA, "--debug-dump-weights")
    result = run_inproc(argv)
    text = capsys.readouterr().out
    assert "EMA of the weights every 1 step(s)" in text and "| EMA val top1 " in text
    assert "of the trained weights" in text and "checkpoint key model_ema" in text
    log = read_log(out)[0]
    assert {"val_loss_ema", "val_acc1_ema", "val_acc5_ema"} <= set(log)
    assert log["val_acc1_ema"] == result["val_ema"]["acc1"]
    ckpt = _ckpt(out)
    ema = ckpt["model_ema"]
    assert int(ema["n_averaged"]) == 2                     # one update per step
    assert {"module." + k for k in ckpt["model"]} | {"n_averaged"} == set(ema)
    # the EMA leaves training alone: the trained weights are the plain run's
    assert train.tensor_digest(ckpt["model"]) == train.tensor_digest(plain[1]["model"])
    # ... and averages: after 2 steps at decay 0.9 (adjusted 0.6) it is not those weights
    assert any(not torch.equal(v, ema["module." + k]) for k, v in ckpt["model"].items()
               if v.is_floating_point())
    first = (out / "rank0.sha").read_text().splitlines()
    assert first[1] == f"ema {train.tensor_digest(ema)}"
    # resuming the finished run restores model, optimizer and EMA: the same digests
    (out / "rank0.sha").unlink()
    assert run_inproc(argv + ["--resume", "auto"])["val"] is None
    assert (out / "rank0.sha").read_text().splitlines() == first


def test_ema_with_decay_zero_is_the_trained_weights(data, tmp_path):
    run_inproc(small(data, tmp_path, "--model-ema", "--model-ema-steps", "1",
                     "--model-ema-decay", "0"))
    ckpt = _ckpt(tmp_path)
    for k, v in ckpt["model"].items():
        assert torch.equal(v, ckpt["model_ema"]["module." + k]), k
    log = read_log(tmp_path)[0]
    assert log["val_acc1_ema"] == log["val_acc1"]
    assert log["val_loss_ema"] == pytest.approx(log["val_loss"], rel=1e-6)


def test_resume_without_a_checkpointed_ema_starts_it_from_the_weights(data, tmp_path,
                                                                      capsys):
    argv = small(data, tmp_path)
    run_inproc(argv)
    capsys.readouterr()
    run_inproc(argv + ["--resume", "auto", "--epochs", "2", *EMA])
    assert "has no model_ema; the EMA starts from its weights" in capsys.readouterr().out
    assert [e["epoch"] for e in read_log(tmp_path)] == [0, 1]
    assert "val_acc1_ema" in read_log(tmp_path)[1] and "model_ema" in _ckpt(tmp_path)


def test_ema_decay_adjustment_and_update_rule():
    args = train.get_args_parser().parse_args(["--model-ema"])
    args.epochs, args.lr_warmup_epochs = 90, 0
    # torchvision's reference: 1 - (1 - decay) x world x batch x steps / epochs, capped
    assert train.ema_decay(args, 1) == pytest.approx(1 - 2e-5 * 32 * 32 / 90)
    assert train.ema_decay(args, 8) == pytest.approx(1 - 2e-5 * 8 * 32 * 32 / 90)
    args.model_ema_decay = 0.5
    assert train.ema_decay(args, 1) == 0.0
    net = nn.Linear(3, 2)
    ema = train.make_ema(net, 0.5, torch.device("cpu"))
    args.model_ema_steps = 2
    for index in range(3):                    # updates at 0 and 2 only
        with torch.no_grad():
            net.weight.add_(1.0)
        train.update_ema(ema, net, 0, index, args)
    assert int(ema.n_averaged) == 2
    w0 = net.weight - 3
    assert torch.allclose(ema.module.weight, 0.5 * (w0 + 1) + 0.5 * (w0 + 3))
    # during warm-up the average restarts after each update: it copies the weights
    args.lr_warmup_epochs = 1
    with torch.no_grad():
        net.weight.add_(1.0)
    train.update_ema(ema, net, 0, 0, args)
    assert int(ema.n_averaged) == 0
    with torch.no_grad():
        net.weight.add_(1.0)
    train.update_ema(ema, net, 1, 0, args)     # after warm-up: this update copies
    assert torch.equal(ema.module.weight, net.weight) and int(ema.n_averaged) == 1


def test_ddp_ranks_end_with_one_ema(data, tmp_path):
    """Two processes with MixUp/CutMix and the EMA: every rank's weights, optimizer state
    and EMA digests agree (each rank averages its own BatchNorm statistics; the EMA of a
    rank with the most steps is given to all after each epoch)."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", os.path.join(ROOT, "train.py"),
           *small(data, out, "--debug-dump-weights", "--mixup-alpha", "0.4", "--cutmix-alpha",
                  "1.0", *EMA)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = ((out / f"rank{i}.sha").read_text().splitlines() for i in range(2))
    assert len(a) == 2 and a[1].startswith("ema ") and a == b
    assert a[1] == f"ema {train.tensor_digest(_ckpt(out)['model_ema'])}"


# ---------------------------------------------------------------------------
# Bad values, and the statistics subset
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, message", [
    ("--random-erase", "1.5", "--random-erase must be a probability in [0, 1], got 1.5"),
    ("--random-erase", "-0.1", "--random-erase must be a probability in [0, 1]"),
    ("--random-erase", "nan", "--random-erase must be a probability"),
    ("--mixup-alpha", "-1", "--mixup-alpha must be a finite number >= 0"),
    ("--cutmix-alpha", "inf", "--cutmix-alpha must be a finite number >= 0"),
    ("--model-ema-steps", "0", "--model-ema-steps must be at least 1"),
    ("--model-ema-decay", "1.5", "--model-ema-decay must be in [0, 1]"),
])
def test_bad_recipe_values_are_refused_with_one_line(tmp_path, flag, value, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        run_inproc(["--data", str(tmp_path / "none"), "--threads", "1", flag, value])


def test_unknown_policy_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        train.get_args_parser().parse_args(["--auto-augment", "imagenet"])
    assert e.value.code == 2 and "--auto-augment" in capsys.readouterr().err


def test_statistics_subset_reads_eval_cubes_without_augmentation(data):
    """--stats-limit's loader keeps the training order but every sample is the eval cube:
    no random crop, colour op, policy op or erasing."""
    kw = dict(channels="24S", size=128, seed=0, threads=1, stats=None, drop_last=False,
              with_index=True)
    rows = {}
    with JpegLoader(os.path.join(data, "train"), 8, train=False, **kw) as ev:
        for x, _, idx in ev:
            rows.update({int(i): x[j].clone() for j, i in enumerate(idx)})
    with train.SubsetLoader(os.path.join(data, "train"), 8, train=True, random_erase=1.0,
                            auto_augment="ta_exact", color_jitter=(0.4, 0.4, 0.4, 0.1),
                            **kw) as sub:
        for x, _, idx in sub:
            assert idx.tolist() != sorted(idx.tolist())       # the training order
            for j, i in enumerate(idx):
                assert torch.equal(x[j], rows[int(i)]), int(i)


def test_gate_model_trains_with_mixing_and_an_ema(data, tmp_path):
    run_inproc(small(data, tmp_path, "--gate", "--mixup-alpha", "0.4", *EMA))
    log = read_log(tmp_path)[0]
    assert 0.0 <= log["gate_open"] <= 1.0 and np.isfinite(log["val_loss_ema"])
    ckpt = _ckpt(tmp_path)
    gate_keys = [k for k in ckpt["model"] if k.startswith("gate.")]
    assert gate_keys and all("module." + k in ckpt["model_ema"] for k in gate_keys)
    assert (tmp_path / "heatmap.json").exists()
