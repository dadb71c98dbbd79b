"""ResNet-18 / ResNet-50 for frequency-domain input, and the RGB baselines they are compared with.

A frequency-domain cube already has the resolution the RGB network reaches after its stem
(a 448 crop gives 56x56, the size of a 224 image after conv1 + maxpool), so the DCT variants
drop the stem (conv1, bn1, relu, maxpool) and feed the C selected channels straight into
layer1. Only layer1's first block changes: its input convolution and its shortcut projection
take C input channels instead of 64. Everything after that is the stock network, with the same
module names as torchvision's so that an RGB ImageNet state dict loads by name
(see models.convert.load_rgb_weights).

Costs (multiply-adds of conv + linear layers per image, 1000 classes; bench/model_table.py):

    resnet50        (N, 3, 224, 224)   25.557 M params   4.089 GFLOPs
    resnet50_dct    (N, 24, 56, 56)    25.535 M params   3.931 GFLOPs
    resnet50_dct    (N, 64, 56, 56)    25.547 M params   3.971 GFLOPs
    resnet50_dct    (N, 192, 56, 56)   25.588 M params   4.100 GFLOPs
    resnet18        (N, 3, 224, 224)   11.690 M params   1.814 GFLOPs
    resnet18_dct    (N, 24, 56, 56)    11.659 M params   1.629 GFLOPs
    resnet18_dct    (N, 64, 56, 56)    11.680 M params   1.696 GFLOPs
    resnet18_dct    (N, 192, 56, 56)   11.766 M params   1.966 GFLOPs
"""

import numbers

import torch
from torch import nn

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet50",
    "resnet18_dct",
    "resnet50_dct",
]


def _conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _positive_int(value, what):
    # bool is an Integral too, but True channels is always a caller's mistake
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")
    return int(value)


