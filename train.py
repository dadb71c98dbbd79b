"""Train and evaluate frequency-domain classifiers on folders or tar shards of JPEGs.

Data: an ImageFolder tree, DATA/train/CLASS/*.jpg and DATA/val/CLASS/*.jpg (--data), or tar
shards written by `python -m jpegfreq.shards` (--shards and --val-shards).  Every split is read
by jpegfreq.JpegLoader: decoding threads write each cube straight into its row of a reused
(page-locked on CUDA) batch buffer.

    # the demo: synthesize a small labelled set, train resnet18 on 24S for a few CPU minutes
    python train.py

    # one process
    python train.py --data /data/imagenet --arch resnet50 --channels 24S --epochs 90 \\
        --batch-size 64 --threads 8 --output-dir out/r50-24s

    # tar shards (python -m jpegfreq.shards DIR/train shards/train --shard-size 1000)
    python train.py --shards "shards/train-{000000..001281}.tar" \\
        --val-shards "shards/val-{000000..000049}.tar" --output-dir out/r50-24s

    # two processes on one machine (GPUs when present, else CPU with gloo)
    torchrun --nproc_per_node=2 train.py --data /data/imagenet --arch resnet50 \\
        --channels 24S --batch-size 64 --output-dir out/r50-24s

    # other sources with the same flags: the paper's decode-then-DCT flow, RGB baseline
    python train.py --data DIR --source spatial
    python train.py --data DIR --source rgb --arch resnet50

    # resume the last checkpoint of an output folder (after a crash or a kill)
    python train.py --data DIR --output-dir out/r50-24s --resume auto

    # evaluate a checkpoint (last line: "top1 X top5 Y"); another coefficient source works
    python train.py --data DIR --evaluate out/r50-24s/best.pth --source spatial \\
        --predictions preds.csv

    # torchvision's reference recipe on the exact ops (each part off by default; the
    # paper's recipe is RandomResizedCrop + flip): policy, erasing, MixUp/CutMix, EMA
    python train.py --data DIR --auto-augment ta_exact --random-erase 0.1 \\
        --mixup-alpha 0.2 --cutmix-alpha 1.0 --label-smoothing 0.1 --model-ema

    # learn a channel set: gate over all 192 channels, then train on the top 24
    python train.py --data DIR --gate --gate-lambda 0.5 --output-dir out/gate
    python train.py --data DIR --channels "top 24 of out/gate/heatmap.json"

Every epoch writes OUTPUT/checkpoint.pth (atomically; best.pth for the best val top-1)
and appends one JSON line to OUTPUT/log.jsonl.  Normalization statistics are computed
over the training set once and cached in OUTPUT/stats.json (or given with --stats).
Checkpoints follow jpegfreq.checkpoint's schema (task "classify"), read back with
weights_only=True.  Processes, evaluation shards, atomic writes, statistics and the flag
defaults of a run and of the demo (jpegfreq/presets.py) come from jpegfreq.runtime, shared
with detect.py.  Ranks may get different numbers of batches (shards, wholly unreadable
batches): the training loop runs inside DistributedDataParallel.join(), so no step needs a
collective of its own.  Metrics stay on the device and are read every --print-freq steps.
"""
import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.transforms import v2

import jpegfreq
from jpegfreq import augment, runtime
from jpegfreq.channels import ChannelSet
from jpegfreq.checkpoint import CheckpointError, load_checkpoint, preprocessing, save_checkpoint
from jpegfreq.datasets import BadImageError, default_size
from jpegfreq.geometry import eval_geometry
from jpegfreq.loader import JpegLoader
from jpegfreq.models import build_model, gate_loss, load_model
from jpegfreq.runtime import Context, write_json, write_text
from jpegfreq.stats import StatsAccumulator

RGB_224_ELEMENTS = 224 * 224 * 3
# flag defaults with --data and for the demo (jpegfreq/presets.py; figures in docs/train.md)
TRAIN, DEMO = runtime.preset("train"), runtime.preset("train-demo")
DTYPES = ["float32", "float16", "int8"]


def progress(iterable=None, ctx=None, args=None, **kw):
    return runtime.progress(iterable, ctx, enabled=args is None or not args.no_progress, **kw)


