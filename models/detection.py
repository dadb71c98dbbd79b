"""Detection and instance segmentation on DCT cubes: ResNet-50-DCT-FPN under Faster / Mask R-CNN.

The paper's Sec. 4.3 recipe: resize the image keeping its aspect ratio (at most 1333x800), take
the frequency cube on a 2x output grid so that it has H/4 x W/4 cells (the resolution an RGB
ResNet reaches after its stride-4 stem), and feed it to layer1 of a ResNet-50 without stem, under
an unchanged FPN. The cube is built by the data pipeline (jpegfreq.detection.CocoJpeg); here the
models only batch it.

Coordinates: every box, mask, image size and anchor is in pixels of the *resized* image. One cube
cell covers PIXELS_PER_CELL = 4 of those pixels, so a cube of (C, h, w) cells stands for an
image of 4h x 4w pixels, and the FPN levels "0".."3", "pool" have strides 4, 8, 16, 32, 64 px:

    cube (N, C, h, w) --layer1--> (N, 256, h, w)        stride 4 px   FPN "0"
                      --layer2--> (N, 512, h/2, w/2)    stride 8 px   FPN "1"
                      --layer3--> (N, 1024, h/4, w/4)   stride 16 px  FPN "2"
                      --layer4--> (N, 2048, h/8, w/8)   stride 32 px  FPN "3"
                                  max-pool of "3"       stride 64 px  FPN "pool"

torchvision's GeneralizedRCNNTransform would normalise and resize the input as an RGB image and
its anchor generator / RoI poolers would derive strides from the tensor size (in cells, 4x too
small). So the DCT models replace three parts of torchvision's Faster / Mask R-CNN:

    CubeTransform           batches cubes (zero padding to a multiple of 8 cells = 32 px) and
                            reports image sizes as 4 x the cube size; no resize, no normalisation
    CubeAnchorGenerator     anchors at the FPN's fixed pixel strides (4, 8, 16, 32, 64)
    FixedScaleRoIAlign      RoI pooling with spatial scales 1/4 .. 1/32 stated, not inferred

Everything else is torchvision's: FasterRCNN / MaskRCNN and their heads, FeaturePyramidNetwork,
the backbone's ResNet blocks (models.resnet_dct subclasses torchvision's ResNet), and
FrozenBatchNorm2d, passed to the backbone as its norm_layer (frozen_bn=True) rather than swapped
in afterwards. The three replacements subclass torchvision's own classes and set only their
public attributes.

Builders (torchvision's detection API; the losses and outputs are those of FasterRCNN/MaskRCNN):

    fasterrcnn_resnet50_dct_fpn(channels="24S", num_classes=91)   input: list of (C, h, w) cubes
    maskrcnn_resnet50_dct_fpn(channels="24S", num_classes=91)     outputs in resized-image pixels
    fasterrcnn_resnet50_fpn_rgb(num_classes=91)                   RGB baselines (weights=None):
    maskrcnn_resnet50_fpn_rgb(num_classes=91)                     list of (3, H, W) in [0, 1]

Backbone + FPN cost (convolution multiply-adds for one 1344x800 padded image, i.e. a
(C, 200, 336) cube; parameters without the heads):

    RGB ResNet-50-FPN      (3, 800, 1344)     148.5 GMACs   26.85 M params
    ResNet-50-DCT-FPN 24S  (24, 200, 336)     145.1 GMACs   26.83 M params
    ResNet-50-DCT-FPN 64S  (64, 200, 336)     146.0 GMACs   26.84 M params

(the stem's 7x7 convolution is gone; layer1.0's two 1x1 convolutions take C inputs).
"""

import os
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection import fasterrcnn_resnet50_fpn as _tv_fasterrcnn
from torchvision.models.detection import maskrcnn_resnet50_fpn as _tv_maskrcnn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.ops.poolers import initLevelMapper

from jpegfreq.checkpoint import read_torch_file
from jpegfreq.geometry import PIXELS_PER_CELL  # one cube cell = 4 resized-image pixels

from .resnet_dct import resnet50_dct

__all__ = [
    "CubeAnchorGenerator",
    "CubeTransform",
    "FPN_STRIDES",
    "FixedScaleRoIAlign",
    "PIXELS_PER_CELL",
    "PixelTransform",
    "ResNetDCTFPN",
    "fasterrcnn_resnet50_dct_fpn",
    "fasterrcnn_resnet50_fpn_rgb",
    "load_backbone_weights",
    "maskrcnn_resnet50_dct_fpn",
    "maskrcnn_resnet50_fpn_rgb",
    "build_detector",
]

