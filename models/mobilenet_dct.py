"""MobileNetV2 for frequency-domain input, and the RGB baseline it is compared with.

The RGB network's first layer is a 3x3 stride-2 convolution (features.0) taking 224x224 to
112x112. The DCT variant reads a 112x112 cube (an 896 crop), so features.0 is dropped and the
first inverted residual (t=1, c=16: depthwise 3x3, then 1x1 projection) takes the C channels
directly: its depthwise convolution has C groups and its projection is C->16. The remaining
blocks are unchanged. Modules keep torchvision's names and indices (features.1 ... features.18,
classifier.1), so an RGB state dict maps by name (models.convert.load_rgb_weights).

Built on torchvision's classes: MobileNetV2 subclasses torchvision.models.MobileNetV2 and every
block is torchvision's InvertedResidual / Conv2dNormActivation, so widths, initialisation and
parameter counts are torchvision's. Where torchvision does not serve: its MobileNetV2 always
builds a 3-channel stride-2 features.0 and a features.1 sized for its output, so for stem=False
the subclass drops features.0 (keeping the string indices "1".."18") and rebuilds features.1
for C inputs; its forward is ours (it checks the input's channel count).

Costs (multiply-adds of conv + linear layers per image, width 1.0, 1000 classes;
bench/model_table.py):

    mobilenet_v2       (N, 3, 224, 224)    3.505 M params   0.301 GFLOPs
    mobilenet_v2_dct   (N, 6, 112, 112)    3.503 M params   0.282 GFLOPs
    mobilenet_v2_dct   (N, 24, 112, 112)   3.504 M params   0.287 GFLOPs
    mobilenet_v2_dct   (N, 64, 112, 112)   3.505 M params   0.300 GFLOPs
    mobilenet_v2_dct   (N, 192, 112, 112)  3.508 M params   0.340 GFLOPs
"""

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.mobilenetv2 import MobileNetV2 as _TorchvisionMobileNetV2
from torchvision.ops.misc import Conv2dNormActivation

from .resnet_dct import _channel_count, _dequantize, _positive_int, _set_int8_scale

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2", "mobilenet_v2_dct"]

# t (expansion) of the first inverted residual in torchvision's default setting
_FIRST_EXPANSION = 1


def _init_like_torchvision(module):
    """The initialisation torchvision's MobileNetV2 gives its modules, for modules built after."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MobileNetV2(_TorchvisionMobileNetV2):
    """torchvision's MobileNetV2 with an optional stem (features.0).

    in_channels (default 3): channels of the input tensor. stem (default True): keep the 3x3
    stride-2 conv (RGB input (N, in_channels, 224, 224)); False for a DCT cube
    (N, in_channels, 112, 112), fed to features.1 whose depthwise conv then has in_channels
    groups. num_classes (default 1000). width_mult (default 1.0): scales every width (rounded
    to multiples of 8); the last conv never shrinks below 1280. dropout (default 0.2): before
    the classifier. norm_layer (default BatchNorm2d). kw go to torchvision's MobileNetV2
    (inverted_residual_setting, round_nearest, block). Without stem, features.1 gains a
    residual connection only if in_channels equals its output width (16 at width 1.0), as any
    inverted residual would. int8_scale (default None): the per-channel step of int8 input
    (JpegLoader(dtype="int8").int8_scale), kept as the buffer "int8_scale"; int8 input is
    turned back into float (x * step), float input is used as it is.
    """

    def __init__(self, in_channels=3, stem=True, num_classes=1000, width_mult=1.0, dropout=0.2,
                 norm_layer=None, int8_scale=None, **kw):
        in_channels = _positive_int(in_channels, "in_channels")
        num_classes = _positive_int(num_classes, "num_classes")
        try:
            width_mult = float(width_mult)
        except (TypeError, ValueError):
            raise ValueError(f"width_mult must be a positive number, got {width_mult!r}") from None
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        super().__init__(num_classes=num_classes, width_mult=width_mult, dropout=dropout,
                         norm_layer=norm_layer, **kw)
        self.in_channels = in_channels
        self.has_stem = bool(stem)
        self.width_mult = width_mult
        self.first_block = "features.1"
        self.channel_names = None
        _set_int8_scale(self, int8_scale, in_channels)

        # torchvision always builds a 3-channel features.0 and a features.1 for its output
        if self.has_stem:
            if in_channels != 3:
                old = self.features[0]
                self.features[0] = Conv2dNormActivation(
                    in_channels, old.out_channels, stride=2, norm_layer=norm_layer,
                    activation_layer=nn.ReLU6)
                _init_like_torchvision(self.features[0])
            return
        # Without stem: drop features.0 and rebuild features.1 for in_channels inputs. Explicit
        # string keys keep torchvision's indices, so "features.1.conv.0.0.weight" means the
        # same layer in both models.
        setting = kw.get("inverted_residual_setting")
        t = _FIRST_EXPANSION if setting is None else setting[0][0]
        block = kw.get("block") or InvertedResidual
        old = self.features[1]
        first = block(in_channels, old.out_channels, old.stride, expand_ratio=t,
                      norm_layer=norm_layer)
        _init_like_torchvision(first)
        layers = OrderedDict((str(i), m) for i, m in enumerate(self.features) if i > 1)
        self.features = nn.Sequential(OrderedDict([("1", first), *layers.items()]))

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        x = _dequantize(self, x)
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def mobilenet_v2(num_classes=1000, width_mult=1.0, **kw):
    """RGB MobileNetV2. Input (N, 3, 224, 224); 3.505 M params, 0.301 GFLOPs (width 1.0, 1000
    classes). num_classes (default 1000), width_mult (default 1.0); kw go to MobileNetV2
    (dropout, norm_layer, ...)."""
    return MobileNetV2(3, stem=True, num_classes=num_classes, width_mult=width_mult, **kw)


def mobilenet_v2_dct(channels=24, num_classes=1000, width_mult=1.0, **kw):
    """MobileNetV2 without features.0 for a DCT cube. Input (N, C, 112, 112).

    channels (default 24): C, an int or a ChannelSet (.names kept as model.channel_names).
    num_classes (default 1000), width_mult (default 1.0); kw go to MobileNetV2 (dropout,
    norm_layer, ...).
    Cost at width 1.0, 1000 classes: C=6 3.503 M params, 0.282 GFLOPs; C=24 3.504 M, 0.287;
    C=64 3.505 M, 0.300; C=192 3.508 M, 0.340 (features.1's depthwise 3x3 and projection
    run on C channels at 112x112).
    """
    count, names = _channel_count(channels)
    model = MobileNetV2(count, stem=False, num_classes=num_classes, width_mult=width_mult, **kw)
    model.channel_names = names
    return model