def default_threads():
    """Decoding threads per process: the CPUs this process may run on, shared by the
    processes torchrun starts on this machine (LOCAL_WORLD_SIZE)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1)))


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------

def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description="Train or evaluate a frequency-domain classifier.",
                                add_help=add_help, epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data", default=None, metavar="DIR",
      help="data folder with train/CLASS/* and val/CLASS/* (default: none; without --shards "
           "that is the demo: synthesize a small labelled set into OUTPUT/synthetic and use it)")
    a("--shards", default=None, nargs="+", metavar="PATTERN",
      help="training tar shards instead of --data (python -m jpegfreq.shards): paths, brace "
           "patterns ('train-{000000..000039}.tar') or 'pipe:COMMAND' sources; the class list "
           "is PREFIX-classes.json beside them (default: none)")
    a("--val-shards", default=None, nargs="+", metavar="PATTERN",
      help="validation tar shards, as --shards; needed with --shards (default: none)")
    a("--classes", default=None, metavar="FILE.json",
      help="class list for shards that have none beside them (pipe: sources): a "
           "PREFIX-classes.json (default: the one beside the shards)")
    a("--demo", action="store_true",
      help="run the demo explicitly, as `make demo` does; the same as giving no --data "
           "(default: off)")
    a("--train-split", default="train", help="training sub-folder (default: train)")
    a("--val-split", default="val", help="validation sub-folder (default: val)")
    a("--source", default=None, choices=jpegfreq.SOURCES,
      help="input pipeline (default: jpeg-coeffs; with --evaluate: the checkpoint's)")
    a("--channels", default="24S",
      help='channel set: preset, custom spec, or "top N of HEATMAP.json" (default: 24S; '
           "ignored for --source rgb; --gate uses all 192)")
    a("--arch", default=None, choices=["resnet50", "mobilenetv2", "resnet18"],
      help=f"network (default: {TRAIN['arch']} with --data, {DEMO['arch']} for the demo)")
    a("--size", type=int, default=None,
      help="crop side in pixels (default: 448 for resnets -> 56x56 cubes, 896 for "
           "mobilenetv2, 224 for --source rgb)")
    a("--epochs", type=int, default=None,
      help=f"epochs (default: {TRAIN['epochs']}; demo: {DEMO['epochs']})")
    a("--batch-size", type=int, default=32, help="images per process and step (default: 32)")
    a("--threads", type=int, default=None,
      help="decoding threads per process (jpegfreq.JpegLoader) (default: the CPUs this "
           "process may run on, divided by the processes on this machine)")
    a("--lr", type=float, default=None,
      help="learning rate (default: 0.1 * global batch / 256, global batch = batch size x "
           f"processes; demo: {DEMO['lr']})")
    a("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    a("--weight-decay", type=float, default=4e-5, help="weight decay (default: 4e-5)")
    a("--lr-schedule", default=None, choices=["step", "cosine"],
      help="step: x lr-gamma every --lr-step epochs; cosine: to 0 over --epochs "
           f"(default: {TRAIN['lr_schedule']}; demo: {DEMO['lr_schedule']})")
    a("--lr-step", type=int, default=30,
      help="epochs between steps of the step schedule (default: 30)")
    a("--lr-gamma", type=float, default=0.1, help="factor of the step schedule (default: 0.1)")
    a("--lr-warmup-epochs", type=int, default=None,
      help="ramp the learning rate up linearly over the first N epochs, step by step "
           f"(default: {TRAIN['lr_warmup_epochs']}; demo: {DEMO['lr_warmup_epochs']})")
    a("--output-dir", default=None,
      help=f"checkpoints, logs, stats, heat map (default: {TRAIN['output_dir']}; demo: "
           f"{DEMO['output_dir']})")
    a("--resume", default=None, metavar="CKPT|auto",
      help="resume from a checkpoint; 'auto' takes OUTPUT/checkpoint.pth when present "
           "(default: start fresh)")
    a("--evaluate", default=None, metavar="CKPT",
      help="only evaluate this checkpoint on the val split; the last line printed is "
           "'top1 X top5 Y' (default: train)")
    a("--predictions", default=None, metavar="FILE.csv",
      help="write one line per val image, 'path,predicted class index' (-1 when the image "
           "could not be read; with shards 'sample index,class' per image read), after "
           "evaluation (default: none)")
    a("--seed", type=int, default=0, help="seed of weights, crops, flips and order (default: 0)")
    a("--stats", default=None, metavar="FILE",
      help="normalization statistics (python -m jpegfreq.stats) (default: compute from the "
           "training set, cached in OUTPUT/stats.json)")
    a("--stats-limit", type=int, default=0,
      help="compute statistics over at most N training images, a random subset (default: "
           "0 = all)")
    a("--gate", action="store_true",
      help="learn a channel gate over all 192 channels; writes OUTPUT/heatmap.json and "
           "OUTPUT/heatmap.png at the end (default: off)")
    a("--gate-lambda", type=float, default=0.5,
      help="weight of the gate loss (fraction of open channels) (default: 0.5)")
    a("--gate-lr", type=float, default=0.01,
      help="Adam learning rate of the gate's own parameters: its straight-through gradients "
           "are far smaller than the backbone's, so SGD at --lr barely moves it (default: 0.01)")
    a("--on-bad-image", default="skip", choices=["skip", "error"],
      help="unreadable image: skip it (counted, not replaced) or stop with its name and the "
           "reason (default: skip)")
    a("--min-decoded", type=float, default=0.0, metavar="F",
      help="skip truncated images of which less than this share (0..1) of the rows the cube "
           "reads was decoded; partly decoded ones above it are kept and counted as damaged "
           "(default: 0 = keep every partly decoded image)")
    a("--color-jitter", type=float, nargs=4, default=None, metavar=("B", "C", "S", "H"),
      help="training: brightness, contrast, saturation, hue ranges as torchvision's "
           "ColorJitter takes them, applied exactly in the coefficient domain "
           "(jpegfreq.Photometric; docs/augment.md) (default: off, the paper's recipe)")
    a("--grayscale-p", type=float, default=0.0,
      help="training: probability of grayscale per image (default: 0)")
    a("--label-smoothing", type=float, default=0.0,
      help="label smoothing of the training loss, as torch's CrossEntropyLoss takes it "
           "(default: 0)")
    a("--mixup-alpha", type=float, default=0.0, metavar="A",
      help="training: MixUp of each batch (torchvision.transforms.v2.MixUp): every sample "
           "blended with its neighbour in the batch by a weight drawn from Beta(A, A), the "
           "labels blended the same way into class probabilities (default: 0 = off)")
    a("--cutmix-alpha", type=float, default=0.0, metavar="A",
      help="training: CutMix of each batch (torchvision.transforms.v2.CutMix): a box of the "
           "neighbour pasted in, its area drawn from Beta(A, A), the labels weighted by "
           "area; on a cube the box is whole cube cells (8x8 blocks). With --mixup-alpha "
           "too, one of the two per batch, at random (default: 0 = off)")
    a("--random-erase", type=float, default=0.0, metavar="P",
      help="training: probability per image of erasing one rectangle (whole cube cells; "
           "pixels for --source rgb) with torchvision RandomErasing's sampling rule, done "
           "by the loader (docs/augment.md) (default: 0 = off)")
    a("--auto-augment", default=None, choices=augment.POLICIES,
      help="training: an automatic augmentation policy done by the loader; ta_exact: one "
           "exact op per image, TrivialAugment-style (docs/augment.md) (default: none)")
    a("--model-ema", action="store_true",
      help="keep an exponential moving average of the weights and buffers "
           "(torch.optim.swa_utils.AveragedModel), evaluated on val each epoch and saved in "
           "the checkpoint as model_ema (default: off)")
    a("--model-ema-steps", type=int, default=32, metavar="N",
      help="update the EMA every N optimizer steps (default: 32)")
    a("--model-ema-decay", type=float, default=0.99998, metavar="D",
      help="EMA decay per sample, adjusted for processes, batch size, --model-ema-steps and "
           "--epochs as torchvision's reference recipe does (default: 0.99998)")
    a("--max-steps", type=int, default=0,
      help="stop each training epoch after N steps, for tests (default: 0 = whole epoch)")
    a("--print-freq", type=int, default=50,
      help="read the running metrics from the device every N steps (and at the end of an "
           "epoch): progress bar figures, the non-finite loss check, and with --no-progress "
           "one line per interval (default: 50)")
    a("--amp", action=argparse.BooleanOptionalAction, default=None,
      help="mixed precision (default: on with CUDA, off on CPU)")
    a("--channels-last", action=argparse.BooleanOptionalAction, default=None,
      help="model and inputs in torch.channels_last memory format (default: on with CUDA and "
           "--amp, off otherwise)")
    a("--device", default=None,
      help="torch device; cuda without an index is cuda:(LOCAL_RANK %% visible GPUs) "
           "(default: cuda if available, else cpu)")
    a("--dtype", default="float32", choices=DTYPES,
      help="cube element type from loader to device: float16 halves the bytes; int8 "
           "quarters them, quantising the normalised cube with the loader's per-channel step, "
           "which the network's input multiplies back (default: float32)")
    a("--no-progress", action="store_true", help="no progress bars (default: show them)")
    a("--debug-dump-weights", action="store_true",
      help="each rank writes the SHA-256 of its final weights, buffers and optimizer state "
           "to OUTPUT/rank{r}.sha "
           "(default: off)")
    return p


# ---------------------------------------------------------------------------
# Data: one JpegLoader per split and pass
# ---------------------------------------------------------------------------

def data_sources(args):
    """(training data, validation data) as JpegLoader takes them: split folders of --data,
    or the --shards / --val-shards lists.  Training data is None with --evaluate."""
    if args.shards or args.val_shards:
        if args.data:
            raise SystemExit("train.py: error: give --data or --shards/--val-shards, not both")
        if not args.val_shards:
            raise SystemExit("train.py: error: --shards needs --val-shards (the validation "
                             "shards)")
        if not args.shards and not args.evaluate:
            raise SystemExit("train.py: error: --val-shards needs --shards to train on")
        return args.shards, args.val_shards
    return (os.path.join(args.data, args.train_split) if args.data else None,
            os.path.join(args.data, args.val_split) if args.data else None)


def describe(data):
    return data if isinstance(data, str) else " ".join(data)


def make_loader(args, ctx, data, *, train, cs, source, size, stats, batch_size=None,
                dtype=None, classes=None, with_index=False, cls=JpegLoader, drop_last=None):
    """A JpegLoader over ``data`` for this rank; a missing folder or shard, or an unreadable
    class list, stops the run with one line naming it."""
    if classes is None and args.classes and not isinstance(data, str):
        classes = args.classes
    try:
        return cls(data, batch_size or args.batch_size, channels=cs if cs is not None else "24S",
                   size=size, train=train, seed=args.seed, threads=args.threads,
                   dtype=dtype or args.dtype, stats=stats, source=source, rank=ctx.rank,
                   world_size=ctx.world, classes=classes, with_index=with_index,
                   drop_last=drop_last, pin_memory=ctx.device.type == "cuda",
                   min_decoded=args.min_decoded,
                   color_jitter=args.color_jitter if train else None,
                   grayscale_p=args.grayscale_p if train else 0.0,
                   random_erase=args.random_erase if train else 0.0,
                   auto_augment=args.auto_augment if train else None)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"train.py: error: {e}") from None


def train_loader(args, ctx, data, cs, source, size, stats):
    """The training loader: full batches only, unless this rank's share is shorter than one
    batch (then the short one)."""
    loader = make_loader(args, ctx, data, train=True, cs=cs, source=source, size=size,
                         stats=stats)
    if batches(loader) == 0:
        loader.drop_last = False
    return loader


def batches(loader):
    """len(loader), or None where the shards' length is unknown (pipe: sources)."""
    try:
        return len(loader)
    except TypeError:
        return None


