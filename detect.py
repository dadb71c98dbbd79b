"""Detection / instance segmentation on JPEG DCT cubes: Faster / Mask R-CNN with ResNet-50-DCT-FPN.

Demo (no data needed): writes a small COCO-format set of shapes on textured backgrounds (60 train,
20 val), trains Mask R-CNN-DCT (24S) from scratch for 12 epochs (about 25 minutes on a shared
2-core CPU) and prints COCO AP after every epoch (epoch 0 = before training); docs/detection.md
has the figures:

    python detect.py

COCO (one process; the statistics are pooled over the first --stats-images training images
when --stats is not given, cached in OUTPUT/stats.json and kept in the checkpoint):

    python detect.py --data coco/train2017 --ann coco/annotations/instances_train2017.json \\
        --val-data coco/val2017 --val-ann coco/annotations/instances_val2017.json \\
        --source jpeg-coeffs --channels 24S --task segm --epochs 12 --batch-size 2 \\
        --output-dir runs/maskrcnn_dct24 [--backbone-weights runs/resnet50_dct24/checkpoint.pth]

More processes (DDP; the learning rate defaults to 0.02 x total batch / 16):

    torchrun --nproc_per_node 8 detect.py --data ... --ann ... --val-ann ... --batch-size 2

Evaluate a checkpoint (last line "bbox AP X segm AP Y"):

    python detect.py --data coco/val2017 --val-ann coco/annotations/instances_val2017.json \\
        --evaluate runs/maskrcnn_dct24/checkpoint.pth

RGB baseline (torchvision's Faster / Mask R-CNN ResNet-50-FPN, weights=None, fed the same resized
pixels): --source rgb. Boxes and masks are evaluated in the original image coordinates.

On a GPU: mixed precision is on by default (--no-amp turns it off; --amp on a CPU is bfloat16),
--channels-last stores the convolution weights NHWC, SyncBatchNorm pools BatchNorm statistics
over the processes of a CUDA run unless the norm layers are frozen (--no-sync-bn), and the
losses are read back from the device once every --print-freq steps (docs/detection.md).

A checkpoint follows jpegfreq.checkpoint's schema (task "detect"); jpegfreq.models.load_model
rebuilds the detector from it. Processes, evaluation shards, atomic writes, statistics and the
flag defaults (jpegfreq/presets.py) come from jpegfreq.runtime, shared with train.py.
"""
import argparse
import datetime
import math
import os
import sys
import time

import torch

from jpegfreq import ChannelSet, runtime
from jpegfreq.checkpoint import CheckpointError, load_checkpoint, preprocessing, save_checkpoint
from jpegfreq.coco import evaluate_coco
from jpegfreq.detection import CocoJpeg, collate
from jpegfreq.models import load_model
from jpegfreq.models.detection import build_detector
from jpegfreq.runtime import Context, ShardSampler, write_json
from jpegfreq.runtime import fill_defaults  # noqa: F401  detect.fill_defaults(args, detect.DEFAULTS)
from jpegfreq.stats import compute_detection_stats, detection_stats_geometry
from jpegfreq.synthetic import make_shapes_dataset

# flag defaults of a COCO run and of the demo (jpegfreq/presets.py; figures in docs/detection.md);
# a flag given explicitly always wins
DEFAULTS, DEMO = runtime.preset("detect"), runtime.preset("detect-demo")


# ---------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------

def make_dataset(args, root, ann, train, stats, masks):
    return CocoJpeg(root, ann, source=args.source, channels=args.channels, train=train,
                    max_size=args.max_size, min_size=args.min_size, stats=stats,
                    seed=args.seed, masks=masks)


def resolve_stats(args, ctx, train_set):
    """The normalisation the cubes get (none for rgb): --stats FILE, OUTPUT/stats.json when it
    was pooled with the same settings, else pooled over the first --stats-images training
    cubes and cached there."""
    if args.source == "rgb":
        return None
    geometry = detection_stats_geometry(args.min_size, args.max_size)
    key = {"channels": train_set.channels.spec, "source": args.source, "geometry": geometry,
           "train_dir": os.path.abspath(args.data), "train_ann": os.path.abspath(args.ann),
           "limit": int(args.stats_images)}

    def compute():
        n = min(args.stats_images, len(train_set))
        return (compute_detection_stats(train_set, limit=n, progress=ctx.main and args.progress),
                f"{n} training cubes ({args.channels}, {args.source}, "
                f"{args.min_size}/{args.max_size})")

    return runtime.resolve_stats(ctx, given=args.stats,
                                 cache=os.path.join(args.output_dir, "stats.json"), key=key,
                                 compute=compute, channels=train_set.channels,
                                 source=args.source, geometry=geometry)


