"""Checkpoints: one dict of tensors and plain data, written atomically, read without running code.

One schema for classifiers (train.py) and detectors (detect.py); jpegfreq.models.load_model
rebuilds either kind from it. Values are tensors and plain data only: None, bool, int, float,
str, and lists, tuples and dicts (str or int keys) of those and of tensors. No numpy arrays,
argparse Namespaces, Stats / Geometry / ChannelSet objects or any other pickled class: store
``vars(args)``, ``Stats.to_dict()``, ``Geometry.to_dict()``, ``ChannelSet.spec``.
save_checkpoint refuses anything else (ValueError naming the key path) and load_checkpoint
reads with ``torch.load(weights_only=True)`` only, so loading a file never runs code from it.

Required (every checkpoint):

    "model":        state_dict (str -> tensor); a DDP "module." prefix is stripped on load
    "arch":         str. classify: "resnet50" | "resnet18" | "mobilenetv2"
                    detect: "fasterrcnn_resnet50_dct_fpn" | "maskrcnn_resnet50_dct_fpn"
                            (source != "rgb"), "fasterrcnn_resnet50_fpn_rgb" |
                            "maskrcnn_resnet50_fpn_rgb" (source "rgb"); faster = boxes
                            ("bbox"), mask = boxes + masks ("segm")
    "num_classes":  int >= 1 (detectors: including background, i.e. categories + 1)
    "source":       "jpeg-coeffs" | "spatial" | "rgb"
    "channels":     channel-set spec str (ChannelSet.spec); required unless source is "rgb"
                    (None there)

Optional (defaults in brackets):

    "task":         "classify" | "detect"  ["classify"]: marks a detector
    "classes":      [class names] | None   [None]
    "model_kwargs": dict of plain keyword arguments for the builder  [{}]
                    classify: e.g. {"width_mult": 1.0}; detect: the build_detector kwargs
                    that shape the modules, e.g. {"frozen_bn": True, "trainable_layers": 3,
                    "box_detections_per_img": 100, "rpn_post_nms_top_n_test": 500, ...}
    "gate":         bool  [False]; classify only: a ChannelGate in front of the backbone
    "stats":        Stats.to_dict() | None  [None]: the normalisation the model was trained with
    classify pre-processing:
    "size":         crop side in pixels  [224 for rgb, else 448]
    "geometry":     eval Geometry.to_dict()  [eval_geometry(size)]
    detect pre-processing:
    "min_size", "max_size": resize bounds in pixels  [800, 1333]
    "cat_ids":      [category ids], label i + 1 is cat_ids[i]
    training state (plain or tensors, whatever the trainer needs to resume):
    "epoch", "best_acc1", "optimizer", "scheduler", "scaler", "gate_optimizer", "history",
    "model_ema" (the state_dict of the weights' EMA, train.py --model-ema),
    "args" (vars(args) of the run, plain values only)

Checkpoints written by older versions of jpegfreq pickled such objects (e.g. an
argparse.Namespace); they cannot be read safely and load_checkpoint says so instead of
unpickling them.
"""
import errno
import os
import re
from collections import OrderedDict

from .channels import ChannelSet
from .files import atomic_write
from .geometry import Geometry, eval_geometry
from .stats import Stats

__all__ = ["CheckpointError", "TASKS", "REQUIRED_KEYS", "check_checkpoint", "check_plain", "load_checkpoint",
           "preprocessing", "read_torch_file", "save_checkpoint"]

