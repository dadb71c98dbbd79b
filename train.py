"""Train and evaluate frequency-domain classifiers on folders of JPEGs.

Data: ImageFolder layout, DATA/train/CLASS/*.jpg and DATA/val/CLASS/*.jpg.

    # the demo: synthesize a small labelled set, train resnet18 on 24S for a few CPU minutes
    python train.py

    # one process
    python train.py --data /data/imagenet --arch resnet50 --channels 24S --epochs 90 \\
        --batch-size 64 --workers 8 --output-dir out/r50-24s

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

    # learn a channel set: gate over all 192 channels, then train on the top 24
    python train.py --data DIR --gate --gate-lambda 0.5 --output-dir out/gate
    python train.py --data DIR --channels "top 24 of out/gate/heatmap.json"

Every epoch writes OUTPUT/checkpoint.pth (atomically; best.pth for the best val top-1)
and appends one JSON line to OUTPUT/log.jsonl.  Normalization statistics are computed
over the training set once and cached in OUTPUT/stats.json (or given with --stats).
Checkpoints follow jpegfreq.checkpoint's schema (task "classify"), read back with
weights_only=True.  Processes, evaluation shards, atomic writes, statistics and the flag
defaults of a run and of the demo (jpegfreq/presets.py) come from jpegfreq.runtime, shared
with detect.py.
"""
import argparse
import csv
import hashlib
import io
import json
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

import jpegfreq
from jpegfreq import runtime
from jpegfreq.channels import ChannelSet
from jpegfreq.models import build_model, load_model
from jpegfreq.checkpoint import CheckpointError, load_checkpoint, preprocessing, save_checkpoint
from jpegfreq.datasets import BadImageError, JpegFolder, collate_skip_bad, default_size
from jpegfreq.geometry import eval_geometry
from jpegfreq.runtime import Context, ShardSampler, write_json, write_text
from jpegfreq.stats import StatsAccumulator

RGB_224_ELEMENTS = 224 * 224 * 3
# flag defaults with --data and for the demo (jpegfreq/presets.py; figures in docs/train.md)
TRAIN, DEMO = runtime.preset("train"), runtime.preset("train-demo")


def progress(iterable=None, ctx=None, args=None, **kw):
    return runtime.progress(iterable, ctx, enabled=args is None or not args.no_progress, **kw)


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------

def get_args_parser(add_help=True):
    p = argparse.ArgumentParser(description="Train or evaluate a frequency-domain classifier.",
                                add_help=add_help, epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data", default=None, metavar="DIR",
      help="data folder with train/CLASS/* and val/CLASS/* (default: none, i.e. the demo: "
           "synthesize a small labelled set into OUTPUT/synthetic and use it)")
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
    a("--workers", type=int, default=min(8, os.cpu_count() or 1),
      help="data loading processes per training process (default: min(8, CPU count))")
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
           "could not be read), after evaluation (default: none)")
    a("--seed", type=int, default=0, help="seed of weights, crops, flips and order (default: 0)")
    a("--stats", default=None, metavar="FILE",
      help="normalization statistics (python -m jpegfreq.stats) (default: compute from the "
           "training set, cached in OUTPUT/stats.json)")
    a("--stats-limit", type=int, default=0,
      help="compute statistics over at most N training images (default: 0 = all)")
    a("--gate", action="store_true",
      help="learn a channel gate over all 192 channels; writes OUTPUT/heatmap.json and "
           "OUTPUT/heatmap.png at the end (default: off)")
    a("--gate-lambda", type=float, default=0.5,
      help="weight of the gate loss (fraction of open channels) (default: 0.5)")
    a("--gate-lr", type=float, default=0.01,
      help="Adam learning rate of the gate's own parameters: its straight-through gradients "
           "are far smaller than the backbone's, so SGD at --lr barely moves it (default: 0.01)")
    a("--on-bad-image", default="skip", choices=["skip", "error"],
      help="unreadable image: skip it (counted, not replaced) or stop with its name "
           "(default: skip)")
    a("--max-steps", type=int, default=0,
      help="stop each training epoch after N steps, for tests (default: 0 = whole epoch)")
    a("--amp", action=argparse.BooleanOptionalAction, default=None,
      help="mixed precision (default: on with CUDA, off on CPU)")
    a("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    a("--dtype", default="float32", choices=["float32", "float16"],
      help="cube element type on the way from loader to device (default: float32)")
    a("--no-progress", action="store_true", help="no progress bars (default: show them)")
    a("--debug-dump-weights", action="store_true",
      help="each rank writes the SHA-256 of its final state dict to OUTPUT/rank{r}.sha "
           "(default: off)")
    return p


