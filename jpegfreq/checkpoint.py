"""Checkpoints: one dict, written atomically, that carries everything serving needs.

    {"model": state_dict, "optimizer": ..., "scheduler": ..., "epoch": int,
     "args": dict, "arch": "resnet50" | "resnet18" | "mobilenetv2",
     "num_classes": int, "classes": [names] | None,
     "source": "jpeg-coeffs" | "spatial" | "rgb", "channels": spec | None (rgb),
     "size": crop side in pixels, "geometry": eval Geometry dict,
     "stats": Stats dict | None, "gate": bool, "best_acc1": float}

The eval pre-processing is rebuilt from these fields alone, so a served model
sees exactly what it was evaluated on.
"""
import os

from .channels import ChannelSet
from .geometry import Geometry, eval_geometry
from .stats import Stats


def save_checkpoint(path, state: dict) -> None:
    """torch.save to a temporary file in the same folder, then rename (atomic)."""
    import torch
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu") -> dict:
    import torch
    return torch.load(path, map_location=map_location, weights_only=False)


def preprocessing(ckpt: dict) -> dict:
    """{"channels": ChannelSet | None, "size": int, "source": str, "geometry": Geometry,
    "stats": Stats | None} of a checkpoint's eval pre-processing."""
    source = ckpt.get("source", "jpeg-coeffs")
    size = int(ckpt.get("size", 224 if source == "rgb" else 448))
    geometry = (Geometry.from_dict(ckpt["geometry"]) if ckpt.get("geometry")
                else eval_geometry(size))
    channels = ckpt.get("channels")
    return {"channels": None if channels is None or source == "rgb" else ChannelSet.parse(channels),
            "size": size, "source": source, "geometry": geometry,
            "stats": Stats.from_dict(ckpt["stats"]) if ckpt.get("stats") else None}


def build_model(arch: str, source: str, channels, num_classes: int, gate: bool = False):
    """The network a checkpoint was trained with (weights not loaded)."""
    import models
    rgb = source == "rgb"
    if arch == "resnet50":
        net = models.resnet50(num_classes) if rgb else models.resnet50_dct(channels, num_classes)
    elif arch == "resnet18":
        net = models.resnet18(num_classes) if rgb else models.resnet18_dct(channels, num_classes)
    elif arch in ("mobilenetv2", "mobilenet_v2"):
        net = (models.mobilenet_v2(num_classes) if rgb
               else models.mobilenet_v2_dct(channels, num_classes))
    else:
        raise ValueError(f"unknown arch {arch!r}")
    if gate and not rgb:
        net = models.GatedModel(models.ChannelGate(ChannelSet.parse(channels).count), net)
    return net


def load_model(checkpoint, map_location="cpu"):
    """The model of a train.py checkpoint (path or dict), weights loaded, in eval mode."""
    ckpt = load_checkpoint(checkpoint, map_location) if not isinstance(checkpoint, dict) else checkpoint
    pre = preprocessing(ckpt)
    net = build_model(ckpt["arch"], pre["source"], pre["channels"], int(ckpt["num_classes"]),
                      bool(ckpt.get("gate", False)))
    state = {k[7:] if k.startswith("module.") else k: v for k, v in ckpt["model"].items()}
    net.load_state_dict(state)
    return net.eval()