def image_count(loader):
    n = len(loader.data)
    return str(n) if n else "?"


@contextlib.contextmanager
def one_pass(loader):
    """Iterate one pass over ``loader``; leaving the block any way (the end, a break, an
    exception, Ctrl-C) closes the pass, so its decoding threads are joined right away."""
    it = iter(loader)
    try:
        yield it
    finally:
        it.close()


def stop_on_bad(loader, args):
    """--on-bad-image error: the first unreadable image of this pass stops the run."""
    if args.on_bad_image == "error" and loader.skipped:
        name, reason = loader.skipped[0]
        raise BadImageError(name, reason)


class SubsetLoader(JpegLoader):
    """The training order (a permutation drawn from the seed) with the eval geometry and no
    augmentation (no colour op, policy op or erasing): its first N images are a random
    subset of the training set, as --stats-limit wants (JpegLoader.draw is the one
    per-sample draw every decode uses)."""

    def draw(self, index, width, height):
        return self.eval_geometry, None, None


# ---------------------------------------------------------------------------
# Device
# ---------------------------------------------------------------------------

def setup_device(args, ctx):
    """Defaults that depend on the device: --amp and --channels-last on with CUDA (the
    latter with AMP), and cuDNN's autotuner (fixed input sizes)."""
    cuda = ctx.device.type == "cuda"
    if args.amp is None:
        args.amp = cuda
    if args.channels_last is None:
        args.channels_last = cuda and bool(args.amp)
    if cuda:
        torch.backends.cudnn.benchmark = True


def memory_format(args):
    return torch.channels_last if args.channels_last else torch.contiguous_format


# ---------------------------------------------------------------------------
# The batch-level recipe: MixUp / CutMix and the EMA of the weights
# ---------------------------------------------------------------------------

def check_recipe(args):
    """Refuse recipe flags out of range, one line naming the flag, before any work."""
    def bad(flag, value, what):
        raise SystemExit(f"train.py: error: {flag} must be {what}, got {value!r}")

    for flag, value in (("--mixup-alpha", args.mixup_alpha),
                        ("--cutmix-alpha", args.cutmix_alpha)):
        if not (np.isfinite(value) and value >= 0):
            bad(flag, value, "a finite number >= 0 (0 = off)")
    try:
        augment.check_erase_p(args.random_erase)      # the loader's own check (nan too)
    except (TypeError, ValueError):
        bad("--random-erase", args.random_erase, "a probability in [0, 1]")
    if args.model_ema_steps < 1:
        bad("--model-ema-steps", args.model_ema_steps, "at least 1")
    if not 0.0 <= args.model_ema_decay <= 1.0:
        bad("--model-ema-decay", args.model_ema_decay, "in [0, 1]")


class BatchMix:
    """torchvision's MixUp and/or CutMix (transforms.v2) on a training batch (x, y) on the
    device: mixup_alpha / cutmix_alpha > 0 switch each on; with both, one of the two per
    batch, at random (v2.RandomChoice), as torchvision's reference recipe does.  Returns
    (mixed float32 x in ``memory_format``, y as (N, num_classes) probabilities).

    Both work on any (N, C, H, W) tensor: on a cube CutMix's box is in cube cells, whole
    8x8 blocks of coefficients, so a pasted box is exactly the other image's coefficients
    there.  int8 batches are first turned back into the normalised float cube with the
    loader's step (x.float() * int8_scale[:, None, None]), which the network takes as it
    is (its own dequantisation passes float input through).  The draws come from torch's
    global generator."""

    def __init__(self, num_classes, mixup_alpha=0.0, cutmix_alpha=0.0, int8_scale=None,
                 device=None, memory_format=torch.contiguous_format):
        parts = []
        if mixup_alpha > 0:
            parts.append(v2.MixUp(alpha=float(mixup_alpha), num_classes=num_classes))
        if cutmix_alpha > 0:
            parts.append(v2.CutMix(alpha=float(cutmix_alpha), num_classes=num_classes))
        if not parts:
            raise ValueError("BatchMix needs mixup_alpha or cutmix_alpha > 0, got "
                             f"{mixup_alpha!r} and {cutmix_alpha!r}")
        self.transform = parts[0] if len(parts) == 1 else v2.RandomChoice(parts)
        self.int8_scale = None if int8_scale is None else \
            torch.as_tensor(int8_scale, dtype=torch.float32).to(device)
        self.memory_format = memory_format

    def __call__(self, x, y):
        if x.dtype == torch.int8:
            if self.int8_scale is None:
                raise ValueError("BatchMix got an int8 batch but no int8_scale (the loader's "
                                 "step) to turn it back into float")
            x = x.float() * self.int8_scale.to(x.device)[:, None, None]
        x, y = self.transform(x, y)
        return x.contiguous(memory_format=self.memory_format), y


def batch_mix(args, num_classes, int8_scale=None, device=None):
    """The BatchMix of --mixup-alpha / --cutmix-alpha, or None when both are 0."""
    if not (args.mixup_alpha > 0 or args.cutmix_alpha > 0):
        return None
    return BatchMix(num_classes, args.mixup_alpha, args.cutmix_alpha, int8_scale=int8_scale,
                    device=device, memory_format=memory_format(args))


def ema_decay(args, world):
    """--model-ema-decay adjusted as torchvision's reference recipe does, so that the
    average spans about the same share of training whatever the processes, batch size,
    update interval and epochs: 1 - min(1, (1 - decay) x world x batch x steps / epochs)."""
    adjust = world * args.batch_size * args.model_ema_steps / max(args.epochs, 1)
    return 1.0 - min(1.0, (1.0 - args.model_ema_decay) * adjust)


def make_ema(module, decay, device):
    """The EMA of ``module`` (the unwrapped network, not its DDP wrapper): weights and
    buffers (BatchNorm statistics) averaged, torch.optim.swa_utils' AveragedModel with
    get_ema_multi_avg_fn.  Its first update copies the weights."""
    return AveragedModel(module, device=device, multi_avg_fn=get_ema_multi_avg_fn(decay),
                         use_buffers=True)


def update_ema(ema, module, epoch, index, args):
    """After optimizer step ``index`` (0-based, this epoch) of ``epoch``: every
    --model-ema-steps steps (index 0, N, 2N, ... as torchvision's reference) average the
    weights in; during the lr warm-up epochs the average then restarts, so the next update
    copies the weights again."""
    if index % args.model_ema_steps:
        return
    ema.update_parameters(module)
    if epoch < int(args.lr_warmup_epochs or 0):
        ema.n_averaged.fill_(0)


