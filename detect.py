"""Detection / instance segmentation on JPEG DCT cubes: Faster / Mask R-CNN with ResNet-50-DCT-FPN.

Demo (no data needed): writes a small COCO-format set of shapes on textured backgrounds (60 train,
20 val), trains Mask R-CNN-DCT (24S) from scratch for 12 epochs (about 25 minutes on a shared
2-core CPU) and prints COCO AP after every epoch (epoch 0 = before training); docs/detection.md
has the figures:

    python detect.py

COCO (one process; --stats is computed from the first --stats-images training images when not
given, and kept in the checkpoint):

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
"""
import argparse
import datetime
import json
import os
import sys
import time

import torch
from tqdm import tqdm

from jpegfreq import ChannelSet
from jpegfreq.checkpoint import load_checkpoint, save_checkpoint
from jpegfreq.coco import evaluate_coco
from jpegfreq.detection import CocoJpeg, collate
from jpegfreq.stats import Stats, compute_detection_stats
from jpegfreq.synthetic import make_shapes_dataset
from jpegfreq.models.detection import build_detector

# Defaults that differ between the demo and a real run; a flag given explicitly always wins.
DEFAULTS = {
    "task": "segm", "epochs": 12, "batch_size": 2, "min_size": 800, "max_size": 1333,
    "lr_steps": [8, 11], "warmup_iters": 1000, "box_batch_size_per_image": 512,
    "rpn_post_nms_top_n": 2000, "detections_per_img": 100, "output_dir": "runs/detect",
    "eval_before": False, "clip_grad": 0.0, "threads": 0,
}
DEMO = {
    "task": "segm", "epochs": 12, "batch_size": 4, "min_size": 160, "max_size": 200,
    "lr": 0.02, "lr_steps": [10], "warmup_iters": 20, "box_batch_size_per_image": 128,
    "rpn_post_nms_top_n": 300, "detections_per_img": 50, "output_dir": "runs/detect_demo",
    "eval_before": True, "clip_grad": 10.0,
    # sized for a shared 2-core CPU, where 2 OpenMP threads run several times slower than 1
    "threads": 1,
}
DEMO_DATA = {"train": 60, "val": 20, "size": (256, 256), "size_jitter": 0.15}


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

def init_distributed(args):
    """DDP from torchrun's RANK / LOCAL_RANK / WORLD_SIZE; single process otherwise."""
    args.rank, args.world_size, args.local_rank = 0, 1, 0
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        args.rank = int(os.environ["RANK"])
        args.world_size = int(os.environ["WORLD_SIZE"])
        args.local_rank = int(os.environ.get("LOCAL_RANK", 0))
    args.distributed = args.world_size > 1
    if args.distributed:
        backend = "nccl" if args.device.startswith("cuda") else "gloo"
        if args.device.startswith("cuda"):
            torch.cuda.set_device(args.local_rank)
            args.device = f"cuda:{args.local_rank}"
        torch.distributed.init_process_group(backend)


def is_main(args):
    return args.rank == 0


def log(args, *msg):
    if is_main(args):
        print(*msg, flush=True)


# ---------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------

def make_dataset(args, root, ann, train, stats, masks):
    return CocoJpeg(root, ann, source=args.source, channels=args.channels, train=train,
                    max_size=args.max_size, min_size=args.min_size, stats=stats,
                    seed=args.seed, masks=masks)


def resolve_stats(args, train_set):
    """The normalisation the cubes get: --stats FILE, else pooled over training images."""
    if args.source == "rgb":
        return None
    if args.stats:
        return Stats.load(args.stats)
    if train_set is None:
        raise SystemExit("--stats FILE is needed without training data (or --evaluate a "
                         "checkpoint, which carries its statistics)")
    n = min(args.stats_images, len(train_set))
    log(args, f"computing statistics of {n} training cubes ({args.channels}, {args.source}, "
              f"{args.min_size}/{args.max_size})")
    stats = compute_detection_stats(train_set, limit=n, progress=is_main(args) and args.progress)
    if args.output_dir and is_main(args):
        stats.save(os.path.join(args.output_dir, "stats.json"))
    return stats