# ---------------------------------------------------------------------------
# Training and evaluation loops
# ---------------------------------------------------------------------------

def _split_output(out):
    """(logits, gates or None) of a model's forward."""
    if isinstance(out, (tuple, list)):
        return out[0], out[1]
    return out, None


def _topk_correct(logits, y, ks=(1, 5)):
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices
    hit = top.eq(y[:, None])
    return [hit[:, :min(k, k_max)].any(1).sum().item() for k in ks]


def _autocast(device, amp):
    """Mixed precision when asked: float16 on CUDA, bfloat16 on CPU."""
    return torch.autocast(device.type, enabled=amp,
                          dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def train_one_epoch(model, criterion, optimizer, loader, device, epoch, args, ctx, scaler=None,
                    gate_optimizer=None):
    """One pass over ``loader`` (or --max-steps steps).  Returns a dict of metrics pooled
    over all ranks: loss, acc1, acc5, images, images_per_s, data_share, skipped_bad,
    gate_open (None without a gate), steps.  gate_optimizer steps the gate's parameters
    (a GatedModel's), which ``optimizer`` then does not hold."""
    optimizers = [optimizer] + ([gate_optimizer] if gate_optimizer is not None else [])
    model.train()
    sums = dict(loss=0.0, c1=0.0, c5=0.0, n=0.0, bad=0.0, gate=0.0)
    data_time = step_time = 0.0
    steps = 0
    total = len(loader) if not args.max_steps else min(len(loader), args.max_steps)
    min_batch = 2 if args.gate else 1    # the gate's BatchNorm sees one value per image
    amp = bool(args.amp)
    warmup = max(int(args.lr_warmup_epochs or 0), 0) * total
    scheduled = [[g["lr"] for g in opt.param_groups] for opt in optimizers]
    bar = progress(total=total, ctx=ctx, args=args, desc=f"train {epoch}", unit="step")
    start = time.perf_counter()
    it = iter(loader)
    for step in range(total):
        if epoch * total + step < warmup:
            factor = (epoch * total + step + 1) / warmup
            for opt, lrs in zip(optimizers, scheduled):
                for g, lr in zip(opt.param_groups, lrs):
                    g["lr"] = lr * factor
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        x, y, n_bad = batch[:3]
        sums["bad"] += n_bad
        # every rank must take the step, or none: DDP's all-reduce waits for all of them
        ok = x is not None and len(x) >= min_batch
        if ctx.distributed:
            ok = ctx.all_min(1.0 if ok else 0.0) > 0
        if not ok:
            bar.update(1)
            continue
        x = x.to(device, non_blocking=True).float()
        y = y.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits, gates = _split_output(model(x))
            loss = criterion(logits, y)
            if gates is not None:
                from jpegfreq.models import gate_loss
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
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}; lower --lr")
        c1, c5 = _topk_correct(logits.detach().float(), y)
        n = len(y)
        sums["loss"] += loss.item() * n
        sums["c1"] += c1
        sums["c5"] += c5
        sums["n"] += n
        if gates is not None:
            sums["gate"] += gates.detach().float().mean().item() * n
        steps += 1
        t2 = time.perf_counter()
        data_time += t1 - t0
        step_time += t2 - t0
        bar.update(1)
        bar.set_postfix(loss=f"{sums['loss'] / max(sums['n'], 1):.3f}",
                        acc1=f"{100 * sums['c1'] / max(sums['n'], 1):.1f}")
    bar.close()
    del it
    # the schedulers compute each epoch's rate from the last one: hand back theirs
    for opt, lrs in zip(optimizers, scheduled):
        for g, lr in zip(opt.param_groups, lrs):
            g["lr"] = lr
    elapsed = time.perf_counter() - start
    keys = ["loss", "c1", "c5", "n", "bad", "gate"]
    pooled = dict(zip(keys, ctx.all_sum([sums[k] for k in keys])))
    n = max(pooled["n"], 1.0)
    return {"loss": pooled["loss"] / n, "acc1": 100 * pooled["c1"] / n,
            "acc5": 100 * pooled["c5"] / n, "images": int(pooled["n"]),
            "images_per_s": pooled["n"] / max(elapsed, 1e-9),
            "data_share": data_time / max(step_time, 1e-9), "skipped_bad": int(pooled["bad"]),
            "gate_open": pooled["gate"] / n if args.gate else None, "steps": steps,
            "time_s": elapsed}