TASKS = ("classify", "detect")
REQUIRED_KEYS = ("model", "arch", "num_classes", "source")
_SOURCES = ("jpeg-coeffs", "spatial", "rgb")
_PLAIN_SCALARS = (type(None), bool, int, float, str)
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or written safely; the message names the file (or the
    key path) and the reason."""


def _key_path(parent, key):
    return f"{parent}[{key!r}]"


def check_plain(obj, where="checkpoint") -> None:
    """Raise ValueError unless obj is tensors and plain data only (see the module docstring).

    Exact types are checked: a numpy scalar is a float subclass but not plain (it would be
    pickled as a numpy object). The message names the offending key path, e.g.
    ``checkpoint['args']['stats']``.
    """
    import torch
    stack = set()

    def walk(value, path):
        kind = type(value)
        if kind in _PLAIN_SCALARS:
            return
        if isinstance(value, torch.Tensor):
            if kind not in (torch.Tensor, torch.nn.Parameter):
                raise CheckpointError(f"{path}: a {kind.__module__}.{kind.__qualname__} tensor "
                                 "subclass is not plain data; store a torch.Tensor")
            return
        if kind in (list, tuple, dict, OrderedDict):
            if id(value) in stack:
                raise CheckpointError(f"{path}: refers to itself (a cycle)")
            stack.add(id(value))
            if isinstance(value, dict):
                for k, v in value.items():
                    if type(k) not in (str, int):
                        raise CheckpointError(f"{path}: key {k!r} of type {type(k).__name__} is not "
                                         "a str or int")
                    walk(v, _key_path(path, k))
            else:
                for i, v in enumerate(value):
                    walk(v, f"{path}[{i}]")
            stack.discard(id(value))
            return
        raise CheckpointError(
            f"{path}: {kind.__module__}.{kind.__qualname__} is not plain data; a checkpoint "
            "holds tensors, None, bool, int, float, str and lists/tuples/dicts of them "
            "(store vars(args), Stats.to_dict(), Geometry.to_dict(), ChannelSet.spec, "
            "array.tolist() or torch.as_tensor(array))")

    walk(obj, where)


def check_checkpoint(ckpt, name="checkpoint") -> dict:
    """Raise ValueError (starting with name) unless ckpt follows the schema; returns ckpt."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{name}: not a jpegfreq checkpoint (holds a {type(ckpt).__name__}, "
                         "expected a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if ckpt.get("source", "rgb") != "rgb" and ckpt.get("channels") is None:
        missing.append("channels")
    if missing:
        raise CheckpointError(f"{name}: not a jpegfreq checkpoint: lacks the required key(s) "
                         f"{', '.join(repr(k) for k in missing)} (required: "
                         f"{', '.join(REQUIRED_KEYS)}, and channels unless source is 'rgb')")
    task = ckpt.get("task", "classify")
    if task not in TASKS:
        raise CheckpointError(f"{name}: task {task!r} is not one of {TASKS}")
    if not isinstance(ckpt["arch"], str):
        raise CheckpointError(f"{name}: arch must be a str, got {ckpt['arch']!r}")
    n = ckpt["num_classes"]
    if type(n) is not int or n < 1:
        raise CheckpointError(f"{name}: num_classes must be an int >= 1, got {n!r}")
    if ckpt["source"] not in _SOURCES:
        raise CheckpointError(f"{name}: source {ckpt['source']!r} is not one of {_SOURCES}")
    channels = ckpt.get("channels")
    if channels is not None and not isinstance(channels, str):
        raise CheckpointError(f"{name}: channels must be a channel-set spec string, got "
                         f"{type(channels).__name__}")
    model = ckpt["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) for k in model):
        raise CheckpointError(f"{name}: model must be a state dict (str -> tensor)")
    kwargs = ckpt.get("model_kwargs")
    if kwargs is not None and not (isinstance(kwargs, dict)
                                   and all(isinstance(k, str) for k in kwargs)):
        raise CheckpointError(f"{name}: model_kwargs must be a dict with str keys")
    _check_preprocessing(ckpt, name)
    return ckpt


def _check_preprocessing(ckpt, name):
    """The pre-processing fields agree with each other: the channel set parses, the
    statistics are valid and hold that channel set's channels, for that source, size and
    geometry are what preprocessing() can build."""
    source = ckpt["source"]
    cs = None
    if ckpt.get("channels") is not None and source != "rgb":
        try:
            cs = ChannelSet.parse(ckpt["channels"])
        except ValueError as e:
            raise CheckpointError(f"{name}: channels: {e}") from None
    if ckpt.get("stats"):
        try:
            st = Stats.from_dict(ckpt["stats"])
            st.check(cs, source=source)
        except ValueError as e:
            raise CheckpointError(f"{name}: stats: {e}") from None
    size = ckpt.get("size")
    if size is not None and (type(size) is not int or size < 1):
        raise CheckpointError(f"{name}: size must be a positive int, got {size!r}")
    if ckpt.get("geometry"):
        try:
            Geometry.from_dict(ckpt["geometry"])
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{name}: geometry: {type(e).__name__}: {e}") from None


def save_checkpoint(path, state: dict) -> None:
    """Check state (schema + plain data), torch.save it to a temporary file in the same folder,
    then rename (atomic: a reader sees the old or the new file, never half of one).

    Raises ValueError naming the offending key before anything is written, and OSError
    naming the file when it cannot be written (a full disk, a file size limit, no
    permission); the file that was at path is then left as it was.
    """
    import torch
    name = os.fspath(path)
    check_plain(state)          # first: it names the offending key of a non-plain value
    check_checkpoint(state, f"checkpoint for {name}")
    try:
        atomic_write(path, lambda f: torch.save(state, f), binary=True)
    except OSError as e:
        raise OSError(e.errno, f"{name}: cannot write checkpoint: {e.strerror or e}") from None
    except RuntimeError as e:   # torch's zip writer reports failed writes this way
        raise OSError(errno.EIO, f"{name}: cannot write checkpoint (the write failed: "
                                 f"{str(e).strip()[:120]})") from None


def read_torch_file(path, map_location="cpu"):
    """torch.load(path, weights_only=True) with one clear ValueError for every bad file.

    The message names the file and the reason: missing or unreadable, empty, not a torch.save
    file, truncated or corrupt, or holding pickled objects (which only unsafe unpickling would
    rebuild: refused, nothing from the file is run). No schema check (see load_checkpoint).
    """
    import pickle

    import torch
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"{name}: cannot read checkpoint: {e.strerror or e}") from None
    if not head:
        raise CheckpointError(f"{name}: not a checkpoint: the file is empty")
    if head != _ZIP_MAGIC:
        raise CheckpointError(f"{name}: not a checkpoint: not a file written by torch.save "
                         "(no zip archive header)")
    try:
        return torch.load(name, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{name}: holds pickled Python objects{what} that only unsafe unpickling could "
            "rebuild: written by an older jpegfreq (or not by jpegfreq at all), it cannot be "
            "loaded safely and was not loaded; re-save its tensors and plain fields with the "
            "version that wrote it") from None
    except (RuntimeError, EOFError, OSError) as e:
        first = str(e).split(". ")[0].strip() or type(e).__name__
        raise CheckpointError(f"{name}: truncated or corrupt checkpoint ({first})") from None
    except Exception as e:  # torch raises assorted errors on foreign zip files
        raise CheckpointError(f"{name}: not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None


def load_checkpoint(path, map_location="cpu") -> dict:
    """The checkpoint dict at path, read safely (weights_only) and checked against the schema.

    Raises ValueError naming the file and the reason (see read_torch_file, check_checkpoint).
    """
    return check_checkpoint(read_torch_file(path, map_location), os.fspath(path))


def preprocessing(ckpt: dict) -> dict:
    """The eval pre-processing of a checkpoint, from its plain fields.

    classify: {"task": "classify", "channels": ChannelSet | None, "size": int, "source": str,
    "geometry": Geometry, "stats": Stats | None}.
    detect: {"task": "detect", "channels", "source", "stats", "min_size": int,
    "max_size": int, "size": None, "geometry": None} (the geometry depends on each image).
    """
    task = ckpt.get("task", "classify")
    source = ckpt.get("source", "jpeg-coeffs")
    channels = ckpt.get("channels")
    pre = {"task": task, "source": source,
           "channels": None if channels is None or source == "rgb" else ChannelSet.parse(channels),
           "stats": Stats.from_dict(ckpt["stats"]) if ckpt.get("stats") else None}
    if task == "detect":
        pre.update(size=None, geometry=None, min_size=int(ckpt.get("min_size", 800)),
                   max_size=int(ckpt.get("max_size", 1333)))
        return pre
    size = int(ckpt.get("size", 224 if source == "rgb" else 448))
    pre["size"] = size
    pre["geometry"] = (Geometry.from_dict(ckpt["geometry"]) if ckpt.get("geometry")
                       else eval_geometry(size))
    return pre
