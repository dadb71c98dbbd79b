"""Frequency-domain networks (stem removed, first block fed C DCT channels), RGB baselines,
the learned channel gate, RGB-checkpoint loading and the networks of jpegfreq checkpoints.
ResNet and MobileNetV2 are torchvision's classes (subclassed; blocks re-exported), so state
dicts keep torchvision's keys.

    resnet50_dct(channels=24, num_classes=1000)     input (N, C, 56, 56)
    resnet18_dct(channels=24, num_classes=1000)     input (N, C, 56, 56)
    mobilenet_v2_dct(channels=24, num_classes=1000, width_mult=1.0)   input (N, C, 112, 112)
    resnet50(), resnet18(), mobilenet_v2()          input (N, 3, 224, 224)
    GatedModel(ChannelGate(192), resnet50_dct(192)) -> (logits, gates); gate_loss(gates)
    load_rgb_weights(model, torchvision_state_dict) -> report
    load_model("checkpoint.pth", device="cpu")     classifier or detector, eval mode
    build_model(arch, source, channels, num_classes, gate=False)   weights not loaded

`channels` is an int or a jpegfreq.ChannelSet (its .count); builders pass norm_layer (e.g.
torchvision.ops.misc.FrozenBatchNorm2d) through to torchvision. Parameter and FLOP counts per
model are in each builder's docstring and in bench/model_table.md.
"""

from .checkpoint import build_model, load_model
from .convert import load_rgb_weights
from .gate import (
    ChannelGate,
    GatedModel,
    HeatmapAccumulator,
    accumulate_heatmap,
    default_channel_names,
    gate_loss,
    hard_gumbel_softmax,
)
from .mobilenet_dct import InvertedResidual, MobileNetV2, mobilenet_v2, mobilenet_v2_dct
from .resnet_dct import (
    BasicBlock,
    Bottleneck,
    ResNet,
    resnet18,
    resnet18_dct,
    resnet50,
    resnet50_dct,
)

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ChannelGate",
    "build_model",
    "load_model",
    "GatedModel",
    "HeatmapAccumulator",
    "InvertedResidual",
    "MobileNetV2",
    "ResNet",
    "accumulate_heatmap",
    "default_channel_names",
    "gate_loss",
    "hard_gumbel_softmax",
    "load_rgb_weights",
    "mobilenet_v2",
    "mobilenet_v2_dct",
    "resnet18",
    "resnet18_dct",
    "resnet50",
    "resnet50_dct",
]
