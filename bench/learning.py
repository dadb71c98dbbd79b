"""RGB against the frequency domain at equal network cost, trained on real photos.

    # once: a 4:1 split of an ImageFolder, made of symbolic links (nothing is copied)
    python bench/learning.py --split-from PHOTOS --split 4:1 --data flowers --epochs 0
    # the comparison: every row for seeds 0..2, 16 epochs each
    nice -n 10 python bench/learning.py --data flowers --json learning.json

Every row trains the same ResNet with its first stage (layer1) at the same resolution, so the
networks cost about the same per image and only the input differs:

    rgb-112      --source rgb --size 112            stem (stride 4) -> layer1 at 28x28
    coeffs-24S   --source jpeg-coeffs 24S, 224 crop  cube 24x28x28  -> layer1 at 28x28
    coeffs-64S   --source jpeg-coeffs 64S, 224 crop  cube 64x28x28
    spatial-24S  --source spatial 24S, 224 crop      the paper's decode-resize-DCT flow
    gate-192     --gate over all 192 channels, seed 0 only: writes the heat map
    gate-top24   --channels "top 24 of gate-192/seed0/heatmap.json", every seed
    coeffs-24S-int8    coeffs-24S fed as int8 cubes (--dtype int8): half RGB's uint8 bytes
    coeffs-24S-recipe  coeffs-24S with the modern recipe (RECIPE below) instead of the
                       paper's crop and flip alone
    coeffs-24S-exact   coeffs-24S with the recipe's per-image exact ops only (EXACT below)

Each run is one train.py process with its own folder OUT/ROW/seedS (train.py's log.jsonl,
checkpoints, train.out with its output). A run whose log already holds the last epoch is not
run again; an interrupted one continues with --resume auto. The figures are the last epoch's
val top-1 (the best epoch's is kept too), the training images/s and train time from the logs,
the wall time of the train.py processes, and the bytes of one input sample. The table printed
at the end is formatted from the same dict that --json writes.
"""

import argparse
import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRAIN_PY = os.path.join(HERE, "..", "train.py")
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

# the recipe row's train.py flags: torchvision's reference recipe (TrivialAugment, random
# erasing 0.1, MixUp 0.2 / CutMix 1.0, label smoothing 0.1, weight EMA) on the exact ops of the
# cube; the EMA is updated every step with a decay that averages over about one epoch of this
# small set (torchvision's 32 steps and 0.99998 are sized for ImageNet's 1,250 steps an epoch)
RECIPE = ("--auto-augment", "ta_exact", "--random-erase", "0.1", "--mixup-alpha", "0.2",
          "--cutmix-alpha", "1.0", "--label-smoothing", "0.1", "--model-ema",
          "--model-ema-steps", "1", "--model-ema-decay", "0.985")

# the per-image exact ops of the recipe alone (no batch mixing, no EMA)
EXACT = ("--auto-augment", "ta_exact", "--random-erase", "0.1", "--label-smoothing", "0.1")

# name, source, channels (None: rgb), crop size, gate, seeds ("all" or "first"), more flags
ROWS = (
    ("rgb-112", "rgb", None, 112, False, "all", ()),
    ("coeffs-24S", "jpeg-coeffs", "24S", 224, False, "all", ()),
    ("coeffs-64S", "jpeg-coeffs", "64S", 224, False, "all", ()),
    ("spatial-24S", "spatial", "24S", 224, False, "all", ()),
    ("gate-192", "jpeg-coeffs", "192", 224, True, "first", ()),
    ("gate-top24", "jpeg-coeffs", "top 24 of {gate}", 224, False, "all", ()),
    ("coeffs-24S-int8", "jpeg-coeffs", "24S", 224, False, "all", ("--dtype", "int8")),
    ("coeffs-24S-recipe", "jpeg-coeffs", "24S", 224, False, "all", RECIPE),
    ("coeffs-24S-exact", "jpeg-coeffs", "24S", 224, False, "all", EXACT),
)
ROW_NAMES = tuple(r[0] for r in ROWS)
GATE_ROW, PICKED_ROW = "gate-192", "gate-top24"
RUN_FILE = "bench-run.json"      # the train.py flags of a run folder and its wall time

