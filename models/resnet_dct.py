"""ResNet-18 / ResNet-50 for frequency-domain input, and the RGB baselines they are compared with.

A frequency-domain cube already has the resolution the RGB network reaches after its stem
(a 448 crop gives 56x56, the size of a 224 image after conv1 + maxpool), so the DCT variants
drop the stem (conv1, bn1, relu, maxpool) and feed the C selected channels straight into
layer1. Only layer1's first block changes: its input convolution and its shortcut projection
take C input channels instead of 64. Everything after that is the stock network.

Built on torchvision's classes: BasicBlock and Bottleneck are torchvision's own (re-exported),
and ResNet subclasses torchvision.models.resnet.ResNet, so the module names, initialisation and
parameter counts are torchvision's and an RGB ImageNet state dict loads by name (see
models.convert.load_rgb_weights). Where torchvision does not serve: its ResNet always builds a
3-channel 7x7 stem and a layer1 that takes 64 channels, so the subclass removes the stem (and
rebuilds layer1 from torchvision's blocks for C inputs) when stem=False, and has its own forward
(which checks the input's channel count and skips the absent stem). norm_layer passes through
(FrozenBatchNorm2d for detection).

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
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1
from torchvision.models.resnet import ResNet as _TorchvisionResNet

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet50",
    "resnet18_dct",
    "resnet50_dct",
]


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


def _set_int8_scale(module, int8_scale, channels):
    """Register ``int8_scale`` (the loader's per-channel int8 step, float32 (channels,)) as
    the buffer "int8_scale" of ``module`` (so it is saved in the state_dict and load_model
    rebuilds it), or an empty slot when None."""
    if int8_scale is None:
        module.register_buffer("int8_scale", None)
        return
    scale = torch.as_tensor(int8_scale, dtype=torch.float32).detach().clone().reshape(-1)
    if scale.numel() != channels:
        raise ValueError(f"int8_scale has {scale.numel()} steps for {channels} input channels")
    if not scale.is_meta and not bool((torch.isfinite(scale) & (scale > 0)).all()):
        raise ValueError("int8_scale steps must be finite and positive")
    module.register_buffer("int8_scale", scale)


def _dequantize(module, x):
    """An int8 input back to float with the module's step (x * int8_scale per channel);
    any other input unchanged."""
    if x.dtype != torch.int8:
        return x
    scale = module.int8_scale
    if scale is None:
        raise ValueError("int8 input, but this network was built without int8_scale "
                         "(build_model(..., int8_scale=loader.int8_scale))")
    if x.dim() != 4 or x.shape[1] != scale.numel():
        raise ValueError(f"expected int8 input (N, {scale.numel()}, H, W), got "
                         f"{tuple(x.shape)}")
    return x.to(scale.dtype) * scale.view(1, -1, 1, 1)


_DEPTHS = {
    # block, blocks in layer1..layer4
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}

_STEM_WIDTH = 64
_STAGES = 4


def _init_like_torchvision(module, zero_init_residual):
    """The initialisation torchvision's ResNet gives its modules, for modules built after it."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, Bottleneck) and m.bn3.weight is not None:
                nn.init.constant_(m.bn3.weight, 0)
            elif isinstance(m, BasicBlock) and m.bn2.weight is not None:
                nn.init.constant_(m.bn2.weight, 0)


class ResNet(_TorchvisionResNet):
    """torchvision's ResNet with an optional stem; without it, the input goes straight into
    layer1.

    block: BasicBlock or Bottleneck (torchvision's). layers: 4 ints, blocks per stage
    (layer1..layer4). in_channels (default 3): channels of the input tensor. stem (default
    True): keep conv1/bn1/relu/maxpool (RGB, input (N, in_channels, 224, 224)); False for a
    DCT cube (N, in_channels, 56, 56), whose first block then takes in_channels inputs (and
    projects its shortcut whenever in_channels differs from the block's output width).
    num_classes (default 1000): width of fc. zero_init_residual (default False): start each
    residual branch's last norm at 0 so every block begins as identity. norm_layer (default
    BatchNorm2d): e.g. torchvision.ops.misc.FrozenBatchNorm2d for detection fine-tuning.
    kw go to torchvision's ResNet (groups, width_per_group, replace_stride_with_dilation).
    Module names and initialisation are torchvision's (conv1, bn1, layer1..layer4, fc).
    int8_scale (default None): the per-channel step of int8 input (JpegLoader(dtype="int8")
    .int8_scale, (in_channels,)); kept as the buffer "int8_scale" and applied to int8 input
    (x * step), float input is used as it is.
    """

    def __init__(self, block, layers, in_channels=3, stem=True, num_classes=1000,
                 zero_init_residual=False, norm_layer=None, int8_scale=None, **kw):
        if not (isinstance(block, type) and issubclass(block, (BasicBlock, Bottleneck))):
            raise ValueError(f"block must be BasicBlock or Bottleneck, got {block!r}")
        layers = tuple(layers)
        if len(layers) != _STAGES:
            raise ValueError(f"layers must give {_STAGES} stage depths, got {layers}")
        for n in layers:
            _positive_int(n, "blocks per stage")
        in_channels = _positive_int(in_channels, "in_channels")
        num_classes = _positive_int(num_classes, "num_classes")
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        super().__init__(block, list(layers), num_classes=num_classes,
                         zero_init_residual=zero_init_residual, norm_layer=norm_layer, **kw)
        self.in_channels = in_channels
        self.has_stem = bool(stem)
        # where convert.load_rgb_weights finds the block whose input width depends on C
        self.first_block = "layer1.0"
        self.channel_names = None
        _set_int8_scale(self, int8_scale, in_channels)

        if self.has_stem:
            if in_channels != 3:
                self.conv1 = nn.Conv2d(in_channels, _STEM_WIDTH, kernel_size=7, stride=2,
                                       padding=3, bias=False)
                _init_like_torchvision(self.conv1, False)
            return
        # torchvision always builds the 3-channel stem and a 64-input layer1: drop the stem
        # and rebuild layer1 for in_channels inputs, with torchvision's own blocks
        del self.conv1, self.bn1, self.relu, self.maxpool
        out = _STEM_WIDTH * block.expansion
        downsample = None
        if in_channels != out:
            downsample = nn.Sequential(conv1x1(in_channels, out), norm_layer(out))
        first = block(in_channels, _STEM_WIDTH, 1, downsample, self.groups, self.base_width, 1,
                      norm_layer)
        rest = [block(out, _STEM_WIDTH, groups=self.groups, base_width=self.base_width,
                      norm_layer=norm_layer) for _ in range(layers[0] - 1)]
        self.layer1 = nn.Sequential(first, *rest)
        _init_like_torchvision(self.layer1, zero_init_residual)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        x = _dequantize(self, x)
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

    num_classes (default 1000); kw go to ResNet (zero_init_residual, norm_layer, ...).
    """
    return _build("resnet50", 3, True, num_classes, **kw)


def resnet18(num_classes=1000, **kw):
    """RGB ResNet-18. Input (N, 3, 224, 224); 11.690 M params, 1.814 GFLOPs at 1000 classes.

    num_classes (default 1000); kw go to ResNet (zero_init_residual, norm_layer, ...).
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