@torch.inference_mode()
def evaluate(model, criterion, loader, device, args, ctx, heatmap=None, predictions=None,
             desc="val"):
    """Loss and top-1/top-5 (percent) over ``loader``, pooled over ranks.

    heatmap: a models.HeatmapAccumulator to add the gates to (gated models).
    predictions: a dict filled with {sample index: predicted class} (batches must carry
    indices: JpegFolder(with_index=True)); gathered to every rank.
    """
    model.eval()
    sums = dict(loss=0.0, c1=0.0, c5=0.0, n=0.0, bad=0.0)
    local_pred = {}
    amp = bool(args.amp)
    for batch in progress(loader, ctx=ctx, args=args, desc=desc, unit="batch"):
        x, y, n_bad = batch[:3]
        sums["bad"] += n_bad
        if x is None:
            continue
        x = x.to(device, non_blocking=True).float()
        y = y.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits, gates = _split_output(model(x))
        logits = logits.float()
        if heatmap is not None and gates is not None:
            heatmap.update(gates.float())
        c1, c5 = _topk_correct(logits, y)
        sums["loss"] += criterion(logits, y).item() * len(y)
        sums["c1"] += c1
        sums["c5"] += c5
        sums["n"] += len(y)
        if predictions is not None and len(batch) > 3:
            for i, p in zip(batch[3].tolist(), logits.argmax(1).tolist()):
                local_pred[i] = p
    keys = ["loss", "c1", "c5", "n", "bad"]
    pooled = dict(zip(keys, ctx.all_sum([sums[k] for k in keys])))
    if heatmap is not None and ctx.distributed:
        t = ctx.all_reduce_(torch.cat([heatmap.open_counts,
                                       torch.tensor([float(heatmap.samples)], dtype=torch.float64)]))
        heatmap.open_counts, heatmap.samples = t[:-1].clone(), int(t[-1].item())
    if predictions is not None:
        for part in ctx.gather(local_pred):
            predictions.update(part)
    n = max(pooled["n"], 1.0)
    return {"loss": pooled["loss"] / n, "acc1": 100 * pooled["c1"] / n,
            "acc5": 100 * pooled["c5"] / n, "images": int(pooled["n"]),
            "skipped_bad": int(pooled["bad"])}


# ---------------------------------------------------------------------------
# Pieces of main
# ---------------------------------------------------------------------------

def _loader(ds, args, sampler, batch_size, device, drop_last=False):
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=args.workers,
                      collate_fn=collate_skip_bad, pin_memory=device.type == "cuda",
                      drop_last=drop_last, persistent_workers=False)


def resolve_stats(args, ctx, data, cs, source, size, out_dir):
    """The Stats to normalize with: --stats, the cache OUTPUT/stats.json, or computed over
    the training set's eval-geometry cubes (sharded over the ranks, sums pooled)."""
    key = {"channels": None if cs is None else cs.spec, "source": source, "size": [size, size],
           "train_dir": os.path.abspath(os.path.join(data, args.train_split)),
           "limit": int(args.stats_limit)}

    def compute():
        ds = JpegFolder(data, args.train_split, source, cs, size, train=False, stats=None,
                        on_bad_image="skip")
        index = np.arange(len(ds))
        if args.stats_limit and args.stats_limit < len(ds):
            index = np.sort(np.random.default_rng(args.seed).choice(len(ds), args.stats_limit,
                                                                    replace=False))
        loader = _loader(ds, args, index[ctx.rank::ctx.world].tolist(), 16, torch.device("cpu"))
        acc = StatsAccumulator(3 if cs is None else cs.count)
        bad = 0
        for x, _, n_bad, *_ in progress(loader, ctx=ctx, args=args, desc="stats", unit="batch"):
            bad += n_bad
            if x is not None:
                acc.update(x.transpose(0, 1).numpy())
        if ctx.distributed:
            t = ctx.all_reduce_(torch.cat([torch.from_numpy(acc.s1), torch.from_numpy(acc.s2),
                                           torch.tensor([float(acc.n), float(bad)],
                                                        dtype=torch.float64)]))
            c = len(acc.s1)
            acc.s1, acc.s2 = t[:c].numpy().copy(), t[c:2 * c].numpy().copy()
            acc.n, bad = int(t[2 * c].item()), int(t[2 * c + 1].item())
        what = (f"{len(index) - bad} training images"
                f"{f' ({bad} unreadable skipped)' if bad else ''}")
        return acc.result(cs, source, (size, size), eval_geometry(size).to_dict()), what

    return runtime.resolve_stats(ctx, given=args.stats, cache=os.path.join(out_dir, "stats.json"),
                                 key=key, compute=compute, channels=cs, source=source,
                                 geometry=eval_geometry(size))


