"""MobileNetV2 for frequency-domain input, and the RGB baseline it is compared with.

The RGB network's first layer is a 3x3 stride-2 convolution (features.0) taking 224x224 to
112x112. The DCT variant reads a 112x112 cube (an 896 crop), so features.0 is dropped and the
first inverted residual (t=1, c=16: depthwise 3x3, then 1x1 projection) takes the C channels
directly: its depthwise convolution has C groups and its projection is C->16. The remaining
blocks are unchanged. Modules keep torchvision's names and indices (features.1 ... features.18,
classifier.1), so an RGB state dict maps by name (models.convert.load_rgb_weights).

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

from .resnet_dct import _channel_count, _positive_int

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2", "mobilenet_v2_dct"]


# Inverted residual stages of MobileNetV2 (Sandler et al. 2018, Table 2), after the stem.
_INVERTED_RESIDUAL_SETTING = (
    # t, c, n, s  (expansion, output channels, repeats, stride of the first repeat)
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

_STEM_WIDTH = 32
_LAST_WIDTH = 1280


def _make_divisible(value, divisor=8):
    """Round a scaled width to a multiple of divisor, never more than 10% below the request.

    Widths that are multiples of 8 keep vectorised kernels on full lanes; the 10% floor stops
    small width multipliers from rounding a layer away.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) + BN + ReLU6, indexed .0/.1/.2 like torchvision's Conv2dNormActivation."""

    def __init__(self, in_planes, out_planes, kernel_size=3, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, (kernel_size - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand 1x1 (skipped when t=1), depthwise 3x3, linear 1x1 projection; residual when the
    block keeps both shape and resolution."""

    def __init__(self, in_planes, out_planes, stride, expand_ratio):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_planes * expand_ratio))
        self.use_residual = stride == 1 and in_planes == out_planes
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_planes, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            # no activation after the projection: ReLU on a narrow bottleneck destroys information
            nn.Conv2d(hidden, out_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 with an optional stem (features.0).

    in_channels (default 3): channels of the input tensor. stem (default True): keep the 3x3
    stride-2 conv (RGB input (N, in_channels, 224, 224)); False for a DCT cube
    (N, in_channels, 112, 112), fed to features.1 whose depthwise conv then has in_channels
    groups. num_classes (default 1000). width_mult (default 1.0): scales every width (rounded
    to multiples of 8); the last conv never shrinks below 1280. dropout (default 0.2): before
    the classifier. Without stem, features.1 gains a residual connection only if
    in_channels equals its output width (16 at width 1.0), as any inverted residual would.
    """

    def __init__(self, in_channels=3, stem=True, num_classes=1000, width_mult=1.0, dropout=0.2):
        super().__init__()
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

        self.in_channels = in_channels
        self.has_stem = bool(stem)
        self.width_mult = width_mult
        self.first_block = "features.1"
        self.channel_names = None

        # Explicit string keys keep torchvision's indices when features.0 is absent, so
        # "features.1.conv.0.0.weight" means the same layer in both models.
        features = OrderedDict()
        if self.has_stem:
            width = _make_divisible(_STEM_WIDTH * width_mult)
            features["0"] = ConvBNReLU6(in_channels, width, stride=2)
        else:
            width = in_channels
        index = 1
        for t, c, n, s in _INVERTED_RESIDUAL_SETTING:
            out = _make_divisible(c * width_mult)
            for repeat in range(n):
                features[str(index)] = InvertedResidual(width, out, s if repeat == 0 else 1, t)
                width = out
                index += 1
        last = _make_divisible(_LAST_WIDTH * max(1.0, width_mult))
        features[str(index)] = ConvBNReLU6(width, last, kernel_size=1)
        self.features = nn.Sequential(features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def mobilenet_v2(num_classes=1000, width_mult=1.0, **kw):
    """RGB MobileNetV2. Input (N, 3, 224, 224); 3.505 M params, 0.301 GFLOPs (width 1.0, 1000
    classes). num_classes (default 1000), width_mult (default 1.0); kw go to MobileNetV2
    (dropout)."""
    return MobileNetV2(3, stem=True, num_classes=num_classes, width_mult=width_mult, **kw)


def mobilenet_v2_dct(channels=24, num_classes=1000, width_mult=1.0, **kw):
    """MobileNetV2 without features.0 for a DCT cube. Input (N, C, 112, 112).

    channels (default 24): C, an int or a ChannelSet (.names kept as model.channel_names).
    num_classes (default 1000), width_mult (default 1.0); kw go to MobileNetV2 (dropout).
    Cost at width 1.0, 1000 classes: C=6 3.503 M params, 0.282 GFLOPs; C=24 3.504 M, 0.287;
    C=64 3.505 M, 0.300; C=192 3.508 M, 0.340 (features.1's depthwise 3x3 and projection
    run on C channels at 112x112).
    """
    count, names = _channel_count(channels)
    model = MobileNetV2(count, stem=False, num_classes=num_classes, width_mult=width_mult, **kw)
    model.channel_names = names
    return model