def recipe_summary(args, world):
    """The training recipe parts that are on, for the startup line ('' when none is)."""
    parts = []
    if args.color_jitter is not None:
        parts.append("colour jitter " + " ".join(f"{v:g}" for v in args.color_jitter))
    if args.grayscale_p:
        parts.append(f"grayscale p {args.grayscale_p:g}")
    if args.auto_augment:
        parts.append(f"auto-augment {args.auto_augment}")
    if args.random_erase:
        parts.append(f"random erase p {args.random_erase:g}")
    if args.mixup_alpha > 0:
        parts.append(f"mixup alpha {args.mixup_alpha:g}")
    if args.cutmix_alpha > 0:
        parts.append(f"cutmix alpha {args.cutmix_alpha:g}")
    if args.mixup_alpha > 0 and args.cutmix_alpha > 0:
        parts[-1] += " (one of the two per batch)"
    if args.label_smoothing:
        parts.append(f"label smoothing {args.label_smoothing:g}")
    if args.model_ema:
        parts.append(f"EMA of the weights every {args.model_ema_steps} step(s), decay "
                     f"{ema_decay(args, world):.6g} ({args.model_ema_decay:g} adjusted)")
    return "; recipe: " + ", ".join(parts) if parts else ""


def to_device(x, y, device, args):
    """A batch on the device: copied with non_blocking=True out of the loader's page-locked
    buffer (the loader waits for the copy before it decodes into that buffer again), then
    float32 (int8 stays int8: the network multiplies it by its step), in the model's
    memory format.  On the CPU a float32 batch is used where it lies, no copy."""
    x = x.to(device, non_blocking=True)
    x = x.to(dtype=None if x.dtype == torch.int8 else torch.float32,
             memory_format=memory_format(args))
    return x, y.to(device, non_blocking=True)