def make_model(args, num_classes, backbone_weights=None):
    kw = {
        "box_batch_size_per_image": args.box_batch_size_per_image,
        "rpn_pre_nms_top_n_train": args.rpn_post_nms_top_n,
        "rpn_post_nms_top_n_train": args.rpn_post_nms_top_n,
        "rpn_pre_nms_top_n_test": args.rpn_post_nms_top_n // 2,
        "rpn_post_nms_top_n_test": args.rpn_post_nms_top_n // 2,
        "box_detections_per_img": args.detections_per_img,
    }
    if args.source != "rgb":
        kw["backbone_weights"] = backbone_weights
        # recorded, so that a checkpoint rebuilds the same modules without the weights file
        kw["frozen_bn"] = bool(getattr(args, "frozen_bn", False))
        if args.trainable_layers is not None:
            kw["trainable_layers"] = args.trainable_layers
    elif backbone_weights is not None:
        raise SystemExit("--backbone-weights loads a resnet50_dct; the RGB baseline trains "
                         "from scratch here")
    return build_detector(args.task, args.source, args.channels, num_classes, **kw)


def arch_name(task, source):
    net = "maskrcnn" if task == "segm" else "fasterrcnn"
    return f"{net}_resnet50_fpn_rgb" if source == "rgb" else f"{net}_resnet50_dct_fpn"


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


def to_device(images, targets, device):
    images = [im.to(device, torch.float32, non_blocking=True) for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                for k, v in t.items()} for t in targets]
    return images, targets


# ---------------------------------------------------------------------------
# Train / evaluate
# ---------------------------------------------------------------------------

def train_one_epoch(model, optimizer, scheduler, loader, device, epoch, args):
    model.train()
    sums, n = {}, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", file=sys.stderr,
               disable=not (is_main(args) and args.progress), leave=False)
    for images, targets in bar:
        images, targets = to_device(images, targets, device)
        losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise SystemExit(f"epoch {epoch}: loss is {loss.item()} "
                             f"({ {k: round(v.item(), 4) for k, v in losses.items()} }); "
                             "lower --lr or set --clip-grad")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], args.clip_grad)
        optimizer.step()
        scheduler.step()
        n += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        sums["loss"] = sums.get("loss", 0.0) + loss.item()
        bar.set_postfix(loss=f"{sums['loss'] / n:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4f}")
    return {k: v / max(n, 1) for k, v in sums.items()}


@torch.no_grad()
def predict(model, dataset, device, args, batch_size=None):
    """COCO results (source pixels) for this process's share of dataset; all of them on rank 0."""
    net = model.module if hasattr(model, "module") else model
    net.eval()
    indices = list(range(args.rank, len(dataset), args.world_size))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=batch_size or args.batch_size,
        shuffle=False, num_workers=args.workers, collate_fn=collate)
    results = []
    for images, targets in tqdm(loader, desc="eval", unit="batch", file=sys.stderr, leave=False,
                                disable=not (is_main(args) and args.progress)):
        images = [im.to(device, torch.float32) for im in images]
        outputs = net(images)
        for t, o in zip(targets, outputs):
            results.extend(dataset.to_coco(t, {k: v.cpu() for k, v in o.items()}))
    if args.distributed:
        gathered = [None] * args.world_size
        torch.distributed.all_gather_object(gathered, results)
        results = [r for part in gathered for r in part]
    return results


def evaluate(model, dataset, device, args):
    """{"bbox": {...COCO metrics}, "segm": {...} (Mask R-CNN)}, results; metrics on rank 0."""
    results = predict(model, dataset, device, args)
    metrics = {}
    if is_main(args):
        summary = []
        types = ("bbox", "segm") if args.task == "segm" else ("bbox",)
        for iou_type in types:
            metrics[iou_type] = evaluate_coco(dataset.coco, results, iou_type,
                                              image_ids=dataset.ids, summary_out=summary)
        if args.verbose_eval:
            print("\n".join(summary), flush=True)
    return metrics, results