SCHEDULE = {"lr_schedule": "cosine", "lr_warmup_epochs": 1, "gate_lambda": 0.5}


# ---------------------------------------------------------------------------
# the split

def _image_files(folder):
    from torchvision.datasets.folder import IMG_EXTENSIONS
    return sorted(f for f in os.listdir(folder)
                  if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, f)))


def parse_ratio(text):
    """'4:1' -> (4, 1); a clear ValueError otherwise."""
    parts = text.split(":")
    try:
        a, b = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--split {text!r}: expected TRAIN:VAL, two integers such as 4:1") from None
    if a < 1 or b < 1:
        raise ValueError(f"--split {text!r}: both parts must be >= 1")
    return a, b


def make_split(source, dest, ratio):
    """DEST/train/CLASS and DEST/val/CLASS as symbolic links to SOURCE/CLASS/* (never copies).

    Per class, its image files in sorted order: the first n * a // (a + b) go to train, the
    rest to val (ratio = (a, b)). Running it again with the same arguments changes nothing; a
    DEST that holds anything else (another split, real files) is refused with a ValueError.
    Returns {"train": count, "val": count, "classes": [...]}.
    """
    a, b = ratio
    source = os.path.abspath(source)
    if not os.path.isdir(source):
        raise ValueError(f"--split-from {source}: not a directory")
    classes = sorted(d for d in os.listdir(source)
                     if not d.startswith(".") and os.path.isdir(os.path.join(source, d)))
    if not classes:
        raise ValueError(f"--split-from {source}: no class folders (expected SOURCE/CLASS/*.jpg)")
    plan = {"train": {}, "val": {}}
    for c in classes:
        files = _image_files(os.path.join(source, c))
        n_train = len(files) * a // (a + b)
        if n_train == 0 or n_train == len(files):
            raise ValueError(f"--split-from {source}: class {c!r} has {len(files)} image(s), "
                             f"too few for a {a}:{b} split")
        plan["train"][c] = files[:n_train]
        plan["val"][c] = files[n_train:]
    # check everything before touching DEST
    for split, per_class in plan.items():
        split_dir = os.path.join(dest, split)
        if os.path.lexists(split_dir) and not os.path.isdir(split_dir):
            raise ValueError(f"--data {dest}: {split_dir} exists and is not a folder")
        if not os.path.isdir(split_dir):
            continue
        extra = sorted(set(os.listdir(split_dir)) - set(per_class))
        if extra:
            raise ValueError(f"--data {dest}: {split_dir} holds {extra[0]!r}, which is not a "
                             f"class of {source}; give an empty or new --data folder")
        for c, files in per_class.items():
            cdir = os.path.join(split_dir, c)
            if not os.path.isdir(cdir):
                continue
            have = set(os.listdir(cdir))
            for f in sorted(have - set(files)):
                raise ValueError(f"--data {dest}: {os.path.join(cdir, f)} is not part of the "
                                 f"{a}:{b} split of {source}; give an empty or new --data folder")
            for f in files:
                link = os.path.join(cdir, f)
                target = os.path.join(source, c, f)
                if f in have and not (os.path.islink(link) and os.readlink(link) == target):
                    raise ValueError(f"--data {dest}: {link} exists and is not a link to "
                                     f"{target}; give an empty or new --data folder")
    for split, per_class in plan.items():
        for c, files in per_class.items():
            cdir = os.path.join(dest, split, c)
            os.makedirs(cdir, exist_ok=True)
            for f in files:
                link = os.path.join(cdir, f)
                if not os.path.lexists(link):
                    os.symlink(os.path.join(source, c, f), link)
    return {"source": source, "ratio": f"{a}:{b}", "classes": classes,
            "train": sum(len(v) for v in plan["train"].values()),
            "val": sum(len(v) for v in plan["val"].values())}


# ---------------------------------------------------------------------------
# runs

def select_rows(text):
    """--rows: names separated by commas (default: all). gate-top24 needs the gate run: it
    brings gate-192 along."""
    if not text or text == "all":
        return list(ROW_NAMES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROW_NAMES]
    if unknown or not names:
        raise ValueError(f"--rows {text!r}: unknown row(s) {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(ROW_NAMES)}")
    if PICKED_ROW in names and GATE_ROW not in names:
        names.append(GATE_ROW)
    return [n for n in ROW_NAMES if n in names]      # table order, gate before its pick