def _channel_count(channels):
    """Number of input channels and their names (or None) from an int or a ChannelSet-like.

    channels: an int, an object with `.count` (and optionally `.names`), e.g.
    jpegfreq.ChannelSet, or a channel-set name such as "24S" (parsed by jpegfreq.ChannelSet).
    """
    if isinstance(channels, str):
        # str has a .count method, so it must be resolved before the duck-typed lookup
        try:
            from jpegfreq import ChannelSet
        except ImportError as exc:
            raise ValueError(
                f"channels={channels!r}: a channel-set name needs the jpegfreq package "
                f"({exc}); pass an int or a ChannelSet instead"
            ) from None
        channels = ChannelSet.parse(channels)
    names = getattr(channels, "names", None)
    count = _positive_int(getattr(channels, "count", channels), "channels")
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != count:
            raise ValueError(f"channel set has count={count} but {len(names)} names")
    return count, names


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4); ResNet-50/101/152.

    The stride sits on the 3x3 convolution ("ResNet v1.5"), which is what torchvision's
    ImageNet weights were trained with, so those weights load without a change of meaning.
    """

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


# Stage widths and strides, shared by every depth; the number of blocks per stage comes from
# `layers`. Only layer1 keeps the resolution: the stem (or the 8x8 DCT) already divided it by 4.
_STAGES = (
    # planes, stride
    (64, 1),
    (128, 2),
    (256, 2),
    (512, 2),
)

_DEPTHS = {
    # block, blocks in layer1..layer4
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}

_STEM_WIDTH = 64


class ResNet(nn.Module):
    """ResNet with an optional stem; without it, the input goes straight into layer1.

    block: BasicBlock or Bottleneck. layers: 4 ints, blocks per stage (layer1..layer4).
    in_channels (default 3): channels of the input tensor. stem (default True): keep
    conv1/bn1/relu/maxpool (RGB, input (N, in_channels, 224, 224)); False for a DCT cube
    (N, in_channels, 56, 56), whose first block then takes in_channels inputs.
    num_classes (default 1000): width of fc. zero_init_residual (default False): start each
    residual branch's last BN at 0 so every block begins as identity.
    Module names match torchvision's (conv1, bn1, layer1..layer4, fc).
    """

    def __init__(self, block, layers, in_channels=3, stem=True, num_classes=1000,
                 zero_init_residual=False):
        super().__init__()
        if block not in (BasicBlock, Bottleneck):
            raise ValueError(f"block must be BasicBlock or Bottleneck, got {block!r}")
        layers = tuple(layers)
        if len(layers) != len(_STAGES):
            raise ValueError(f"layers must give {len(_STAGES)} stage depths, got {layers}")
        for n in layers:
            _positive_int(n, "blocks per stage")
        in_channels = _positive_int(in_channels, "in_channels")
        num_classes = _positive_int(num_classes, "num_classes")

        self.in_channels = in_channels
        self.has_stem = bool(stem)
        # where convert.load_rgb_weights finds the block whose input width depends on C
        self.first_block = "layer1.0"
        self.channel_names = None

        if self.has_stem:
            self.conv1 = nn.Conv2d(in_channels, _STEM_WIDTH, kernel_size=7, stride=2, padding=3,
                                   bias=False)
            self.bn1 = nn.BatchNorm2d(_STEM_WIDTH)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            width = _STEM_WIDTH
        else:
            width = in_channels

        for index, ((planes, stride), depth) in enumerate(zip(_STAGES, layers), start=1):
            stage, width = self._make_stage(block, width, planes, depth, stride)
            self.add_module(f"layer{index}", stage)

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        self._init_weights(zero_init_residual)

    @staticmethod
    def _make_stage(block, inplanes, planes, depth, stride):
        out = planes * block.expansion
        downsample = None
        # Without a stem the first block sees C channels, so it projects whenever C differs
        # from the block output (always for Bottleneck with C <= 192, for BasicBlock if C != 64).
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(_conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
        blocks = [block(inplanes, planes, stride, downsample)]
        blocks += [block(out, planes) for _ in range(depth - 1)]
        return nn.Sequential(*blocks), out

    def _init_weights(self, zero_init_residual):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if self.has_stem:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _build(depth, channels, stem, num_classes, **kw):
    block, layers = _DEPTHS[depth]
    count, names = _channel_count(channels)
    model = ResNet(block, layers, in_channels=count, stem=stem, num_classes=num_classes, **kw)
    model.channel_names = names
    return model


def resnet50(num_classes=1000, **kw):
    """RGB ResNet-50. Input (N, 3, 224, 224); 25.557 M params, 4.089 GFLOPs at 1000 classes.

    num_classes (default 1000); kw go to ResNet (zero_init_residual).
    """
    return _build("resnet50", 3, True, num_classes, **kw)


def resnet18(num_classes=1000, **kw):
    """RGB ResNet-18. Input (N, 3, 224, 224); 11.690 M params, 1.814 GFLOPs at 1000 classes.

    num_classes (default 1000); kw go to ResNet (zero_init_residual).
    """
    return _build("resnet18", 3, True, num_classes, **kw)


def resnet50_dct(channels=24, num_classes=1000, **kw):
    """ResNet-50 without stem for a DCT cube. Input (N, C, 56, 56).

    channels (default 24): C, an int or a ChannelSet (its .count; .names is kept as
    model.channel_names). num_classes (default 1000). kw go to ResNet (zero_init_residual).
    Cost at 1000 classes: C=24 25.535 M params, 3.931 GFLOPs; C=64 25.547 M, 3.971; C=192
    25.588 M, 4.100 (the stem's 0.118 GFLOPs are gone; layer1.0 grows with C).
    """
    return _build("resnet50", channels, False, num_classes, **kw)


def resnet18_dct(channels=24, num_classes=1000, **kw):
    """ResNet-18 without stem for a DCT cube. Input (N, C, 56, 56).

    channels (default 24): C, an int or a ChannelSet. num_classes (default 1000).
    layer1.0.conv1 becomes a 3x3 C->64 conv, with a 1x1 C->64 projection shortcut if C != 64.
    Cost at 1000 classes: C=24 11.659 M params, 1.629 GFLOPs; C=64 11.680 M, 1.696; C=192
    11.766 M, 1.966.
    """
    return _build("resnet18", channels, False, num_classes, **kw)