def ap_line(metrics):
    return " ".join(f"{k} AP {metrics[k]['AP']:.4f}" for k in ("bbox", "segm") if k in metrics)


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------

def checkpoint_dict(args, model, optimizer, scheduler, epoch, train_set, stats, history):
    net = model.module if hasattr(model, "module") else model
    return {
        "model": net.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "epoch": epoch, "args": vars(args).copy(),
        "arch": arch_name(args.task, args.source), "task": args.task,
        "num_classes": train_set.num_classes, "classes": train_set.classes,
        "cat_ids": train_set.cat_ids, "source": args.source,
        "channels": None if args.source == "rgb" else train_set.channels.spec,
        "min_size": args.min_size, "max_size": args.max_size,
        "stats": None if stats is None else stats.to_dict(), "history": history,
    }


def load_detector(checkpoint, args=None):
    """(model in eval mode, checkpoint dict) of a detect.py checkpoint (path or dict)."""
    ckpt = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    a = argparse.Namespace(**ckpt["args"])
    model = make_model(a, int(ckpt["num_classes"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def write_json(path, data):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def run_evaluate(args, device):
    model, ckpt = load_detector(args.evaluate)
    for k in ("source", "channels", "min_size", "max_size", "task"):
        if ckpt.get(k) is not None:
            setattr(args, k, ckpt[k])
    stats = Stats.from_dict(ckpt["stats"]) if ckpt.get("stats") else None
    val_set = make_dataset(args, args.val_data or args.data, args.val_ann, False, stats, False)
    if val_set.cat_ids != list(ckpt["cat_ids"]):
        raise SystemExit(f"{args.val_ann}: categories {val_set.cat_ids[:8]}... differ from the "
                         f"checkpoint's {list(ckpt['cat_ids'])[:8]}...")
    model.to(device)
    t0 = time.time()
    metrics, results = evaluate(model, val_set, device, args)
    if is_main(args):
        if args.predictions:
            write_json(args.predictions, results)
        log(args, f"evaluated {len(val_set)} images in {time.time() - t0:.1f}s")
        log(args, ap_line(metrics))
    return metrics


def main(args):
    init_distributed(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed + args.rank)
    device = torch.device(args.device)
    if args.evaluate:
        return run_evaluate(args, device)
    if not (args.data and args.ann and args.val_ann):
        raise SystemExit("--data, --ann and --val-ann are needed (or no --data for the demo)")
    if is_main(args):
        os.makedirs(args.output_dir, exist_ok=True)

    ckpt = None
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        for k in ("source", "channels", "task", "min_size", "max_size"):
            if k == "channels" and ckpt.get(k) is not None and args.source != "rgb" and \
                    ChannelSet.parse(ckpt[k]) == ChannelSet.parse(args.channels):
                continue
            if ckpt.get(k) is not None and ckpt[k] != getattr(args, k):
                log(args, f"resume: using the checkpoint's {k}={ckpt[k]!r}")
                setattr(args, k, ckpt[k])

    probe = make_dataset(args, args.data, args.ann, True, None, False)
    if ckpt is not None:
        stats = Stats.from_dict(ckpt["stats"]) if ckpt.get("stats") else None
    else:
        stats = resolve_stats(args, probe)
    train_set = make_dataset(args, args.data, args.ann, True, stats, args.task == "segm")
    val_set = make_dataset(args, args.val_data or args.data, args.val_ann, False, stats, False)
    if val_set.cat_ids != train_set.cat_ids:
        raise SystemExit("training and validation annotations have different categories")

    args.frozen_bn = args.source != "rgb" and args.backbone_weights is not None
    model = make_model(args, train_set.num_classes, args.backbone_weights)
    model.to(device)
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[args.local_rank] if device.type == "cuda" else None)

    if args.distributed:
        sampler = torch.utils.data.distributed.DistributedSampler(train_set, seed=args.seed)
    else:
        sampler = torch.utils.data.RandomSampler(
            train_set, generator=torch.Generator().manual_seed(args.seed))
    drop_last = len(train_set) > args.batch_size * args.world_size
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, sampler=sampler,
                                         num_workers=args.workers, collate_fn=collate,
                                         drop_last=drop_last)
    if args.lr is None:
        args.lr = 0.02 * args.batch_size * args.world_size / 16
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    warmup = min(args.warmup_iters, max(len(loader) - 1, 0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupMultiStep(len(loader), warmup, args.lr_steps, args.lr_gamma))

    start_epoch, history = 0, []
    if ckpt is not None:
        (model.module if args.distributed else model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, history = int(ckpt["epoch"]), list(ckpt.get("history", []))
        log(args, f"resumed from {args.resume} after epoch {start_epoch}")

    log(args, f"{arch_name(args.task, args.source)} source={args.source} "
              f"channels={args.channels if args.source != 'rgb' else '-'} "
              f"train={len(train_set)} val={len(val_set)} classes={train_set.num_classes - 1} "
              f"sizes={args.min_size}/{args.max_size} batch={args.batch_size}x{args.world_size} "
              f"lr={args.lr:g} epochs={args.epochs}")
    t_start = time.time()
    if args.eval_before and start_epoch == 0 and not history:
        metrics, _ = evaluate(model, val_set, device, args)
        if is_main(args):
            history.append({"epoch": 0, "loss": None, "train_s": 0.0,
                            **{f"{k}_AP": v["AP"] for k, v in metrics.items()},
                            **{f"{k}_AP50": v["AP50"] for k, v in metrics.items()}})
            log(args, f"epoch 0 (before training): {ap_line(metrics)}")

    train_time = sum(h.get("train_s", 0.0) for h in history)
    for epoch in range(start_epoch, args.epochs):
        train_set.set_epoch(epoch)
        if args.distributed:
            sampler.set_epoch(epoch)
        t0 = time.time()
        losses = train_one_epoch(model, optimizer, scheduler, loader, device, epoch + 1, args)
        dt = time.time() - t0
        train_time += dt
        metrics, results = evaluate(model, val_set, device, args)
        if is_main(args):
            history.append({"epoch": epoch + 1, "loss": round(losses.get("loss", float("nan")), 4),
                            "train_s": round(dt, 1),
                            **{f"{k}_AP": v["AP"] for k, v in metrics.items()},
                            **{f"{k}_AP50": v["AP50"] for k, v in metrics.items()}})
            log(args, f"epoch {epoch + 1}: loss {losses.get('loss', float('nan')):.4f} "
                      f"{ap_line(metrics)} (train {dt:.0f}s)")
            state = checkpoint_dict(args, model, optimizer, scheduler, epoch + 1, train_set,
                                    stats, history)
            save_checkpoint(os.path.join(args.output_dir, "checkpoint.pth"), state)
            write_json(os.path.join(args.output_dir, "history.json"), history)
            if args.predictions:
                write_json(args.predictions, results)
    total = time.time() - t_start
    log(args, f"training time {datetime.timedelta(seconds=int(train_time))}, "
              f"total with evaluation {datetime.timedelta(seconds=int(total))}")
    if args.distributed:
        torch.distributed.destroy_process_group()
    return history


def demo(args):
    """Synthesize the shapes set (deterministic) and train on it with the DEMO settings."""
    root = os.path.join(args.output_dir, "data")
    for split in ("train", "val"):
        ann = os.path.join(root, f"{split}.json")
        if int(os.environ.get("RANK", 0)) == 0:
            if not os.path.exists(ann):
                make_shapes_dataset(root, DEMO_DATA[split], split, seed=args.seed,
                                    size=DEMO_DATA["size"], size_jitter=DEMO_DATA["size_jitter"])
        else:
            while not os.path.exists(ann):     # rank 0 is writing it
                time.sleep(0.5)
    args.data, args.ann = os.path.join(root, "train"), os.path.join(root, "train.json")
    args.val_data, args.val_ann = os.path.join(root, "val"), os.path.join(root, "val.json")
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"demo: {DEMO_DATA['train']} train / {DEMO_DATA['val']} val images of shapes "
              f"(rectangle, ellipse, triangle) in {root}", flush=True)
    return main(args)


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="training images folder (default: none = the demo)")
    p.add_argument("--ann", help="training COCO json")
    p.add_argument("--val-data", help="validation images folder (default: --data)")
    p.add_argument("--val-ann", help="validation COCO json")
    p.add_argument("--source", default="jpeg-coeffs", choices=["jpeg-coeffs", "spatial", "rgb"],
                   help="input pipeline (default: jpeg-coeffs)")
    p.add_argument("--channels", default="24S", help="channel set (default: 24S)")
    p.add_argument("--task", choices=["bbox", "segm"],
                   help="bbox: Faster R-CNN; segm: Mask R-CNN (default: segm)")
    p.add_argument("--epochs", type=int, help="epochs (default: 12)")
    p.add_argument("--batch-size", type=int, help="images per process (default: 2; demo 4)")
    p.add_argument("--workers", type=int, default=2, help="data loader processes (default: 2)")
    p.add_argument("--output-dir", help="checkpoints, stats.json, history.json "
                                        "(default: runs/detect; demo runs/detect_demo)")
    p.add_argument("--resume", help="continue from this checkpoint (default: none)")
    p.add_argument("--evaluate", metavar="CKPT", help="only evaluate this checkpoint on "
                                                      "--val-ann; prints 'bbox AP X segm AP Y'")
    p.add_argument("--predictions", help="write the last evaluation's COCO results json here")
    p.add_argument("--min-size", type=int, help="short side after resize (default: 800; demo 160)")
    p.add_argument("--max-size", type=int, help="long side limit (default: 1333; demo 200)")
    p.add_argument("--lr", type=float, help="SGD learning rate (default: 0.02 x total batch / 16; "
                                            "demo 0.02)")
    p.add_argument("--momentum", type=float, default=0.9, help="(default: 0.9)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="(default: 1e-4)")
    p.add_argument("--lr-steps", type=int, nargs="+", help="epochs at which the lr drops "
                                                           "(default: 8 11; demo 10)")
    p.add_argument("--lr-gamma", type=float, default=0.1, help="lr drop factor (default: 0.1)")
    p.add_argument("--warmup-iters", type=int, help="linear warm-up iterations (default: 1000; "
                                                    "demo 20)")
    p.add_argument("--clip-grad", type=float, help="clip the gradient norm (default: 0 = off; "
                                                   "demo 10)")
    p.add_argument("--stats", help="normalisation statistics json from compute_detection_stats "
                                   "(default: computed from the training images)")
    p.add_argument("--stats-images", type=int, default=1000,
                   help="training images pooled for the statistics (default: 1000)")
    p.add_argument("--backbone-weights", help="resnet50_dct classification checkpoint for "
                                              "layer1..layer4 (default: none = from scratch)")
    p.add_argument("--trainable-layers", type=int, help="trainable stages of layer1..4 from the "
                                                        "top (default: 4, or 3 with weights)")
    p.add_argument("--box-batch-size-per-image", type=int,
                   help="RoIs sampled per image for the heads (default: 512; demo 128)")
    p.add_argument("--rpn-post-nms-top-n", type=int,
                   help="proposals kept per image in training, half in eval (default: 2000; "
                        "demo 300)")
    p.add_argument("--detections-per-img", type=int, help="(default: 100; demo 50)")
    p.add_argument("--eval-before", action="store_true", default=None,
                   help="evaluate before training as epoch 0 (default: off; demo on)")
    p.add_argument("--verbose-eval", action="store_true", help="print COCOeval's tables")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="(default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, help="torch threads (default: 0 = torch's choice; "
                                               "demo 1)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no tqdm bars")
    return p


def fill_defaults(args, table):
    for k, v in table.items():
        if getattr(args, k, None) is None:
            setattr(args, k, list(v) if isinstance(v, list) else v)
    return args


if __name__ == "__main__":
    a = get_args_parser().parse_args()
    if a.data is None and a.evaluate is None:
        fill_defaults(a, DEMO)
        fill_defaults(a, DEFAULTS)
        demo(a)
    else:
        fill_defaults(a, DEFAULTS)
        main(a)
