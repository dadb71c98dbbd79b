"""Initialise a frequency-domain model from an RGB checkpoint (torchvision key names).

Every layer after the stem has the same name and shape in the RGB and the DCT network, so it
copies by name. The stem (conv1/bn1 or features.0) has no counterpart and is left out. The first
block's input-side tensors depend on C (layer1.0.conv1 and layer1.0.downsample.0 for ResNet;
the depthwise conv, its BN and the projection of features.1 for MobileNetV2): they are either
sliced/tiled to C channels or left at their fresh initialisation.
"""

import torch

__all__ = ["load_rgb_weights"]

_FIRST_BLOCK_MODES = ("slice", "reinit")


def _fit(tensor, shape):
    """Take the first n entries along every dimension that differs, repeating cyclically when
    the target is larger (C=192 tiles the 64 RGB-derived input filters three times)."""
    for dim, (have, want) in enumerate(zip(tensor.shape, shape)):
        if have != want:
            index = torch.arange(want, device=tensor.device) % have
            tensor = tensor.index_select(dim, index)
    return tensor


def _strip_prefix(state_dict, prefix):
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load_rgb_weights(dct_model, state_dict, first_block="slice"):
    """Copy an RGB state dict into dct_model wherever names match; returns a report.

    dct_model: ResNet / MobileNetV2 built without stem (e.g. resnet50_dct(24)), or a
    GatedModel around one. state_dict: torchvision-style keys ("layer1.0.conv1.weight",
    "features.1.conv.0.0.weight"); a DDP "module." prefix is stripped. first_block (default
    "slice"): "slice" copies the first block's C-dependent tensors after taking their first C
    input channels (tiling when C is larger); "reinit" keeps the model's own initialisation
    for them.

    Returns {"mapped": keys copied unchanged, "reshaped": keys sliced/tiled, "left_out":
    state-dict keys not used (stem, a classifier of another size, first-block tensors under
    "reinit", unknown keys), "missing": model keys that kept their initialisation}.
    """
    if first_block not in _FIRST_BLOCK_MODES:
        raise ValueError(f"first_block must be one of {_FIRST_BLOCK_MODES}, got {first_block!r}")
    target = getattr(dct_model, "backbone", dct_model)
    prefix = getattr(target, "first_block", None)
    if prefix is None:
        raise ValueError(
            f"{type(target).__name__} has no first_block attribute; expected a model from models/"
        )
    prefix += "."
    own = target.state_dict()
    state_dict = _strip_prefix(state_dict, "module.")

    report = {"mapped": [], "reshaped": [], "left_out": [], "missing": []}
    new = {}
    for key, value in state_dict.items():
        mine = own.get(key)
        if mine is None:
            report["left_out"].append(key)
        elif value.shape == mine.shape:
            new[key] = value
            report["mapped"].append(key)
        elif key.startswith(prefix) and value.dim() == mine.dim() and first_block == "slice":
            new[key] = _fit(value, mine.shape)
            report["reshaped"].append(key)
        else:
            report["left_out"].append(key)
    report["missing"] = [k for k in own if k not in new]
    target.load_state_dict(new, strict=False)
    return report
