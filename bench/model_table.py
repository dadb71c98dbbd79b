"""Parameters and multiply-adds of the RGB baselines vs their frequency-domain variants.

    python bench/model_table.py            # prints a markdown table (about 10 s on one core)

GFLOPs here are multiply-accumulates of every Conv2d and Linear layer for one image, counted by
forward hooks (the convention of the paper and of torchvision's model cards; BN, activations,
pooling and additions are not counted). Input elements are relative to the 3x224x224 RGB image:
in float16 a cube takes 2 bytes per element, the uint8 RGB image 1.
"""

import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jpegfreq import models  # noqa: E402

RGB_ELEMENTS = 3 * 224 * 224

# label, builder, builder kwargs, input shape (C, H, W), channel-set label
ROWS = (
    ("resnet50", models.resnet50, {}, (3, 224, 224), "RGB"),
    ("resnet50_dct", models.resnet50_dct, {"channels": 24}, (24, 56, 56), "24S"),
    ("resnet50_dct", models.resnet50_dct, {"channels": 64}, (64, 56, 56), "64S"),
    ("resnet50_dct", models.resnet50_dct, {"channels": 192}, (192, 56, 56), "192"),
    ("mobilenet_v2", models.mobilenet_v2, {}, (3, 224, 224), "RGB"),
    ("mobilenet_v2_dct", models.mobilenet_v2_dct, {"channels": 6}, (6, 112, 112), "6S"),
    ("mobilenet_v2_dct", models.mobilenet_v2_dct, {"channels": 24}, (24, 112, 112), "24S"),
    ("mobilenet_v2_dct", models.mobilenet_v2_dct, {"channels": 64}, (64, 112, 112), "64S"),
    ("mobilenet_v2_dct", models.mobilenet_v2_dct, {"channels": 192}, (192, 112, 112), "192"),
    ("resnet18", models.resnet18, {}, (3, 224, 224), "RGB"),
    ("resnet18_dct", models.resnet18_dct, {"channels": 24}, (24, 56, 56), "24S"),
    ("resnet18_dct", models.resnet18_dct, {"channels": 64}, (64, 56, 56), "64S"),
    ("resnet18_dct", models.resnet18_dct, {"channels": 192}, (192, 56, 56), "192"),
    ("ChannelGate", models.ChannelGate, {}, (192, 56, 56), "192"),
)


def count_macs(model, x):
    """Multiply-accumulates of all Conv2d and Linear layers in one forward pass of x, per sample.

    Conv: output elements x (input channels / groups) x kernel area; Linear: in x out features
    per output row. Bias additions are not counted.
    """
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module, inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total / x.shape[0]


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def _bytes(elements, label):
    """Bytes per sample: the RGB image is uint8; cubes are float32 or float16."""
    if label == "RGB":
        return f"{elements:,} B uint8 (1.00)"
    return (f"{4 * elements / 1024:,.0f} KiB ({4 * elements / RGB_ELEMENTS:.2f}) / "
            f"{2 * elements / 1024:,.0f} KiB ({2 * elements / RGB_ELEMENTS:.2f})")


def table():
    lines = [
        "| model | input (shape) | channels | input elements (x RGB) | input bytes fp32 / fp16 "
        "(x uint8 RGB) | params (M) | GFLOPs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, builder, kwargs, shape, label in ROWS:
        torch.manual_seed(0)
        model = builder(**kwargs).eval()
        x = torch.randn(1, *shape)
        elements = x[0].numel()
        lines.append(
            f"| {name} | {'x'.join(map(str, shape))} | {label} "
            f"| {elements:,} ({elements / RGB_ELEMENTS:.2f}) "
            f"| {_bytes(elements, label)} "
            f"| {count_params(model) / 1e6:.3f} | {count_macs(model, x) / 1e9:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
