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