def write_predictions(path, dataset, predictions):
    """CSV lines 'path,predicted class index' in data-set order (-1: not predicted)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for i, (p, _) in enumerate(dataset.samples):
        w.writerow([p, predictions.get(i, -1)])
    write_text(path, buf.getvalue(), newline="")


def state_digest(module) -> str:
    """SHA-256 over every tensor of a state dict, in key order."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
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
    data = args.data or (ckpt.get("args") or {}).get("data")
    if not data:
        raise SystemExit("train.py: error: --evaluate needs --data (the checkpoint names none)")
    model = load_model(ckpt).to(ctx.device)
    if args.amp is None:
        args.amp = ctx.device.type == "cuda"
    val_ds = JpegFolder(data, args.val_split, source, pre["channels"], pre["size"], train=False,
                        stats=pre["stats"], seed=args.seed, on_bad_image=args.on_bad_image,
                        dtype=args.dtype, with_index=True, classes=ckpt.get("classes"))
    loader = _loader(val_ds, args, ShardSampler(len(val_ds), ctx.rank, ctx.world),
                     args.batch_size, ctx.device)
    predictions = {} if args.predictions else None
    ctx.log(f"evaluating {args.evaluate} ({ckpt['arch']}, trained on {pre['source']}, "
            f"epoch {ckpt.get('epoch')}) on {len(val_ds)} images of {val_ds.folder} with "
            f"source {source}")
    m = evaluate(model, nn.CrossEntropyLoss(), loader, ctx.device, args, ctx,
                 predictions=predictions)
    if ctx.main and args.predictions:
        write_predictions(args.predictions, val_ds, predictions)
        ctx.log(f"predictions: {args.predictions}")
    if m["skipped_bad"]:
        ctx.log(f"skipped {m['skipped_bad']} unreadable image(s)")
    ctx.log(f"top1 {m['acc1']:.3f} top5 {m['acc5']:.3f}")
    return m


def main(args):
    ctx = Context(args.device)
    try:
        if args.evaluate:
            return run_evaluate(args, ctx)
        return run_train(args, ctx)
    finally:
        ctx.close()