def row_spec(name):
    for row in ROWS:
        if row[0] == name:
            return dict(zip(("name", "source", "channels", "size", "gate", "seeds", "extra"), row))
    raise KeyError(name)


def run_dir(out, name, seed):
    return os.path.join(out, name, f"seed{seed}")


def heatmap_path(out, seed=0):
    return os.path.join(run_dir(out, GATE_ROW, seed), "heatmap.json")


def channels_of(spec, out):
    """The --channels value of a row (None for rgb)."""
    if spec["channels"] is None:
        return None
    return spec["channels"].format(gate=heatmap_path(out))


def train_argv(args, spec, seed, folder, out):
    """The train.py flags of one run (without --resume)."""
    argv = ["--data", os.path.abspath(args.data), "--source", spec["source"],
            "--size", str(spec["size"]), "--arch", args.arch, "--epochs", str(args.epochs),
            "--seed", str(seed), "--output-dir", os.path.abspath(folder),
            "--lr", repr(args.lr), "--batch-size", str(args.batch_size),
            "--lr-schedule", SCHEDULE["lr_schedule"],
            "--lr-warmup-epochs", str(SCHEDULE["lr_warmup_epochs"]), "--channels-last",
            "--no-progress"]
    channels = channels_of(spec, out)
    if channels is not None:
        argv += ["--channels", channels]
    if spec["gate"]:
        argv += ["--gate", "--gate-lambda", repr(SCHEDULE["gate_lambda"])]
    return argv + list(spec["extra"])


def read_log(folder):
    """The epoch records of a run's log.jsonl, by epoch (a later line for an epoch wins)."""
    path = os.path.join(folder, "log.jsonl")
    records = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                    records[int(rec["epoch"])] = rec
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{path}: not a train.py log line: {line[:80]!r}") from None
    except FileNotFoundError:
        return []
    return [records[e] for e in sorted(records)]


def finished(folder, epochs, gate):
    log = read_log(folder)
    done = len(log) == epochs and [r["epoch"] for r in log] == list(range(epochs))
    if gate:
        done = done and os.path.exists(os.path.join(folder, "heatmap.json"))
    return done