# Pixel strides of the FPN outputs "0", "1", "2", "3", "pool".
FPN_STRIDES = (4, 8, 16, 32, 64)
# layer4 has stride 8 cells, so padding the cube to a multiple of 8 cells keeps every level's
# grid an exact subdivision of the padded image.
SIZE_DIVISIBLE_CELLS = 8

_LAYERS = ("layer1", "layer2", "layer3", "layer4")
_LAYER_WIDTHS = (256, 512, 1024, 2048)  # Bottleneck outputs of layer1..layer4
_FEATURE_NAMES = ("0", "1", "2", "3")

# torchvision's FPN defaults: one anchor size per level, three aspect ratios everywhere
_ANCHOR_SIZES = ((32,), (64,), (128,), (256,), (512,))
_ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * len(_ANCHOR_SIZES)

_TRANSFORM_KWARGS = ("min_size", "max_size", "image_mean", "image_std", "fixed_size",
                     "size_divisible")


# ---------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------

class ResNetDCTFPN(nn.Module):
    """ResNet-50 without stem (layer1..layer4 of models.resnet50_dct) under a 4-level FPN + pool.

    channels (default "24S"): C, an int, a ChannelSet or its name. out_channels (default 256):
    FPN width. trainable_layers (default 4 = all): how many of layer4, layer3, layer2, layer1
    (counted from the top) get gradients; the rest are frozen. frozen_bn (default False):
    build layer1..layer4 with torchvision's FrozenBatchNorm2d as norm_layer (use with
    pretrained weights and small batches, as torchvision does). weights (default None): a
    classification checkpoint or state dict loaded into layer1..layer4 (see
    load_backbone_weights).
    Input (N, C, h, w) with h, w multiples of 8 cells (CubeTransform pads); output an
    OrderedDict "0", "1", "2", "3", "pool" of (N, out_channels, h/s, w/s), s = 1, 2, 4, 8, 16
    cells = 4, 8, 16, 32, 64 pixels. Attributes: out_channels, in_channels, channel_names.
    """

    def __init__(self, channels="24S", out_channels=256, trainable_layers=4, frozen_bn=False,
                 weights=None):
        super().__init__()
        if not 0 <= int(trainable_layers) <= len(_LAYERS):
            raise ValueError(f"trainable_layers must be in 0..{len(_LAYERS)}, "
                             f"got {trainable_layers}")
        net = resnet50_dct(channels, num_classes=1,
                           norm_layer=FrozenBatchNorm2d if frozen_bn else None)
        self.in_channels = net.in_channels
        self.channel_names = net.channel_names
        # module names layer1..layer4 as in the classification model, so its weights load by name
        self.body = nn.ModuleDict((name, getattr(net, name)) for name in _LAYERS)
        self.fpn = FeaturePyramidNetwork(list(_LAYER_WIDTHS), out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.trainable_layers = int(trainable_layers)
        self.frozen_bn = bool(frozen_bn)
        if weights is not None:
            load_backbone_weights(self, weights, channels if isinstance(channels, str) else None)
        for name in _LAYERS[: len(_LAYERS) - self.trainable_layers]:
            for p in self.body[name].parameters():
                p.requires_grad_(False)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected cubes (N, {self.in_channels}, h, w), got {tuple(x.shape)}")
        feats = OrderedDict()
        for key, name in zip(_FEATURE_NAMES, _LAYERS):
            x = self.body[name](x)
            feats[key] = x
        return self.fpn(feats)


def load_backbone_weights(backbone, weights, channels=None):
    """Copy a classification resnet50_dct's layer1..layer4 into a ResNetDCTFPN; returns a report.

    weights: a train.py checkpoint (path or dict with "model") or a bare state dict
    ("layer1.0.conv1.weight", ...; a DDP "module." prefix is stripped, fc is left out).
    channels: the backbone's channel spec, checked against a checkpoint's "channels" (a network
    trained on another channel set would read its inputs in the wrong order).
    Returns {"loaded": n tensors, "left_out": keys not used}. Raises ValueError on a shape
    mismatch or when nothing of layer1..layer4 is found.
    """
    if isinstance(weights, (str, os.PathLike)):
        # tensors and plain data only (weights_only=True); a bad file raises ValueError
        weights = read_torch_file(weights, map_location="cpu")
    if not isinstance(weights, dict):
        raise ValueError(f"backbone weights must be a checkpoint or a state dict, "
                         f"got {type(weights).__name__}")
    state = weights.get("model", weights) if isinstance(weights, dict) else weights
    if isinstance(weights, dict) and "model" in weights:
        if weights.get("gate"):
            raise ValueError("a gated checkpoint picks channels per image; train or fine-tune a "
                             "static channel set for detection")
        theirs = weights.get("channels")
        if channels is not None and theirs is not None and str(theirs) != str(channels):
            from jpegfreq import ChannelSet
            if ChannelSet.parse(str(theirs)) != ChannelSet.parse(str(channels)):
                raise ValueError(f"checkpoint was trained on channels {theirs}, "
                                 f"the backbone takes {channels}")
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    own = backbone.body.state_dict()
    loaded, left_out = {}, []
    for key, value in state.items():
        if key in own:
            if own[key].shape != value.shape:
                raise ValueError(f"{key}: checkpoint shape {tuple(value.shape)}, "
                                 f"backbone {tuple(own[key].shape)}")
            loaded[key] = value
        else:
            left_out.append(key)
    if not loaded:
        raise ValueError("no layer1..layer4 weights found in the checkpoint")
    # strict=False: FrozenBatchNorm2d has no num_batches_tracked; only layer1..layer4 given
    backbone.body.load_state_dict(loaded, strict=False)
    return {"loaded": len(loaded), "left_out": left_out}


# ---------------------------------------------------------------------------
# The three pieces that know a cube cell is 4 pixels
# ---------------------------------------------------------------------------

class CubeTransform(nn.Module):
    """Batches already-normalised cubes for GeneralizedRCNN; replaces GeneralizedRCNNTransform.

    pixels_per_cell (default 4): pixels of the resized image per cube cell.
    size_divisible (default 8): pad cubes (with 0, the normalised mean) to a multiple of this
    many cells (8 cells = 32 px, the stride of layer4).
    forward(images: list of (C, h, w) tensors, targets: list of dicts or None) ->
    (ImageList(tensors (N, C, H8, W8) cells, image_sizes [(4h, 4w)] pixels), targets). Targets
    are copied, never modified: their boxes and (N, 4h, 4w) masks are already in resized-image
    pixels. postprocess pastes mask probabilities at 4h x 4w; boxes stay in that frame.
    """

    def __init__(self, pixels_per_cell=PIXELS_PER_CELL, size_divisible=SIZE_DIVISIBLE_CELLS):
        super().__init__()
        self.pixels_per_cell = int(pixels_per_cell)
        self.size_divisible = int(size_divisible)

    def forward(self, images, targets=None):
        if not images:
            raise ValueError("no images")
        c = images[0].shape[0]
        for img in images:
            if img.dim() != 3 or img.shape[0] != c:
                raise ValueError(f"expected cubes (C={c}, h, w), got {tuple(img.shape)}")
            if not img.is_floating_point():
                raise ValueError(f"cubes must be floating point, got {img.dtype}")
        sizes = [tuple(int(v) for v in img.shape[-2:]) for img in images]
        d = self.size_divisible
        h = -(-max(s[0] for s in sizes) // d) * d
        w = -(-max(s[1] for s in sizes) // d) * d
        batch = images[0].new_zeros((len(images), c, h, w))
        for i, img in enumerate(images):
            batch[i, :, : img.shape[1], : img.shape[2]].copy_(img)
        k = self.pixels_per_cell
        image_sizes = [(sh * k, sw * k) for sh, sw in sizes]
        if targets is not None:
            targets = [dict(t) for t in targets]
            for t, (ph, pw) in zip(targets, image_sizes):
                m = t.get("masks")
                if m is not None and tuple(m.shape[-2:]) != (ph, pw):
                    raise ValueError(f"masks of shape {tuple(m.shape)} for a cube of "
                                     f"{ph // k}x{pw // k} cells: expected (N, {ph}, {pw}), "
                                     f"i.e. {k} px per cell")
        return ImageList(batch, image_sizes), targets

    def postprocess(self, result, image_shapes, original_image_sizes):
        # original_image_sizes are the cubes' own sizes in cells; the output frame is pixels
        if self.training:
            return result
        for pred, shape in zip(result, image_shapes):
            if "masks" in pred:
                pred["masks"] = paste_masks_in_image(pred["masks"], pred["boxes"], shape)
        return result

    def extra_repr(self):
        return f"pixels_per_cell={self.pixels_per_cell}, size_divisible={self.size_divisible}"


class CubeAnchorGenerator(AnchorGenerator):
    """torchvision's AnchorGenerator at fixed pixel strides per feature map.

    sizes, aspect_ratios: as AnchorGenerator (defaults: FPN's 32..512 px, ratios 0.5, 1, 2).
    strides (default FPN_STRIDES): pixels per feature-map cell, one per level; the stock
    generator instead divides the padded input size by the map size, which on a cube gives
    4x too small strides (and a wrong pool-level stride whenever layer4's size is odd).
    """

    def __init__(self, sizes=_ANCHOR_SIZES, aspect_ratios=_ASPECT_RATIOS, strides=FPN_STRIDES):
        super().__init__(sizes, aspect_ratios)
        if len(strides) != len(sizes):
            raise ValueError(f"{len(sizes)} anchor sizes but {len(strides)} strides")
        self.strides = tuple(int(s) for s in strides)

    def forward(self, image_list, feature_maps):
        if len(feature_maps) != len(self.strides):
            raise ValueError(f"{len(feature_maps)} feature maps for {len(self.strides)} strides")
        grid_sizes = [f.shape[-2:] for f in feature_maps]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        strides = [[torch.tensor(s, dtype=torch.int64, device=device)] * 2 for s in self.strides]
        self.set_cell_anchors(dtype, device)
        per_level = self.grid_anchors(grid_sizes, strides)
        anchors = torch.cat(per_level)
        return [anchors for _ in image_list.image_sizes]


class FixedScaleRoIAlign(MultiScaleRoIAlign):
    """MultiScaleRoIAlign with the levels' spatial scales stated instead of inferred.

    featmap_names, output_size, sampling_ratio: as MultiScaleRoIAlign. strides (default
    4, 8, 16, 32): pixels per cell of each named map. The stock pooler infers the scales from
    the first batch it sees (feature size / largest image size, rounded to a power of 2) and
    keeps them: a first batch of small padded images would fix wrong scales for good.

    Only the public state of MultiScaleRoIAlign is set: ``scales`` and ``map_levels`` (its
    declared attributes, here filled at construction through torchvision's initLevelMapper),
    and forward is torchvision's, which uses them as given.
    """

    def __init__(self, featmap_names=_FEATURE_NAMES, output_size=7, sampling_ratio=2,
                 strides=FPN_STRIDES[:4], canonical_scale=224, canonical_level=4):
        super().__init__(list(featmap_names), output_size, sampling_ratio,
                         canonical_scale=canonical_scale, canonical_level=canonical_level)
        if len(strides) != len(featmap_names):
            raise ValueError(f"{len(featmap_names)} feature maps but {len(strides)} strides")
        levels = [int(s).bit_length() - 1 for s in strides]
        if any(1 << lv != int(s) for lv, s in zip(levels, strides)):
            raise ValueError(f"strides must be powers of 2, got {strides}")
        self.scales = [1.0 / int(s) for s in strides]
        self.map_levels = initLevelMapper(levels[0], levels[-1], canonical_scale=canonical_scale,
                                          canonical_level=canonical_level)


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------

def _rcnn(cls, channels, num_classes, backbone_weights, trainable_layers, frozen_bn, **kw):
    bad = [k for k in _TRANSFORM_KWARGS if k in kw]
    if bad:
        raise ValueError(f"{', '.join(bad)}: the DCT models neither resize nor normalise; the "
                         "data pipeline does (jpegfreq.detection.CocoJpeg min_size/max_size/stats)")
    pretrained = backbone_weights is not None
    if trainable_layers is None:
        trainable_layers = 3 if pretrained else 4   # torchvision freezes the first stage too
    if frozen_bn is None:
        frozen_bn = pretrained                      # batches of 2 cannot estimate BN statistics
    backbone = ResNetDCTFPN(channels, trainable_layers=trainable_layers, frozen_bn=frozen_bn,
                            weights=backbone_weights)
    kw.setdefault("rpn_anchor_generator", CubeAnchorGenerator())
    kw.setdefault("box_roi_pool", FixedScaleRoIAlign(output_size=7))
    if cls is MaskRCNN:
        kw.setdefault("mask_roi_pool", FixedScaleRoIAlign(output_size=14))
    model = cls(backbone, num_classes=num_classes, **kw)
    model.transform = CubeTransform()
    return model


def fasterrcnn_resnet50_dct_fpn(channels="24S", num_classes=91, backbone_weights=None,
                                trainable_layers=None, frozen_bn=None, **kw):
    """Faster R-CNN with a ResNet-50-DCT-FPN backbone, input a list of (C, h, w) cubes.

    channels (default "24S"): channel set (name, ChannelSet or int C). num_classes (default
    91, COCO's raw ids; background is 0). backbone_weights (default None = random init): a
    resnet50_dct classification checkpoint (path/dict) or state dict for layer1..layer4.
    trainable_layers (default 4 from scratch, 3 with weights: layer1 frozen). frozen_bn
    (default: True with weights, else False). kw go to torchvision's FasterRCNN (rpn_* / box_*
    settings), except the transform's min_size/max_size/image_mean/image_std: the cubes come
    resized and normalised. Train: model(cubes, targets) -> loss dict (targets' boxes in
    pixels of the resized image, i.e. 4 x cube cells). Eval: model(cubes) -> [{"boxes" (N, 4)
    xyxy px, "labels", "scores"}].
    """
    return _rcnn(FasterRCNN, channels, num_classes, backbone_weights, trainable_layers,
                 frozen_bn, **kw)


def maskrcnn_resnet50_dct_fpn(channels="24S", num_classes=91, backbone_weights=None,
                              trainable_layers=None, frozen_bn=None, **kw):
    """Mask R-CNN with a ResNet-50-DCT-FPN backbone; arguments as fasterrcnn_resnet50_dct_fpn.

    Targets also carry "masks" uint8 (N, 4h, 4w) for a (C, h, w) cube. Eval output adds
    "masks" float (N, 1, 4h, 4w), probabilities pasted in the resized image.
    """
    return _rcnn(MaskRCNN, channels, num_classes, backbone_weights, trainable_layers,
                 frozen_bn, **kw)


class PixelTransform(GeneralizedRCNNTransform):
    """GeneralizedRCNNTransform without the resize: the RGB baseline's input comes already
    resized by the same geometry the cubes use (CocoJpeg(source="rgb")), so both see the
    same pixels. Still normalises (ImageNet mean/std) and pads to a multiple of 32 px."""

    def resize(self, image, target=None):
        return image, target


def _rgb(builder, num_classes, **kw):
    bad = [k for k in ("min_size", "max_size", "fixed_size") if k in kw]
    if bad:
        raise ValueError(f"{', '.join(bad)}: the RGB baseline is fed resized images "
                         "(jpegfreq.detection.CocoJpeg(source='rgb'))")
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **kw)
    t = model.transform
    model.transform = PixelTransform(t.min_size, t.max_size, t.image_mean, t.image_std,
                                     size_divisible=t.size_divisible)
    return model


def fasterrcnn_resnet50_fpn_rgb(num_classes=91, **kw):
    """torchvision's Faster R-CNN ResNet-50-FPN from scratch (weights=None, weights_backbone=None)
    fed RGB images in [0, 1] already resized by the data pipeline (no second resize).
    kw go to torchvision.models.detection.fasterrcnn_resnet50_fpn."""
    return _rgb(_tv_fasterrcnn, num_classes, **kw)


def maskrcnn_resnet50_fpn_rgb(num_classes=91, **kw):
    """torchvision's Mask R-CNN ResNet-50-FPN from scratch, fed resized RGB; as
    fasterrcnn_resnet50_fpn_rgb."""
    return _rgb(_tv_maskrcnn, num_classes, **kw)


def build_detector(task, source, channels="24S", num_classes=91, **kw):
    """The model detect.py trains: task "bbox" (Faster R-CNN) or "segm" (Mask R-CNN); source
    "rgb" gives the torchvision baseline, any other source the DCT model for `channels`."""
    if task not in ("bbox", "segm"):
        raise ValueError(f"task must be 'bbox' or 'segm', got {task!r}")
    if source == "rgb":
        for k in ("backbone_weights", "trainable_layers", "frozen_bn"):
            if kw.pop(k, None) is not None:
                raise ValueError(f"{k} is for the DCT backbone only")
        return (maskrcnn_resnet50_fpn_rgb if task == "segm" else fasterrcnn_resnet50_fpn_rgb)(
            num_classes, **kw)
    builder = maskrcnn_resnet50_dct_fpn if task == "segm" else fasterrcnn_resnet50_dct_fpn
    return builder(channels, num_classes, **kw)