def run_train(args, ctx):
    t_start = time.perf_counter()
    if args.demo and args.data is not None:
        raise SystemExit("train.py: error: --demo writes its own data; drop --data (or --demo)")
    args.demo = args.data is None      # the only demo decision: which presets apply
    preset = runtime.apply_preset(args, *(["train-demo"] if args.demo else []), "train")
    if args.lr is None:
        args.lr = 0.1 * args.batch_size * ctx.world / 256
    if args.amp is None:
        args.amp = ctx.device.type == "cuda"
    if args.gate and args.source == "rgb":
        raise SystemExit("train.py: error: --gate needs a coefficient source, not rgb")
    source, arch, epochs, out_dir, lr = args.source, args.arch, args.epochs, args.output_dir, args.lr
    cs = None if source == "rgb" else ChannelSet.parse("192" if args.gate else args.channels)
    size = args.size = args.size or default_size(source, arch)
    device = ctx.device
    if ctx.main:
        os.makedirs(out_dir, exist_ok=True)

    syn = preset.get("synthetic")
    if syn:
        from jpegfreq.synthetic import make_dataset
        args.data = os.path.join(out_dir, "synthetic")
        if ctx.main:
            ctx.log(f"demo: synthesizing {syn['classes']} classes x ({syn['train_per_class']} "
                    f"train + {syn['val_per_class']} val) JPEGs into {args.data}")
            make_dataset(args.data, syn["classes"], syn["train_per_class"], syn["val_per_class"],
                         seed=args.seed, progress=not args.no_progress)
        ctx.barrier()
    data = args.data   # args now holds the resolved settings, for checkpoints and the log

    resume = args.resume
    if resume == "auto":
        resume = os.path.join(out_dir, "checkpoint.pth")
        if not os.path.exists(resume):
            ctx.log(f"resume: no {resume} yet, starting fresh")
            resume = None
    ckpt = _classifier_checkpoint(resume) if resume else None
    if ckpt is not None:
        pre = preprocessing(ckpt)
        if (ckpt["arch"], pre["source"], pre["channels"], pre["size"], bool(ckpt.get("gate"))) != \
                (arch, source, cs, size, bool(args.gate)):
            raise SystemExit(f"train.py: error: {resume} was trained with arch {ckpt['arch']}, "
                             f"source {pre['source']}, channels {pre['channels']}, size "
                             f"{pre['size']}, gate {bool(ckpt.get('gate'))}: give the same flags "
                             f"to resume it")
        stats = pre["stats"]
        ctx.log(f"resume: {resume} (epoch {ckpt['epoch']} done, best top1 {ckpt['best_acc1']:.2f})")
    else:
        stats = resolve_stats(args, ctx, data, cs, source, size, out_dir)

    train_ds = JpegFolder(data, args.train_split, source, cs, size, train=True, stats=stats,
                          seed=args.seed, on_bad_image=args.on_bad_image, dtype=args.dtype)
    val_ds = JpegFolder(data, args.val_split, source, cs, size, train=False, stats=stats,
                        seed=args.seed, on_bad_image=args.on_bad_image, dtype=args.dtype,
                        with_index=True, classes=train_ds.classes)
    num_classes = len(train_ds.classes)
    # the same order on every process count: DistributedSampler shuffles with seed + epoch
    train_sampler = DistributedSampler(train_ds, num_replicas=ctx.world, rank=ctx.rank,
                                       shuffle=True, seed=args.seed)
    drop_last = len(train_sampler) >= args.batch_size
    train_loader = _loader(train_ds, args, train_sampler, args.batch_size, device, drop_last)
    val_loader = _loader(val_ds, args, ShardSampler(len(val_ds), ctx.rank, ctx.world),
                         args.batch_size, device)

    torch.manual_seed(args.seed)
    model = build_model(arch, source, cs, num_classes, gate=args.gate).to(device)
    gate_params = list(model.gate.parameters()) if args.gate else []
    gate_ids = {id(q) for q in gate_params}
    optimizer = torch.optim.SGD([q for q in model.parameters() if id(q) not in gate_ids], lr=lr,
                                momentum=args.momentum, weight_decay=args.weight_decay)
    gate_optimizer = torch.optim.Adam(gate_params, lr=args.gate_lr) if args.gate else None
    if args.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
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
        del ckpt
    module = model
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if device.type == "cuda" else None)
    # Gumbel noise differs per rank (their batches differ too); weights start equal anyway
    torch.manual_seed(args.seed + 1 + ctx.rank + 1000 * start_epoch)
    criterion = nn.CrossEntropyLoss()

    log_path = os.path.join(out_dir, "log.jsonl")
    if ctx.main:
        _truncate_log(log_path, start_epoch)
    ctx.log(f"train: {len(train_ds)} images, val: {len(val_ds)} images, {num_classes} classes "
            f"({data}); {arch} on {source}{'' if cs is None else ' ' + str(cs)}"
            f"{' with gate' if args.gate else ''}, crop {size}; {ctx.world} process(es) on "
            f"{device}, batch {args.batch_size}/process, lr {lr:g} ({args.lr_schedule}), "
            f"epochs {start_epoch}..{epochs - 1}")

    base = {"task": "classify", "arch": arch, "num_classes": num_classes, "classes": train_ds.classes,
            "source": source, "channels": None if cs is None else cs.spec, "size": size,
            "geometry": eval_geometry(size).to_dict(),
            "stats": None if stats is None else stats.to_dict(), "gate": bool(args.gate)}
    val = None
    for epoch in range(start_epoch, epochs):
        train_sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        t = train_one_epoch(model, criterion, optimizer, train_loader, device, epoch, args, ctx,
                            scaler, gate_optimizer)
        ctx.sync_buffers(module)     # rank 0's BatchNorm statistics: one model on every rank
        val = evaluate(module, criterion, val_loader, device, args, ctx)
        lr_now = optimizer.param_groups[0]["lr"]
        scheduler.step()
        is_best = val["acc1"] > best_acc1
        best_acc1 = max(best_acc1, val["acc1"])
        if ctx.main:
            record = {"epoch": epoch, "train_loss": t["loss"], "train_acc1": t["acc1"],
                      "train_acc5": t["acc5"], "val_loss": val["loss"], "val_acc1": val["acc1"],
                      "val_acc5": val["acc5"], "images_per_s": t["images_per_s"],
                      "data_share": t["data_share"], "skipped_bad": t["skipped_bad"],
                      "val_skipped_bad": val["skipped_bad"], "lr": lr_now, "steps": t["steps"],
                      "images": t["images"], "time_s": t["time_s"]}
            if args.gate:
                record["gate_open"] = t["gate_open"]
            # the log line first: a kill before the checkpoint repeats this epoch, and the
            # resumed run drops the line (_truncate_log) before writing it again
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            state = dict(base, model=module.state_dict(), optimizer=optimizer.state_dict(),
                         scheduler=scheduler.state_dict(), epoch=epoch, args=args,
                         best_acc1=best_acc1)
            if scaler is not None:
                state["scaler"] = scaler.state_dict()
            if gate_optimizer is not None:
                state["gate_optimizer"] = gate_optimizer.state_dict()
            state = runtime.plain(state)
            save_checkpoint(os.path.join(out_dir, "checkpoint.pth"), state)
            if is_best:
                save_checkpoint(os.path.join(out_dir, "best.pth"), state)
            gate = f", gate open {100 * t['gate_open']:.1f}%" if args.gate else ""
            bad = (f", skipped {t['skipped_bad']} bad image(s)" if t["skipped_bad"] else "")
            ctx.log(f"epoch {epoch + 1}/{epochs}: train loss {t['loss']:.3f} top1 {t['acc1']:.1f} "
                    f"top5 {t['acc5']:.1f} | val loss {val['loss']:.3f} top1 {val['acc1']:.1f} "
                    f"top5 {val['acc5']:.1f} | {t['images_per_s']:.1f} img/s, data "
                    f"{100 * t['data_share']:.0f}% of step time, lr {lr_now:.4g}{gate}{bad} "
                    f"[{_format_time(t['time_s'])}]")
        ctx.barrier()

    if args.gate:
        from jpegfreq.models import HeatmapAccumulator
        from jpegfreq.heatmap import plot_heatmap, summarize
        heat = HeatmapAccumulator(192)
        evaluate(module, criterion, val_loader, device, args, ctx, heatmap=heat, desc="heat map")
        if ctx.main and heat.samples:
            hm = heat.to_json(ChannelSet.parse("192").names)
            write_json(os.path.join(out_dir, "heatmap.json"), hm)
            plot_heatmap(hm, os.path.join(out_dir, "heatmap.png"))
            s = summarize(hm["frequency"])
            ctx.log(f"heat map over {hm['samples']} val images: mean open Y {s['Y']:.2f}, "
                    f"Cb {s['Cb']:.2f}, Cr {s['Cr']:.2f}; low frequencies (u+v<=3) {s['low']:.2f},"
                    f" high {s['high']:.2f} -> {out_dir}/heatmap.json, heatmap.png "
                    f"(pick a set: --channels \"top 24 of {out_dir}/heatmap.json\")")

    if args.predictions:
        predictions = {}
        evaluate(module, criterion, val_loader, device, args, ctx, predictions=predictions,
                 desc="predictions")
        if ctx.main:
            write_predictions(args.predictions, val_ds, predictions)
            ctx.log(f"predictions: {args.predictions}")

    if args.debug_dump_weights:
        write_text(os.path.join(out_dir, f"rank{ctx.rank}.sha"), state_digest(module) + "\n")

    if val is None and ctx.main:
        ctx.log(f"nothing to train: epoch {start_epoch} >= --epochs {epochs}")
    elif val is not None:
        chance = 100.0 / num_classes
        ctx.log(f"done in {_format_time(time.perf_counter() - t_start)}: val top1 "
                f"{val['acc1']:.1f}% (best {best_acc1:.1f}%), top5 {val['acc5']:.1f}%; chance "
                f"is {chance:.1f}% with {num_classes} classes")
    ctx.log(input_summary(cs, source, size, args.dtype))
    if preset.get("inspect_one") and ctx.main:
        sample = val_ds.samples[0][0]
        ctx.log(f"inspecting one validation image: {sample}")
        _inspect_one(sample)
    return {"val": val, "best_acc1": best_acc1, "output_dir": out_dir}


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


def _bad_image_message(e):
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    last = lines[-1] if lines else str(e)
    return last.split("BadImageError: ", 1)[-1]


if __name__ == "__main__":
    cli_args = get_args_parser().parse_args()
    try:
        main(cli_args)
    except BadImageError as e:
        print(f"train.py: error: bad image {_bad_image_message(e)}", file=sys.stderr)
        sys.exit(1)
    except CheckpointError as e:  # names the file and the reason; nothing was loaded
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(1)