def _load_run_file(folder):
    try:
        with open(os.path.join(folder, RUN_FILE)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        raise ValueError(f"{os.path.join(folder, RUN_FILE)}: unreadable; remove the folder "
                         f"{folder} to run it again") from None


def _save_run_file(folder, data):
    path = os.path.join(folder, RUN_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)


def _tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _fmt_time(s):
    s = int(round(s))
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_one(args, spec, seed, out, index, total):
    """Train one run (or finish it); returns its folder. Raises SystemExit on a failed run."""
    folder = run_dir(out, spec["name"], seed)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, RUN_FILE + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit(f"learning.py: error: another learning.py is training {folder}; "
                             f"wait for it, or give another --out") from None
        return _run_locked(args, spec, seed, out, folder, index, total)


def _run_locked(args, spec, seed, out, folder, index, total):
    argv = train_argv(args, spec, seed, folder, out)
    known = _load_run_file(folder)
    if known is not None and known.get("argv") != argv:
        raise SystemExit(f"learning.py: error: {folder} was trained with other settings "
                         f"({RUN_FILE} there); give another --out, or remove that folder")
    label = f"[{index}/{total}] {spec['name']} seed {seed}"
    if finished(folder, args.epochs, spec["gate"]):
        print(f"{label}: done before, not run again ({folder})", flush=True)
        return folder
    state = known or {"argv": argv, "wall_s": 0.0, "invocations": 0}
    _save_run_file(folder, state)
    done = len(read_log(folder))
    print(f"{label}: {'continuing after epoch ' + str(done) if done else 'training'} "
          f"-> {folder}", flush=True)
    cmd = [sys.executable, TRAIN_PY, *argv, "--resume", "auto"]
    t0 = time.perf_counter()
    with open(os.path.join(folder, "train.out"), "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL).returncode
    state["wall_s"] += time.perf_counter() - t0
    state["invocations"] += 1
    _save_run_file(folder, state)
    if rc != 0 or not finished(folder, args.epochs, spec["gate"]):
        why = f"exit status {rc}" if rc else "its log does not hold the last epoch"
        raise SystemExit(f"learning.py: error: {spec['name']} seed {seed} failed ({why}); "
                         f"{os.path.join(folder, 'train.out')} ends with:\n"
                         f"{_tail(os.path.join(folder, 'train.out'))}")
    last = read_log(folder)[-1]
    print(f"{label}: val top-1 {last['val_acc1']:.1f}, {last['images_per_s']:.1f} img/s, "
          f"{_fmt_time(state['wall_s'])}", flush=True)
    return folder


# ---------------------------------------------------------------------------
# figures

def input_shape(spec, out):
    """(C, H, W) of one input sample of a row."""
    size = spec["size"]
    if spec["source"] == "rgb":
        return 3, size, size
    from jpegfreq import ChannelSet
    return ChannelSet.parse(channels_of(spec, out)).count, size // 8, size // 8


def network_cost(arch, spec, shape, num_classes):
    """GFLOPs (multiply-adds of conv + linear layers, as bench/model_table.py counts them) and
    layer1's input resolution, of the network train.py builds for this row."""
    import torch
    from jpegfreq.models import build_model
    from model_table import count_macs
    net = build_model(arch, spec["source"], shape[0] if spec["source"] != "rgb" else None,
                      num_classes, gate=spec["gate"]).eval()
    layer1 = next(m for n, m in net.named_modules() if n.split(".")[-1] == "layer1")
    seen = []
    handle = layer1.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    try:
        macs = count_macs(net, torch.zeros(1, *shape))
    finally:
        handle.remove()
    return macs / 1e9, list(seen[0])


def _spread(values):
    if len(values) < 2:
        return 0.0
    return statistics.stdev(values)


def collect(args, names, out, split_info):
    """The result dict (what --json writes and the table shows) from the run folders."""
    classes = sorted(os.listdir(os.path.join(args.data, "train")))
    rows = []
    for name in names:
        spec = row_spec(name)
        seeds = list(range(args.seeds)) if spec["seeds"] == "all" else [0]
        runs = []
        for s in seeds:
            folder = run_dir(out, name, s)
            log = read_log(folder)
            state = _load_run_file(folder) or {}
            images = sum(r["images"] for r in log)
            train_s = sum(r["time_s"] for r in log)
            ema = log[-1].get("val_acc1_ema")
            runs.append({"seed": s, "folder": folder,
                         "top1": log[-1]["val_acc1"], "best_top1": max(r["val_acc1"] for r in log),
                         **({"top1_ema": ema} if ema is not None else {}),
                         "top5": log[-1]["val_acc5"], "images_per_s": images / max(train_s, 1e-9),
                         "train_s": train_s, "wall_s": state.get("wall_s"),
                         "val_acc1_per_epoch": [r["val_acc1"] for r in log]})
        shape = input_shape(spec, out)
        elements = shape[0] * shape[1] * shape[2]
        gflops, layer1 = network_cost(args.arch, spec, shape, len(classes))
        top1 = [r["top1"] for r in runs]
        row = {"name": name, "source": spec["source"], "channels": channels_of(spec, out),
               "size": spec["size"], "gate": spec["gate"], "seeds": seeds,
               "flags": list(spec["extra"]),
               "input_shape": list(shape), "layer1": layer1, "gflops": gflops,
               "top1": top1, "top1_mean": statistics.fmean(top1), "top1_std": _spread(top1),
               "top1_min": min(top1), "top1_max": max(top1),
               "best_top1": [r["best_top1"] for r in runs],
               "images_per_s": statistics.fmean(r["images_per_s"] for r in runs),
               "time_s": statistics.fmean(r["train_s"] for r in runs),
               "wall_s": statistics.fmean(r["wall_s"] or 0.0 for r in runs),
               "elements": elements,
               "bytes_uint8": elements if spec["source"] == "rgb" else None,
               "bytes_float32": 4 * elements, "bytes_float16": 2 * elements,
               "bytes_int8": elements if "int8" in spec["extra"] else None,
               "runs": runs}
        if all("top1_ema" in r for r in runs):
            ema = [r["top1_ema"] for r in runs]
            row.update(top1_ema=ema, top1_ema_mean=statistics.fmean(ema),
                       top1_ema_std=_spread(ema))
        if spec["gate"]:
            from jpegfreq.heatmap import load_heatmap, summarize
            row["heatmap"] = heatmap_path(out)
            row["heatmap_summary"] = summarize(load_heatmap(row["heatmap"]))
        if name == PICKED_ROW:
            from jpegfreq import ChannelSet
            row["picked"] = list(ChannelSet.parse(row["channels"]).names)
        rows.append(row)
    import torch
    settings = {"data": os.path.abspath(args.data), "classes": classes,
                "train_images": _count_images(args.data, "train"),
                "val_images": _count_images(args.data, "val"),
                "split": split_info, "arch": args.arch, "epochs": args.epochs,
                "seeds": list(range(args.seeds)), "batch_size": args.batch_size, "lr": args.lr,
                "optimizer": "SGD (train.py's momentum and weight decay)", **SCHEDULE,
                "top1": "val_acc1 of the last epoch (best_top1: the best epoch's)",
                "images_per_s": "training images over training time, from log.jsonl, mean over seeds",
                "time_s": "training time (log.jsonl time_s summed over epochs), mean over seeds",
                "wall_s": "wall time of the train.py processes (statistics, validation and "
                          "start-up included), mean over seeds",
                "out": os.path.abspath(out), "torch": torch.__version__,
                "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count(),
                "cuda": torch.cuda.is_available()}
    return {"rows": rows, "settings": settings}


def _count_images(data, split):
    base = os.path.join(data, split)
    return sum(len(_image_files(os.path.join(base, c))) for c in os.listdir(base)
               if os.path.isdir(os.path.join(base, c)))


def _bytes_cell(row):
    if row["bytes_uint8"] is not None:
        return f"{row['bytes_uint8']:,} uint8"
    if row.get("bytes_int8") is not None:
        return f"{row['bytes_int8']:,} int8"
    return f"{row['bytes_float32']:,} / {row['bytes_float16']:,}"


def format_table(result):
    """The table of a result dict, every figure taken from it."""
    s = result["settings"]
    header = ("name", "source", "channels", "size", "input", "layer1", "GFLOPs",
              "val top-1 % (last epoch)", "best", "train img/s", "train time", "wall time",
              "bytes/sample f32 / f16")
    lines = []
    for r in result["rows"]:
        n = len(r["top1"])
        top1 = (f"{r['top1_mean']:.1f} +- {r['top1_std']:.1f} ({r['top1_min']:.1f}-"
                f"{r['top1_max']:.1f}, {n} seeds)" if n > 1 else f"{r['top1_mean']:.1f} (1 seed)")
        channels = r["channels"] or "RGB"
        if r["name"] == PICKED_ROW:
            channels = "top 24 of gate"
        lines.append((r["name"], r["source"], channels, str(r["size"]),
                      "x".join(map(str, r["input_shape"])), "x".join(map(str, r["layer1"])),
                      f"{r['gflops']:.3f}", top1, f"{statistics.fmean(r['best_top1']):.1f}",
                      f"{r['images_per_s']:.1f}", _fmt_time(r["time_s"]), _fmt_time(r["wall_s"]),
                      _bytes_cell(r)))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    out = [f"{s['arch']}, {s['epochs']} epochs, seeds {s['seeds']}, batch {s['batch_size']}, "
           f"lr {s['lr']:g} {s['lr_schedule']} ({s['lr_warmup_epochs']} warm-up epoch), "
           f"{s['train_images']} train / {s['val_images']} val images, {len(s['classes'])} "
           f"classes (chance {100 / len(s['classes']):.1f}%)",
           "  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(l, widths)) for l in lines]
    for r in result["rows"]:
        if "heatmap_summary" in r:
            h = r["heatmap_summary"]
            out.append(f"{r['name']} heat map ({r['heatmap']}): mean open Y {h['Y']:.2f}, "
                       f"Cb {h['Cb']:.2f}, Cr {h['Cr']:.2f}; low (u+v<=3) {h['low']:.2f}, "
                       f"high {h['high']:.2f}")
        if "picked" in r:
            out.append(f"{r['name']} channels: {' '.join(r['picked'])}")
        if r["flags"]:
            out.append(f"{r['name']} adds: {' '.join(r['flags'])}")
        if "top1_ema_mean" in r:
            out.append(f"{r['name']} EMA weights: val top-1 {r['top1_ema_mean']:.1f} +- "
                       f"{r['top1_ema_std']:.1f}")
    by_name = {r["name"]: r for r in result["rows"]}
    rgb = by_name.get("rgb-112")
    if rgb:
        for r in result["rows"]:
            if r is not rgb and not r["gate"]:
                out.append(f"{r['name']} vs rgb-112: top-1 {r['top1_mean'] - rgb['top1_mean']:+.1f} "
                           f"points, training {r['images_per_s'] / rgb['images_per_s']:.2f}x the "
                           f"images/s, {r['gflops'] / rgb['gflops']:.2f}x the GFLOPs")
    return "\n".join(out)


# ---------------------------------------------------------------------------

def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="rows: " + ", ".join(ROW_NAMES))
    p.add_argument("--data", required=True, metavar="DIR",
                   help="ImageFolder splits DIR/train/CLASS/* and DIR/val/CLASS/* (made by "
                        "--split-from when given)")
    p.add_argument("--split-from", metavar="FOLDER",
                   help="one ImageFolder FOLDER/CLASS/* to split into --data by file order per "
                        "class, as symbolic links (default: --data is already split)")
    p.add_argument("--split", default="4:1", metavar="TRAIN:VAL",
                   help="with --split-from: the first TRAIN/(TRAIN+VAL) of each class's sorted "
                        "files go to train, the rest to val (default: 4:1)")
    p.add_argument("--epochs", type=int, default=16, help="epochs per run (default: 16; 0: "
                   "only make the split)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per row (default: 3; the "
                   "gate run uses seed 0 only)")
    p.add_argument("--arch", default="resnet18", choices=("resnet18", "resnet50"),
                   help="network (default: resnet18)")
    p.add_argument("--rows", default="all", help="rows to run, separated by commas (default: "
                   "all): " + ", ".join(ROW_NAMES))
    p.add_argument("--batch-size", type=int, default=32, help="(default: 32)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate, cosine schedule "
                   "after one warm-up epoch (default: 0.05)")
    p.add_argument("--out", default="bench-out/learning", metavar="DIR",
                   help="run folders OUT/ROW/seedS (default: bench-out/learning)")
    p.add_argument("--json", metavar="OUT", help="write the results here as JSON")
    return p


def _terminate(signum, frame):
    # SIGTERM ends the running train.py too (subprocess.run kills its child on the way out):
    # an orphan would go on writing into a folder the next pass resumes
    raise SystemExit(128 + signum)


def main(argv=None):
    signal.signal(signal.SIGTERM, _terminate)
    p = get_args_parser()
    args = p.parse_args(argv)
    if args.epochs < 0 or args.seeds < 1 or args.batch_size < 1 or not args.lr > 0:
        p.error("--epochs must be >= 0, --seeds and --batch-size >= 1, --lr > 0")
    try:
        names = select_rows(args.rows)
        split_info = None
        if args.split_from:
            split_info = make_split(args.split_from, args.data, parse_ratio(args.split))
            print(f"split {split_info['ratio']} of {split_info['source']} into {args.data}: "
                  f"{split_info['train']} train, {split_info['val']} val images "
                  f"({len(split_info['classes'])} classes, symbolic links)", flush=True)
    except ValueError as e:
        p.error(str(e))
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(args.data, split)):
            p.error(f"--data {args.data}: no {split}/ folder (give --split-from FOLDER to make "
                    f"the split)")
    if args.epochs == 0:
        return None
    out = args.out
    plan = []
    for name in names:
        spec = row_spec(name)
        seeds = range(args.seeds) if spec["seeds"] == "all" else [0]
        plan += [(spec, s) for s in seeds]
    for i, (spec, seed) in enumerate(plan, 1):
        run_one(args, spec, seed, out, i, len(plan))
    result = collect(args, names, out, split_info)
    if args.json:
        path = args.json
        with open(path + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(path + ".tmp", path)
    print(format_table(result), flush=True)
    if args.json:
        print(f"json: {args.json}")
    return result


if __name__ == "__main__":
    main()