def arch_name(task, source):
    net = "maskrcnn" if task == "segm" else "fasterrcnn"
    return f"{net}_resnet50_fpn_rgb" if source == "rgb" else f"{net}_resnet50_dct_fpn"


def detector_kwargs(args):
    """The build_detector keyword arguments that shape the modules (the checkpoint's
    model_kwargs, so that load_model rebuilds the same network without the weights file)."""
    kw = {
        "box_batch_size_per_image": args.box_batch_size_per_image,
        "rpn_pre_nms_top_n_train": args.rpn_post_nms_top_n,
        "rpn_post_nms_top_n_train": args.rpn_post_nms_top_n,
        "rpn_pre_nms_top_n_test": args.rpn_post_nms_top_n // 2,
        "rpn_post_nms_top_n_test": args.rpn_post_nms_top_n // 2,
        "box_detections_per_img": args.detections_per_img,
    }
    if args.source != "rgb":
        kw["frozen_bn"] = bool(getattr(args, "frozen_bn", False))
        if args.trainable_layers is not None:
            kw["trainable_layers"] = args.trainable_layers
    return kw


def make_model(args, num_classes, backbone_weights=None):
    kw = detector_kwargs(args)
    if args.source != "rgb":
        kw["backbone_weights"] = backbone_weights
    elif backbone_weights is not None:
        raise SystemExit("--backbone-weights loads a resnet50_dct; the RGB baseline trains "
                         "from scratch here")
    return build_detector(args.task, args.source, args.channels, num_classes, **kw)


def checkpoint_settings(path, ckpt):
    """The data settings a detector checkpoint was trained with: source, channels, task
    ("bbox" | "segm", from its arch), min_size, max_size."""
    if ckpt.get("task", "classify") != "detect":
        raise ValueError(f"{path}: a classification checkpoint (train.py --evaluate reads it), "
                         "not a detector")
    pre = preprocessing(ckpt)
    return {"source": pre["source"],
            "channels": None if pre["channels"] is None else pre["channels"].spec,
            "task": "segm" if ckpt["arch"].startswith("maskrcnn") else "bbox",
            "min_size": pre["min_size"], "max_size": pre["max_size"]}


class WarmupMultiStep:
    """LR factor per iteration: linear warm-up from 1/1000, then x gamma at each milestone epoch."""

    def __init__(self, iters_per_epoch, warmup_iters, milestones, gamma=0.1):
        self.iters_per_epoch = max(1, int(iters_per_epoch))
        self.warmup_iters = int(warmup_iters)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)

    def __call__(self, it):
        f = 1.0
        if it < self.warmup_iters:
            a = it / self.warmup_iters
            f = 1e-3 * (1 - a) + a
        epoch = it // self.iters_per_epoch
        return f * self.gamma ** sum(epoch >= m for m in self.milestones)


def make_loader(dataset, args, sampler, device, batch_size=None, drop_last=False):
    """The DataLoader of detection batches (lists of images and targets, collate): worker
    processes, and page-locked memory with CUDA so that to_device's copies are asynchronous."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size or args.batch_size,
                                       sampler=sampler, num_workers=args.workers,
                                       collate_fn=collate, drop_last=drop_last,
                                       pin_memory=device.type == "cuda")


def to_device(images, targets, device):
    """A batch on the device: the copies are asynchronous when the loader pins its memory
    (pin_memory with CUDA), the cast to float32 runs on the device."""
    images = [im.to(device, non_blocking=True).float() for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                for k, v in t.items()} for t in targets]
    return images, targets


def autocast(device, amp):
    """Mixed precision when asked: float16 on CUDA (with a GradScaler), bfloat16 on CPU."""
    return torch.autocast(device.type, enabled=bool(amp),
                          dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def has_batch_norm(model):
    """Whether model has BatchNorm layers that learn their statistics (FrozenBatchNorm2d, a
    fixed affine map, is not one)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def use_sync_bn(args, model, ctx):
    """Whether detection's BatchNorm layers should pool their statistics over all processes:
    with --sync-bn, or by default when distributed on CUDA and the norm layers are not frozen
    (2 images per process are too few for batch statistics of their own). SyncBatchNorm
    synchronises CUDA tensors only: asked for on another device it is an error."""
    if not ctx.distributed or not has_batch_norm(model) or args.sync_bn is False:
        return False
    if ctx.device.type != "cuda":
        if args.sync_bn:
            raise SystemExit(f"--sync-bn: SyncBatchNorm needs CUDA devices, not {ctx.device}")
        return False
    return True