def _autocast(device, amp):
    """Mixed precision when asked: float16 on CUDA, bfloat16 on CPU."""
    return torch.autocast(device.type, enabled=amp,
                          dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


# ---------------------------------------------------------------------------
# Metrics: device-side sums, read once per interval
# ---------------------------------------------------------------------------

class Meter:
    """Sums of loss x images, top-1 hits, top-5 hits and gate openness x images, kept as one
    tensor on the device: adding a step's figures queues a few tiny kernels and never waits
    for the device; read() copies them to the host in one transfer."""

    def __init__(self, device):
        self.sums = torch.zeros(4, dtype=torch.float32 if device.type == "mps" else torch.float64,
                                device=device)
        self.n = 0           # images: known on the host

    def add(self, loss, logits, y, gates=None):
        n = len(y)
        k_max = min(5, logits.shape[1])
        hit = logits.topk(k_max, dim=1).indices.eq(y[:, None])
        parts = [loss.detach().float() * n, hit[:, :1].any(1).sum(), hit.any(1).sum(),
                 gates.detach().float().mean() * n if gates is not None else hit.new_zeros(())]
        self.sums += torch.stack([p.to(self.sums.dtype) for p in parts])
        self.n += n

    def read(self):
        loss, c1, c5, gate = self.sums.tolist()
        return {"loss": loss, "c1": c1, "c5": c5, "gate": gate, "n": float(self.n)}


def _finite_or_stop(m, epoch, step):
    if not np.isfinite(m["loss"]):
        raise FloatingPointError(f"loss is {m['loss']} at epoch {epoch} (by step {step}); "
                                 "lower --lr")


def _pooled(ctx, m, loader, keys=("loss", "c1", "c5", "n", "gate")):
    """Rank sums of a Meter reading and the loader's skipped and damaged counts, pooled
    (one collective)."""
    vals = ctx.all_sum([m[k] for k in keys] + [len(loader.skipped), len(loader.damaged)])
    out = dict(zip(keys, vals[:-2]))
    out["bad"], out["damaged"] = vals[-2], vals[-1]
    return out


# ---------------------------------------------------------------------------
# Training and evaluation loops
# ---------------------------------------------------------------------------

def _split_output(out):
    """(logits, gates or None) of a model's forward."""
    if isinstance(out, (tuple, list)):
        return out[0], out[1]
    return out, None


def train_step(model, criterion, optimizers, scaler, x, y, args, device):
    """Forward, loss (+ the gate's), backward and every optimizer's step; no host sync.
    Returns (logits, loss, gates or None)."""
    with _autocast(device, bool(args.amp)):
        logits, gates = _split_output(model(x))
        loss = criterion(logits, y)
        if gates is not None:
            loss = loss + args.gate_lambda * gate_loss(gates)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        for opt in optimizers:
            opt.step()
    return logits, loss, gates


def _unwrapped(model):
    """The network inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _uneven_inputs(model):
    """DDP's support for ranks with different numbers of batches: a rank that runs out
    shadows the others' collectives until all are done, then every rank gets the weights of
    one that ran longest.  A no-op in one process."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.join()
    return contextlib.nullcontext()


def _warmup(optimizers, scheduled, epoch, step, steps_per_epoch, warmup_epochs):
    """Linear warm-up over the first warmup_epochs: per step when the epoch's length is
    known (the same on every rank: the longest rank's), else per epoch."""
    if epoch >= warmup_epochs:
        return
    if steps_per_epoch:
        factor = (epoch * steps_per_epoch + step + 1) / (warmup_epochs * steps_per_epoch)
    else:
        factor = (epoch + 1) / warmup_epochs
    for opt, lrs in zip(optimizers, scheduled):
        for g, lr in zip(opt.param_groups, lrs):
            g["lr"] = lr * min(factor, 1.0)


def train_one_epoch(model, criterion, optimizers, loader, device, epoch, args, ctx, scaler=None,
                    mix=None, ema=None):
    """One pass over ``loader`` (or --max-steps batches).  Returns a dict of metrics pooled
    over all ranks: loss, acc1, acc5, images, images_per_s, data_share, skipped_bad,
    gate_open (None without a gate), steps, time_s; and rank_steps (steps of every rank).
    The first of ``optimizers`` holds the backbone; a gate's Adam may follow.

    mix: a BatchMix applied to each batch on the device (the loss then takes its class
    probabilities; train top-1/top-5 count the most likely class of the mixed label, as
    torchvision's reference does).  ema: an AveragedModel of the unwrapped network,
    updated by update_ema() after the optimizer steps."""
    model.train()
    meter = Meter(device)
    local = batches(loader)
    if args.max_steps and local is not None:
        local = min(local, args.max_steps)
    # one epoch length for all ranks (the warm-up must give every rank the same rate)
    longest = int(ctx.all_max(-1 if local is None else local))
    steps_per_epoch = longest if longest >= 0 else None
    if args.max_steps and steps_per_epoch is None:
        steps_per_epoch = args.max_steps
    min_batch = 2 if args.gate else 1    # the gate's BatchNorm sees one value per image
    warmup_epochs = max(int(args.lr_warmup_epochs or 0), 0)
    scheduled = [[g["lr"] for g in opt.param_groups] for opt in optimizers]
    bar = progress(total=steps_per_epoch, ctx=ctx, args=args, desc=f"train {epoch}",
                   unit="step")
    data_time, seen, steps = 0.0, 0, 0
    start = t0 = time.perf_counter()
    with _uneven_inputs(model), one_pass(loader) as it:
        for batch in it:
            data_time += time.perf_counter() - t0
            stop_on_bad(loader, args)
            seen += 1
            if len(batch[1]) >= min_batch:    # local: a rank that skips one simply joins early
                _warmup(optimizers, scheduled, epoch, seen - 1, steps_per_epoch, warmup_epochs)
                x, y = to_device(batch[0], batch[1], device, args)
                if mix is not None:
                    x, y = mix(x, y)
                logits, loss, gates = train_step(model, criterion, optimizers, scaler, x, y,
                                                 args, device)
                if ema is not None:
                    update_ema(ema, _unwrapped(model), epoch, steps, args)
                meter.add(loss, logits.detach().float(), y if y.dim() == 1 else y.argmax(1),
                          gates)
                steps += 1
                if steps % args.print_freq == 0:
                    _interval(meter, bar, ctx, args, epoch, steps, steps_per_epoch)
            bar.update(1)
            if args.max_steps and seen >= args.max_steps:
                break
            t0 = time.perf_counter()
    stop_on_bad(loader, args)
    bar.close()
    # the schedulers compute each epoch's rate from the last one: hand back theirs
    for opt, lrs in zip(optimizers, scheduled):
        for g, lr in zip(opt.param_groups, lrs):
            g["lr"] = lr
    elapsed = time.perf_counter() - start
    m = meter.read()
    _finite_or_stop(m, epoch, steps)
    pooled = _pooled(ctx, m, loader)
    n = max(pooled["n"], 1.0)
    return {"loss": pooled["loss"] / n, "acc1": 100 * pooled["c1"] / n,
            "acc5": 100 * pooled["c5"] / n, "images": int(pooled["n"]),
            "images_per_s": pooled["n"] / max(elapsed, 1e-9),
            "data_share": min(data_time / max(elapsed, 1e-9), 1.0),
            "skipped_bad": int(pooled["bad"]), "damaged": int(pooled["damaged"]),
            "gate_open": pooled["gate"] / n if args.gate else None, "steps": steps,
            "time_s": elapsed, "rank_steps": ctx.gather(steps)}


def _interval(meter, bar, ctx, args, epoch, steps, total):
    """One read of the running sums (this rank's): the non-finite check and the figures."""
    m = meter.read()
    _finite_or_stop(m, epoch, steps)
    n = max(m["n"], 1.0)
    loss, acc1 = m["loss"] / n, 100 * m["c1"] / n
    if args.no_progress:
        ctx.log(f"  epoch {epoch + 1} step {steps}/{total or '?'}: loss {loss:.3f} top1 "
                f"{acc1:.1f} (rank {ctx.rank}'s batches so far)")
    else:
        bar.set_postfix(loss=f"{loss:.3f}", acc1=f"{acc1:.1f}")


@torch.no_grad()    # not inference_mode: the loader allocates its buffers on first use, and
# inference tensors could not be written by its threads afterwards
def evaluate(model, criterion, loader, device, args, ctx, heatmap=None, predictions=None,
             desc="val"):
    """Loss and top-1/top-5 (percent) over ``loader``, pooled over ranks.

    heatmap: a models.HeatmapAccumulator to add the gates to (gated models).
    predictions: a dict filled with {sample index: predicted class} (the loader must be
    made with with_index=True); gathered to every rank.
    Figures stay on the device until the pass ends.
    """
    model.eval()
    meter = Meter(device)
    index_parts, pred_parts = [], []
    open_sum, open_n = None, 0
    with one_pass(loader) as it:
        for batch in progress(it, ctx=ctx, args=args, desc=desc, unit="batch"):
            stop_on_bad(loader, args)
            x, y = to_device(batch[0], batch[1], device, args)
            with _autocast(device, bool(args.amp)):
                logits, gates = _split_output(model(x))
            logits = logits.float()
            meter.add(criterion(logits, y), logits, y)
            if heatmap is not None and gates is not None:
                s = gates.float().sum(0)
                open_sum = s if open_sum is None else open_sum + s
                open_n += len(y)
            if predictions is not None:
                index_parts.append(batch[2].clone())      # the loader reuses its buffers
                pred_parts.append(logits.argmax(1))
    stop_on_bad(loader, args)
    m = meter.read()
    pooled = _pooled(ctx, m, loader, keys=("loss", "c1", "c5", "n"))
    if heatmap is not None:
        if open_sum is not None:
            heatmap.open_counts += open_sum.to("cpu", torch.float64)
            heatmap.samples += open_n
        if ctx.distributed:
            t = ctx.all_reduce_(torch.cat([heatmap.open_counts,
                                           torch.tensor([float(heatmap.samples)],
                                                        dtype=torch.float64)]))
            heatmap.open_counts, heatmap.samples = t[:-1].clone(), int(t[-1].item())
    if predictions is not None:
        local = {}
        if index_parts:
            local = dict(zip(torch.cat(index_parts).tolist(), torch.cat(pred_parts).tolist()))
        for part in ctx.gather(local):
            predictions.update(part)
    n = max(pooled["n"], 1.0)
    return {"loss": pooled["loss"] / n, "acc1": 100 * pooled["c1"] / n,
            "acc5": 100 * pooled["c5"] / n, "images": int(pooled["n"]),
            "skipped_bad": int(pooled["bad"]), "damaged": int(pooled["damaged"])}


# ---------------------------------------------------------------------------
# Pieces of main
# ---------------------------------------------------------------------------

def resolve_stats(args, ctx, data, cs, source, size, out_dir):
    """The Stats to normalize with: --stats, the cache OUTPUT/stats.json, or computed over
    the training set's eval-geometry cubes through a JpegLoader (sharded over the ranks,
    each image once; --stats-limit N: the first N of a random order; sums pooled)."""
    key = {"channels": None if cs is None else cs.spec, "source": source, "size": [size, size],
           "limit": int(args.stats_limit)}
    if args.stats_limit:
        # subsets were drawn with training crops until the reader was fixed: such caches
        # lack this entry and are recomputed
        key["subset"] = "eval geometry"
    if isinstance(data, str):
        key["train_dir"] = os.path.abspath(data)
    else:
        key["train_shards"] = list(data)

    def compute():
        limit = int(args.stats_limit)
        common = dict(train=bool(limit), cs=cs, source=source, size=size, stats=None,
                      batch_size=16, dtype="float32", drop_last=False)
        if limit:      # this rank's part of the N
            loader = make_loader(args, ctx, data, cls=SubsetLoader, **common)
            quota = limit // ctx.world + (ctx.rank < limit % ctx.world)
        else:
            loader = make_loader(args, ctx, data, **common)
            quota = None
        acc = StatsAccumulator(3 if cs is None else cs.count)
        images = 0
        with one_pass(loader) as it:
            for x, _ in progress(it, ctx=ctx, args=args, desc="stats", unit="batch"):
                if quota is not None:
                    x = x[:quota - images]
                acc.update(x.transpose(0, 1).numpy())
                images += len(x)
                if quota is not None and images >= quota:
                    break
        bad = len(loader.skipped)
        if ctx.distributed:
            t = ctx.all_reduce_(torch.cat([torch.from_numpy(acc.s1), torch.from_numpy(acc.s2),
                                           torch.tensor([float(acc.n), float(bad),
                                                         float(images)], dtype=torch.float64)]))
            c = len(acc.s1)
            acc.s1, acc.s2 = t[:c].numpy().copy(), t[c:2 * c].numpy().copy()
            acc.n, bad, images = (int(v) for v in t[2 * c:].tolist())
        what = f"{images} training images{f' ({bad} unreadable skipped)' if bad else ''}"
        return acc.result(cs, source, (size, size), eval_geometry(size).to_dict()), what

    return runtime.resolve_stats(ctx, given=args.stats, cache=os.path.join(out_dir, "stats.json"),
                                 key=key, compute=compute, channels=cs, source=source,
                                 geometry=eval_geometry(size))


def write_predictions(path, loader, predictions):
    """CSV lines 'path,predicted class index' in the folder's order (-1: not predicted);
    for shards, 'sample index,predicted class index' of every image read, by index."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    samples = getattr(loader.data, "samples", None)
    if samples is not None:
        for i, (p, _) in enumerate(samples):
            w.writerow([p, predictions.get(i, -1)])
    else:
        for i in sorted(predictions):
            w.writerow([i, predictions[i]])
    write_text(path, buf.getvalue(), newline="")


def _hash_state(h, state):
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())


def tensor_digest(state) -> str:
    """SHA-256 over every tensor of a state dict (str -> tensor), in key order."""
    h = hashlib.sha256()
    _hash_state(h, state)
    return h.hexdigest()


def state_digest(module, optimizers=()) -> str:
    """SHA-256 over every tensor of a state dict, in key order, then over the state tensors
    of each optimizer (momentum buffers, Adam moments), in parameter order."""
    h = hashlib.sha256()
    _hash_state(h, module.state_dict())
    for opt in optimizers:
        for i, st in sorted(opt.state_dict()["state"].items()):
            for k, v in sorted(st.items()):
                h.update(f"{i}.{k}".encode())
                if isinstance(v, torch.Tensor):
                    h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def input_summary(cs, source, size, dtype):
    """One sentence on the input's size: elements and bytes vs RGB 224x224x3 uint8."""
    if source == "rgb":
        elems, shape, name = 3 * size * size, f"3x{size}x{size}", "rgb"
        ratio = elems / RGB_224_ELEMENTS
    else:
        side = size // 8
        elems, shape, ratio = cs.count * side * side, f"{cs.count}x{side}x{side}", \
            cs.input_size_ratio(size)
        name = str(cs) if len(str(cs)) <= 24 else f"{cs.count} channels"
    nbytes = elems * np.dtype(dtype).itemsize
    return (f"input {name} {shape} = {elems:,} values per sample, {ratio:.2f}x the RGB 224x224x3 "
            f"input size; {nbytes:,} bytes per sample in {dtype} "
            f"({nbytes / RGB_224_ELEMENTS:.2f}x the {RGB_224_ELEMENTS:,} bytes of a uint8 RGB 224 "
            "image)")


def _inspect_one(path):
    """Show what the reader sees in one file (python -m jpegfreq.inspect PATH)."""
    from jpegfreq import inspect as jinspect
    if jinspect.main([path]):
        raise SystemExit(f"train.py: error: cannot inspect {path}")


def _classifier_checkpoint(path):
    """load_checkpoint(path) (weights_only, the schema checked), refusing a detector's."""
    ckpt = load_checkpoint(path)
    if ckpt.get("task", "classify") != "classify":
        raise SystemExit(f"train.py: error: {path} is a {ckpt['task']} checkpoint "
                         "(detect.py --evaluate reads it), not a classifier")
    return ckpt


def _format_time(s):
    return f"{int(s // 60)}m{s % 60:04.1f}s" if s >= 60 else f"{s:.1f}s"


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def run_evaluate(args, ctx):
    """--evaluate CKPT: val metrics of a checkpoint, last line 'top1 X top5 Y'."""
    ckpt = _classifier_checkpoint(args.evaluate)
    pre = preprocessing(ckpt)
    source = args.source or pre["source"]
    if (source == "rgb") != (pre["source"] == "rgb"):
        raise SystemExit(f"train.py: error: a model trained on {pre['source']!r} inputs cannot "
                         f"be evaluated on {source!r} inputs")
    saved = ckpt.get("args") or {}
    if not (args.data or args.val_shards):    # the data the checkpoint was trained on
        args.data, args.val_shards = saved.get("data"), saved.get("val_shards")
    if not (args.data or args.val_shards):
        raise SystemExit("train.py: error: --evaluate needs --data or --val-shards (the "
                         "checkpoint names none)")
    _, val_data = data_sources(args)
    setup_device(args, ctx)
    model = load_model(ckpt).to(ctx.device, memory_format=memory_format(args))
    classes = ckpt.get("classes") if isinstance(val_data, str) else None
    loader = make_loader(args, ctx, val_data, train=False, cs=pre["channels"], source=source,
                         size=pre["size"], stats=pre["stats"], classes=classes,
                         with_index=bool(args.predictions))
    if ckpt.get("classes") and loader.classes and list(loader.classes) != list(ckpt["classes"]):
        raise SystemExit(f"train.py: error: the classes of {describe(val_data)} are not the "
                         f"{len(ckpt['classes'])} classes {args.evaluate} was trained on")
    predictions = {} if args.predictions else None
    ctx.log(f"evaluating {args.evaluate} ({ckpt['arch']}, trained on {pre['source']}, "
            f"epoch {ckpt.get('epoch')}) on {image_count(loader)} images of "
            f"{describe(val_data)} with source {source}")
    with loader:
        m = evaluate(model, nn.CrossEntropyLoss(), loader, ctx.device, args, ctx,
                     predictions=predictions)
        if ctx.main and args.predictions:
            write_predictions(args.predictions, loader, predictions)
            ctx.log(f"predictions: {args.predictions}")
    if m["skipped_bad"]:
        ctx.log(f"skipped {m['skipped_bad']} bad image(s)")
    ctx.log(f"top1 {m['acc1']:.3f} top5 {m['acc5']:.3f}")
    return m


def main(args):
    if args.threads is None:
        args.threads = default_threads()
    if args.threads < 1 or args.print_freq < 1:
        raise SystemExit("train.py: error: --threads and --print-freq must be at least 1")
    check_recipe(args)
    try:
        ctx = Context(args.device)
    except ValueError as e:     # a CUDA device that is not there
        raise SystemExit(f"train.py: error: {e}") from None
    try:
        if args.evaluate:
            return run_evaluate(args, ctx)
        return run_train(args, ctx)
    finally:
        ctx.close()


def settle_args(args, ctx):
    """Fill args from the presets (the demo's when there is no data) and the world size;
    returns (presets merged, channel set or None)."""
    if args.demo and (args.data is not None or args.shards or args.val_shards):
        raise SystemExit("train.py: error: --demo writes its own data; drop --data/--shards "
                         "(or --demo)")
    args.demo = args.data is None and not args.shards and not args.val_shards
    preset = runtime.apply_preset(args, *(["train-demo"] if args.demo else []), "train")
    if args.lr is None:
        args.lr = 0.1 * args.batch_size * ctx.world / 256
    setup_device(args, ctx)
    if args.gate and args.source == "rgb":
        raise SystemExit("train.py: error: --gate needs a coefficient source, not rgb")
    cs = None if args.source == "rgb" else ChannelSet.parse("192" if args.gate else args.channels)
    args.size = args.size or default_size(args.source, args.arch)
    if ctx.main:
        os.makedirs(args.output_dir, exist_ok=True)
    syn = preset.get("synthetic")
    if syn:
        from jpegfreq.synthetic import make_dataset
        args.data = os.path.join(args.output_dir, "synthetic")
        if ctx.main:
            ctx.log(f"demo: synthesizing {syn['classes']} classes x ({syn['train_per_class']} "
                    f"train + {syn['val_per_class']} val) JPEGs into {args.data}")
            make_dataset(args.data, syn["classes"], syn["train_per_class"], syn["val_per_class"],
                         seed=args.seed, progress=not args.no_progress)
        ctx.barrier()
    return preset, cs


def resume_checkpoint(args, ctx, cs):
    """The checkpoint --resume names (auto: OUTPUT/checkpoint.pth when present), checked
    against this run's settings, or None."""
    resume = args.resume
    if resume == "auto":
        resume = os.path.join(args.output_dir, "checkpoint.pth")
        if not os.path.exists(resume):
            ctx.log(f"resume: no {resume} yet, starting fresh")
            return None
    if not resume:
        return None
    ckpt = _classifier_checkpoint(resume)
    pre = preprocessing(ckpt)
    if (ckpt["arch"], pre["source"], pre["channels"], pre["size"], bool(ckpt.get("gate"))) != \
            (args.arch, args.source, cs, args.size, bool(args.gate)):
        raise SystemExit(f"train.py: error: {resume} was trained with arch {ckpt['arch']}, "
                         f"source {pre['source']}, channels {pre['channels']}, size "
                         f"{pre['size']}, gate {bool(ckpt.get('gate'))}: give the same flags "
                         f"to resume it")
    ctx.log(f"resume: {resume} (epoch {ckpt['epoch']} done, best top1 {ckpt['best_acc1']:.2f})")
    return ckpt


def build_training(args, ctx, cs, num_classes, ckpt, int8_scale=None):
    """Model (DDP-wrapped when distributed), its module, optimizers, scheduler, scaler,
    the EMA of the weights (--model-ema; else None) and the epoch to start from, restored
    from ckpt when resuming (a checkpoint without an EMA starts it from its weights)."""
    device = ctx.device
    torch.manual_seed(args.seed)
    model = build_model(args.arch, args.source, cs, num_classes, gate=args.gate,
                        int8_scale=int8_scale).to(device, memory_format=memory_format(args))
    gate_params = list(model.gate.parameters()) if args.gate else []
    gate_ids = {id(q) for q in gate_params}
    optimizer = torch.optim.SGD([q for q in model.parameters() if id(q) not in gate_ids],
                                lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    gate_optimizer = torch.optim.Adam(gate_params, lr=args.gate_lr) if args.gate else None
    if args.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer,
                                                               T_max=max(args.epochs, 1))
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, args.lr_step, args.lr_gamma)
    scaler = torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None
    start_epoch, best_acc1 = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if gate_optimizer is not None and ckpt.get("gate_optimizer"):
            gate_optimizer.load_state_dict(ckpt["gate_optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best_acc1 = int(ckpt["epoch"]) + 1, float(ckpt["best_acc1"])
    ema = make_ema(model, ema_decay(args, ctx.world), device) if args.model_ema else None
    if ema is not None and ckpt is not None:
        if ckpt.get("model_ema"):
            ema.load_state_dict(ckpt["model_ema"])
        else:
            ctx.log("resume: the checkpoint has no model_ema; the EMA starts from its weights")
    module = model
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    # Gumbel noise differs per rank (their batches differ too); weights start equal anyway
    torch.manual_seed(args.seed + 1 + ctx.rank + 1000 * start_epoch)
    optimizers = [optimizer] + ([gate_optimizer] if gate_optimizer is not None else [])
    return SimpleNamespace(model=model, module=module, optimizer=optimizer,
                           gate_optimizer=gate_optimizer, optimizers=optimizers,
                           scheduler=scheduler, scaler=scaler, ema=ema,
                           start_epoch=start_epoch, best_acc1=best_acc1)


def one_model(ctx, run, rank_steps):
    """After an epoch every rank holds one model: the weights already agree (DDP; after
    uneven inputs join() gave every rank those of a rank that ran longest); BatchNorm
    statistics and, when the ranks took different numbers of steps, the optimizer state
    (momentum missed by a rank that ran out early) come from a rank with the most steps;
    so does the EMA (its BatchNorm statistics average each rank's own, and a rank that ran
    out early missed updates)."""
    if not ctx.distributed:
        return
    src = rank_steps.index(max(rank_steps))
    ctx.sync_buffers(run.module, src)
    if run.ema is not None:
        with torch.no_grad():
            for t in list(run.ema.parameters()) + list(run.ema.buffers()):
                ctx.broadcast_(t, src)
    if len(set(rank_steps)) > 1:
        for opt in run.optimizers:
            ctx.sync_optimizer(opt, src)
        if run.scaler is not None:
            run.scaler.load_state_dict(ctx.broadcast_object(run.scaler.state_dict(), src))


def save_epoch(args, run, base, epoch, is_best):
    """checkpoint.pth (and best.pth); a write that fails (a full disk) stops the run with one
    line, the previous checkpoint left as it was (jpegfreq.files.atomic_write)."""
    state = dict(base, model=run.module.state_dict(), optimizer=run.optimizer.state_dict(),
                 scheduler=run.scheduler.state_dict(), epoch=epoch, args=args,
                 best_acc1=run.best_acc1)
    if run.scaler is not None:
        state["scaler"] = run.scaler.state_dict()
    if run.gate_optimizer is not None:
        state["gate_optimizer"] = run.gate_optimizer.state_dict()
    if run.ema is not None:
        state["model_ema"] = run.ema.state_dict()
    state = runtime.plain(state)
    for name in ["checkpoint.pth"] + (["best.pth"] if is_best else []):
        path = os.path.join(args.output_dir, name)
        try:
            save_checkpoint(path, state)
        except OSError as e:
            reason = str(e.strerror or e)
            for head in (f"{path}: cannot write checkpoint: ", f"{path}: cannot write checkpoint ",
                         f"{path}: "):      # save_checkpoint's message names the file already
                if reason.startswith(head):
                    reason = reason[len(head):]
                    break
            raise SystemExit(f"train.py: error: cannot write {path}: {reason}") from None


def log_epoch(args, ctx, log_path, epoch, t, val, lr_now, val_ema=None):
    """The epoch's log.jsonl record and its line on the console (rank 0); val_ema: the
    EMA weights' val figures (--model-ema), logged as val_loss_ema, val_acc1_ema,
    val_acc5_ema."""
    record = {"epoch": epoch, "train_loss": t["loss"], "train_acc1": t["acc1"],
              "train_acc5": t["acc5"], "val_loss": val["loss"], "val_acc1": val["acc1"],
              "val_acc5": val["acc5"], "images_per_s": t["images_per_s"],
              "data_share": t["data_share"], "skipped_bad": t["skipped_bad"],
              "val_skipped_bad": val["skipped_bad"], "damaged": t["damaged"],
              "val_damaged": val["damaged"], "lr": lr_now, "steps": t["steps"],
              "images": t["images"], "time_s": t["time_s"]}
    if args.gate:
        record["gate_open"] = t["gate_open"]
    if val_ema is not None:
        record.update(val_loss_ema=val_ema["loss"], val_acc1_ema=val_ema["acc1"],
                      val_acc5_ema=val_ema["acc5"])
    # the log line first: a kill before the checkpoint repeats this epoch, and the resumed
    # run drops the line (_truncate_log) before writing it again
    with open(log_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    gate = f", gate open {100 * t['gate_open']:.1f}%" if args.gate else ""
    bad = f", skipped {t['skipped_bad']} bad image(s)" if t["skipped_bad"] else ""
    vbad = f", skipped {val['skipped_bad']} bad val image(s)" if val["skipped_bad"] else ""
    if t["damaged"] or val["damaged"]:
        vbad += (f", {t['damaged']} train + {val['damaged']} val damaged image(s) (partly "
                 "decoded, kept)")
    ema = "" if val_ema is None else \
        f" | EMA val top1 {val_ema['acc1']:.1f} top5 {val_ema['acc5']:.1f}"
    ctx.log(f"epoch {epoch + 1}/{args.epochs}: train loss {t['loss']:.3f} top1 {t['acc1']:.1f} "
            f"top5 {t['acc5']:.1f} | val loss {val['loss']:.3f} top1 {val['acc1']:.1f} "
            f"top5 {val['acc5']:.1f}{ema} | {t['images_per_s']:.1f} img/s, data "
            f"{100 * t['data_share']:.0f}% of step time, lr {lr_now:.4g}{gate}{bad}{vbad} "
            f"[{_format_time(t['time_s'])}]")


def heatmap_pass(args, ctx, run, criterion, val_loader):
    """--gate: the gate's open frequency over the val set -> heatmap.json and heatmap.png."""
    from jpegfreq.heatmap import plot_heatmap, summarize
    from jpegfreq.models import HeatmapAccumulator
    out_dir = args.output_dir
    heat = HeatmapAccumulator(192)
    evaluate(run.module, criterion, val_loader, ctx.device, args, ctx, heatmap=heat,
             desc="heat map")
    if ctx.main and heat.samples:
        hm = heat.to_json(ChannelSet.parse("192").names)
        write_json(os.path.join(out_dir, "heatmap.json"), hm)
        plot_heatmap(hm, os.path.join(out_dir, "heatmap.png"))
        s = summarize(hm["frequency"])
        ctx.log(f"heat map over {hm['samples']} val images: mean open Y {s['Y']:.2f}, "
                f"Cb {s['Cb']:.2f}, Cr {s['Cr']:.2f}; low frequencies (u+v<=3) {s['low']:.2f},"
                f" high {s['high']:.2f} -> {out_dir}/heatmap.json, heatmap.png "
                f"(pick a set: --channels \"top 24 of {out_dir}/heatmap.json\")")


def run_train(args, ctx):
    t_start = time.perf_counter()
    preset, cs = settle_args(args, ctx)
    source, size, out_dir, device = args.source, args.size, args.output_dir, ctx.device
    train_data, val_data = data_sources(args)
    ckpt = resume_checkpoint(args, ctx, cs)
    stats = preprocessing(ckpt)["stats"] if ckpt is not None else \
        resolve_stats(args, ctx, train_data, cs, source, size, out_dir)

    train_loader_ = train_loader(args, ctx, train_data, cs, source, size, stats)
    classes = train_loader_.classes
    if not classes:
        raise SystemExit(f"train.py: error: no class list for {describe(train_data)} (give "
                         "--classes PREFIX-classes.json)")
    val_loader = make_loader(args, ctx, val_data, train=False, cs=cs, source=source, size=size,
                             stats=stats, with_index=bool(args.predictions),
                             classes=classes if isinstance(val_data, str) else None)
    if val_loader.classes and list(val_loader.classes) != list(classes):
        raise SystemExit(f"train.py: error: the classes of {describe(val_data)} differ from "
                         f"those of {describe(train_data)}")
    num_classes = len(classes)
    run = build_training(args, ctx, cs, num_classes, ckpt,
                         getattr(train_loader_, "int8_scale", None))
    del ckpt
    # with MixUp/CutMix the targets are class probabilities, which the loss takes as well
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    val_criterion = nn.CrossEntropyLoss()     # validation loss without smoothing or mixing
    mix = batch_mix(args, num_classes, getattr(train_loader_, "int8_scale", None), device)

    log_path = os.path.join(out_dir, "log.jsonl")
    if ctx.main:
        _truncate_log(log_path, run.start_epoch)
    ctx.log(f"train: {image_count(train_loader_)} images, val: {image_count(val_loader)} "
            f"images, {num_classes} classes ({describe(args.data or train_data)}); {args.arch} "
            f"on {source}{'' if cs is None else ' ' + str(cs)}"
            f"{' with gate' if args.gate else ''}, crop {size}; {ctx.world} process(es) on "
            f"{device}, {args.threads} decoding thread(s) each, batch {args.batch_size}/process"
            f", lr {args.lr:g} ({args.lr_schedule}), epochs {run.start_epoch}..{args.epochs - 1}"
            f"{recipe_summary(args, ctx.world)}")

    base = {"task": "classify", "arch": args.arch, "num_classes": num_classes,
            "classes": list(classes), "source": source,
            "channels": None if cs is None else cs.spec, "size": size,
            "geometry": eval_geometry(size).to_dict(),
            "stats": None if stats is None else stats.to_dict(), "gate": bool(args.gate)}
    val = val_ema = None
    with train_loader_, val_loader:
        for epoch in range(run.start_epoch, args.epochs):
            train_loader_.set_epoch(epoch)
            t = train_one_epoch(run.model, criterion, run.optimizers, train_loader_, device,
                                epoch, args, ctx, run.scaler, mix=mix, ema=run.ema)
            one_model(ctx, run, t["rank_steps"])
            val = evaluate(run.module, val_criterion, val_loader, device, args, ctx)
            if run.ema is not None:
                val_ema = evaluate(run.ema, val_criterion, val_loader, device, args, ctx,
                                   desc="val EMA")
            lr_now = run.optimizer.param_groups[0]["lr"]
            run.scheduler.step()
            is_best = val["acc1"] > run.best_acc1
            run.best_acc1 = max(run.best_acc1, val["acc1"])
            if ctx.main:
                log_epoch(args, ctx, log_path, epoch, t, val, lr_now, val_ema)
                save_epoch(args, run, base, epoch, is_best)
            ctx.barrier()
        if args.gate:
            heatmap_pass(args, ctx, run, val_criterion, val_loader)
        if args.predictions:
            predictions = {}
            evaluate(run.module, val_criterion, val_loader, device, args, ctx,
                     predictions=predictions, desc="predictions")
            if ctx.main:
                write_predictions(args.predictions, val_loader, predictions)
                ctx.log(f"predictions: {args.predictions}")
    if args.debug_dump_weights:
        ema = "" if run.ema is None else f"ema {tensor_digest(run.ema.state_dict())}\n"
        write_text(os.path.join(out_dir, f"rank{ctx.rank}.sha"),
                   state_digest(run.module, run.optimizers) + "\n" + ema)
    _closing(args, ctx, val, run, num_classes, cs, val_loader, preset, t_start, val_ema)
    return {"val": val, "val_ema": val_ema, "best_acc1": run.best_acc1, "output_dir": out_dir}


def _closing(args, ctx, val, run, num_classes, cs, val_loader, preset, t_start, val_ema=None):
    """The last lines: the result against chance (the trained weights'; then the EMA's with
    --model-ema), the input's size, the demo's inspection."""
    if val is None:
        ctx.log(f"nothing to train: epoch {run.start_epoch} >= --epochs {args.epochs}")
    else:
        ctx.log(f"done in {_format_time(time.perf_counter() - t_start)}: val top1 "
                f"{val['acc1']:.1f}% (best {run.best_acc1:.1f}%), top5 {val['acc5']:.1f}%"
                f"{' of the trained weights' if val_ema is not None else ''}; "
                f"chance is {100.0 / num_classes:.1f}% with {num_classes} classes")
    if val_ema is not None:
        ctx.log(f"EMA of the weights (--model-ema, checkpoint key model_ema): val top1 "
                f"{val_ema['acc1']:.1f}%, top5 {val_ema['acc5']:.1f}%")
    ctx.log(input_summary(cs, args.source, args.size, args.dtype))
    if preset.get("inspect_one") and ctx.main:
        sample = val_loader.data.samples[0][0]
        ctx.log(f"inspecting one validation image: {sample}")
        _inspect_one(sample)


def _truncate_log(path, start_epoch):
    """Drop log lines of epochs at or after start_epoch (a resumed run writes them again)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip()]
    keep = []
    for ln in lines:
        try:
            if json.loads(ln)["epoch"] < start_epoch:
                keep.append(ln)
        except (ValueError, KeyError):
            continue
    write_text(path, "".join(keep))


if __name__ == "__main__":
    cli_args = get_args_parser().parse_args()
    try:
        main(cli_args)
    except BadImageError as e:
        print(f"train.py: error: bad image {e}", file=sys.stderr)
        sys.exit(1)
    except CheckpointError as e:  # names the file and the reason; nothing was loaded
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(1)