def convert_norm(args, model, ctx):
    """model with its BatchNorm layers turned into SyncBatchNorm when use_sync_bn (the
    weights and statistics carried over), else model itself."""
    if not use_sync_bn(args, model, ctx):
        return model
    ctx.log("SyncBatchNorm: BatchNorm statistics pooled over all processes")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def prepare_model(args, model, ctx):
    """The training network on its device: SyncBatchNorm when use_sync_bn, channels-last
    weights with --channels-last, wrapped in DistributedDataParallel when distributed."""
    model = convert_norm(args, model, ctx)
    model.to(ctx.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if ctx.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    return model


# ---------------------------------------------------------------------------
# Train / evaluate
# ---------------------------------------------------------------------------

def train_one_epoch(model, optimizer, scheduler, loader, device, epoch, args, ctx, scaler=None):
    """One pass over loader; returns the epoch's mean loss and loss components over all ranks.

    The losses stay on the device, summed over the steps of a logging interval (--print-freq),
    and are read once per interval (one all-reduce and one copy to the host), where the
    non-finite check is made too: a loss that is not finite stops the run at the end of the
    interval it happened in. Under --amp the forward runs in autocast and, on CUDA, the
    backward through scaler (a GradScaler; it reads its own overflow flag every step)."""
    model.train()
    freq = max(1, int(args.print_freq))
    names, window, steps = None, None, 0
    totals, counted = None, 0
    total = len(loader)
    bar = runtime.progress(loader, ctx, enabled=args.progress, desc=f"epoch {epoch}",
                           unit="batch")
    params = [p for p in model.parameters() if p.requires_grad]
    t_read = time.time()
    for step, (images, targets) in enumerate(bar, 1):
        images, targets = to_device(images, targets, device)
        with autocast(device, args.amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if args.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if args.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
            optimizer.step()
        scheduler.step()
        if names is None:
            names = ["loss", *losses]
        values = torch.stack([loss.detach().float()] +
                             [losses[k].detach().float() for k in names[1:]])
        window = values if window is None else window + values
        steps += 1
        if step % freq and step != total:
            continue
        # the interval's read: summed over the ranks, one copy to the host
        sums = ctx.all_reduce_(window).tolist()
        n = steps * ctx.world
        if not all(map(math.isfinite, sums)):
            parts = {k: round(v / n, 4) for k, v in zip(names, sums)}
            raise SystemExit(f"epoch {epoch}: loss is not finite in steps {step - steps + 1}-"
                             f"{step} ({parts}); lower --lr or set --clip-grad")
        totals = sums if totals is None else [a + b for a, b in zip(totals, sums)]
        counted += n
        now = time.time()
        lr = optimizer.param_groups[0]["lr"]
        bar.set_postfix(loss=f"{sums[0] / n:.3f}", lr=f"{lr:.4f}")
        if not args.progress and step % freq == 0 and step != total:
            parts = " ".join(f"{k} {v / n:.4f}" for k, v in zip(names[1:], sums[1:]))
            ctx.log(f"epoch {epoch} [{step}/{total}] loss {sums[0] / n:.4f} ({parts}) "
                    f"lr {lr:.5f} {n * args.batch_size / max(now - t_read, 1e-9):.1f} img/s")
        window, steps, t_read = None, 0, now
    if totals is None:
        return {}
    return {k: v / counted for k, v in zip(names, totals)}


@torch.no_grad()
def predict(model, dataset, device, args, ctx, batch_size=None):
    """COCO results (source pixels) of this rank's share of dataset (ShardSampler: over all
    ranks every image exactly once). Full precision: under autocast the boxes would be
    decoded in float16, a pixel apart at 1333 px."""
    net = model.module if hasattr(model, "module") else model
    net.eval()
    loader = make_loader(dataset, args, ShardSampler(len(dataset), ctx.rank, ctx.world), device,
                         batch_size=batch_size)
    results = []
    for images, targets in runtime.progress(loader, ctx, enabled=args.progress, desc="eval",
                                            unit="batch"):
        images = [im.to(device, non_blocking=True).float() for im in images]
        outputs = net(images)
        for t, o in zip(targets, outputs):
            results.extend(dataset.to_coco(t, {k: v.cpu() for k, v in o.items()}))
    return results


def gather_on_main(ctx, obj):
    """Every rank's obj (picklable), in rank order, on rank 0; None on the other ranks.
    Only rank 0 evaluates, so only rank 0 receives the results (torch.distributed.gather_object
    with dst=0, not an all-gather that would copy every rank's results to every rank)."""
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist
    parts = [None] * ctx.world if ctx.main else None
    dist.gather_object(obj, parts, dst=0)
    return parts


def share_from_main(ctx, obj):
    """Rank 0's obj (small and picklable: the metrics) on every rank."""
    if not ctx.distributed:
        return obj
    import torch.distributed as dist
    box = [obj if ctx.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def evaluate(model, dataset, device, args, ctx):
    """({"bbox": {...COCO metrics}, "segm": {...} (Mask R-CNN)}, results). The results are
    gathered on rank 0 only, which alone runs COCOeval; the metrics are then sent to every
    rank. results is the full list on rank 0 and None on the other ranks."""
    parts = gather_on_main(ctx, predict(model, dataset, device, args, ctx))
    metrics, results = {}, None
    if ctx.main:
        results = [r for part in parts for r in part]
        del parts
        summary = []
        types = ("bbox", "segm") if args.task == "segm" else ("bbox",)
        for iou_type in types:
            metrics[iou_type] = evaluate_coco(dataset.coco, results, iou_type,
                                              image_ids=dataset.ids, summary_out=summary)
        if args.verbose_eval:
            ctx.log("\n".join(summary))
    return share_from_main(ctx, metrics), results


def ap_line(metrics):
    return " ".join(f"{k} AP {metrics[k]['AP']:.4f}" for k in ("bbox", "segm") if k in metrics)


def checkpoint_dict(args, model, optimizer, scheduler, epoch, train_set, stats, history,
                    scaler=None):
    """The detector checkpoint (jpegfreq.checkpoint's schema, task "detect"): what
    jpegfreq.models.load_model rebuilds the network from, plus the training state."""
    net = model.module if hasattr(model, "module") else model
    return runtime.plain({
        "task": "detect", "arch": arch_name(args.task, args.source), "model": net.state_dict(),
        "model_kwargs": detector_kwargs(args), "num_classes": train_set.num_classes,
        "classes": train_set.classes, "cat_ids": train_set.cat_ids, "source": args.source,
        "channels": None if args.source == "rgb" else train_set.channels.spec,
        "min_size": args.min_size, "max_size": args.max_size, "stats": stats,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "epoch": epoch, "args": args, "history": history,
    })


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def run_evaluate(args, ctx):
    ckpt = load_checkpoint(args.evaluate)
    for k, v in checkpoint_settings(args.evaluate, ckpt).items():
        setattr(args, k, v)
    model = load_model(ckpt).to(ctx.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    stats = preprocessing(ckpt)["stats"]
    val_set = make_dataset(args, args.val_data or args.data, args.val_ann, False, stats, False)
    if val_set.cat_ids != list(ckpt["cat_ids"]):
        raise SystemExit(f"{args.val_ann}: categories {val_set.cat_ids[:8]}... differ from the "
                         f"checkpoint's {list(ckpt['cat_ids'])[:8]}...")
    t0 = time.time()
    metrics, results = evaluate(model, val_set, ctx.device, args, ctx)
    if ctx.main:
        if args.predictions:
            write_json(args.predictions, results)
        ctx.log(f"evaluated {len(val_set)} images in {time.time() - t0:.1f}s")
        ctx.log(ap_line(metrics))
    return metrics


def main(args):
    """Train (or --evaluate) with args from get_args_parser; no --data (and no --evaluate)
    is the demo.  Returns the AP history (the metrics with --evaluate)."""
    ctx = Context(args.device)
    try:
        demo = args.data is None and args.evaluate is None   # only chooses the presets
        preset = runtime.apply_preset(args, *(["detect-demo"] if demo else []), "detect")
        args.device = str(ctx.device)
        setup_device(args, ctx)
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed + ctx.rank)
        if args.evaluate:
            return run_evaluate(args, ctx)
        if preset.get("synthetic"):
            write_demo_data(args, ctx, preset["synthetic"])
        return run_train(args, ctx)
    finally:
        ctx.close()


def setup_device(args, ctx):
    """The device settings: --amp on by default with CUDA only (float16 + GradScaler there,
    bfloat16 on CPU when asked), cudnn.benchmark on by default with CUDA."""
    cuda = ctx.device.type == "cuda"
    if args.amp is None:
        args.amp = cuda
    if args.cudnn_benchmark is None:
        args.cudnn_benchmark = cuda
    if cuda:
        torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)


def write_demo_data(args, ctx, syn):
    """The shapes set a preset's "synthetic" entry sizes (deterministic, written once) in
    OUTPUT/data; points args at it."""
    root = os.path.join(args.output_dir, "data")
    if ctx.main:
        for split in ("train", "val"):
            if not os.path.exists(os.path.join(root, f"{split}.json")):
                make_shapes_dataset(root, syn[split], split, seed=args.seed,
                                    size=tuple(syn["size"]), size_jitter=syn["size_jitter"])
        ctx.log(f"demo: {syn['train']} train / {syn['val']} val images of shapes "
                f"(rectangle, ellipse, triangle) in {root}")
    ctx.barrier()
    args.data, args.ann = os.path.join(root, "train"), os.path.join(root, "train.json")
    args.val_data, args.val_ann = os.path.join(root, "val"), os.path.join(root, "val.json")


def run_train(args, ctx):
    if not (args.data and args.ann and args.val_ann):
        raise SystemExit("--data, --ann and --val-ann are needed (or no --data for the demo)")
    device = ctx.device
    if ctx.main:
        os.makedirs(args.output_dir, exist_ok=True)

    ckpt = None
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        for k, v in checkpoint_settings(args.resume, ckpt).items():
            same = v == getattr(args, k) or (k == "channels" and v is not None and
                                             args.source != "rgb" and
                                             ChannelSet.parse(v) == ChannelSet.parse(args.channels))
            if v is not None and not same:
                ctx.log(f"resume: using the checkpoint's {k}={v!r}")
                setattr(args, k, v)

    probe = make_dataset(args, args.data, args.ann, True, None, False)
    if ckpt is not None:
        stats = preprocessing(ckpt)["stats"]
    else:
        stats = resolve_stats(args, ctx, probe)
    train_set = make_dataset(args, args.data, args.ann, True, stats, args.task == "segm")
    val_set = make_dataset(args, args.val_data or args.data, args.val_ann, False, stats, False)
    if val_set.cat_ids != train_set.cat_ids:
        raise SystemExit("training and validation annotations have different categories")

    args.frozen_bn = args.source != "rgb" and args.backbone_weights is not None
    model = prepare_model(args, make_model(args, train_set.num_classes, args.backbone_weights),
                          ctx)

    if ctx.distributed:
        sampler = torch.utils.data.distributed.DistributedSampler(train_set, seed=args.seed)
    else:
        sampler = torch.utils.data.RandomSampler(
            train_set, generator=torch.Generator().manual_seed(args.seed))
    drop_last = len(train_set) > args.batch_size * ctx.world
    loader = make_loader(train_set, args, sampler, device, drop_last=drop_last)
    if args.lr is None:
        args.lr = 0.02 * args.batch_size * ctx.world / 16
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    warmup = min(args.warmup_iters, max(len(loader) - 1, 0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupMultiStep(len(loader), warmup, args.lr_steps, args.lr_gamma))
    scaler = torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None

    start_epoch, history = 0, []
    if ckpt is not None:
        (model.module if ctx.distributed else model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, history = int(ckpt["epoch"]), list(ckpt.get("history", []))
        ctx.log(f"resumed from {args.resume} after epoch {start_epoch}")
        del ckpt

    ctx.log(f"{arch_name(args.task, args.source)} source={args.source} "
            f"channels={args.channels if args.source != 'rgb' else '-'} "
            f"train={len(train_set)} val={len(val_set)} classes={train_set.num_classes - 1} "
            f"sizes={args.min_size}/{args.max_size} batch={args.batch_size}x{ctx.world} "
            f"lr={args.lr:g} epochs={args.epochs} device={device} amp={bool(args.amp)}"
            f"{' channels-last' if args.channels_last else ''}")
    t_start = time.time()
    if args.eval_before and start_epoch == 0 and not history:
        metrics, _ = evaluate(model, val_set, device, args, ctx)
        if ctx.main:
            history.append({"epoch": 0, "loss": None, "train_s": 0.0,
                            **{f"{k}_AP": v["AP"] for k, v in metrics.items()},
                            **{f"{k}_AP50": v["AP50"] for k, v in metrics.items()}})
            ctx.log(f"epoch 0 (before training): {ap_line(metrics)}")

    train_time = sum(h.get("train_s", 0.0) for h in history)
    for epoch in range(start_epoch, args.epochs):
        train_set.set_epoch(epoch)
        if ctx.distributed:
            sampler.set_epoch(epoch)
        t0 = time.time()
        losses = train_one_epoch(model, optimizer, scheduler, loader, device, epoch + 1, args, ctx,
                                 scaler)
        dt = time.time() - t0
        train_time += dt
        # rank 0's BatchNorm statistics everywhere: the ranks evaluate the model that is saved
        ctx.sync_buffers(model.module if ctx.distributed else model)
        metrics, results = evaluate(model, val_set, device, args, ctx)
        if ctx.main:
            history.append({"epoch": epoch + 1, "loss": round(losses.get("loss", float("nan")), 4),
                            "train_s": round(dt, 1),
                            **{f"{k}_AP": v["AP"] for k, v in metrics.items()},
                            **{f"{k}_AP50": v["AP50"] for k, v in metrics.items()}})
            ctx.log(f"epoch {epoch + 1}: loss {losses.get('loss', float('nan')):.4f} "
                    f"{ap_line(metrics)} (train {dt:.0f}s)")
            state = checkpoint_dict(args, model, optimizer, scheduler, epoch + 1, train_set,
                                    stats, history, scaler)
            save_checkpoint(os.path.join(args.output_dir, "checkpoint.pth"), state)
            write_json(os.path.join(args.output_dir, "history.json"), history)
            if args.predictions:
                write_json(args.predictions, results)
        ctx.barrier()
    total = time.time() - t_start
    ctx.log(f"training time {datetime.timedelta(seconds=int(train_time))}, "
            f"total with evaluation {datetime.timedelta(seconds=int(total))}")
    return history


def _defaults(key, note=""):
    """"(default: X; demo Y)" of a flag whose default comes from the presets."""
    def show(v):
        return " ".join(map(str, v)) if isinstance(v, list) else str(v)
    demo = f"; demo {show(DEMO[key])}" if key in DEMO and DEMO[key] != DEFAULTS[key] else ""
    return f"(default: {show(DEFAULTS[key])}{note}{demo})"


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data", help="training images folder (default: none = the demo)")
    a("--ann", help="training COCO json")
    a("--val-data", help="validation images folder (default: --data)")
    a("--val-ann", help="validation COCO json")
    a("--source", default="jpeg-coeffs", choices=["jpeg-coeffs", "spatial", "rgb"],
      help="input pipeline (default: jpeg-coeffs)")
    a("--channels", default="24S", help="channel set (default: 24S)")
    a("--task", choices=["bbox", "segm"],
      help="bbox: Faster R-CNN; segm: Mask R-CNN " + _defaults("task"))
    a("--epochs", type=int, help="epochs " + _defaults("epochs"))
    a("--batch-size", type=int, help="images per process " + _defaults("batch_size"))
    a("--workers", type=int, default=2, help="data loader processes (default: 2)")
    a("--output-dir", help="checkpoints, stats.json, history.json " + _defaults("output_dir"))
    a("--resume", help="continue from this checkpoint (default: none)")
    a("--evaluate", metavar="CKPT", help="only evaluate this checkpoint on --val-ann; prints "
                                         "'bbox AP X segm AP Y'")
    a("--predictions", help="write the last evaluation's COCO results json here")
    a("--min-size", type=int, help="short side after resize " + _defaults("min_size"))
    a("--max-size", type=int, help="long side limit " + _defaults("max_size"))
    a("--lr", type=float, help="SGD learning rate (default: 0.02 x total batch / 16; demo "
                               f"{DEMO['lr']})")
    a("--momentum", type=float, default=0.9, help="(default: 0.9)")
    a("--weight-decay", type=float, default=1e-4, help="(default: 1e-4)")
    a("--lr-steps", type=int, nargs="+", help="epochs at which the lr drops "
                                              + _defaults("lr_steps"))
    a("--lr-gamma", type=float, default=0.1, help="lr drop factor (default: 0.1)")
    a("--warmup-iters", type=int, help="linear warm-up iterations " + _defaults("warmup_iters"))
    a("--clip-grad", type=float, help="clip the gradient norm " + _defaults("clip_grad", " = off"))
    a("--stats", help="normalisation statistics json from compute_detection_stats "
                      "(default: computed from the training images, cached in "
                      "OUTPUT/stats.json)")
    a("--stats-images", type=int, default=1000,
      help="training images pooled for the statistics (default: 1000)")
    a("--backbone-weights", help="resnet50_dct classification checkpoint for layer1..layer4 "
                                 "(default: none = from scratch)")
    a("--trainable-layers", type=int, help="trainable stages of layer1..4 from the top "
                                           "(default: 4, or 3 with weights)")
    a("--box-batch-size-per-image", type=int,
      help="RoIs sampled per image for the heads " + _defaults("box_batch_size_per_image"))
    a("--rpn-post-nms-top-n", type=int,
      help="proposals kept per image in training, half in eval "
           + _defaults("rpn_post_nms_top_n"))
    a("--detections-per-img", type=int, help=_defaults("detections_per_img"))
    a("--eval-before", action="store_true", default=None,
      help="evaluate before training as epoch 0 (default: off; demo on)")
    a("--verbose-eval", action="store_true", help="print COCOeval's tables")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu",
      help="torch device; under torchrun cuda becomes cuda:LOCAL_RANK (default: cuda when "
           "available, else cpu)")
    a("--amp", action=argparse.BooleanOptionalAction, default=None,
      help="mixed precision in training: autocast float16 with a GradScaler on CUDA, "
           "bfloat16 autocast on CPU; evaluation stays float32 (default: on with CUDA, off "
           "on CPU)")
    a("--channels-last", action="store_true",
      help="store the convolution weights channels-last (NHWC), so that from the first "
           "convolution on the backbone, FPN and heads run NHWC kernels (tensor cores under "
           "--amp); the padded batch the model builds from the list of images stays NCHW and "
           "RoIAlign reads NCHW copies of the FPN maps, so measure it on your GPU "
           "(default: off)")
    a("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
      help="SyncBatchNorm: BatchNorm statistics over all processes' images (CUDA only) "
           "(default: on when distributed on CUDA and the norm layers are not frozen; "
           "frozen with --backbone-weights)")
    a("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=None,
      help="cudnn.benchmark: cuDNN times its kernels once per new input shape (detection "
           "batches come in many padded sizes, each timed on first sight) (default: on with "
           "CUDA)")
    a("--print-freq", type=int, default=20,
      help="read the losses back from the device every N steps (logged with --no-progress), "
           "the non-finite check included (default: 20)")
    a("--threads", type=int, help="torch threads " + _defaults("threads", " = torch's choice"))
    a("--seed", type=int, default=0, help="(default: 0)")
    a("--no-progress", dest="progress", action="store_false", help="no tqdm bars")
    return p


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except CheckpointError as e:  # names the file and the reason; nothing was loaded
        print(f"detect.py: error: {e}", file=sys.stderr)
        sys.exit(1)
